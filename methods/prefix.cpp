// `prefix` — prefix tuning: the per-layer key/value prefix hook and its reparameterisation
// MLP (see prefix.h), and the method, which trains them (plus the classification head, or
// with --prefix.objective lm only the prefix) on the frozen model, then drops the MLP.
#include "methods/prefix.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>

#include "harness/base/errors.h"
#include "harness/core/ops.h"
#include "methods/saved.h"
#include "methods/trainer.h"

namespace tb::methods {

namespace {

void fill_normal(Param& p, std::mt19937_64& gen) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t i = 0; i < p.numel(); ++i) p.data[i] = d(gen);
}

// torch.nn.Linear's default init: weight and bias uniform in ±1/sqrt(fan_in).
void fill_uniform(Param& p, int64_t fan_in, std::mt19937_64& gen) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> d(-bound, bound);
  for (int64_t i = 0; i < p.numel(); ++i) p.data[i] = d(gen);
}

// Parameter order of the reparameterised store.
enum { kEmbedding = 0, kW1, kB1, kW2, kB2 };

}  // namespace

PrefixHooks::PrefixHooks(const ModelConfig& cfg, int64_t P, bool reparam, int64_t hidden,
                         uint64_t seed)
    : L_(cfg.n_layer), NKV_(cfg.n_kv_head), hs_(cfg.head_dim), C_(cfg.hidden), P_(P),
      H_(hidden), D_(cfg.n_layer * 2 * cfg.n_kv_head * cfg.head_dim), reparam_(reparam && P > 0) {
  TB_CHECK(P >= 0, "prefix of " << P << " positions");
  TB_CHECK(!reparam_ || H_ > 0, "prefix MLP of hidden size " << H_);
  std::mt19937_64 gen(seed);
  if (reparam_) {
    store_.declare("prefix.embedding", {P_, C_}, /*decay=*/false);
    store_.declare("prefix.mlp.0.weight", {H_, C_}, /*decay=*/true);
    store_.declare("prefix.mlp.0.bias", {H_}, /*decay=*/false);
    store_.declare("prefix.mlp.2.weight", {D_, H_}, /*decay=*/true);
    store_.declare("prefix.mlp.2.bias", {D_}, /*decay=*/false);
    store_.allocate();
    fill_normal(store_.at(kEmbedding), gen);
    fill_uniform(store_.at(kW1), C_, gen);
    fill_uniform(store_.at(kB1), C_, gen);
    fill_uniform(store_.at(kW2), H_, gen);
    fill_uniform(store_.at(kB2), H_, gen);
  } else {
    if (P_ > 0) store_.declare("prefix", {P_, D_}, /*decay=*/false);
    store_.allocate();
    if (P_ > 0) fill_normal(store_.at(0), gen);
  }
  store_.set_all_trainable(true);
  store_.allocate_grads();
}

int PrefixHooks::lowest_trainable_layer(int num_layers) const {
  const auto& ps = store_.params();
  const bool trains = std::any_of(ps.begin(), ps.end(), [](const Param& p) { return p.trainable; });
  return P_ > 0 && trains ? 0 : num_layers;
}

void PrefixHooks::run_mlp() {
  const Param& e = store_.at(kEmbedding);
  const Param& w1 = store_.at(kW1);
  const Param& b1 = store_.at(kB1);
  const Param& w2 = store_.at(kW2);
  const Param& b2 = store_.at(kB2);
  pre_.resize(static_cast<size_t>(P_ * H_));
  act_.resize(pre_.size());
  out_.resize(static_cast<size_t>(P_ * D_));
  ops::linear_forward(pre_.data(), e.data, w1.data, b1.data, P_, C_, H_);
  for (size_t i = 0; i < pre_.size(); ++i) act_[i] = std::tanh(pre_[i]);
  ops::linear_forward(out_.data(), act_.data(), w2.data, b2.data, P_, H_, D_);
}

void PrefixHooks::backward_mlp() {
  Param& e = store_.at(kEmbedding);
  Param& w1 = store_.at(kW1);
  Param& b1 = store_.at(kB1);
  Param& w2 = store_.at(kW2);
  Param& b2 = store_.at(kB2);
  std::vector<float> dact(act_.size(), 0.0f), dpre(act_.size());
  ops::linear_backward(dact.data(), w2.grad, b2.grad, dout_.data(), act_.data(), w2.data, P_, H_, D_);
  for (size_t i = 0; i < dact.size(); ++i) dpre[i] = dact[i] * (1.0f - act_[i] * act_[i]);
  ops::linear_backward(e.grad, w1.grad, b1.grad, dpre.data(), e.data, w1.data, P_, C_, H_);
}

void PrefixHooks::init_from_tokens(Model& model, const std::vector<int32_t>& ids) {
  const ModelConfig& mc = model.config();
  TB_CHECK(mc.n_layer == L_ && mc.n_kv_head == NKV_ && mc.head_dim == hs_ && mc.hidden == C_,
           "prefix made for another model shape");
  if (P_ == 0) return;
  if (ids.empty()) throw InputError("prefix: the initialisation text encodes to no tokens");
  std::vector<int32_t> tokens(static_cast<size_t>(P_));
  for (int64_t p = 0; p < P_; ++p) tokens[p] = ids[p % ids.size()];
  // The KV cache of one sequence holds exactly the per-layer keys (after RoPE) and values.
  KVCache cache(mc, /*B=*/1, P_);
  std::vector<float> logits(static_cast<size_t>(mc.vocab_size));
  model.forward_cached(tokens.data(), 1, P_, cache, logits.data(), /*last_only=*/true);
  std::vector<float> target(static_cast<size_t>(P_ * D_));
  for (int64_t l = 0; l < L_; ++l)
    for (int64_t p = 0; p < P_; ++p)
      for (int64_t h = 0; h < NKV_; ++h) {
        float* row = target.data() + p * D_ + l * 2 * NKV_ * hs_;
        std::copy_n(cache.k_at(l) + (h * cache.S + p) * hs_, hs_, row + h * hs_);
        std::copy_n(cache.v_at(l) + (h * cache.S + p) * hs_, hs_, row + (NKV_ + h) * hs_);
      }
  if (reparam_) fit_mlp_output(target);
  else std::copy(target.begin(), target.end(), store_.at(0).data);
}

// With A = tanh(E·W1ᵀ + b1) (P,H) fixed, the output layer W2 (D,H), b2 = 0 that reproduces
// Y (P,D) with the least norm is W2ᵀ = Aᵀ (A·Aᵀ + λI)⁻¹ Y; λ is a tiny ridge so that the
// P×P system stays solvable (exactly when P <= H, in the least-squares sense otherwise).
void PrefixHooks::fit_mlp_output(const std::vector<float>& target) {
  run_mlp();
  const int64_t P = P_, H = H_, D = D_;
  std::vector<double> G(static_cast<size_t>(P * P), 0.0);
  double trace = 0.0;
  for (int64_t i = 0; i < P; ++i)
    for (int64_t j = 0; j < P; ++j) {
      double s = 0.0;
      for (int64_t h = 0; h < H; ++h) s += double(act_[i * H + h]) * act_[j * H + h];
      G[i * P + j] = s;
      if (i == j) trace += s;
    }
  const double ridge = 1e-6 * trace / static_cast<double>(P) + 1e-12;
  for (int64_t i = 0; i < P; ++i) G[i * P + i] += ridge;
  // Cholesky G = R·Rᵀ (R lower, in place), then X = G⁻¹ Y by two triangular solves.
  for (int64_t j = 0; j < P; ++j) {
    double d = G[j * P + j];
    for (int64_t k = 0; k < j; ++k) d -= G[j * P + k] * G[j * P + k];
    TB_CHECK(d > 0, "prefix MLP fit: Gram matrix not positive definite");
    G[j * P + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < P; ++i) {
      double s = G[i * P + j];
      for (int64_t k = 0; k < j; ++k) s -= G[i * P + k] * G[j * P + k];
      G[i * P + j] = s / G[j * P + j];
    }
  }
  std::vector<double> X(target.begin(), target.end());  // (P,D), solved in place
  for (int64_t i = 0; i < P; ++i) {
    for (int64_t k = 0; k < i; ++k)
      for (int64_t d = 0; d < D; ++d) X[i * D + d] -= G[i * P + k] * X[k * D + d];
    for (int64_t d = 0; d < D; ++d) X[i * D + d] /= G[i * P + i];
  }
  for (int64_t i = P - 1; i >= 0; --i) {
    for (int64_t k = i + 1; k < P; ++k)
      for (int64_t d = 0; d < D; ++d) X[i * D + d] -= G[k * P + i] * X[k * D + d];
    for (int64_t d = 0; d < D; ++d) X[i * D + d] /= G[i * P + i];
  }
  Param& w2 = store_.at(kW2);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h) {
      double s = 0.0;
      for (int64_t p = 0; p < P; ++p) s += double(act_[p * H + h]) * X[p * D + d];
      w2.data[d * H + h] = static_cast<float>(s);
    }
  Param& b2 = store_.at(kB2);
  std::fill(b2.data, b2.data + b2.numel(), 0.0f);
  out_.clear();
}

void PrefixHooks::merge() {
  if (!reparam_) return;
  run_mlp();
  const std::vector<float> values = std::move(out_);
  store_ = ParamStore();
  store_.declare("prefix", {P_, D_}, /*decay=*/false);
  store_.allocate();
  std::copy(values.begin(), values.end(), store_.at(0).data);
  store_.set_all_trainable(true);
  store_.allocate_grads();
  reparam_ = false;
  pre_ = {};
  act_ = {};
  out_ = {};
  dout_ = {};
}

void PrefixHooks::check_shape(int layer, int64_t NKV, int64_t hs) const {
  TB_CHECK(layer >= 0 && layer < L_ && NKV == NKV_ && hs == hs_,
           "prefix made for " << L_ << " layers of " << NKV_ << "x" << hs_ << " heads asked for layer "
                              << layer << " of " << NKV << "x" << hs);
}

void PrefixHooks::prefix_forward(int layer, float* pk, float* pv, int64_t NKV, int64_t hs) {
  check_shape(layer, NKV, hs);
  if (reparam_ && (layer == 0 || out_.empty())) run_mlp();
  if (layer == 0) layers_seen_ = 0;  // a new forward: a new backward follows
  const float* src = reparam_ ? out_.data() : store_.at(0).data;
  for (int64_t p = 0; p < P_; ++p) {
    const float* row = src + p * D_ + static_cast<int64_t>(layer) * 2 * NKV * hs;
    for (int64_t h = 0; h < NKV; ++h) {
      std::copy_n(row + h * hs, hs, pk + (h * P_ + p) * hs);
      std::copy_n(row + (NKV + h) * hs, hs, pv + (h * P_ + p) * hs);
    }
  }
}

void PrefixHooks::prefix_backward(int layer, const float* dpk, const float* dpv, int64_t NKV,
                                  int64_t hs) {
  check_shape(layer, NKV, hs);
  float* dst;
  if (reparam_) {
    if (layers_seen_ == 0) dout_.assign(static_cast<size_t>(P_ * D_), 0.0f);
    dst = dout_.data();
  } else {
    dst = store_.at(0).grad;
    if (!dst) return;
  }
  for (int64_t p = 0; p < P_; ++p) {
    float* row = dst + p * D_ + static_cast<int64_t>(layer) * 2 * NKV * hs;
    for (int64_t h = 0; h < NKV; ++h)
      for (int64_t d = 0; d < hs; ++d) {
        row[h * hs + d] += dpk[(h * P_ + p) * hs + d];
        row[(NKV + h) * hs + d] += dpv[(h * P_ + p) * hs + d];
      }
  }
  if (reparam_ && ++layers_seen_ == L_) {
    backward_mlp();
    layers_seen_ = 0;
  }
}

namespace {

class PrefixMethod final : public HookedMethod<PrefixHooks> {
 public:
  void prepare(RunContext& ctx) override {
    const auto cfg = TrainConfig::from(ctx.options);
    const auto& mc = ctx.model.config();
    const int64_t P = ctx.options.integer("tokens");
    check_virtual_positions(P, mc, "--prefix.tokens");
    const bool reparam = ctx.options.flag("reparam");
    const int64_t hidden = ctx.options.integer("hidden");
    if (reparam && hidden < 1)
      throw InputError("--prefix.hidden must be positive, got " + std::to_string(hidden));
    ctx.model.params().set_all_trainable(false);
    ctx.model.params().allocate_grads();
    hooks_ = std::make_unique<PrefixHooks>(mc, P, reparam, hidden, ctx.seed ^ 0x9f1ull);
    const std::string init = ctx.options.str("init");
    if (init == "text") {
      const auto ids = ctx.tokenizer.encode(ctx.options.str("init-text"), SpecialTokens::as_text);
      if (ids.empty()) throw InputError("--prefix.init-text encodes to no tokens");
      hooks_->init_from_tokens(ctx.model, ids);
    } else if (init != "random") {
      throw InputError("--prefix.init must be random or text, got '" + init + "'");
    }
    train(ctx, cfg);
    // What trained (prefix or embedding + MLP) and what is stored and used for inference
    // once the MLP has produced the prefix and been dropped.
    trained_ = count_trainable({&hooks_->store()});
    hooks_->merge();
    ctx.meter.details["prefix_tokens"] = P;
    ctx.meter.details["reparam"] = reparam;
    ctx.meter.details["init"] = init;
    ctx.meter.details["trained_params"] = trained_ + trainer_->head_params();
    ctx.meter.details["stored_params"] = hooks_->stored_params() + trainer_->head_params();
  }

  // Counts what trained, the MLP included (details.stored_params has the stored count).
  int64_t trainable_params() const override { return trained_ + trainer_->head_params(); }

  // save_adaptation stores the prefix tensors after the MLP (PEFT layout (P, L·2·NKV·hs)).

  // PEFT form: the prefix itself (prefix_projection false: the MLP has been run and dropped).
  bool export_peft(const std::filesystem::path& dir) const override {
    PeftAdapter a;
    a.type = PeftType::prefix_tuning;
    a.num_virtual_tokens = hooks_->tokens();
    const Param& prefix = hooks_->store().at(0);
    a.embeddings.assign(prefix.data, prefix.data + prefix.numel());
    write_peft_adapter(dir, config_, a, "");
    if (trainer_->head()) write_head(dir, trainer_->head()->store());
    return true;
  }

 private:
  int64_t trained_ = 0;
};

}  // namespace

MethodInfo prefix_method_info() {
  // Prefix tuning trains best with a large learning rate (PEFT's examples use about 1e-2).
  auto opts = training_option_specs(TrainDefaults{1e-2, 4, 16, 0.0, "head"});
  for (auto& o : opts)
    if (o.name == "lr") o.help += "; prefix tuning wants far more than finetuning (PEFT's examples: about 1e-2)";
  opts.insert(opts.begin(),
              {{"tokens", "16", "number P of key/value prefix positions in every layer"},
               {"reparam", "true", "train the prefix through an MLP (embedding (P,C) -> Linear(C,hidden) -> tanh -> "
                                   "Linear(hidden, L*2*NKV*hs)) that is run once and dropped after training"},
               {"hidden", "128", "hidden size of the reparameterisation MLP"},
               {"init", "random", "initialisation of the prefix: random (PEFT: embedding N(0,1), torch-default linears) | "
                                  "text (the keys and values the model computes for --prefix.init-text, Li & Liang)"},
               {"init-text", "Classify the following text:", "text whose keys and values initialise the prefix with --prefix.init text"}});
  return {"prefix",
          "prefix tuning: trainable key/value prefixes in every layer of the frozen model, optionally through an MLP",
          opts,
          [] { return std::make_unique<PrefixMethod>(); },
          {tasks::OutputType::classify, tasks::OutputType::multiple_choice},
          {},
          true};
}

}  // namespace tb::methods
