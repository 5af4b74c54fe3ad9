// Hugging Face checkpoint <-> Model. Accepts the naming variants real checkpoints carry:
// GPT-2 names with or without the "transformer." prefix, and the non-parameter buffers
// older exports include (GPT-2's attn.bias / attn.masked_bias causal masks, Llama's
// rotary_emb.inv_freq), which are recomputed rather than loaded.
#include "harness/core/model_io.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "harness/core/checkpoint_dir.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/core/safetensors.h"

namespace tb {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_ignorable_buffer(const ModelConfig& cfg, const std::string& name) {
  if (cfg.family == Family::gpt2)
    return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") ||
           (cfg.tied_embeddings && name == "lm_head.weight");
  return ends_with(name, "rotary_emb.inv_freq") ||
         (cfg.tied_embeddings && name == "lm_head.weight");
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void transpose(float* dst /*(cols,rows)*/, const float* src /*(rows,cols)*/, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

}  // namespace

bool is_conv1d_weight(const ModelConfig& cfg, const std::string& name) {
  if (cfg.family != Family::gpt2) return false;
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

// Memory this process can still get: MemAvailable + SwapFree from /proc/meminfo, in bytes;
// -1 when unknown.
static int64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  int64_t total = -1;
  std::string key, unit;
  int64_t kb = 0;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:" || key == "SwapFree:") total = (total < 0 ? 0 : total) + kb * 1024;
  }
  return total;
}

// A model whose fp32 weights alone exceed the memory available is refused before anything is
// allocated, with the figures, instead of failing in an allocation (or being OOM-killed).
static void check_fits_in_memory(const ModelConfig& cfg, const std::string& where) {
  const double need = static_cast<double>(count_params(cfg)) * sizeof(float);
  const int64_t avail = available_memory_bytes();
  if (avail > 0 && need > static_cast<double>(avail)) {
    char buf[256];
    std::snprintf(buf, sizeof buf, ": the model has %lld parameters (%.1f GB of fp32 weights); this machine has %.1f GB of memory available",
                  static_cast<long long>(count_params(cfg)), need / 1e9, static_cast<double>(avail) / 1e9);
    throw ModelError(where + buf);
  }
}

std::unique_ptr<Model> load_model(const std::filesystem::path& path) {
  std::filesystem::path dir = path;
  if (std::filesystem::is_regular_file(path)) dir = path.parent_path();
  if (!std::filesystem::exists(path)) throw InputError(path.string() + ": no such checkpoint");
  const auto ckpt = CheckpointDir::open(path);
  if (!ckpt.has_config()) throw ModelError((dir / kConfigFile).string() + ": missing config.json");
  const auto cfg = ModelConfig::from_hf_json(ckpt.config(), ckpt.config_path().string());
  check_fits_in_memory(cfg, ckpt.config_path().string());
  auto model = std::make_unique<Model>(cfg);
  const std::string where = ckpt.path().string();

  // Map every checkpoint tensor to a model parameter name.
  std::map<std::string, std::string> to_param;
  for (const auto& name : ckpt.tensor_names()) {
    std::string pname = name;
    if (cfg.family == Family::gpt2 && name.rfind("transformer.", 0) != 0 && name != "lm_head.weight")
      pname = "transformer." + name;
    if (model->params().find(pname)) {
      if (to_param.count(pname))
        throw ModelError(where + ": tensor '" + name + "' duplicates '" + to_param[pname] + "'");
      to_param[pname] = name;
    } else if (!is_ignorable_buffer(cfg, name)) {
      throw ModelError(where + ": unexpected tensor '" + name + "' for a " + cfg.model_type +
                       " model of this config");
    }
  }
  std::vector<float> tmp;
  for (auto& p : model->params().params()) {
    auto it = to_param.find(p.name);
    if (it == to_param.end()) throw ModelError(where + ": missing tensor '" + p.name + "'");
    const auto& info = ckpt.at(it->second);
    const bool conv = is_conv1d_weight(cfg, p.name);
    const std::vector<int64_t> want = conv ? std::vector<int64_t>{p.shape[1], p.shape[0]} : p.shape;
    if (info.shape != want)
      throw ModelError(where + ": tensor '" + it->second + "' has shape " + shape_str(info.shape) +
                       ", expected " + shape_str(want));
    if (conv) {
      tmp.resize(static_cast<size_t>(p.numel()));
      ckpt.read_f32(it->second, std::span<float>(tmp));
      transpose(p.data, tmp.data(), want[0], want[1]);
    } else {
      ckpt.read_f32(it->second, std::span<float>(p.data, static_cast<size_t>(p.numel())));
    }
  }
  model->params().touch_all();
  return model;
}

void save_model(const Model& model, const std::filesystem::path& dir, DType dtype) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError(dir.string() + ": cannot create directory: " + ec.message());
  const auto& cfg = model.config();
  std::vector<std::vector<float>> transposed;
  std::vector<TensorToWrite> tensors;
  transposed.reserve(model.params().params().size());
  for (const auto& p : model.params().params()) {
    if (is_conv1d_weight(cfg, p.name)) {
      transposed.emplace_back(static_cast<size_t>(p.numel()));
      transpose(transposed.back().data(), p.data, p.shape[0], p.shape[1]);
      tensors.push_back({p.name, {p.shape[1], p.shape[0]}, transposed.back().data(), dtype});
    } else {
      tensors.push_back({p.name, p.shape, p.data, dtype});
    }
  }
  write_safetensors(dir / kWeightsFile, tensors, {{"format", "pt"}});
  auto j = cfg.to_hf_json();
  j["torch_dtype"] = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  write_file_atomic(dir / kConfigFile, j.dump(2) + "\n");
}

}  // namespace tb
