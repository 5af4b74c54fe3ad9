// LoRA as a delta hook (see lora.h), and the `lora` method that trains it with the shared
// ClassificationTrainer and merges it into the base weights for inference.
#include "methods/lora.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "harness/base/errors.h"
#include "harness/core/ops.h"
#include "methods/saved.h"
#include "methods/trainer.h"

namespace tb::methods {

namespace {

// The order sites are declared in, whatever order the user wrote them in.
const std::vector<Site> kSiteOrder = {Site::q, Site::k, Site::v, Site::o, Site::gate, Site::up, Site::down};

}  // namespace

// One LoRA pair at one (layer, site): y[:, offset:offset+out] += s·B·A·x.
struct LoraHooks::Module {
  int layer = 0;
  Site site = Site::q;       // the site the user chose (q, k, v, o, gate, up, down)
  Site hook_site = Site::q;  // where the model calls the delta (qkv for a slice of a fused linear)
  std::string base;          // the checkpoint name of the base linear (site_module), for names and messages
  int64_t in = 0, out = 0, offset = 0, total_out = 0;
  int64_t rank = 0;          // r of this pair
  float scale = 0.0f;        // alpha / r of this pair
  Param* A = nullptr;        // (r, in)
  Param* B = nullptr;        // (out, r)
  // Saved by a training forward for backward.
  std::vector<float> u;      // (N, r) = A·dropout(x)
  std::vector<uint8_t> mask; // (N, in) dropout keep-mask, empty without dropout
  int64_t saved_n = -1;
};

std::vector<std::string> lora_all_linear_sites(const ModelConfig& cfg) {
  std::vector<std::string> names;
  for (Site s : kSiteOrder)
    if (has_site(cfg, s)) names.push_back(site_name(s));
  return names;
}

LoraHooks::LoraHooks(const ModelConfig& cfg, const LoraConfig& lc)
    : rank_(lc.rank), scale_(0.0f), dropout_(static_cast<float>(lc.dropout)),
      rng_(lc.seed ^ 0x9E3779B97F4A7C15ull) {
  if (lc.rank < 1) throw InputError("lora.rank: must be >= 1, got " + std::to_string(lc.rank));
  if (!(lc.alpha > 0.0) || !std::isfinite(lc.alpha))
    throw InputError("lora.alpha: must be a positive number, got " + std::to_string(lc.alpha));
  if (!(lc.dropout >= 0.0 && lc.dropout < 1.0))
    throw InputError("lora.dropout: must be in [0, 1), got " + std::to_string(lc.dropout));
  scale_ = static_cast<float>(lc.alpha / static_cast<double>(lc.rank));
  const int L = static_cast<int>(cfg.n_layer);

  std::set<Site> wanted;
  if (lc.sites.empty()) throw InputError("lora.sites: empty (known: q,k,v,o,gate,up,down, qkv, all-linear)");
  for (const auto& s : lc.sites) {
    if (s == "all-linear") {
      for (Site x : kSiteOrder)
        if (has_site(cfg, x)) wanted.insert(x);
    } else {
      for (Site x : sites_from_name(cfg, s, "lora.sites")) wanted.insert(x);
    }
  }
  std::vector<int> layers = lc.layers;
  if (layers.empty())
    for (int l = 0; l < L; ++l) layers.push_back(l);
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  for (int l : layers)
    if (l < 0 || l >= L)
      throw InputError("lora.layers: layer " + std::to_string(l) + " out of range [0, " + std::to_string(L) + ")");

  for (int l : layers) {
    for (Site site : kSiteOrder) {
      if (!wanted.count(site)) continue;
      const SiteSlice slice = site_slice(cfg, site);
      Module m;
      m.layer = l;
      m.site = site;
      m.hook_site = slice.hook_site;
      m.base = site_module(cfg, l, site);
      m.in = slice.in_features;
      m.out = slice.rows;
      m.offset = slice.row_offset;
      m.total_out = slice.total_rows;
      m.rank = rank_;
      m.scale = scale_;
      modules_.push_back(std::move(m));
    }
  }
  if (modules_.empty()) throw InputError("lora: no site selected (lora.sites, lora.layers)");
  declare_and_index(L);
  std::mt19937_64 gen(lc.seed);
  for (Module& m : modules_) {
    // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in.
    const float bound = 1.0f / std::sqrt(static_cast<float>(m.in));
    std::uniform_real_distribution<float> d(-bound, bound);
    for (int64_t j = 0; j < m.A->numel(); ++j) m.A->data[j] = d(gen);
  }
}

void LoraHooks::declare_and_index(int num_layers) {
  // Declare A and B for every module, then bind the pointers (declare may reallocate).
  std::vector<std::pair<size_t, size_t>> idx;
  for (const auto& m : modules_) {
    // A slice of a fused linear adds its site's name: "<fused linear>.q.lora_A.weight".
    const std::string base = m.base + (m.hook_site != m.site ? std::string(".") + site_name(m.site) : "");
    const size_t a = store_.declare(base + ".lora_A.weight", {m.rank, m.in}, true);
    const size_t b = store_.declare(base + ".lora_B.weight", {m.out, m.rank}, true);
    idx.emplace_back(a, b);
  }
  store_.allocate();
  for (size_t i = 0; i < modules_.size(); ++i) {
    modules_[i].A = &store_.at(idx[i].first);
    modules_[i].B = &store_.at(idx[i].second);
  }
  store_.set_all_trainable(true);
  store_.allocate_grads();
  index_.assign(static_cast<size_t>(num_layers) * kNumSites, {});
  for (size_t i = 0; i < modules_.size(); ++i)
    index_[modules_[i].layer * kNumSites + static_cast<int>(modules_[i].hook_site)].push_back(static_cast<int>(i));
}

LoraHooks::LoraHooks(const ModelConfig& cfg, const std::vector<LoraPair>& pairs, double dropout, uint64_t seed)
    : rank_(0), scale_(0.0f), dropout_(static_cast<float>(dropout)), rng_(seed ^ 0x9E3779B97F4A7C15ull) {
  if (!(dropout >= 0.0 && dropout < 1.0))
    throw InputError("lora.dropout: must be in [0, 1), got " + std::to_string(dropout));
  if (pairs.empty()) throw InputError("lora: no LoRA pair given");
  for (const auto& p : pairs) {
    const SiteSlice slice = site_slice(cfg, p.site);
    TB_CHECK(p.layer >= 0 && p.layer < cfg.n_layer && p.rank > 0 &&
                 p.A.size() == static_cast<size_t>(p.rank * slice.in_features) &&
                 p.B.size() == static_cast<size_t>(slice.rows * p.rank),
             "LoRA pair for layer " << p.layer << " site " << site_name(p.site) << " does not fit the model");
    Module m;
    m.layer = p.layer;
    m.site = p.site;
    m.hook_site = slice.hook_site;
    m.base = site_module(cfg, p.layer, p.site);
    m.in = slice.in_features;
    m.out = slice.rows;
    m.offset = slice.row_offset;
    m.total_out = slice.total_rows;
    m.rank = p.rank;
    m.scale = p.scale;
    modules_.push_back(std::move(m));
  }
  rank_ = modules_.front().rank;
  scale_ = modules_.front().scale;
  declare_and_index(static_cast<int>(cfg.n_layer));
  for (size_t i = 0; i < pairs.size(); ++i) {
    std::copy(pairs[i].A.begin(), pairs[i].A.end(), modules_[i].A->data);
    std::copy(pairs[i].B.begin(), pairs[i].B.end(), modules_[i].B->data);
  }
}

std::vector<LoraPair> LoraHooks::pairs() const {
  std::vector<LoraPair> out;
  for (const Module& m : modules_) {
    LoraPair p;
    p.layer = m.layer;
    p.site = m.site;
    p.rank = m.rank;
    p.scale = m.scale;
    p.A.assign(m.A->data, m.A->data + m.A->numel());
    p.B.assign(m.B->data, m.B->data + m.B->numel());
    out.push_back(std::move(p));
  }
  return out;
}

LoraHooks::~LoraHooks() = default;

int64_t LoraHooks::num_sites() const { return static_cast<int64_t>(modules_.size()); }

int LoraHooks::lowest_trainable_layer(int num_layers) const {
  int lowest = num_layers;
  for (const auto& m : modules_) lowest = std::min(lowest, m.layer);
  return lowest;
}

const std::vector<int>& LoraHooks::modules_at(int layer, Site site) const {
  static const std::vector<int> none;
  const size_t i = static_cast<size_t>(layer) * kNumSites + static_cast<size_t>(site);
  if (layer < 0 || i >= index_.size()) return none;
  return index_[i];
}

bool LoraHooks::has_delta(int layer, Site site) const {
  return !merged_ && !modules_at(layer, site).empty();
}

LoraHooks::Module& LoraHooks::checked(int index, int64_t IC, int64_t OC) {
  Module& m = modules_[index];
  TB_CHECK(IC == m.in && OC == m.total_out,
           "LoRA " << m.base << " (" << site_name(m.site) << ") built for (" << m.total_out << "," << m.in
                   << ") called with (" << OC << "," << IC << ")");
  return m;
}

void LoraHooks::dropout_input(const Module& m, const float* x, int64_t N) {
  const float keep = 1.0f / (1.0f - dropout_);
  xd_.resize(static_cast<size_t>(N * m.in));
  for (int64_t i = 0; i < N * m.in; ++i) xd_[i] = m.mask[i] ? x[i] * keep : 0.0f;
}

void LoraHooks::delta_forward(int layer, Site site, float* y, const float* x, int64_t N, int64_t IC,
                              int64_t OC, bool training) {
  if (merged_) return;
  for (int idx : modules_at(layer, site)) {
    Module& m = checked(idx, IC, OC);
    const float* xin = x;
    const bool drop = training && dropout_ > 0.0f;
    if (drop) {
      // 24-bit uniform draws against p: cheap and exact enough for a Bernoulli mask.
      const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(dropout_) * (1ull << 24));
      m.mask.resize(static_cast<size_t>(N * IC));
      for (auto& b : m.mask) b = (rng_() >> 40) >= threshold ? 1 : 0;
      dropout_input(m, x, N);
      xin = xd_.data();
    } else {
      m.mask.clear();
    }
    float* u;
    if (training) {
      m.u.resize(static_cast<size_t>(N * m.rank));
      m.saved_n = N;
      u = m.u.data();
    } else {
      u_.resize(static_cast<size_t>(N * m.rank));
      u = u_.data();
    }
    d_.resize(static_cast<size_t>(N * m.out));
    ops::linear_forward(u, xin, m.A->data, nullptr, N, IC, m.rank);
    ops::linear_forward(d_.data(), u, m.B->data, nullptr, N, m.rank, m.out);
    if (training) {
      int64_t bytes = 0;
      for (const auto& x : modules_) bytes += static_cast<int64_t>(x.u.size() * sizeof(float) + x.mask.size());
      peak_saved_ = std::max(peak_saved_, bytes);
    }
    for (int64_t n = 0; n < N; ++n) {
      float* yr = y + n * OC + m.offset;
      const float* dr = d_.data() + n * m.out;
      for (int64_t j = 0; j < m.out; ++j) yr[j] += m.scale * dr[j];
    }
  }
}

void LoraHooks::delta_backward(int layer, Site site, float* dx, const float* dy, const float* x,
                               int64_t N, int64_t IC, int64_t OC) {
  if (merged_) return;
  for (int idx : modules_at(layer, site)) {
    Module& m = checked(idx, IC, OC);
    TB_CHECK(m.saved_n == N, "LoRA " << m.base << ": backward without a matching training forward");
    // g = s·dy[:, slice]; then dB += gᵀ·u, du = g·B, dA += duᵀ·xd, dxd = du·A.
    g_.resize(static_cast<size_t>(N * m.out));
    for (int64_t n = 0; n < N; ++n) {
      const float* dr = dy + n * OC + m.offset;
      float* gr = g_.data() + n * m.out;
      for (int64_t j = 0; j < m.out; ++j) gr[j] = m.scale * dr[j];
    }
    du_.assign(static_cast<size_t>(N * m.rank), 0.0f);
    ops::linear_backward(du_.data(), m.B->grad, nullptr, g_.data(), m.u.data(), m.B->data, N, m.rank, m.out);
    const bool drop = !m.mask.empty();
    const float* xin = x;
    if (drop) {
      dropout_input(m, x, N);
      xin = xd_.data();
    }
    float* dxin = dx;
    if (drop && dx) {
      dxd_.assign(static_cast<size_t>(N * IC), 0.0f);
      dxin = dxd_.data();
    }
    ops::linear_backward(dxin, m.A->grad, nullptr, du_.data(), xin, m.A->data, N, IC, m.rank);
    if (drop && dx) {
      const float keep = 1.0f / (1.0f - dropout_);
      for (int64_t i = 0; i < N * IC; ++i)
        if (m.mask[i]) dx[i] += dxd_[i] * keep;
    }
  }
}

void LoraHooks::merge_into(Model& model) {
  TB_CHECK(!merged_, "LoRA already merged");
  for (const Module& m : modules_) {
    Param& W = *model.site(m.layer, m.site).weight;
    TB_CHECK(W.shape == (std::vector<int64_t>{m.total_out, m.in}),
             "LoRA merge: " << m.base << " does not have the shape the LoRA was built for");
    const float* A = m.A->data;
    const float* B = m.B->data;
    std::vector<double> row(static_cast<size_t>(m.in));
    for (int64_t o = 0; o < m.out; ++o) {
      std::fill(row.begin(), row.end(), 0.0);
      for (int64_t k = 0; k < m.rank; ++k) {
        const double b = B[o * m.rank + k];
        if (b == 0.0) continue;
        const float* ar = A + k * m.in;
        for (int64_t i = 0; i < m.in; ++i) row[i] += b * ar[i];
      }
      float* wr = W.data + (m.offset + o) * m.in;
      for (int64_t i = 0; i < m.in; ++i) wr[i] = static_cast<float>(wr[i] + m.scale * row[i]);
    }
    W.touch();
  }
  merged_ = true;
}


// ---- the method ------------------------------------------------------------------------

namespace {

class LoraMethod final : public HookedMethod<LoraHooks> {
 public:
  void prepare(RunContext& ctx) override {
    const auto cfg = TrainConfig::from(ctx.options);
    const auto& o = ctx.options;
    const int64_t L = ctx.model.config().n_layer;
    LoraConfig lc;
    lc.rank = o.integer("rank");
    lc.alpha = o.number("alpha");
    lc.dropout = o.number("dropout");
    lc.sites = o.str_list("sites");
    if (o.str("layers") != "all") {
      for (int64_t l : o.int_list("layers")) {
        if (l < 0 || l >= L)
          throw InputError("--lora.layers: layer " + std::to_string(l) + " out of range [0, " + std::to_string(L) + ")");
        lc.layers.push_back(static_cast<int>(l));
      }
    }
    lc.seed = ctx.seed ^ 0x10a4ull;
    const bool merge = o.flag("merge");
    ctx.model.params().set_all_trainable(false);
    ctx.model.params().allocate_grads();
    hooks_ = std::make_unique<LoraHooks>(ctx.model.config(), lc);
    lc_ = lc;
    train(ctx, cfg);
    ctx.meter.memory["activations"] += hooks_->peak_saved_bytes();
    ctx.meter.details["lora_sites"] = hooks_->num_sites();
    ctx.meter.details["lora_scale"] = hooks_->scale();
    // A diverged run keeps its base weights clean: nothing non-finite is merged.
    if (merge && ctx.meter.status == "ok") {
      hooks_->merge_into(ctx.model);
      trainer_->set_hooks(nullptr);
    }
    ctx.meter.details["merged"] = hooks_->merged();
  }

  // Merged, the base weights are the adapted model; unmerged, the hooks are.
  Hooks* lm_hooks() override { return hooks_ && !hooks_->merged() ? hooks_.get() : nullptr; }
  bool changes_base() const override { return hooks_ && hooks_->merged(); }

  // PEFT form (saved.h: peft_from_lora; GPT-2's q/k/v slices as one block-structured pair).
  bool export_peft(const std::filesystem::path& dir) const override {
    write_peft_adapter(dir, config_, peft_from_lora(hooks_->pairs(), config_, lc_.rank, lc_.alpha, lc_.dropout), "");
    if (trainer_->head()) write_head(dir, trainer_->head()->store());
    return true;
  }

 private:
  LoraConfig lc_;
};

}  // namespace

MethodInfo lora_method_info() {
  // PEFT's LoRA recipes use 1e-4 to 1e-3 on large models; a few epochs on a small model
  // need more, since B starts at zero. On sentiment-yelp with a 6-layer C=256 checkpoint
  // (seed 0) test accuracy was 0.63 / 0.64 / 0.67 at 2e-3 / 5e-3 / 1e-2, but forgetting
  // (held-out LM loss increase) 0.01 / 0.22 / 3.2: 5e-3 learns without wrecking the model.
  auto opts = training_option_specs(TrainDefaults{5e-3, 4, 16, 0.0, "head"});
  opts.insert(opts.begin(),
              {{"rank", "8", "rank r of the update B·A (r·(in + out) trainable values per site)"},
               {"alpha", "16", "scaling numerator: the update is (alpha / r)·B·A"},
               {"dropout", "0.05", "dropout on the LoRA input during training"},
               {"sites", "q,v", "linear sites: q,k,v,o,gate,up,down; qkv = q,k,v on a fused family (GPT-2, also by its module name); all-linear = every linear of the family"},
               {"layers", "all", "blocks that get LoRA: all, or a list such as 2,3 (backward stops at the lowest)"},
               {"merge", "true", "after training merge W += (alpha / r)·B·A into the base weights and predict with the plain model"}});
  return {"lora",
          "LoRA: low-rank updates (alpha/r)·B·A on chosen linear sites of the frozen model, B zero-initialised; merged for inference",
          opts,
          [] { return std::make_unique<LoraMethod>(); },
          {tasks::OutputType::classify, tasks::OutputType::multiple_choice},
          {},
          true};
}

}  // namespace tb::methods
