// Saved adaptations: what a run keeps with --save-adaptations, and how to apply it again.
//
// A saved adaptation is a directory. For lora, prefix and softprompt it is a Hugging Face
// PEFT adapter (adapter_config.json + adapter_model.safetensors, harness/core/peft_io.h);
// for the other methods that train weights (adapter, head, full) it is tunebench's own
// adaptation.safetensors. Beside either, tunebench_adaptation.json says how to apply it:
// the method and its options, the base model it was trained on (sha256 and config), and the
// classification head file when the method trained one (tunebench_head.safetensors beside a
// PEFT adapter; inside adaptation.safetensors otherwise). A bare PEFT directory (from PEFT
// itself) has no tunebench_adaptation.json: it is applied as PEFT applies it, with no head.
// docs/PEFT.md describes the formats and the mapping of tunebench's LoRA on GPT-2.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/params.h"
#include "harness/core/peft_io.h"
#include "methods/lora.h"
#include "methods/method.h"

namespace tb::methods {

inline constexpr const char* kAdaptationInfoFile = "tunebench_adaptation.json";
inline constexpr const char* kHeadFile = "tunebench_head.safetensors";
inline constexpr const char* kTunebenchAdaptationFile = "adaptation.safetensors";

// PEFT's form of tunebench LoRA pairs trained with rank r and alpha. A pair on a whole linear
// maps one to one. On a fused family (GPT-2's fused q,k,v linear), the pairs on the q, k and v slices of
// one layer become one pair over the fused output: A stacks the slices' A (k·r rows), B is
// block-structured (rows of slice j read only columns [j·r, (j+1)·r), zeros elsewhere), with
// rank k·r and alpha k·alpha, so scaling and every output are exactly the per-slice ones.
PeftAdapter peft_from_lora(const std::vector<LoraPair>& pairs, const ModelConfig& cfg, int64_t r, double alpha,
                           double dropout);

// Writes `head`'s tensors (head.weight, head.bias) to dir/tunebench_head.safetensors.
void write_head(const std::filesystem::path& dir, const ParamStore& head);

// A saved adaptation read back for a model of config `cfg`.
struct SavedAdaptation {
  std::filesystem::path dir;
  std::string format;        // "peft" | "tunebench"
  std::string method;        // lora | prefix | softprompt | adapter | head | full
  nlohmann::json info;       // tunebench_adaptation.json, null for a bare PEFT directory
  std::unique_ptr<Hooks> hooks;  // null when the method has none (head, full)
  LoraHooks* lora = nullptr;     // hooks, when they are a LoRA (merging)
  // Tensors to load into the classification head ("head.weight", "head.bias") and into base
  // weights (their checkpoint names), read from the file named in `values_file`.
  std::filesystem::path values_file;
  std::vector<std::string> head_tensors, base_tensors;
  // The method's options when saved by tunebench (empty for a bare PEFT directory).
  std::map<std::string, std::string> options;
};

// Reads `dir`: a PEFT directory or one written by --save-adaptations, for a base model of
// config `cfg` whose weights are `base` (null: base tensors are then not checked, only named).
// `model_sha256`, when not empty, must match the sha256 tunebench_adaptation.json records.
// Every mismatch with the base model is an InputError naming the file and the key.
SavedAdaptation load_adaptation(const std::filesystem::path& dir, const ModelConfig& cfg, const ParamStore* base,
                                const std::string& model_sha256 = "");

// Overwrites the base weights `saved` holds (head/full with unfrozen blocks) in `model`.
void apply_base_tensors(const SavedAdaptation& saved, Model& model);

// The `eval` method (not in the registry: `tunebench eval` builds a table with it): applies
// the adaptation in --eval.adapter DIR without training and predicts the test split as the
// saved method did (same head, objective, pooling, batch, length; LoRA merged when it was).
MethodInfo eval_method_info();

}  // namespace tb::methods
