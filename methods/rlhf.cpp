// `rlhf` — reinforcement learning from (simulated) human feedback on preference tasks.
//
// prepare(): sample preference pairs from the base policy and order them with the task's
// gold judge (rlhf_data.h; cached per model and options), then either
//  - ppo (default): train a Bradley–Terry reward model on the pairs, then optimise the
//    policy (LoRA by default, or every weight) against the reward model's score with PPO
//    and a KL penalty to the frozen reference (rlhf_train.h); or
//  - dpo: optimise the policy directly on the pairs.
// predict(): the policy's sampled continuation of each test prompt; the base policy
// continues the same prompts with the same random streams, and the method adds to the
// record what only it can measure: gold_reward_base, kl to the reference, win_rate against
// the base by the gold judge, rm_accuracy on held-out test pairs (for dpo: of its implicit
// reward β·log π/π_ref) and, for ppo, mean_reward (the reward model's score).
//
// The gold judge never trains anything in ppo: the reward is the learned model's score, as
// in the classic setup; the judge only orders the pairs and scores the final evaluation.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <set>

#include "harness/base/errors.h"
#include "harness/core/safetensors.h"
#include "methods/lm_scoring.h"
#include "methods/lora.h"
#include "methods/method.h"
#include "methods/rlhf_data.h"
#include "methods/rlhf_policy.h"
#include "methods/rlhf_train.h"
#include "methods/trainer.h"

namespace tb::methods {

namespace {

using namespace rlhf;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The optimizer steps' units of the train phase. The phase's totals are set apart from them:
// they also hold the pair sampling, the reference passes and PPO's rollouts.
void append_units(Meter& meter, const std::vector<UnitCost>& units) {
  auto& train = meter.phase("train");
  train.units.insert(train.units.end(), units.begin(), units.end());
}

std::vector<OptionSpec> rlhf_options() {
  return {
      {"algo", "ppo", "ppo (reward model + PPO with a KL penalty) | dpo (direct preference optimisation)"},
      {"policy", "lora", "what of the policy trains: lora | full"},
      {"lora-rank", "8", "LoRA rank of the policy (and of a --rlhf.rm-train lora reward model)"},
      {"lora-alpha", "16", "LoRA alpha"},
      {"lora-sites", "q,k,v,o", "LoRA sites (q,k,v,o,gate,up,down, all-linear)"},
      {"pairs", "2000", "train prompts sampled for preference pairs (all of the split when it has fewer; pairs whose candidates tie are dropped)"},
      {"eval-pairs", "400", "dev prompts and test prompts, each, sampled for held-out pairs (all of a split when it has fewer)"},
      {"candidates", "12", "continuations sampled per prompt; the judge's best and worst form its pair"},
      {"max-new", "12", "continuation length in tokens (pairs, rollouts and evaluation)"},
      {"rm-pairs", "all", "train comparisons of the reward model: all (every ranked pair of a prompt's candidates, InstructGPT style) | best-worst"},
      {"rm-margin", "1", "with --rlhf.rm-pairs all: the gold-score gap a comparison besides best-vs-worst needs"},
      {"rm-train", "full", "what the Bradley-Terry loss trains in the reward model: head | lora | full"},
      {"rm-pool", "sum", "hidden state the reward head reads: last (the last real token) | mean (over the sequence) | sum (over the continuation: a per-token reward, summed)"},
      {"rm-epochs", "4", "reward model epochs (best epoch on dev pairs)"},
      {"rm-lr", "auto", "reward model learning rate; auto = 3e-3 (head), 1e-3 (lora), 1e-4 (full)"},
      {"rm-batch", "16", "pairs per reward model step"},
      {"ppo-iterations", "10", "PPO rollout batches"},
      {"rollout-batch", "32", "prompts per rollout batch"},
      {"minibatch", "8", "rollouts per PPO gradient step"},
      {"ppo-epochs", "4", "PPO passes over each rollout batch"},
      {"lr", "auto", "policy learning rate; auto = 1e-3 for a lora policy, 3e-5 for a full one"},
      {"kl-coef", "0.05", "initial KL penalty coefficient"},
      {"kl-target", "6", "adaptive KL controller target (nats per continuation); 0 keeps kl-coef fixed"},
      {"kl-horizon", "10000", "adaptive KL controller horizon in rollouts"},
      {"kl-budget", "0", "stop PPO once a rollout batch's KL to the reference exceeds this (nats); 0 = off"},
      {"gamma", "1", "GAE discount"},
      {"lam", "0.95", "GAE lambda"},
      {"cliprange", "0.2", "PPO ratio clip"},
      {"cliprange-value", "0.2", "value clip"},
      {"vf-coef", "0.1", "value loss coefficient"},
      {"whiten-rewards", "true", "whiten per-token rewards of each rollout batch"},
      {"beta", "0.1", "DPO temperature beta"},
      {"dpo-epochs", "2", "DPO epochs over the train pairs"},
      {"dpo-batch", "8", "pairs per DPO step"},
      {"clip", "1.0", "gradient-norm clip (policy and reward model)"},
  };
}

// First `n` of a seeded shuffle of `xs` (all of them when n >= size).
std::vector<tasks::Example> sample_prompts(const std::vector<tasks::Example>& xs, int64_t n, uint64_t seed) {
  std::vector<size_t> idx(xs.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::mt19937_64 g(seed);
  std::shuffle(idx.begin(), idx.end(), g);
  idx.resize(std::min(idx.size(), static_cast<size_t>(std::max<int64_t>(n, 0))));
  std::vector<tasks::Example> out;
  for (size_t i : idx) out.push_back(xs[i]);
  return out;
}

tasks::MetricValue renamed(tasks::MetricValue m, const std::string& name) {
  m.name = name;
  return m;
}

class RlhfMethod final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    const double t0 = now_seconds();
    const auto& o = ctx.options;
    if (ctx.task.output_type() != tasks::OutputType::preference)
      throw InputError("rlhf: task " + ctx.task.name() + " is not a preference task");
    algo_ = o.str("algo");
    if (algo_ != "ppo" && algo_ != "dpo") throw InputError("rlhf.algo: '" + algo_ + "' is not ppo or dpo");
    const std::string policy_kind = o.str("policy");
    if (policy_kind != "lora" && policy_kind != "full")
      throw InputError("rlhf.policy: '" + policy_kind + "' is not lora or full");
    max_new_ = o.integer("max-new");
    stop_ = stop_token(ctx.model);
    seed_ = ctx.seed;
    auto& meter = ctx.meter;

    // ---- preference pairs from the base policy (before anything trains).
    PairSampling ps;
    ps.candidates = o.integer("candidates");
    ps.max_new_tokens = max_new_;
    const std::string rm_pairs = o.str("rm-pairs");
    if (rm_pairs != "all" && rm_pairs != "best-worst")
      throw InputError("rlhf.rm-pairs: '" + rm_pairs + "' is not all or best-worst");
    ps.min_margin = o.number("rm-margin");
    // Only the reward model trains on the extra comparisons; dpo keeps each prompt's
    // best-vs-worst pair, so both algorithms share one pairs file.
    const bool all_comparisons = rm_pairs == "all";
    const int64_t n_train = o.integer("pairs"), n_eval = o.integer("eval-pairs");
    if (n_train < 1) throw InputError("rlhf.pairs: must be >= 1");
    if (n_eval < 0) throw InputError("rlhf.eval-pairs: must be >= 0");
    // The runner's --limit subset of the test split (the examples the run is scored on).
    const auto test_split = tasks::hashed_subset(ctx.task.split("test"), ctx.limit);
    const auto train_prompts = sample_prompts(ctx.train, n_train, ctx.seed * 3 + 1);
    const auto dev_prompts = sample_prompts(ctx.dev, n_eval, ctx.seed * 3 + 2);
    const auto test_prompts = sample_prompts(test_split, n_eval, ctx.seed * 3 + 3);
    std::string key = "rlhf-pairs-v2|" + ctx.model_hash + "|" + ctx.task.name() + "@" + std::to_string(ctx.task.version()) +
                      "|seed=" + std::to_string(ctx.seed) + "|candidates=" + std::to_string(ps.candidates) +
                      "|max-new=" + std::to_string(max_new_) +
                      (all_comparisons ? "|all-comparisons|margin=" + std::to_string(ps.min_margin) : std::string()) + "|prompts=";
    for (const auto* set : {&train_prompts, &dev_prompts, &test_prompts})
      for (const auto& ex : *set) key += ex.id + ",";
    const auto pairs_file = ctx.cache_dir / "rlhf" / ("pairs-" + digest(key) + ".jsonl");
    int64_t sampled_tokens = 0;
    // train_seconds: sampling the pairs plus the training steps (reward model, PPO, DPO);
    // the per-epoch dev passes are left out.
    double train_s = 0.0;
    const double sample_t0 = now_seconds(), sample_f0 = ctx.model.flop_count();
    // The cost of sampling is kept next to the pairs: a run that reads them records a cache
    // hit with that cost (Meter::cache_hit, cached_cost.pairs), not a sampling that took no time.
    auto cost_file = pairs_file;
    cost_file.replace_extension(".cost.json");
    nlohmann::json cached_cost;
    if (std::filesystem::exists(cost_file)) {
      std::ifstream in(cost_file);
      cached_cost = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    }
    const bool cost_ok = cached_cost.is_object() && cached_cost.contains("tokens") &&
                         cached_cost["tokens"].is_number_integer() && cached_cost.contains("seconds") &&
                         cached_cost["seconds"].is_number() && cached_cost.contains("flops") &&
                         cached_cost["flops"].is_number();
    bool cached = std::filesystem::exists(pairs_file) && cost_ok;
    if (cached) {
      for (auto& p : load_pairs(pairs_file))
        (p.split == "train" ? train_ : p.split == "dev" ? dev_ : test_).push_back(std::move(p));
      meter.cache_hit = true;
      if (!meter.cached_cost.is_object()) meter.cached_cost = nlohmann::json::object();
      meter.cached_cost["pairs"] = cached_cost;
    } else {
      if (meter.progress) meter.progress("preference pairs", 0, 3, NAN);
      const std::vector<std::pair<std::string, const std::vector<tasks::Example>*>> splits = {
          {"train", &train_prompts}, {"dev", &dev_prompts}, {"test", &test_prompts}};
      std::vector<PreferencePair> all;
      for (size_t k = 0; k < splits.size(); ++k) {
        ps.seed = ctx.seed * 1000 + 17 + k;
        ps.all_comparisons = all_comparisons && k == 0;  // held-out pairs stay best-vs-worst
        auto got = sample_pairs(ctx.model, nullptr, ctx.tokenizer, ctx.task, *splits[k].second, splits[k].first, ps,
                                &sampled_tokens);
        (k == 0 ? train_ : k == 1 ? dev_ : test_) = got;
        all.insert(all.end(), got.begin(), got.end());
        if (meter.progress) meter.progress("preference pairs", static_cast<int64_t>(k) + 1, 3, NAN);
      }
      save_pairs(pairs_file, all);
      const nlohmann::json cost = {{"tokens", sampled_tokens},
                                   {"seconds", now_seconds() - sample_t0},
                                   {"flops", ctx.model.flop_count() - sample_f0}};
      const auto tmp = cost_file.string() + ".tmp" + std::to_string(::getpid());
      std::ofstream(tmp) << cost.dump() << "\n";
      std::filesystem::rename(tmp, cost_file);
    }
    meter.details["pairs"] = {{"file", pairs_file.string()},
                              {"cached", cached},
                              {"train", train_.size()},
                              {"train_best_worst", std::count_if(train_.begin(), train_.end(), [](const PreferencePair& p) { return p.best_worst; })},
                              {"dev", dev_.size()},
                              {"test", test_.size()},
                              {"prompts", {{"train", train_prompts.size()}, {"dev", dev_prompts.size()}, {"test", test_prompts.size()}}},
                              {"candidates", ps.candidates},
                              {"sampled_tokens", sampled_tokens}};
    if (train_.empty()) throw InputError("rlhf: every sampled train pair was a tie; raise --rlhf.pairs or --rlhf.candidates");
    if (!cached) {
      meter.phase("train").tokens += sampled_tokens;
      meter.phase("train").flops += ctx.model.flop_count() - sample_f0;
      train_s += now_seconds() - sample_t0;
    }

    // ---- policy and reference. A LoRA policy's reference is the base model itself.
    const int64_t base_bytes = ctx.model.params().value_bytes();
    std::vector<ParamStore*> policy_stores;
    policy_ = &ctx.model;
    if (policy_kind == "lora") {
      LoraConfig lc;
      lc.rank = o.integer("lora-rank");
      lc.alpha = o.number("lora-alpha");
      lc.dropout = 0.0;  // PPO's ratio must be exactly 1 on the rollouts it was sampled from
      lc.sites = o.str_list("lora-sites");
      lc.seed = ctx.seed;
      policy_lora_ = std::make_unique<LoraHooks>(ctx.model.config(), lc);
      policy_hooks_ = policy_lora_.get();
      policy_stores.push_back(&policy_lora_->store());
      reference_ = &ctx.model;
    } else {
      reference_copy_ = copy_model(ctx.model);
      reference_ = reference_copy_.get();
      ctx.model.params().set_all_trainable(true);
      ctx.model.params().allocate_grads();
      policy_stores.push_back(&ctx.model.params());
    }
    policy_stores_.assign(policy_stores.begin(), policy_stores.end());
    const double lr = o.str("lr") == "auto" ? (policy_kind == "lora" ? 1e-3 : 3e-5) : o.number("lr");
    const double clip = o.number("clip");

    int64_t opt_bytes = 0, act_bytes = 0, kv_bytes = 0;
    nlohmann::json curve_details = nlohmann::json::array();
    if (algo_ == "ppo") {
      // ---- reward model on the frozen base (head, lora) or its own copy (full).
      RewardConfig rc;
      rc.train = o.str("rm-train");
      rc.epochs = o.integer("rm-epochs");
      const std::string pool = o.str("rm-pool");
      if (pool != "last" && pool != "mean" && pool != "sum")
        throw InputError("rlhf.rm-pool: '" + pool + "' is not last, mean or sum");
      rc.pool = pool == "last" ? RewardPool::last : pool == "mean" ? RewardPool::mean : RewardPool::sum;
      rc.batch = o.integer("rm-batch");
      rc.clip = clip;
      rc.lr = o.str("rm-lr") == "auto" ? (rc.train == "head" ? 3e-3 : rc.train == "lora" ? 1e-3 : 1e-4) : o.number("rm-lr");
      rc.lora.rank = o.integer("lora-rank");
      rc.lora.alpha = o.number("lora-alpha");
      rc.lora.sites = o.str_list("lora-sites");
      rc.lora.dropout = 0.0;
      rc.lora.seed = ctx.seed + 1;
      rc.seed = ctx.seed;
      rm_ = std::make_unique<RewardModel>(*reference_, rc);
      const auto fit = rm_->fit(train_, dev_, &meter);
      train_s += fit.seconds;
      if (meter.status == "diverged") {
        meter.phase("train").seconds = train_s;
        return;
      }
      std::vector<int> correct;
      rm_accuracy_value_ = rm_->accuracy(test_, &correct);
      rm_correct_ = correct;
      meter.phase("train").tokens += fit.tokens;
      meter.phase("train").flops += fit.flops;
      append_units(meter, fit.units);
      meter.details["reward_model"] = {{"train", rc.train},
                                       {"pool", pool},
                                       {"lr", rc.lr},
                                       {"epochs", rc.epochs},
                                       {"best_epoch", fit.best_epoch},
                                       {"train_loss", fit.train_loss},
                                       {"dev_accuracy", fit.dev_accuracy},
                                       {"test_accuracy", rm_accuracy_value_},
                                       {"seconds", fit.seconds},
                                       {"tokens_per_s", fit.seconds > 0 ? fit.tokens / fit.seconds : 0.0}};
      opt_bytes = std::max(opt_bytes, rm_->optimizer_bytes());
      act_bytes = std::max(act_bytes, rm_->activation_bytes());

      // ---- PPO against the reward model's score.
      PpoConfig pc;
      pc.iterations = o.integer("ppo-iterations");
      pc.rollout_batch = o.integer("rollout-batch");
      pc.minibatch = o.integer("minibatch");
      pc.epochs = o.integer("ppo-epochs");
      pc.max_new_tokens = max_new_;
      pc.lr = lr;
      pc.clip = clip;
      pc.kl_coef = o.number("kl-coef");
      pc.kl_target = o.number("kl-target");
      pc.kl_horizon = o.number("kl-horizon");
      pc.kl_budget = o.number("kl-budget");
      pc.gamma = o.number("gamma");
      pc.lam = o.number("lam");
      pc.cliprange = o.number("cliprange");
      pc.cliprange_value = o.number("cliprange-value");
      pc.vf_coef = o.number("vf-coef");
      pc.whiten_rewards = o.flag("whiten-rewards");
      pc.seed = ctx.seed;
      ppo_ = std::make_unique<PpoTrainer>(*policy_, policy_hooks_, policy_stores, *reference_, nullptr, pc, stop_);
      std::vector<std::vector<int32_t>> prompts;
      for (const auto& ex : ctx.train) prompts.push_back(encode_prompt(ctx.model, ctx.tokenizer, ctx.task.render(ex)));
      int64_t rollout_tok = 0, update_tok = 0;
      double rollout_s = 0, update_s = 0;
      const double ppo_f0 = model_flops(ctx.model);
      const auto history = ppo_->train(prompts, [&](const Sequences& s) { return rm_->score(s); },
                                       [&](const PpoIteration& it) {
                                         const double loss = it.pg_loss + pc.vf_coef * it.vf_loss;
                                         meter.loss_curve.push_back({it.iteration, loss, NAN});
                                         curve_details.push_back({{"iteration", it.iteration},
                                                                  {"score", it.score},
                                                                  {"kl", it.kl},
                                                                  {"kl_coef", it.kl_coef},
                                                                  {"pg_loss", it.pg_loss},
                                                                  {"vf_loss", it.vf_loss},
                                                                  {"clipfrac", it.clipfrac},
                                                                  {"approx_kl", it.approx_kl}});
                                         if (meter.progress) meter.progress("ppo", it.iteration + 1, pc.iterations, loss);
                                       });
      for (const auto& it : history) {
        rollout_tok += it.rollout_tokens;
        update_tok += it.update_tokens;
        rollout_s += it.rollout_seconds;
        update_s += it.update_seconds;
      }
      meter.steps = static_cast<int64_t>(history.size());
      append_units(meter, ppo_->step_units());
      meter.phase("train").tokens += rollout_tok + update_tok;
      // Every model PPO ran (policy, reference, reward model), each counted once.
      meter.phase("train").flops += model_flops(ctx.model) - ppo_f0;
      train_s += rollout_s + update_s;
      if (ppo_->diverged()) {
        meter.status = "diverged";
        meter.status_message = "PPO: non-finite loss";
      }
      meter.details["ppo"] = {{"iterations", curve_details},
                              {"stop_reason", ppo_->stop_reason()},
                              {"final_kl_coef", ppo_->kl_coef()},
                              {"lr", lr}};
      meter.details["rollout_tokens_per_s"] = rollout_s > 0 ? rollout_tok / rollout_s : 0.0;
      meter.details["update_tokens_per_s"] = update_s > 0 ? update_tok / update_s : 0.0;
      opt_bytes = std::max(opt_bytes, ppo_->optimizer_bytes());
      act_bytes = std::max(act_bytes, ppo_->activation_bytes());
      kv_bytes = std::max(kv_bytes, ppo_->kv_cache_bytes());
    } else {
      DpoConfig dc;
      dc.beta = o.number("beta");
      dc.lr = lr;
      dc.epochs = o.integer("dpo-epochs");
      dc.batch = o.integer("dpo-batch");
      dc.clip = clip;
      dc.seed = ctx.seed;
      dpo_ = std::make_unique<DpoTrainer>(*policy_, policy_hooks_, policy_stores, dc);
      std::vector<PreferencePair> dpo_train;
      for (const auto& p : train_)
        if (p.best_worst) dpo_train.push_back(p);
      const double ref_t0 = now_seconds();
      dpo_->set_reference("train", dpo_train);
      dpo_->set_reference("dev", dev_);
      dpo_->set_reference("test", test_);
      train_s += now_seconds() - ref_t0;
      double dev_s = 0.0;
      const double t1 = now_seconds();
      const int64_t tok0 = dpo_->tokens();
      const auto steps = dpo_->train("train", dpo_train, [&](int64_t ep, const DpoStep& last) {
        const double dev_t0 = now_seconds();
        const auto dev = dpo_->evaluate("dev", dev_);
        dev_s += now_seconds() - dev_t0;
        curve_details.push_back({{"epoch", ep}, {"dev_loss", dev.loss}, {"dev_margin", dev.margin}, {"dev_accuracy", dev.accuracy}});
        if (meter.progress) meter.progress("dpo", ep + 1, dc.epochs, last.train.loss);
        ++meter.epochs;
      });
      const double update_s = now_seconds() - t1 - dev_s;
      train_s += update_s;
      for (const auto& s : steps) meter.loss_curve.push_back({s.step, s.train.loss, NAN});
      // Each epoch's dev accuracy attaches to the epoch's last step.
      const int64_t per_epoch = steps.empty() ? 0 : static_cast<int64_t>(steps.size()) / dc.epochs;
      for (size_t e = 0; e < curve_details.size() && per_epoch > 0; ++e) {
        const auto at = static_cast<size_t>(std::min<int64_t>((static_cast<int64_t>(e) + 1) * per_epoch, static_cast<int64_t>(steps.size())) - 1);
        meter.loss_curve[at].dev_metric = curve_details[e]["dev_accuracy"].get<double>();
      }
      std::vector<int> correct;
      const auto test = dpo_->evaluate("test", test_, &correct);
      rm_accuracy_value_ = test_.empty() ? NAN : test.accuracy;
      rm_correct_ = correct;
      meter.steps = static_cast<int64_t>(steps.size());
      meter.phase("train").tokens += dpo_->tokens();
      meter.phase("train").flops += dpo_->flops();
      append_units(meter, dpo_->step_units());
      if (dpo_->diverged()) {
        meter.status = "diverged";
        meter.status_message = "DPO: non-finite loss";
      }
      meter.details["dpo"] = {{"beta", dc.beta},
                              {"lr", lr},
                              {"epochs", curve_details},
                              {"test_loss", test.loss},
                              {"test_margin", test.margin},
                              {"test_accuracy", test.accuracy}};
      meter.details["update_tokens_per_s"] = update_s > 0 ? (dpo_->tokens() - tok0) / update_s : 0.0;
      opt_bytes = std::max(opt_bytes, dpo_->optimizer_bytes());
      act_bytes = std::max(act_bytes, dpo_->activation_bytes());
    }

    // ---- memory by role. Shared weights are counted once, under the reference.
    int64_t policy_bytes = 0, grads = 0;
    for (auto* s : policy_stores) grads += s->grad_bytes();
    policy_bytes = policy_kind == "lora" ? policy_lora_->store().value_bytes() : base_bytes;
    auto& mem = meter.memory;
    mem["policy"] = policy_bytes;
    mem["reference"] = base_bytes;
    mem["value_model"] = ppo_ ? ppo_->value_head().store().value_bytes() : 0;
    mem["reward_model"] = rm_ ? rm_->own_weight_bytes() : 0;
    if (ppo_) grads += ppo_->value_head().store().grad_bytes();
    if (rm_) grads += rm_->grad_bytes();
    mem["weights"] = mem["policy"] + mem["reference"] + mem["value_model"] + mem["reward_model"];
    mem["gradients"] = grads;
    mem["optimizer_state"] = opt_bytes;
    mem["activations"] = std::max(mem["activations"], act_bytes);
    mem["kv_cache"] = std::max(mem["kv_cache"], kv_bytes);
    const bool rm_shares = rm_ && rm_->train_mode() != "full";
    meter.details["memory_sharing"] =
        (policy_kind == "lora" ? std::string("the LoRA policy reads the base weights; the reference is the base without LoRA")
                               : std::string("the full policy trains the loaded model; the reference is a frozen copy of it")) +
        (rm_shares ? "; the reward model reads the reference's weights plus its own head" : "");
    meter.details["algo"] = algo_;
    meter.details["policy"] = policy_kind;
    meter.details["prepare_seconds"] = now_seconds() - t0;
    meter.phase("train").seconds = train_s;
  }

  std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    TB_CHECK(policy_ != nullptr, "rlhf: predict before prepare");
    auto& meter = ctx.meter;
    const double t0 = now_seconds();
    const double f0 = model_flops(ctx.model);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::string> texts;
    for (const auto& ex : examples) {
      texts.push_back(ctx.task.render(ex));
      prompts.push_back(encode_prompt(ctx.model, ctx.tokenizer, texts.back()));
    }
    // One random stream per prompt, shared by the policy and the base: the two differ only
    // by what training changed.
    const uint64_t eval_seed = seed_ * 7919 + 424242;
    int64_t kv = 0;
    const auto pol = sample_continuations(*policy_, policy_hooks_, prompts, max_new_, eval_seed, stop_, &kv);
    const auto base = sample_continuations(*reference_, nullptr, prompts, max_new_, eval_seed, stop_, &kv);
    const int64_t batch = 16;
    const auto lp_pol = sequence_logprobs(*policy_, policy_hooks_, prompts, pol, batch);
    const auto lp_ref = sequence_logprobs(*reference_, nullptr, prompts, pol, batch);
    tasks::EvalData gold, gold_base, kl, win;
    std::vector<Prediction> out(examples.size());
    int64_t generated = 0, scored = 0;
    for (size_t i = 0; i < examples.size(); ++i) {
      out[i].text = continuation_text(ctx.tokenizer, pol[i], stop_);
      const double g = ctx.task.gold_reward(texts[i], out[i].text);
      const double gb = ctx.task.gold_reward(texts[i], continuation_text(ctx.tokenizer, base[i], stop_));
      gold.value.push_back(g);
      gold_base.value.push_back(gb);
      kl.value.push_back(lp_pol[i] - lp_ref[i]);
      win.value.push_back(g > gb ? 1.0 : g == gb ? 0.5 : 0.0);
      generated += static_cast<int64_t>(pol[i].size() + base[i].size());
      scored += static_cast<int64_t>(prompts[i].size() + pol[i].size());
    }
    auto& ms = meter.metrics;
    ms.clear();
    ms.push_back(tasks::compute_metric("gold_reward", gold));
    ms.push_back(renamed(tasks::compute_metric("gold_reward", gold_base), "gold_reward_base"));
    ms.push_back(tasks::compute_metric("kl", kl));
    ms.push_back(tasks::compute_metric("win_rate", win));
    if (!rm_correct_.empty()) {
      tasks::EvalData acc;
      acc.gold.assign(rm_correct_.size(), 1);
      acc.pred = rm_correct_;
      ms.push_back(renamed(tasks::compute_metric("accuracy", acc), "rm_accuracy"));
    }
    int64_t rm_tokens = 0;
    if (rm_) {
      tasks::EvalData mr;
      for (size_t i = 0; i < examples.size(); i += static_cast<size_t>(batch)) {
        const size_t n = std::min(examples.size() - i, static_cast<size_t>(batch));
        std::vector<const std::vector<int32_t>*> ps, cs;
        for (size_t k = i; k < i + n; ++k) ps.push_back(&prompts[k]), cs.push_back(&pol[k]);
        const auto seq = Sequences::make(ps, cs, ctx.model.config().max_positions);
        for (double r : rm_->score(seq)) mr.value.push_back(r);
        rm_tokens += seq.num_tokens();
      }
      ms.push_back(tasks::compute_metric("mean_reward", mr));
    }
    const int64_t eval_tokens = generated + 2 * scored + rm_tokens;
    meter.phase("test_eval").tokens += eval_tokens;
    meter.phase("test_eval").flops += model_flops(ctx.model) - f0;
    meter.phase("test_eval").seconds += now_seconds() - t0;
    meter.memory["kv_cache"] = std::max(meter.memory["kv_cache"], kv);
    nlohmann::json samples = nlohmann::json::array();
    for (size_t i = 0; i < std::min<size_t>(5, examples.size()); ++i)
      samples.push_back({{"prompt", texts[i]},
                         {"policy", out[i].text},
                         {"base", continuation_text(ctx.tokenizer, base[i], stop_)},
                         {"gold", gold.value[i]},
                         {"gold_base", gold_base.value[i]}});
    meter.details["samples"] = samples;
    return out;
  }

  int64_t trainable_params() const override {
    int64_t n = 0;
    for (const auto* s : policy_stores_) n += s->num_trainable();
    if (ppo_) n += ppo_->value_head().store().num_trainable();
    if (rm_) n += rm_->trainable_params();
    return n;
  }

  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    std::vector<TensorToWrite> tensors;
    auto add = [&](const std::string& prefix, const ParamStore& s) {
      for (const auto& p : s.params())
        if (p.trainable) tensors.push_back({prefix + p.name, p.shape, p.data, DType::F32});
    };
    for (const auto* s : policy_stores_) add("policy.", *s);
    if (ppo_) add("value_model.", ppo_->value_head().store());
    if (rm_)
      for (const auto* s : rm_->stores()) add("reward_model.", *s);
    if (tensors.empty()) return 0;
    std::filesystem::create_directories(dir);
    const auto path = dir / "adaptation.safetensors";
    write_safetensors(path, tensors, {{"format", "tunebench"}, {"method", "rlhf"}, {"algo", algo_}});
    return static_cast<int64_t>(std::filesystem::file_size(path));
  }

  Hooks* lm_hooks() override { return policy_lora_.get(); }
  bool changes_base() const override { return reference_copy_ != nullptr; }

  // Matmul FLOPs executed so far by every model this method runs (the loaded model, the
  // reference copy, the reward model's own copy), each counted once.
  double model_flops(const Model& base) const {
    std::set<const Model*> models = {&base};
    if (reference_) models.insert(reference_);
    if (rm_) models.insert(&rm_->model());
    double f = 0.0;
    for (const Model* m : models) f += m->flop_count();
    return f;
  }

 private:
  std::string algo_;
  int64_t max_new_ = 12;
  int32_t stop_ = -1;
  uint64_t seed_ = 0;
  std::vector<PreferencePair> train_, dev_, test_;
  Model* policy_ = nullptr;
  Hooks* policy_hooks_ = nullptr;
  std::unique_ptr<LoraHooks> policy_lora_;
  std::vector<const ParamStore*> policy_stores_;
  Model* reference_ = nullptr;
  std::unique_ptr<Model> reference_copy_;
  std::unique_ptr<RewardModel> rm_;
  std::unique_ptr<PpoTrainer> ppo_;
  std::unique_ptr<DpoTrainer> dpo_;
  double rm_accuracy_value_ = NAN;
  std::vector<int> rm_correct_;
};

}  // namespace

MethodInfo rlhf_method_info() {
  return {"rlhf",
          "RLHF: Bradley-Terry reward model + PPO with a KL penalty (or DPO) on preference pairs judged by the task",
          rlhf_options(),
          [] { return std::make_unique<RlhfMethod>(); },
          {tasks::OutputType::preference},
          {}};
}

}  // namespace tb::methods
