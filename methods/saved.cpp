// Saved adaptations (see saved.h): PEFT export of LoRA pairs, reading a saved directory back
// into hooks, head and base tensors, and the `eval` method that predicts with them.
#include "methods/saved.h"

#include <algorithm>
#include <map>
#include <set>

#include "harness/base/errors.h"
#include "harness/base/strict_json.h"
#include "harness/core/safetensors.h"
#include "methods/adapter.h"
#include "methods/prefix.h"
#include "methods/softprompt.h"
#include "methods/trainer.h"

namespace tb::methods {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- export ------------------------------------------------------------------------------

PeftAdapter peft_from_lora(const std::vector<LoraPair>& pairs, const ModelConfig& cfg, int64_t r, double alpha,
                           double dropout) {
  PeftAdapter a;
  a.type = PeftType::lora;
  a.lora_dropout = dropout;
  // Group the pairs by the linear they update: (layer, hook site).
  std::map<std::pair<int, int>, std::vector<const LoraPair*>> groups;
  for (const auto& p : pairs)
    groups[{p.layer, static_cast<int>(site_slice(cfg, p.site).hook_site)}].push_back(&p);
  for (const auto& entry : groups) {
    const int layer = entry.first.first;
    const Site hook = static_cast<Site>(entry.first.second);
    const auto& group = entry.second;
    const SiteSlice whole = site_slice(cfg, hook);
    PeftLoraModule m;
    m.layer = layer;
    m.site = hook;
    m.in = whole.in_features;
    m.out = whole.rows;
    if (group.size() == 1 && group[0]->site == hook) {
      m.rank = group[0]->rank;
      m.alpha = alpha * static_cast<double>(m.rank) / static_cast<double>(r);
      m.scaling = group[0]->scale;
      m.A = group[0]->A;
      m.B = group[0]->B;
    } else {
      // Slices of one fused linear: stack the A's, block-structured B.
      const int64_t k = static_cast<int64_t>(group.size());
      for (const LoraPair* p : group)
        TB_CHECK(p->rank == r && p->site != hook, "PEFT export: a fused linear's LoRA slices must share rank r");
      m.rank = k * r;
      m.alpha = static_cast<double>(k) * alpha;
      m.scaling = group[0]->scale;
      m.A.reserve(static_cast<size_t>(m.rank * m.in));
      m.B.assign(static_cast<size_t>(m.out * m.rank), 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const LoraPair& p = *group[static_cast<size_t>(j)];
        const SiteSlice sl = site_slice(cfg, p.site);
        m.A.insert(m.A.end(), p.A.begin(), p.A.end());
        for (int64_t o = 0; o < sl.rows; ++o)
          for (int64_t c = 0; c < r; ++c)
            m.B[static_cast<size_t>((sl.row_offset + o) * m.rank + j * r + c)] = p.B[static_cast<size_t>(o * r + c)];
      }
    }
    a.lora.push_back(std::move(m));
  }
  // The config's r and lora_alpha: the most common rank, the larger on a tie (a fused-only
  // GPT-2 LoRA has all its modules at k·r); the others go to rank_pattern / alpha_pattern.
  std::map<int64_t, int> count;
  for (const auto& m : a.lora) ++count[m.rank];
  int64_t common = r;
  int best = 0;
  for (const auto& [rank, n] : count)
    if (n >= best) {
      best = n;
      common = rank;
    }
  a.r = common;
  a.lora_alpha = alpha * static_cast<double>(common) / static_cast<double>(r);
  return a;
}

void write_head(const fs::path& dir, const ParamStore& head) {
  std::vector<TensorToWrite> tensors;
  for (const auto& p : head.params()) tensors.push_back({p.name, p.shape, p.data, DType::F32});
  write_safetensors(dir / kHeadFile, tensors, {{"format", "tunebench"}});
}

// ---- load --------------------------------------------------------------------------------

namespace {

[[noreturn]] void bad(const fs::path& file, const std::string& key, const std::string& msg) {
  throw InputError(file.string() + ": " + key + ": " + msg);
}

std::string method_of(PeftType t) {
  switch (t) {
    case PeftType::lora: return "lora";
    case PeftType::prefix_tuning: return "prefix";
    default: return "softprompt";
  }
}

// The saved options over the method's defaults; a name the method does not declare is an
// InputError naming the file and key.
std::map<std::string, std::string> saved_options(const json& info, const std::string& method, const fs::path& file) {
  const MethodInfo* m = nullptr;
  for (const auto& x : registry())
    if (x.name == method) m = &x;
  if (!m) bad(file, "method", "'" + printable(method) + "' is no tunebench method");
  std::map<std::string, std::string> out;
  for (const auto& o : m->options) out[o.name] = o.default_value;
  if (!info.contains("options")) return out;
  if (!info["options"].is_object()) bad(file, "options", "must be an object of option -> string");
  for (auto it = info["options"].begin(); it != info["options"].end(); ++it) {
    if (!out.count(it.key())) bad(file, "options." + printable(it.key()), "not an option of method " + method);
    if (!it.value().is_string()) bad(file, "options." + printable(it.key()), "must be a string");
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

}  // namespace

SavedAdaptation load_adaptation(const fs::path& dir, const ModelConfig& cfg, const ParamStore* base_params,
                                const std::string& model_sha256) {
  SavedAdaptation s;
  s.dir = dir;
  const fs::path info_file = dir / kAdaptationInfoFile;
  const bool has_info = fs::is_regular_file(info_file);
  if (!fs::is_directory(dir)) throw InputError(dir.string() + ": no such adaptation directory");
  if (!has_info && !is_peft_dir(dir))
    throw InputError(dir.string() + ": neither a PEFT adapter (adapter_config.json) nor a saved tunebench adaptation (" +
                     kAdaptationInfoFile + ")");
  if (has_info) {
    s.info = read_json_file(info_file);
    const json& j = s.info;
    if (!j.is_object()) bad(info_file, "(top level)", "must be a JSON object");
    for (const char* k : {"method", "format"})
      if (!j.contains(k) || !j[k].is_string()) bad(info_file, k, "missing or not a string");
    s.method = j["method"].get<std::string>();
    s.format = j["format"].get<std::string>();
    if (s.format != "peft" && s.format != "tunebench") bad(info_file, "format", "'" + printable(s.format) + "' (peft or tunebench)");
    if (j.contains("base_model")) {
      const json& m = j["base_model"];
      if (!m.is_object()) bad(info_file, "base_model", "must be an object");
      if (m.contains("config") && m["config"] != cfg.to_hf_json())
        bad(info_file, "base_model.config", "the adaptation was trained on a different base model (its config.json differs from --model's)");
      if (!model_sha256.empty() && m.contains("sha256") && m["sha256"] != model_sha256)
        bad(info_file, "base_model.sha256", "the adaptation was trained on base model " + m["sha256"].dump() +
                                           ", not on --model (sha256 " + model_sha256 + ")");
    }
    s.options = saved_options(j, s.method, info_file);
  } else {
    s.format = "peft";
  }

  if (s.format == "peft") {
    PeftAdapter a = read_peft_adapter(dir, cfg);
    const std::string kind = method_of(a.type);
    if (has_info && s.method != kind)
      bad(info_file, "method", "'" + s.method + "' but adapter_config.json's peft_type is " + peft_type_name(a.type));
    s.method = kind;
    if (a.type == PeftType::lora) {
      std::vector<LoraPair> pairs;
      for (auto& m : a.lora) {
        LoraPair p;
        p.layer = m.layer;
        p.site = m.site;
        p.rank = m.rank;
        p.scale = m.scaling;
        p.A = std::move(m.A);
        p.B = std::move(m.B);
        pairs.push_back(std::move(p));
      }
      auto hooks = std::make_unique<LoraHooks>(cfg, pairs, a.lora_dropout, 0);
      s.lora = hooks.get();
      s.hooks = std::move(hooks);
    } else if (a.type == PeftType::prefix_tuning) {
      auto hooks = std::make_unique<PrefixHooks>(cfg, a.num_virtual_tokens, false, 0, 0);
      std::copy(a.embeddings.begin(), a.embeddings.end(), hooks->store().at(0).data);
      s.hooks = std::move(hooks);
    } else {
      auto hooks = std::make_unique<SoftPromptHooks>(a.num_virtual_tokens, cfg.hidden);
      std::copy(a.embeddings.begin(), a.embeddings.end(), hooks->prompt());
      s.hooks = std::move(hooks);
    }
    if (has_info && s.info.contains("head") && !s.info["head"].is_null()) {
      if (!s.info["head"].is_string() || s.info["head"] != kHeadFile) bad(info_file, "head", std::string("must be \"") + kHeadFile + "\" or null");
      s.values_file = dir / kHeadFile;
      const auto st = SafetensorsFile::open(s.values_file);
      for (const auto& t : st.tensors()) {
        if (t.name != "head.weight" && t.name != "head.bias") bad(s.values_file, printable(t.name), "not a head tensor (head.weight, head.bias)");
        s.head_tensors.push_back(t.name);
      }
    }
    return s;
  }

  // tunebench format: adaptation.safetensors with the method's own tensor names.
  if (s.method != "adapter" && s.method != "head" && s.method != "full")
    bad(info_file, "method", "'" + s.method + "' keeps no weights tunebench can apply (adapter, head, full; lora, prefix and softprompt are saved as PEFT)");
  s.values_file = dir / kTunebenchAdaptationFile;
  if (!fs::is_regular_file(s.values_file)) throw InputError(s.values_file.string() + ": no such file");
  ParamStore* hook_store = nullptr;
  if (s.method == "adapter") {
    const Options o(s.method, s.options);
    AdapterConfig ac;
    ac.kind = parse_adapter_kind(o.str("kind"));
    ac.size = o.integer("size");
    ac.act = parse_adapter_act(o.str("act"));
    auto hooks = std::make_unique<AdapterHooks>(cfg, ac);
    hook_store = &hooks->store();
    s.hooks = std::move(hooks);
  }
  const auto st = SafetensorsFile::open(s.values_file);
  std::set<std::string> loaded;
  for (const auto& t : st.tensors()) {
    const std::string key = printable(t.name);
    if (t.name.rfind("head.", 0) == 0) {
      if (t.name != "head.weight" && t.name != "head.bias") bad(s.values_file, key, "not a head tensor (head.weight, head.bias)");
      s.head_tensors.push_back(t.name);
      continue;
    }
    if (Param* p = hook_store ? hook_store->find(t.name) : nullptr) {
      if (t.shape != p->shape) bad(s.values_file, key, "shape does not fit this base model and the saved options");
      st.read_f32(t, std::span<float>(p->data, static_cast<size_t>(p->numel())));
      loaded.insert(t.name);
      continue;
    }
    if (base_params) {
      const Param* base = base_params->find(t.name);
      if (!base) bad(s.values_file, key, "neither a tensor of method " + s.method + " nor of the base model");
      if (t.shape != base->shape) bad(s.values_file, key, "shape does not fit the base model's tensor");
    }
    s.base_tensors.push_back(t.name);
  }
  if (hook_store)
    for (const auto& p : hook_store->params())
      if (!loaded.count(p.name)) bad(s.values_file, p.name, "missing");
  return s;
}

void apply_base_tensors(const SavedAdaptation& saved, Model& model) {
  if (saved.base_tensors.empty()) return;
  const auto st = SafetensorsFile::open(saved.values_file);
  for (const auto& name : saved.base_tensors) {
    Param& p = model.params().get(name);
    st.read_f32(st.at(name), std::span<float>(p.data, static_cast<size_t>(p.numel())));
    p.touch();
  }
}

// ---- the eval method ---------------------------------------------------------------------

namespace {

class EvalMethod final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    const fs::path dir = ctx.options.str("adapter");
    if (dir.empty()) throw InputError("--adapter: a saved adaptation directory is required");
    saved_ = load_adaptation(dir, ctx.model.config(), &ctx.model.params(), ctx.model_hash);
    TrainConfig cfg;
    if (!saved_.options.empty()) {
      cfg = TrainConfig::from(Options(saved_.method, saved_.options));
    } else {
      cfg.objective = "lm";  // a bare PEFT adapter has no classification head
    }
    const fs::path info_file = saved_.dir / kAdaptationInfoFile;
    if (!saved_.head_tensors.empty() && saved_.info.contains("task") && saved_.info["task"] != ctx.task.name())
      bad(info_file, "task", "the saved head was trained for task " + saved_.info["task"].dump() + ", not " + ctx.task.name());
    if (cfg.objective == "head" && saved_.head_tensors.empty())
      bad(saved_.dir / (saved_.format == "peft" ? kHeadFile : kTunebenchAdaptationFile), "head.weight",
          "missing (the adaptation was trained with a classification head)");
    ctx.model.params().set_all_trainable(false);
    apply_base_tensors(saved_, ctx.model);
    trainer_ = std::make_unique<ClassificationTrainer>(ctx, cfg, Adaptation{saved_.hooks.get(), {}});
    if (cfg.objective == "head") {
      const auto st = SafetensorsFile::open(saved_.values_file);
      ClassifierHead* head = trainer_->mutable_head();
      for (const auto& name : {std::string("head.weight"), std::string("head.bias")}) {
        Param& p = head->store().get(name);
        const TensorInfo* t = st.find(name);
        if (!t) bad(saved_.values_file, name, "missing");
        if (t->shape != p.shape)
          bad(saved_.values_file, name, "shape does not fit task " + ctx.task.name() + " and this base model");
        st.read_f32(*t, std::span<float>(p.data, static_cast<size_t>(p.numel())));
      }
    }
    // A LoRA that the run merged is merged again (the same arithmetic, so the same weights).
    const auto merge = saved_.options.find("merge");
    if (saved_.lora && merge != saved_.options.end() && Options(saved_.method, saved_.options).flag("merge")) {
      saved_.lora->merge_into(ctx.model);
      trainer_->set_hooks(nullptr);
      merged_ = true;
    }
    ctx.meter.details["adapter"] = saved_.dir.string();
    ctx.meter.details["adapted_method"] = saved_.method;
    ctx.meter.details["format"] = saved_.format;
    ctx.meter.details["objective"] = cfg.objective;
    ctx.meter.details["merged"] = merged_;
  }

  std::vector<Prediction> predict(RunContext&, const std::vector<tasks::Example>& examples) override {
    return trainer_->predict(examples);
  }
  int64_t trainable_params() const override { return 0; }
  int64_t save_adaptation(const fs::path&) const override { return 0; }
  Hooks* lm_hooks() override { return merged_ ? nullptr : saved_.hooks.get(); }
  bool changes_base() const override { return merged_ || !saved_.base_tensors.empty(); }

 private:
  SavedAdaptation saved_;
  std::unique_ptr<ClassificationTrainer> trainer_;
  bool merged_ = false;
};

}  // namespace

MethodInfo eval_method_info() {
  return {"eval",
          "a saved adaptation (PEFT or tunebench format) applied without training",
          {{"adapter", "", "the adaptation directory (--save-adaptations output, or a PEFT adapter)"}},
          [] { return std::make_unique<EvalMethod>(); },
          {tasks::OutputType::classify, tasks::OutputType::multiple_choice},
          {}};
}

}  // namespace tb::methods
