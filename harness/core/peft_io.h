// Hugging Face PEFT's on-disk format for the adaptations it shares with tunebench: LoRA,
// prefix tuning and prompt tuning (soft prompt) on a causal LM, GPT-2 or Llama family.
// A PEFT directory holds adapter_config.json and adapter_model.safetensors; the tensor names
// are PEFT's (the base model's module path under "base_model.model.", the adapter name
// removed), so this file, like model_io, is where checkpoint names are spelled.
//
//   LoRA     "base_model.model.<module>.lora_A.weight" (r, in) and "...lora_B.weight" (out, r)
//            for each adapted linear; the update is scaling·B·A·x with scaling lora_alpha/r
//            (lora_alpha/√r with use_rslora), r and lora_alpha per module from rank_pattern /
//            alpha_pattern when a pattern matches the module (PEFT's rule: the pattern matches
//            the end of the module path at a dot).
//   prompt   "prompt_embeddings" (P, C): P virtual-token embeddings prepended to the input.
//   prefix   "prompt_embeddings" (P, L·2·NKV·hs): row p holds, for each layer l, the keys
//            (NKV, hs) then the values (NKV, hs) of prefix position p (PEFT's past_key_values
//            view (P, 2L, NKV, hs) with token_dim = NKV·hs, num_attention_heads = NKV).
//
// GPT-2 computes q, k and v with one fused linear (c_attn, 3C outputs), and PEFT puts one
// A/B pair on it. A PeftLoraModule on Site::qkv is that pair over the whole fused output.
// See docs/PEFT.md for how tunebench's per-slice q/k/v LoRA is written as such a pair.
//
// Reading checks everything against the base model and throws tb::ModelError (exit 2) whose
// message starts with the file and names the key: an unknown peft_type or task_type, options
// tunebench does not implement (DoRA, LoRA biases, modules_to_save, ...), a tensor name that
// is no module of this model, or a shape that does not fit it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/core/hooks.h"
#include "harness/core/model.h"

namespace tb {

enum class PeftType { lora, prefix_tuning, prompt_tuning };
const char* peft_type_name(PeftType t);  // "LORA", "PREFIX_TUNING", "PROMPT_TUNING"

// One LoRA pair: y[:, rows of `site`] += scaling·B·A·x at layer `layer`. `site` is q, k, v,
// o, gate, up, down, or Site::qkv for GPT-2's whole fused c_attn.
struct PeftLoraModule {
  int layer = 0;
  Site site = Site::q;
  int64_t rank = 0, in = 0, out = 0;
  double alpha = 0.0;          // this module's lora_alpha (alpha_pattern applied)
  float scaling = 0.0f;        // alpha / rank (or alpha / sqrt(rank) with use_rslora)
  std::vector<float> A, B;     // (rank, in), (out, rank)
};

struct PeftAdapter {
  PeftType type = PeftType::lora;
  // LoRA: the config's r, lora_alpha, lora_dropout, use_rslora, and every module.
  int64_t r = 0;
  double lora_alpha = 0.0;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  std::vector<PeftLoraModule> lora;
  // Prompt and prefix tuning: P and the embeddings tensor (see the layout above).
  int64_t num_virtual_tokens = 0;
  std::vector<float> embeddings;
};

// True when `dir` holds adapter_config.json.
bool is_peft_dir(const std::filesystem::path& dir);

// Reads dir/adapter_config.json and dir/adapter_model.safetensors for a model of config
// `cfg` (see the checks above). LoRA modules come in layer order, then site order.
PeftAdapter read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& cfg);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (F32) for a model of
// config `cfg`; `base_model` becomes base_model_name_or_path. LoRA modules must all be
// whole linears of the family (on GPT-2, Site::qkv rather than a q/k/v slice); modules whose
// rank or alpha differ from the config's r / lora_alpha are written to rank_pattern /
// alpha_pattern under their full module path. Returns the bytes written.
int64_t write_peft_adapter(const std::filesystem::path& dir, const ModelConfig& cfg, const PeftAdapter& a,
                           const std::string& base_model);

}  // namespace tb
