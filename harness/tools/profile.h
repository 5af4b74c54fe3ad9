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
// The JSON it writes (`--json FILE`) is described and validated by harness/runner/profile_json.h,
// beside the run record, so reports read it without depending on this tool.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/runner/meter.h"

namespace tb::tools {

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

}  // namespace tb::tools
