// Loading and saving models as Hugging Face checkpoints: config.json + model.safetensors
// (or a sharded set). Tensor names are Hugging Face's; GPT-2's Conv1D weights are (in, out)
// on disk and (out, in) in memory. Missing, unexpected and mis-shaped tensors, and bad
// config fields, are tb::ModelError naming the file and the tensor or field.
#pragma once

#include <filesystem>
#include <memory>

#include "harness/core/dtype.h"
#include "harness/core/model.h"

namespace tb {

// `path`: a checkpoint directory, or a model.safetensors file with config.json beside it.
std::unique_ptr<Model> load_model(const std::filesystem::path& path);

// Writes dir/config.json and dir/model.safetensors (atomically) with weights as `dtype`.
void save_model(const Model& model, const std::filesystem::path& dir, DType dtype = DType::F32);

// True for GPT-2 weights stored transposed on disk (Conv1D).
bool is_conv1d_weight(const ModelConfig& cfg, const std::string& name);

}  // namespace tb
