// PPO with a KL penalty and DPO (see rlhf_train.h).
#include "methods/rlhf_train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/generate.h"

namespace tb::methods::rlhf {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void require(bool ok, const std::string& option, const std::string& what) {
  if (!ok) throw InputError("rlhf." + option + ": " + what);
}

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

// Whitens every value of the vectors together, in place: (x − mean)/std, plus the mean
// back when !shift_mean (TRL's masked_whiten over the real tokens of a batch).
void whiten(std::vector<std::vector<float>*>& xs, bool shift_mean) {
  double sum = 0.0, sq = 0.0;
  int64_t n = 0;
  for (auto* x : xs)
    for (float v : *x) sum += v, ++n;
  if (n < 2) return;
  const double mean = sum / static_cast<double>(n);
  for (auto* x : xs)
    for (float v : *x) sq += (v - mean) * (v - mean);
  const double var = sq / static_cast<double>(n - 1);
  const double inv = 1.0 / std::sqrt(var + 1e-8);
  for (auto* x : xs)
    for (float& v : *x) v = static_cast<float>((v - mean) * inv + (shift_mean ? 0.0 : mean));
}

// Matmul FLOPs executed so far by the policy and the reference (once when they are one model).
double policy_reference_flops(const Model& policy, const Model& reference) {
  return policy.flop_count() + (&reference == &policy ? 0.0 : reference.flop_count());
}

}  // namespace

// ---- sampling and scoring --------------------------------------------------------------

std::vector<std::vector<int32_t>> sample_continuations(Model& model, Hooks* hooks,
                                                       const std::vector<std::vector<int32_t>>& prompts,
                                                       int64_t max_new_tokens, uint64_t seed, int32_t stop,
                                                       int64_t* kv_bytes) {
  GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  opt.temperature = 1.0f;
  opt.seed = seed;
  if (stop >= 0) opt.stop_tokens = {stop};
  const auto gens = generate(model, prompts, opt, hooks);
  std::vector<std::vector<int32_t>> out;
  for (const auto& g : gens) out.push_back(g.tokens);
  if (kv_bytes) {
    // generate() decodes prompts of equal length together, one KV cache per group.
    const auto& c = model.config();
    std::map<size_t, int64_t> groups;
    for (const auto& p : prompts) ++groups[p.size()];
    for (const auto& [len, B] : groups) {
      const int64_t S = std::min<int64_t>(c.max_positions, static_cast<int64_t>(len) + max_new_tokens);
      *kv_bytes = std::max(*kv_bytes, 2 * c.n_layer * B * c.n_kv_head * S * c.head_dim * 4);
    }
  }
  return out;
}

std::vector<double> sequence_logprobs(Model& model, Hooks* hooks, const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<std::vector<int32_t>>& conts, int64_t batch) {
  std::vector<double> out;
  TokenLogprobs lp;
  for (size_t i = 0; i < prompts.size(); i += static_cast<size_t>(batch)) {
    const size_t n = std::min(prompts.size() - i, static_cast<size_t>(batch));
    std::vector<const std::vector<int32_t>*> ps, cs;
    for (size_t k = i; k < i + n; ++k) ps.push_back(&prompts[k]), cs.push_back(&conts[k]);
    const auto seq = Sequences::make(ps, cs, model.config().max_positions);
    lp.forward(model, hooks, seq, false);
    const auto s = lp.sums();
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

// ---- PPO -------------------------------------------------------------------------------

void PpoConfig::validate() const {
  require(iterations >= 1, "ppo-iterations", "must be >= 1");
  require(rollout_batch >= 1, "rollout-batch", "must be >= 1");
  require(minibatch >= 1 && minibatch <= rollout_batch, "minibatch", "must be in [1, rollout-batch]");
  require(epochs >= 1, "ppo-epochs", "must be >= 1");
  require(max_new_tokens >= 1, "max-new", "must be >= 1");
  require(lr > 0 && std::isfinite(lr), "lr", "must be a positive number");
  require(clip >= 0, "clip", "must be >= 0");
  require(kl_coef >= 0 && std::isfinite(kl_coef), "kl-coef", "must be >= 0");
  require(kl_target >= 0, "kl-target", "must be >= 0 (0 = fixed coefficient)");
  require(kl_horizon > 0, "kl-horizon", "must be > 0");
  require(kl_budget >= 0, "kl-budget", "must be >= 0 (0 = no budget)");
  require(gamma >= 0 && gamma <= 1, "gamma", "must be in [0, 1]");
  require(lam >= 0 && lam <= 1, "lam", "must be in [0, 1]");
  require(cliprange > 0, "cliprange", "must be > 0");
  require(cliprange_value > 0, "cliprange-value", "must be > 0");
  require(vf_coef >= 0, "vf-coef", "must be >= 0");
}

void KlController::update(double current_kl, int64_t n_steps) {
  if (target <= 0) return;
  const double err = std::clamp(current_kl / target - 1.0, -0.2, 0.2);
  value *= 1.0 + err * static_cast<double>(n_steps) / horizon;
}

struct PpoTrainer::Rollout {
  const std::vector<int32_t>* prompt = nullptr;
  std::vector<int32_t> cont;
  std::vector<float> old_logp, ref_logp, values, rewards, adv, ret;
  double score = 0.0;
};

PpoTrainer::PpoTrainer(Model& policy, Hooks* policy_hooks, std::vector<ParamStore*> policy_stores, Model& reference,
                       Hooks* reference_hooks, const PpoConfig& cfg, int32_t stop_token)
    : policy_(policy), policy_hooks_(policy_hooks), policy_stores_(std::move(policy_stores)), reference_(reference),
      reference_hooks_(reference_hooks), cfg_(cfg), stop_(stop_token),
      value_(policy.config().hidden, 1, cfg.seed ^ 0xa1ull), kl_{cfg.kl_coef, cfg.kl_target, cfg.kl_horizon} {
  cfg_.validate();
  // A zero value head starts every state at value 0, as GAE's bootstrap at the end assumes.
  for (auto& p : value_.store().params()) std::fill(p.data, p.data + p.numel(), 0.0f);
}

Sequences PpoTrainer::batch_of(const std::vector<Rollout>& rs, const std::vector<size_t>& idx) const {
  std::vector<const std::vector<int32_t>*> ps, cs;
  for (size_t i : idx) ps.push_back(rs[i].prompt), cs.push_back(&rs[i].cont);
  return Sequences::make(ps, cs, policy_.config().max_positions);
}

std::vector<PpoIteration> PpoTrainer::train(const std::vector<std::vector<int32_t>>& prompts, const RewardFn& reward,
                                            const std::function<void(const PpoIteration&)>& on_iteration) {
  if (prompts.empty()) throw InputError("rlhf: PPO needs at least one training prompt");
  std::vector<ParamStore*> stores = policy_stores_;
  stores.push_back(&value_.store());
  TrainLoopConfig lcfg;
  lcfg.adamw.lr = static_cast<float>(cfg_.lr);
  lcfg.adamw.clip_norm = static_cast<float>(cfg_.clip);
  lcfg.record_curve = false;  // the caller keeps one point per iteration
  lcfg.what = "PPO";
  TrainLoop loop(stores, lcfg, &policy_);
  optimizer_bytes_ = loop.optimizer().state_bytes();

  std::mt19937_64 rng(cfg_.seed ^ 0x99ull);
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  size_t cursor = 0;
  stop_reason_ = "iterations";
  std::vector<PpoIteration> history;
  TokenLogprobs lp, ref_lp;

  for (int64_t it = 0; it < cfg_.iterations; ++it) {
    PpoIteration st;
    st.iteration = it;
    st.kl_coef = kl_.value;
    const auto B = static_cast<size_t>(cfg_.rollout_batch);

    // ---- rollouts: sample, then score under policy, value head, reference and reward.
    const double t0 = now_seconds();
    const double rollout_f0 = policy_reference_flops(policy_, reference_);
    std::vector<std::vector<int32_t>> batch_prompts;
    std::vector<size_t> which;
    for (size_t k = 0; k < B; ++k) {
      if (cursor == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      which.push_back(order[cursor]);
      batch_prompts.push_back(prompts[order[cursor++]]);
    }
    auto conts = sample_continuations(policy_, policy_hooks_, batch_prompts, cfg_.max_new_tokens,
                                      cfg_.seed * 1000003ull + static_cast<uint64_t>(it), stop_, &kv_cache_bytes_);
    std::vector<Rollout> rs(B);
    for (size_t k = 0; k < B; ++k) {
      rs[k].prompt = &prompts[which[k]];
      rs[k].cont = std::move(conts[k]);
      st.rollout_tokens += static_cast<int64_t>(rs[k].cont.size());
    }
    const auto mb = static_cast<size_t>(cfg_.minibatch);
    int64_t scored_tokens = 0;
    for (size_t i = 0; i < B; i += mb) {
      std::vector<size_t> idx(std::min(mb, B - i));
      std::iota(idx.begin(), idx.end(), i);
      const auto seq = batch_of(rs, idx);
      lp.forward(policy_, policy_hooks_, seq, false);
      std::vector<float> vals(static_cast<size_t>(seq.B * seq.Tc));
      value_.forward(vals.data(), lp.hidden().data(), seq.B * seq.Tc);
      ref_lp.forward(reference_, reference_hooks_, seq, false);
      const auto scores = reward(seq);
      TB_CHECK(static_cast<int64_t>(scores.size()) == seq.B, "reward function returned " << scores.size() << " scores for " << seq.B << " rollouts");
      for (int64_t b = 0; b < seq.B; ++b) {
        auto& r = rs[idx[b]];
        const int64_t n = seq.cont_len(b);
        const float* l = lp.logp().data() + b * seq.Tc;
        const float* rl = ref_lp.logp().data() + b * seq.Tc;
        r.old_logp.assign(l, l + n);
        r.ref_logp.assign(rl, rl + n);
        r.values.assign(vals.begin() + b * seq.Tc, vals.begin() + b * seq.Tc + n);
        r.score = scores[b];
      }
      scored_tokens += seq.num_tokens();
    }
    st.rollout_seconds = now_seconds() - t0;
    rollout_flops_ += policy_reference_flops(policy_, reference_) - rollout_f0;

    // ---- rewards: −β·(log π − log π_ref) per token, the score on the last token.
    std::vector<std::vector<float>*> all_rewards, all_adv;
    for (auto& r : rs) {
      const size_t n = r.cont.size();
      r.rewards.assign(n, 0.0f);
      double kl = 0.0;
      for (size_t t = 0; t < n; ++t) {
        const double k = static_cast<double>(r.old_logp[t]) - r.ref_logp[t];
        kl += k;
        r.rewards[t] = static_cast<float>(-kl_.value * k);
      }
      r.rewards[n - 1] += static_cast<float>(r.score);
      st.kl += kl / static_cast<double>(B);
      st.score += r.score / static_cast<double>(B);
      all_rewards.push_back(&r.rewards);
    }
    if (cfg_.whiten_rewards) whiten(all_rewards, /*shift_mean=*/false);
    // ---- GAE, then whitened advantages.
    for (auto& r : rs) {
      const auto n = static_cast<int64_t>(r.cont.size());
      r.adv.assign(static_cast<size_t>(n), 0.0f);
      double last = 0.0;
      for (int64_t t = n - 1; t >= 0; --t) {
        const double next = t + 1 < n ? r.values[t + 1] : 0.0;
        const double delta = r.rewards[t] + cfg_.gamma * next - r.values[t];
        last = delta + cfg_.gamma * cfg_.lam * last;
        r.adv[t] = static_cast<float>(last);
      }
      r.ret.resize(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) r.ret[t] = r.adv[t] + r.values[t];
      all_adv.push_back(&r.adv);
    }
    whiten(all_adv, /*shift_mean=*/true);

    // ---- updates: epochs of shuffled minibatches on the clipped objectives.
    const double t1 = now_seconds();
    const double update_f0 = policy_.flop_count();
    int64_t n_steps = 0, n_tok_all = 0;
    std::vector<size_t> perm(B);
    std::iota(perm.begin(), perm.end(), size_t{0});
    for (int64_t ep = 0; ep < cfg_.epochs && !diverged_; ++ep) {
      std::shuffle(perm.begin(), perm.end(), rng);
      for (size_t i = 0; i < B; i += mb) {
        std::vector<size_t> idx(perm.begin() + static_cast<int64_t>(i), perm.begin() + static_cast<int64_t>(std::min(B, i + mb)));
        const auto seq = batch_of(rs, idx);
        double pg = 0.0, vf = 0.0, clipped = 0.0, akl = 0.0, ntok = 0.0;
        const bool ok = loop.step([&]() -> StepResult {
          lp.forward(policy_, policy_hooks_, seq, true);
          activation_bytes_ = std::max(activation_bytes_, policy_.activation_bytes());
          const int64_t N = seq.B * seq.Tc;
          std::vector<float> vals(static_cast<size_t>(N));
          value_.forward(vals.data(), lp.hidden().data(), N);
          ntok = static_cast<double>(seq.num_cont_tokens());
          std::vector<float> dlogp(static_cast<size_t>(N), 0.0f), dval(static_cast<size_t>(N), 0.0f);
          for (int64_t b = 0; b < seq.B; ++b) {
            const auto& r = rs[idx[b]];
            for (int64_t t = 0; t < seq.cont_len(b); ++t) {
              const int64_t n = b * seq.Tc + t;
              const double logratio = static_cast<double>(lp.logp()[n]) - r.old_logp[t];
              const double ratio = std::exp(logratio);
              const double A = r.adv[t];
              const double pg1 = -A * ratio;
              const double pg2 = -A * std::clamp(ratio, 1.0 - cfg_.cliprange, 1.0 + cfg_.cliprange);
              pg += std::max(pg1, pg2);
              if (pg1 >= pg2) dlogp[n] = static_cast<float>(-A * ratio / ntok);
              clipped += pg2 > pg1;
              akl += 0.5 * logratio * logratio;
              const double v = vals[n], v_old = r.values[t], R = r.ret[t];
              const double vc = v_old + std::clamp(v - v_old, -cfg_.cliprange_value, cfg_.cliprange_value);
              const double vf1 = (v - R) * (v - R), vf2 = (vc - R) * (vc - R);
              vf += 0.5 * std::max(vf1, vf2);
              if (vf1 >= vf2) dval[n] = static_cast<float>(cfg_.vf_coef * (v - R) / ntok);
            }
          }
          const double loss = (pg + cfg_.vf_coef * vf) / ntok;
          const int64_t tok = seq.num_tokens();
          if (!std::isfinite(loss)) return {loss, tok};
          // The value loss trains the head alone: its gradient stops at the hidden states, so a
          // poorly fitted critic cannot pull the policy's weights (a LoRA policy has few).
          value_.backward(nullptr, dval.data(), lp.hidden().data(), N);
          lp.backward(policy_, policy_hooks_, dlogp.data(), nullptr);
          return {loss, tok};
        });
        step_units_.push_back(loop.units().back());
        if (!ok) {
          diverged_ = true;
          stop_reason_ = "diverged";
          break;
        }
        st.pg_loss += pg / ntok;
        st.vf_loss += vf / ntok;
        st.clipfrac += clipped / ntok;
        st.approx_kl += akl / ntok;
        ++n_steps;
        const int64_t tok = loop.units().back().tokens;
        st.update_tokens += tok;
        n_tok_all += tok;
      }
    }
    if (n_steps > 0) {
      st.pg_loss /= static_cast<double>(n_steps);
      st.vf_loss /= static_cast<double>(n_steps);
      st.clipfrac /= static_cast<double>(n_steps);
      st.approx_kl /= static_cast<double>(n_steps);
    }
    st.update_seconds = now_seconds() - t1;
    update_flops_ += policy_.flop_count() - update_f0;
    kl_.update(st.kl, cfg_.rollout_batch);
    history.push_back(st);
    if (on_iteration) on_iteration(st);
    if (diverged_) break;
    if (cfg_.kl_budget > 0 && st.kl > cfg_.kl_budget) {
      stop_reason_ = "kl_budget";
      break;
    }
  }
  return history;
}

// ---- DPO -------------------------------------------------------------------------------

void DpoConfig::validate() const {
  require(beta > 0 && std::isfinite(beta), "beta", "must be a positive number");
  require(lr > 0 && std::isfinite(lr), "lr", "must be a positive number");
  require(epochs >= 1, "dpo-epochs", "must be >= 1");
  require(batch >= 1, "dpo-batch", "must be >= 1");
  require(clip >= 0, "clip", "must be >= 0");
}

DpoTrainer::DpoTrainer(Model& policy, Hooks* policy_hooks, std::vector<ParamStore*> policy_stores, const DpoConfig& cfg)
    : policy_(policy), hooks_(policy_hooks), stores_(std::move(policy_stores)), cfg_(cfg) {
  cfg_.validate();
}

void DpoTrainer::set_reference(const std::string& name, const std::vector<PreferencePair>& pairs) {
  RefLogps r;
  TokenLogprobs lp;
  const FlopScope flops(policy_, flops_);
  const auto bs = static_cast<size_t>(cfg_.batch);
  for (size_t i = 0; i < pairs.size(); i += bs) {
    const size_t n = std::min(pairs.size() - i, bs);
    const auto seq = pair_sequences(pairs, i, n, policy_.config().max_positions);
    lp.forward(policy_, hooks_, seq, false);
    const auto s = lp.sums();
    r.chosen.insert(r.chosen.end(), s.begin(), s.begin() + static_cast<int64_t>(n));
    r.rejected.insert(r.rejected.end(), s.begin() + static_cast<int64_t>(n), s.end());
    tokens_ += seq.num_tokens();

  }
  refs_[name] = std::move(r);
}

const DpoTrainer::RefLogps& DpoTrainer::ref(const std::string& name, size_t n) const {
  const auto it = refs_.find(name);
  TB_CHECK(it != refs_.end(), "DPO: no reference log-probabilities for '" << name << "'");
  TB_CHECK(it->second.chosen.size() == n, "DPO: reference of '" << name << "' has " << it->second.chosen.size() << " pairs, given " << n);
  return it->second;
}

std::vector<DpoStep> DpoTrainer::train(const std::string& name, const std::vector<PreferencePair>& pairs,
                                       const std::function<void(int64_t, const DpoStep&)>& on_epoch) {
  if (pairs.empty()) throw InputError("rlhf: no training preference pairs (every sampled pair was a tie)");
  const auto& rf = ref(name, pairs.size());
  TrainLoopConfig lcfg;
  lcfg.adamw.lr = static_cast<float>(cfg_.lr);
  lcfg.adamw.clip_norm = static_cast<float>(cfg_.clip);
  lcfg.record_curve = false;  // the caller builds its curve from the returned steps
  lcfg.what = "DPO";
  TrainLoop loop(stores_, lcfg, &policy_);
  optimizer_bytes_ = loop.optimizer().state_bytes();
  std::vector<size_t> order(pairs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(cfg_.seed ^ 0xd0ull);
  std::vector<DpoStep> steps;
  TokenLogprobs lp;
  const auto bs = static_cast<size_t>(cfg_.batch);
  for (int64_t ep = 0; ep < cfg_.epochs && !diverged_; ++ep) {
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i = 0; i < pairs.size(); i += bs) {
      const size_t n = std::min(pairs.size() - i, bs);
      DpoStep step;
      step.step = static_cast<int64_t>(steps.size());
      const bool ok = loop.step([&]() -> StepResult {  // the step, not the per-epoch dev pass
        std::vector<PreferencePair> batch;
        for (size_t k = 0; k < n; ++k) batch.push_back(pairs[order[i + k]]);
        const auto seq = pair_sequences(batch, 0, n, policy_.config().max_positions);
        lp.forward(policy_, hooks_, seq, true);
        activation_bytes_ = std::max(activation_bytes_, policy_.activation_bytes());
        const auto sums = lp.sums();
        std::vector<float> dlogp(static_cast<size_t>(seq.B * seq.Tc), 0.0f);
        for (size_t k = 0; k < n; ++k) {
          const size_t j = order[i + k];
          const double z = cfg_.beta * ((sums[k] - rf.chosen[j]) - (sums[n + k] - rf.rejected[j]));
          step.train.loss += softplus(-z) / static_cast<double>(n);
          step.train.margin += z / static_cast<double>(n);
          step.train.accuracy += (z > 0 ? 1.0 : 0.0) / static_cast<double>(n);
          // ∂loss/∂ log π(token of chosen) = −β σ(−z)/n; the rejected tokens get the opposite.
          const auto g = static_cast<float>(-cfg_.beta / (1.0 + std::exp(z)) / static_cast<double>(n));
          for (int64_t t = 0; t < seq.cont_len(static_cast<int64_t>(k)); ++t) dlogp[k * seq.Tc + t] = g;
          const auto kr = static_cast<int64_t>(n + k);
          for (int64_t t = 0; t < seq.cont_len(kr); ++t) dlogp[kr * seq.Tc + t] = -g;
        }
        if (std::isfinite(step.train.loss)) lp.backward(policy_, hooks_, dlogp.data(), nullptr);
        return {step.train.loss, seq.num_tokens()};
      });
      const UnitCost& unit = loop.units().back();
      step_units_.push_back(unit);
      flops_ += unit.flops;
      if (!ok) {
        diverged_ = true;
        break;
      }
      tokens_ += unit.tokens;
      steps.push_back(step);
    }
    if (on_epoch && !steps.empty()) on_epoch(ep, steps.back());
  }
  return steps;
}

DpoStats DpoTrainer::evaluate(const std::string& name, const std::vector<PreferencePair>& pairs,
                              std::vector<int>* correct) {
  DpoStats st;
  if (correct) correct->clear();
  if (pairs.empty()) return st;
  const auto& rf = ref(name, pairs.size());
  TokenLogprobs lp;
  const auto bs = static_cast<size_t>(cfg_.batch);
  const auto N = static_cast<double>(pairs.size());
  for (size_t i = 0; i < pairs.size(); i += bs) {
    const size_t n = std::min(pairs.size() - i, bs);
    const auto seq = pair_sequences(pairs, i, n, policy_.config().max_positions);
    lp.forward(policy_, hooks_, seq, false);
    const auto sums = lp.sums();
    for (size_t k = 0; k < n; ++k) {
      const double z = cfg_.beta * ((sums[k] - rf.chosen[i + k]) - (sums[n + k] - rf.rejected[i + k]));
      st.loss += softplus(-z) / N;
      st.margin += z / N;
      st.accuracy += (z > 0 ? 1.0 : 0.0) / N;
      if (correct) correct->push_back(z > 0 ? 1 : 0);
    }
  }
  return st;
}

}  // namespace tb::methods::rlhf
