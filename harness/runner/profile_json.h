// The hardware profile JSON that `tunebench profile --json FILE` writes (harness/tools/profile.h)
// and `tunebench report` renders as its hardware section: part of the record type, so reports
// read it without depending on the profiler.
//
// Its shape:
//   {"machine": {"cpu", "threads", "isa", "onednn_version", "peak_gflop_per_s": {"f32", "bf16"},
//                "cores", "host", "compiler", "peak_matmul_size"},
//    "model": {"arch", "L", "C", "NH", "NKV", "F", "V", "T", "B", "params", "source"},
//    "cases": [{"kind": "op"|"train"|"infer", "name", "method" (null for ops), "precision",
//               "shape": {...}, "tokens_per_s", "gflop_per_s", "peak_fraction", "gbyte_per_s",
//               "seconds_per_iter", "iterations", "flops_per_iter",
//               step cases also: "memory": {"analytic": {"weights", "gradients",
//                 "optimizer_state", "activations"}, "analytic_bytes", "peak_rss_bytes",
//                 "rss_before_bytes", "peak_over_analytic"},
//               with --reference, matched step cases: "reference": {"framework",
//                 "tokens_per_s", "threads"}, "speedup"}]}
// Peak RSS is the process's VmHWM while the case ran (reset when it starts), so it includes
// the libraries and everything resident besides the case's own buffers.
// peak_gflop_per_s.bf16 is null when the CPU has no native bf16 dot products. Every case is
// measured in real (wall) time after one untimed warm-up step.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tb::runner {

// Checks the structure of a profile JSON (the keys above, numbers where numbers belong);
// FormatError naming `where` and the field.
void validate_profile_json(const nlohmann::json& j, const std::string& where);

}  // namespace tb::runner
