// Hardware profiling (`tunebench profile`): Google Benchmark cases registered at run time
// for one model shape — every core op forward and backward at that shape, and the train or
// inference step of each profiled method — measured against the machine's matmul peak.
//
// The step cases are defined exactly as the PyTorch side-by-side reference defines them:
//   full  — LM loss over the whole vocabulary, backward through every parameter, AdamW step;
//   lora  — rank 8 (α 16, no dropout) on the attention QKV and output projections of every
//           layer, LM loss, backward into the LoRA factors only, AdamW step on them;
//   head  — frozen body, linear classifier (2 classes) on the last position's hidden state,
//           backward into the classifier only, AdamW step;
//   infer — forward returning the logits of every position.
// FLOPs are model FLOPs: matmul products (2·M·N·K) of the forward, and of the backward
// products the case actually computes (input and weight gradients), with attention counted
// over its causal half: scores and weighted sum together 2·B·NH·T·(T+1)·hs per layer
// forward, twice that backward. Ops that are not matmuls (norms, activations, RoPE,
// residual, loss, pooling, embedding) report bytes/s of their compulsory memory traffic
// instead, and null GFLOP/s and peak fraction.
//
// The JSON (`--json FILE`, also rendered by `tunebench report` as its hardware section):
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

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/meter.h"

namespace tb::profile {

struct ProfileSpec {
  std::filesystem::path model;  // a model directory; empty: random weights of the arch below
  std::string arch = "llama";   // gpt2 | llama
  int64_t layers = 6, dim = 384, heads = 6, vocab = 8192;
  int64_t seq = 128, batch = 8;
  std::vector<std::string> methods = {"full", "lora", "head", "infer"};
  std::string precision = "f32";
  bool ops = true;          // also profile every core op at the model's shapes
  double min_time = 0.5;    // Google Benchmark's minimum measuring time per case, seconds
  int64_t peak_size = runner::kPeakMatmulSize;  // n of the n×n×n matmul timed as the peak (the runner's)
  // JSON of bench/pytorch_reference.py: step cases of the same arch, shape, case and
  // precision get its tokens/s as "reference" and tunebench's "speedup" over it.
  std::filesystem::path reference;
};

// The method names a profile knows, in the order they run.
const std::vector<std::string>& profile_methods();

// Checks `spec` (shape, methods, precision) and throws InputError naming the flag.
void validate_spec(const ProfileSpec& spec);

// Runs the cases and returns the profile JSON; progress and Google Benchmark's console
// table go to `console`.
nlohmann::json run_profile(const ProfileSpec& spec, std::ostream& console);

// Checks the structure of a profile JSON (the keys above, numbers where numbers belong);
// FormatError naming `where` and the field.
void validate_profile_json(const nlohmann::json& j, const std::string& where);

}  // namespace tb::profile
