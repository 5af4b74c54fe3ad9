// Sequences, per-token log-probabilities with backward, and the Bradley–Terry reward model
// (see rlhf_policy.h).
#include "methods/rlhf_policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/ops.h"

namespace tb::methods::rlhf {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

// ---- sequences -------------------------------------------------------------------------

int64_t Sequences::num_tokens() const { return std::accumulate(length.begin(), length.end(), int64_t{0}); }

int64_t Sequences::num_cont_tokens() const {
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) n += cont_len(b);
  return n;
}

Sequences Sequences::make(const std::vector<const std::vector<int32_t>*>& prompts,
                          const std::vector<const std::vector<int32_t>*>& conts, int64_t max_positions) {
  TB_CHECK(prompts.size() == conts.size(), "prompts (" << prompts.size() << ") and continuations (" << conts.size() << ") differ in number");
  Sequences s;
  s.B = static_cast<int64_t>(prompts.size());
  for (int64_t b = 0; b < s.B; ++b) {
    const auto p = static_cast<int64_t>(prompts[b]->size()), c = static_cast<int64_t>(conts[b]->size());
    if (p == 0 || c == 0) throw InputError("rlhf: sequence " + std::to_string(b) + " has an empty prompt or continuation");
    if (p + c > max_positions)
      throw InputError("rlhf: prompt of " + std::to_string(p) + " tokens plus continuation of " + std::to_string(c) +
                       " exceeds the context window of " + std::to_string(max_positions));
    s.prompt_len.push_back(static_cast<int32_t>(p));
    s.length.push_back(static_cast<int32_t>(p + c));
    s.T = std::max(s.T, p + c);
    s.Tc = std::max(s.Tc, c);
  }
  s.tokens.assign(static_cast<size_t>(s.B * s.T), 0);
  for (int64_t b = 0; b < s.B; ++b) {
    auto* row = s.tokens.data() + b * s.T;
    std::copy(prompts[b]->begin(), prompts[b]->end(), row);
    std::copy(conts[b]->begin(), conts[b]->end(), row + prompts[b]->size());
  }
  return s;
}

Sequences pair_sequences(const std::vector<PreferencePair>& pairs, size_t first, size_t count, int64_t max_positions) {
  std::vector<const std::vector<int32_t>*> prompts, conts;
  for (int side = 0; side < 2; ++side)
    for (size_t i = first; i < first + count; ++i) {
      prompts.push_back(&pairs[i].prompt_tokens);
      conts.push_back(side == 0 ? &pairs[i].chosen : &pairs[i].rejected);
    }
  return Sequences::make(prompts, conts, max_positions);
}

// ---- model helpers ---------------------------------------------------------------------

Param& lm_head_param(Model& model) { return model.lm_head(); }

std::unique_ptr<Model> copy_model(const Model& m) {
  auto c = std::make_unique<Model>(m.config());
  const auto& src = m.params().params();
  auto& dst = c->params().params();
  TB_CHECK(src.size() == dst.size(), "parameter lists differ");
  for (size_t i = 0; i < src.size(); ++i) std::copy(src[i].data, src[i].data + src[i].numel(), dst[i].data);
  c->params().touch_all();
  c->set_precision(m.precision());
  return c;
}


// ---- token log-probabilities -----------------------------------------------------------

void TokenLogprobs::forward(Model& model, Hooks* hooks, const Sequences& s, bool training) {
  s_ = &s;
  C_ = model.config().hidden;
  V_ = model.config().vocab_size;
  const int64_t B = s.B, Tc = s.Tc, C = C_, V = V_;
  model.forward(s.tokens.data(), B, s.T, hooks, training);
  const float* fh = model.final_hidden();
  const int64_t Tt = model.seq_len(), Pv = model.virtual_tokens();
  hidden_.assign(static_cast<size_t>(B * Tc * C), 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < s.cont_len(b); ++i) {
      const float* src = fh + (b * Tt + Pv + s.prompt_len[b] - 1 + i) * C;
      std::copy(src, src + C, hidden_.data() + (b * Tc + i) * C);
    }
  probs_.resize(static_cast<size_t>(B * Tc * V));
  ops::linear_forward(probs_.data(), hidden_.data(), lm_head_param(model).data, nullptr, B * Tc, C, V);
  model.count_flops(2.0 * static_cast<double>(B * Tc) * static_cast<double>(C) * static_cast<double>(V));
  logp_.assign(static_cast<size_t>(B * Tc), 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < s.cont_len(b); ++i) {
      float* row = probs_.data() + (b * Tc + i) * V;
      const float mx = *std::max_element(row, row + V);
      double sum = 0.0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
      const int32_t y = s.tokens[b * s.T + s.prompt_len[b] + i];
      logp_[b * Tc + i] = static_cast<float>(static_cast<double>(row[y] - mx) - std::log(sum));
      const double inv = 1.0 / sum;
      for (int64_t v = 0; v < V; ++v) row[v] = static_cast<float>(std::exp(static_cast<double>(row[v] - mx)) * inv);
    }
}

void TokenLogprobs::backward(Model& model, Hooks* hooks, const float* dlogp, const float* dhidden) {
  TB_CHECK(s_ != nullptr, "TokenLogprobs::backward without forward");
  const Sequences& s = *s_;
  const int64_t B = s.B, Tc = s.Tc, C = C_, V = V_, N = B * Tc;
  // d logp_y / d logit_v = [v == y] − p_v
  std::vector<float> dlogits(static_cast<size_t>(N * V), 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < s.cont_len(b); ++i) {
      const int64_t n = b * Tc + i;
      const float g = dlogp[n];
      if (g == 0.0f) continue;
      const float* p = probs_.data() + n * V;
      float* d = dlogits.data() + n * V;
      for (int64_t v = 0; v < V; ++v) d[v] = -g * p[v];
      d[s.tokens[b * s.T + s.prompt_len[b] + i]] += g;
    }
  Param& w = lm_head_param(model);
  std::vector<float> dh(static_cast<size_t>(N * C), 0.0f);
  ops::linear_backward(dh.data(), w.grad, nullptr, dlogits.data(), hidden_.data(), w.data, N, C, V);
  model.count_flops(2.0 * static_cast<double>(N) * static_cast<double>(C) * static_cast<double>(V) * (w.grad ? 2 : 1));
  w.grad_fresh = false;  // accumulated into the model's own gradient: later writers must add
  if (dhidden)
    for (int64_t k = 0; k < N * C; ++k) dh[k] += dhidden[k];
  const int64_t Tt = model.seq_len(), Pv = model.virtual_tokens();
  std::vector<float> dfinal(static_cast<size_t>(B * Tt * C), 0.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < s.cont_len(b); ++i) {
      const float* src = dh.data() + (b * Tc + i) * C;
      std::copy(src, src + C, dfinal.data() + (b * Tt + Pv + s.prompt_len[b] - 1 + i) * C);
    }
  model.backward(dfinal.data(), hooks);
}

std::vector<double> TokenLogprobs::sums() const {
  const Sequences& s = *s_;
  std::vector<double> out(static_cast<size_t>(s.B), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.cont_len(b); ++i) out[b] += logp_[b * s.Tc + i];
  return out;
}

// ---- training helpers ------------------------------------------------------------------

double bradley_terry(const float* r, int64_t B, float* dr, int64_t& correct) {
  double loss = 0.0;
  correct = 0;
  for (int64_t i = 0; i < B; ++i) {
    const double d = static_cast<double>(r[i]) - r[B + i];
    // −log σ(d) = softplus(−d), written to stay finite for large |d|.
    loss += d > 0 ? std::log1p(std::exp(-d)) : -d + std::log1p(std::exp(d));
    const double sig_neg = 1.0 / (1.0 + std::exp(d));  // σ(−d)
    dr[i] = static_cast<float>(-sig_neg / static_cast<double>(B));
    dr[B + i] = static_cast<float>(sig_neg / static_cast<double>(B));
    correct += d > 0;
  }
  return loss / static_cast<double>(B);
}

// ---- reward model ----------------------------------------------------------------------

RewardModel::RewardModel(Model& base, const RewardConfig& cfg)
    : cfg_(cfg), model_(&base), head_(base.config().hidden, 1, cfg.seed ^ 0x5eedull) {
  if (cfg.train == "full") {
    own_ = copy_model(base);
    own_->params().set_all_trainable(true);
    own_->params().allocate_grads();
    model_ = own_.get();
  } else if (cfg.train == "lora") {
    lora_ = std::make_unique<LoraHooks>(base.config(), cfg.lora);
  } else if (cfg.train != "head") {
    throw InputError("rlhf.rm-train: '" + cfg.train + "' is not head, lora or full");
  }
  if (cfg.epochs < 1) throw InputError("rlhf.rm-epochs: must be >= 1, got " + std::to_string(cfg.epochs));
  if (cfg.batch < 1) throw InputError("rlhf.rm-batch: must be >= 1, got " + std::to_string(cfg.batch));
  if (!(cfg.lr > 0)) throw InputError("rlhf.rm-lr: must be > 0");
}

std::vector<ParamStore*> RewardModel::trainable_stores() {
  std::vector<ParamStore*> s = {&head_.store()};
  if (lora_) s.push_back(&lora_->store());
  if (own_) s.push_back(&own_->params());
  return s;
}

std::vector<const ParamStore*> RewardModel::stores() const {
  std::vector<const ParamStore*> s = {&head_.store()};
  if (lora_) s.push_back(&lora_->store());
  if (own_) s.push_back(&own_->params());
  return s;
}

int64_t RewardModel::trainable_params() const {
  int64_t n = 0;
  for (const auto* s : stores()) n += s->num_trainable();
  return n;
}

int64_t RewardModel::own_weight_bytes() const {
  int64_t n = 0;
  for (const auto* s : stores()) n += s->value_bytes();
  return n;
}

int64_t RewardModel::grad_bytes() const {
  int64_t n = 0;
  for (const auto* s : stores()) n += s->grad_bytes();
  return n;
}

void RewardModel::pooled(const Sequences& s, bool training, std::vector<float>& out) {
  model_->forward(s.tokens.data(), s.B, s.T, lora_.get(), training);
  activation_bytes_ = std::max(activation_bytes_, model_->activation_bytes());
  const int64_t C = model_->config().hidden;
  out.assign(static_cast<size_t>(s.B * C), 0.0f);
  if (cfg_.pool != RewardPool::sum) {
    model_->pool(out.data(), static_cast<int>(model_->config().n_layer),
                 cfg_.pool == RewardPool::mean ? Pool::mean : Pool::last, s.length.data());
    return;
  }
  const float* fh = model_->final_hidden();
  const int64_t Tt = model_->seq_len(), Pv = model_->virtual_tokens();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = s.prompt_len[b]; t < s.length[b]; ++t) {
      const float* row = fh + (b * Tt + Pv + t) * C;
      float* o = out.data() + b * C;
      for (int64_t c = 0; c < C; ++c) o[c] += row[c];
    }
}

void RewardModel::pooled_backward(const Sequences& s, const float* dpooled, std::vector<float>& dhidden) {
  const int64_t C = model_->config().hidden, Tt = model_->seq_len(), Pv = model_->virtual_tokens();
  dhidden.assign(static_cast<size_t>(model_->batch() * Tt * C), 0.0f);
  if (cfg_.pool != RewardPool::sum) {
    model_->pool_backward(dhidden.data(), cfg_.pool == RewardPool::mean ? Pool::mean : Pool::last, s.length.data(),
                          dpooled);
    return;
  }
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = s.prompt_len[b]; t < s.length[b]; ++t)
      std::copy_n(dpooled + b * C, C, dhidden.data() + (b * Tt + Pv + t) * C);
}

std::vector<double> RewardModel::score(const Sequences& s) {
  std::vector<float> h, r(static_cast<size_t>(s.B));
  pooled(s, false, h);
  head_.forward(r.data(), h.data(), s.B);
  return {r.begin(), r.end()};
}

std::vector<float> RewardModel::features(const std::vector<PreferencePair>& pairs) {
  const int64_t C = model_->config().hidden, maxT = model_->config().max_positions;
  std::vector<float> h, chosen, rejected;
  for (size_t i = 0; i < pairs.size(); i += static_cast<size_t>(cfg_.batch)) {
    const size_t n = std::min(pairs.size() - i, static_cast<size_t>(cfg_.batch));
    pooled(pair_sequences(pairs, i, n, maxT), false, h);
    chosen.insert(chosen.end(), h.begin(), h.begin() + static_cast<int64_t>(n) * C);
    rejected.insert(rejected.end(), h.begin() + static_cast<int64_t>(n) * C, h.end());
  }
  chosen.insert(chosen.end(), rejected.begin(), rejected.end());
  return chosen;
}

double RewardModel::accuracy(const std::vector<PreferencePair>& pairs, std::vector<int>* correct_out) {
  if (correct_out) correct_out->clear();
  if (pairs.empty()) return NAN;
  int64_t correct = 0;
  std::vector<float> h;
  for (size_t i = 0; i < pairs.size(); i += static_cast<size_t>(cfg_.batch)) {
    const size_t n = std::min(pairs.size() - i, static_cast<size_t>(cfg_.batch));
    pooled(pair_sequences(pairs, i, n, model_->config().max_positions), false, h);
    std::vector<float> r(2 * n), dr(2 * n);
    head_.forward(r.data(), h.data(), static_cast<int64_t>(2 * n));
    int64_t c = 0;
    bradley_terry(r.data(), static_cast<int64_t>(n), dr.data(), c);
    correct += c;
    if (correct_out)
      for (size_t k = 0; k < n; ++k) correct_out->push_back(r[k] > r[n + k] ? 1 : 0);
  }
  return static_cast<double>(correct) / static_cast<double>(pairs.size());
}

RewardFitStats RewardModel::fit(const std::vector<PreferencePair>& train, const std::vector<PreferencePair>& dev,
                                Meter* meter) {
  if (train.empty()) throw InputError("rlhf: no training preference pairs (every sampled pair was a tie)");
  RewardFitStats st;
  const bool head_only = cfg_.train == "head";
  const int64_t C = model_->config().hidden, maxT = model_->config().max_positions;
  auto stores = trainable_stores();

  // Pairs of one prompt share continuations (all comparisons among its candidates): score
  // each distinct continuation once per step and apply the Bradley–Terry loss to every
  // comparison of the prompt, each prompt weighing the same (InstructGPT's K-choose-2 batch
  // element). With one pair per prompt this is the plain pairwise loss.
  struct Group {
    std::vector<size_t> seqs;                          // into `conts`
    std::vector<std::pair<size_t, size_t>> cmp;        // (better, worse) into `conts`
  };
  std::vector<const PreferencePair*> owner;            // per distinct continuation: its pair
  std::vector<const std::vector<int32_t>*> conts;
  std::vector<Group> groups;
  {
    std::map<std::string, size_t> group_of;
    std::map<std::pair<size_t, std::vector<int32_t>>, size_t> seq_of;
    for (const auto& p : train) {
      const auto [git, fresh] = group_of.emplace(p.id + '\x1f' + p.prompt, groups.size());
      if (fresh) groups.emplace_back();
      const size_t gi = git->second;  // a plain name: clang 14 cannot capture a structured binding
      Group& g = groups[gi];
      auto seq = [&](const std::vector<int32_t>& c) {
        const auto [sit, added] = seq_of.emplace(std::make_pair(gi, c), conts.size());
        if (added) {
          conts.push_back(&c);
          owner.push_back(&p);
          g.seqs.push_back(sit->second);
        }
        return sit->second;
      };
      const size_t a = seq(p.chosen), b = seq(p.rejected);
      g.cmp.emplace_back(a, b);
    }
  }
  auto sequences = [&](const std::vector<size_t>& idx) {
    std::vector<const std::vector<int32_t>*> ps, cs;
    for (size_t k : idx) ps.push_back(&owner[k]->prompt_tokens), cs.push_back(conts[k]);
    return Sequences::make(ps, cs, maxT);
  };

  // A frozen body gives every continuation the same features in every epoch: compute them once.
  std::vector<float> train_feats, dev_feats;
  double train_s = 0.0;  // the training steps' seconds (and the train features')
  if (head_only) {
    const double tf0 = now_seconds();
    const FlopScope flops(*model_, st.flops);
    std::vector<float> h;
    std::vector<size_t> all(conts.size());
    std::iota(all.begin(), all.end(), size_t{0});
    int64_t tok = 0;
    for (size_t i = 0; i < all.size(); i += static_cast<size_t>(cfg_.batch)) {
      const std::vector<size_t> idx(all.begin() + static_cast<int64_t>(i),
                                    all.begin() + static_cast<int64_t>(std::min(all.size(), i + static_cast<size_t>(cfg_.batch))));
      const auto seq = sequences(idx);
      pooled(seq, false, h);
      train_feats.insert(train_feats.end(), h.begin(), h.end());
      tok += seq.num_tokens();
    }
    st.tokens += tok;
    train_s += now_seconds() - tf0;
  }
  if (head_only) dev_feats = features(dev);  // dev evaluation: not training
  auto head_accuracy = [&](const std::vector<float>& feats, size_t n) {
    std::vector<float> r(2 * n);
    head_.forward(r.data(), feats.data(), static_cast<int64_t>(2 * n));
    int64_t c = 0;
    for (size_t i = 0; i < n; ++i) c += r[i] > r[n + i];
    return static_cast<double>(c) / static_cast<double>(n);
  };

  // About 2·batch continuations per step (batch pairs when each prompt has one pair).
  const size_t G = groups.size();
  const double per_group = static_cast<double>(conts.size()) / static_cast<double>(G);
  const auto groups_per_step = static_cast<size_t>(std::max(1.0, std::round(2.0 * static_cast<double>(cfg_.batch) / per_group)));
  const int64_t steps_per_epoch = static_cast<int64_t>((G + groups_per_step - 1) / groups_per_step);
  const int64_t total = steps_per_epoch * cfg_.epochs;
  TrainLoopConfig lcfg;
  lcfg.adamw.lr = static_cast<float>(cfg_.lr);
  lcfg.adamw.clip_norm = static_cast<float>(cfg_.clip);
  lcfg.schedule = Schedule::cosine;
  lcfg.warmup_steps = total / 20;
  lcfg.total_steps = total;
  lcfg.min_lr_ratio = 0.1f;
  lcfg.what = "reward model";
  lcfg.loss_name = "Bradley–Terry loss";
  TrainLoop loop(stores, lcfg, model_);
  optimizer_bytes_ = loop.optimizer().state_bytes();
  if (meter && meter->progress)
    loop.progress = [meter](int64_t step, int64_t tot, double loss) { meter->progress("reward model", step, tot, loss); };
  std::vector<size_t> order(G);
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(cfg_.seed ^ 0xb7ull);
  auto finish = [&] {
    const UnitCost t = loop.total();
    st.tokens += t.tokens;
    st.seconds = train_s + t.seconds;
    st.flops += t.flops;
    st.units = loop.units();
  };
  for (int64_t ep = 0; ep < cfg_.epochs; ++ep) {
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0.0;
    for (size_t i = 0; i < G; i += groups_per_step) {
      const size_t ng = std::min(G - i, groups_per_step);
      double loss = 0.0;
      const bool ok = loop.step([&]() -> StepResult {
        std::vector<size_t> idx;
        std::map<size_t, int64_t> row;  // continuation -> row of this step
        for (size_t g = i; g < i + ng; ++g)
          for (size_t k : groups[order[g]].seqs) row[k] = static_cast<int64_t>(idx.size()), idx.push_back(k);
        const auto B = static_cast<int64_t>(idx.size());
        std::vector<float> h(static_cast<size_t>(B * C));
        Sequences seq;
        if (head_only) {
          for (int64_t k = 0; k < B; ++k)
            std::copy_n(train_feats.begin() + static_cast<int64_t>(idx[k]) * C, C, h.begin() + k * C);
        } else {
          seq = sequences(idx);
          pooled(seq, true, h);
        }
        std::vector<float> r(static_cast<size_t>(B)), dr(r.size(), 0.0f);
        head_.forward(r.data(), h.data(), B);
        for (size_t g = i; g < i + ng; ++g) {
          const auto& grp = groups[order[g]];
          const double w = 1.0 / (static_cast<double>(grp.cmp.size()) * static_cast<double>(ng));
          for (const auto& [a, b] : grp.cmp) {
            const int64_t ra = row[a], rb = row[b];
            const double d = static_cast<double>(r[ra]) - r[rb];
            loss += w * (d > 0 ? std::log1p(std::exp(-d)) : -d + std::log1p(std::exp(d)));
            const double sig_neg = 1.0 / (1.0 + std::exp(d));  // σ(−d)
            dr[ra] -= static_cast<float>(w * sig_neg);
            dr[rb] += static_cast<float>(w * sig_neg);
          }
        }
        if (!std::isfinite(loss)) return {loss, 0};
        if (head_only) {
          head_.backward(nullptr, dr.data(), h.data(), B);
          return {loss, 0};  // the features' tokens are counted once, above
        }
        std::vector<float> dpooled(h.size(), 0.0f);
        head_.backward(dpooled.data(), dr.data(), h.data(), B);
        std::vector<float> dhidden;
        pooled_backward(seq, dpooled.data(), dhidden);
        model_->backward(dhidden.data(), lora_.get());
        return {loss, seq.num_tokens()};
      });
      if (!ok) {
        if (meter) {
          meter->status = "diverged";
          meter->status_message = loop.message();
        }
        finish();
        return st;
      }
      loss_sum += loss * static_cast<double>(ng);
    }
    st.train_loss.push_back(loss_sum / static_cast<double>(G));
    const double acc = dev.empty() ? NAN : head_only ? head_accuracy(dev_feats, dev.size()) : accuracy(dev);
    st.dev_accuracy.push_back(acc);
    loop.evaluate(std::isnan(acc) ? static_cast<double>(ep) : acc, !std::isnan(acc));
  }
  st.best_epoch = loop.best_evaluation();
  loop.restore_best();
  finish();
  return st;
}

}  // namespace tb::methods::rlhf
