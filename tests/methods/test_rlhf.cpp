// Tests of the rlhf pieces on tiny random models (milliseconds each):
//  - per-token log-probabilities: sums equal tb::score(), and their backward matches
//    central differences;
//  - PPO raises the expected reward of a toy task whose optimum is known (reward = share
//    of one token in the continuation), for a full and a LoRA policy, and a larger KL
//    coefficient keeps the policy measurably nearer the reference;
//  - DPO on saved-and-reloaded pairs: the loss starts at log 2, falls, and the implicit
//    reward margin grows; with a very large β the policy stays at the reference;
//  - the reward model learns a toy preference (chosen continuations contain a token the
//    rejected lack) to ≥ 0.9 held-out pair accuracy;
//  - preference pairs from the sentiment-steer task are ordered by the gold judge, ties
//    dropped, deterministic in the seed; the rlhf method runs end to end (ppo and dpo) with
//    every metric, memory role and the pair cache, and with a full policy trained against a
//    frozen reference copy.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/generate.h"
#include "harness/core/tokenizer.h"
#include "methods/lm_scoring.h"
#include "methods/method.h"
#include "methods/rlhf_data.h"
#include "methods/rlhf_policy.h"
#include "methods/rlhf_train.h"
#include "tasks/registry.h"
#include "tests/methods/tiny_models.h"

namespace tb::methods {
MethodInfo rlhf_method_info();
}

namespace {

using namespace tb;
using namespace tb::methods::rlhf;

constexpr int32_t kTarget = 7;  // the token the toy reward pays for

std::vector<std::vector<int32_t>> random_prompts(int n, int len, int64_t V, uint64_t seed) {
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) out.push_back(test::random_tokens(len, V, seed * 1000 + i));
  return out;
}

std::unique_ptr<Model> toy_model(uint64_t seed, float stddev = 0.02f) {
  auto c = test::tiny_llama_config(2);
  auto m = std::make_unique<Model>(c);
  m->init_random(seed, stddev);
  return m;
}

// Share of the target token among sampled continuation tokens.
double target_rate(Model& m, Hooks* hooks, const std::vector<std::vector<int32_t>>& prompts, uint64_t seed) {
  const auto conts = sample_continuations(m, hooks, prompts, 8, seed, -1);
  double hit = 0, n = 0;
  for (const auto& c : conts)
    for (int32_t t : c) hit += t == kTarget, n += 1;
  return hit / n;
}

// Mean per-sequence Σ log π − log π_ref of the policy's own samples.
double measured_kl(Model& pol, Hooks* hooks, Model& ref, const std::vector<std::vector<int32_t>>& prompts, uint64_t seed) {
  const auto conts = sample_continuations(pol, hooks, prompts, 8, seed, -1);
  const auto a = sequence_logprobs(pol, hooks, prompts, conts, 16);
  const auto b = sequence_logprobs(ref, nullptr, prompts, conts, 16);
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] - b[i];
  return s / static_cast<double>(a.size());
}

std::vector<double> toy_reward(const Sequences& s) {
  std::vector<double> r;
  for (int64_t b = 0; b < s.B; ++b) {
    double hit = 0;
    for (int64_t t = s.prompt_len[b]; t < s.length[b]; ++t) hit += s.tokens[b * s.T + t] == kTarget;
    r.push_back(hit / static_cast<double>(s.cont_len(b)));
  }
  return r;
}

PpoConfig toy_ppo(double kl_coef) {
  PpoConfig pc;
  pc.iterations = 12;
  pc.rollout_batch = 32;
  pc.minibatch = 8;
  pc.epochs = 4;
  pc.max_new_tokens = 8;
  pc.lr = 3e-3;
  pc.kl_coef = kl_coef;
  pc.kl_target = 0.0;  // fixed coefficient: the comparison below is about its size
  pc.seed = 3;
  return pc;
}

TEST(RlhfTokenLogprobs, SumsMatchScoreAndBackwardMatchesFiniteDifferences) {
  auto m = toy_model(5);
  const auto prompts = random_prompts(3, 4, 64, 1);
  const std::vector<std::vector<int32_t>> conts = {test::random_tokens(5, 64, 2), test::random_tokens(2, 64, 3),
                                                   test::random_tokens(7, 64, 4)};
  std::vector<const std::vector<int32_t>*> ps, cs;
  std::vector<ScoreRequest> reqs;
  for (size_t i = 0; i < 3; ++i) {
    ps.push_back(&prompts[i]);
    cs.push_back(&conts[i]);
    reqs.push_back({prompts[i], conts[i]});
  }
  const auto seq = Sequences::make(ps, cs, m->config().max_positions);
  TokenLogprobs lp;
  lp.forward(*m, nullptr, seq, false);
  const auto sums = lp.sums();
  const auto ref = score(*m, reqs);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(sums[i], ref[i].sum, 1e-3);

  // f = Σ w·logp with fixed weights; analytic gradient vs central differences.
  m->params().set_all_trainable(true);
  m->params().allocate_grads();
  std::vector<float> w(static_cast<size_t>(seq.B * seq.Tc));
  std::mt19937_64 g(9);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto& x : w) x = d(g);
  auto f = [&] {
    lp.forward(*m, nullptr, seq, false);
    double s = 0;
    for (size_t k = 0; k < w.size(); ++k) s += static_cast<double>(w[k]) * lp.logp()[k];
    return s;
  };
  m->params().zero_grads();
  lp.forward(*m, nullptr, seq, true);
  lp.backward(*m, nullptr, w.data(), nullptr);
  double worst = 0, scale = 0;
  for (const char* name : {"lm_head.weight", "model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
                           "model.embed_tokens.weight"}) {
    Param& p = m->params().get(name);
    for (int64_t i = 3; i < p.numel(); i += p.numel() / 7) {
      const float x0 = p.data[i];
      p.data[i] = x0 + 1e-2f;
      const double fp = f();
      p.data[i] = x0 - 1e-2f;
      const double fm = f();
      p.data[i] = x0;
      worst = std::max(worst, std::fabs((fp - fm) / 2e-2 - p.grad[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(p.grad[i])));
    }
  }
  ASSERT_GT(scale, 0.0);
  EXPECT_LT(worst / scale, 2e-2);
}

TEST(RlhfPpo, RaisesTheRewardOfAToyTaskWithAFullPolicy) {
  auto m = toy_model(1);
  auto ref = copy_model(*m);
  m->params().set_all_trainable(true);
  m->params().allocate_grads();
  const auto prompts = random_prompts(64, 3, 64, 7);
  const double before = target_rate(*m, nullptr, prompts, 99);
  PpoTrainer ppo(*m, nullptr, {&m->params()}, *ref, nullptr, toy_ppo(0.01), -1);
  const auto hist = ppo.train(prompts, toy_reward);
  ASSERT_EQ(hist.size(), 12u);
  EXPECT_FALSE(ppo.diverged());
  const double after = target_rate(*m, nullptr, prompts, 99);
  // Uniform-ish start: ~1/64 of the tokens. The optimum is every token.
  EXPECT_LT(before, 0.05);
  EXPECT_GT(after, 0.3) << "before " << before;
  EXPECT_GT(hist.back().score, hist.front().score + 0.2);
}

TEST(RlhfPpo, RaisesTheRewardOfAToyTaskWithALoraPolicyAndLeavesTheBaseUntouched) {
  // LoRA cannot touch the LM head: with std 0.02 its rows are so short that no hidden state
  // lifts one token's logit by more than ~1; std 0.2 gives the body room to steer.
  auto m = toy_model(1, 0.2f);
  const auto base = copy_model(*m);
  methods::LoraConfig lc;
  lc.rank = 4;
  lc.dropout = 0.0;
  lc.sites = {"q", "k", "v", "o", "up", "down"};
  methods::LoraHooks lora(m->config(), lc);
  const auto prompts = random_prompts(64, 3, 64, 7);
  const double before = target_rate(*m, &lora, prompts, 99);
  auto pc = toy_ppo(0.01);
  pc.lr = 1e-2;
  PpoTrainer ppo(*m, &lora, {&lora.store()}, *m, nullptr, pc, -1);
  const auto hist = ppo.train(prompts, toy_reward);
  const double after = target_rate(*m, &lora, prompts, 99);
  EXPECT_GT(after, before + 0.1) << "before " << before;
  EXPECT_GT(hist.back().score, hist.front().score + 0.1);
  // The reference (the base without hooks) did not move.
  for (size_t i = 0; i < m->params().params().size(); ++i) {
    const auto& a = m->params().params()[i];
    const auto& b = base->params().params()[i];
    ASSERT_TRUE(std::equal(a.data, a.data + a.numel(), b.data)) << a.name;
  }
}

TEST(RlhfPpo, ALargerKlCoefficientKeepsThePolicyNearerTheReference) {
  std::vector<double> kls;
  const auto prompts = random_prompts(64, 3, 64, 7);
  for (double coef : {0.0, 0.5}) {
    auto m = toy_model(1);
    auto ref = copy_model(*m);
    m->params().set_all_trainable(true);
    m->params().allocate_grads();
    PpoTrainer ppo(*m, nullptr, {&m->params()}, *ref, nullptr, toy_ppo(coef), -1);
    ppo.train(prompts, toy_reward);
    kls.push_back(measured_kl(*m, nullptr, *ref, prompts, 123));
  }
  EXPECT_GT(kls[0], 0.5);
  EXPECT_LT(kls[1], 0.5 * kls[0]) << "kl at coef 0: " << kls[0] << ", at 0.5: " << kls[1];
}

TEST(RlhfPpo, AdaptiveControllerMovesTowardsTheTarget) {
  KlController up{0.1, 1.0, 100.0};
  up.update(5.0, 10);  // above target: the coefficient grows (error clipped at +0.2)
  EXPECT_NEAR(up.value, 0.1 * (1 + 0.2 * 10 / 100.0), 1e-12);
  KlController down{0.1, 1.0, 100.0};
  down.update(0.5, 10);
  EXPECT_NEAR(down.value, 0.1 * (1 - 0.2 * 10 / 100.0), 1e-12);  // error −0.5 clipped to −0.2
  KlController fixed{0.1, 0.0, 100.0};
  fixed.update(50.0, 10);
  EXPECT_EQ(fixed.value, 0.1);
  PpoConfig bad;
  bad.minibatch = 64;
  EXPECT_THROW(bad.validate(), InputError);
}

// Pairs whose chosen continuation contains token A and whose rejected one contains B.
std::vector<PreferencePair> toy_pairs(int n, uint64_t seed, int32_t A = 11, int32_t B = 13) {
  std::vector<PreferencePair> out;
  std::mt19937_64 g(seed);
  auto other = [&] {
    int32_t t;
    do t = static_cast<int32_t>(g() % 64);
    while (t == A || t == B);
    return t;
  };
  for (int i = 0; i < n; ++i) {
    PreferencePair p;
    p.id = "p" + std::to_string(i);
    p.split = "train";
    p.prompt = "prompt " + std::to_string(i);
    for (int k = 0; k < 3; ++k) p.prompt_tokens.push_back(other());
    for (int k = 0; k < 6; ++k) p.chosen.push_back(other()), p.rejected.push_back(other());
    p.chosen[g() % 6] = A;
    p.rejected[g() % 6] = B;
    p.chosen_text = "with A";
    p.rejected_text = "with B";
    p.chosen_reward = 1;
    p.rejected_reward = -1;
    out.push_back(p);
  }
  return out;
}

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("tb_rlhf_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

TEST(RlhfDpo, LossFallsAndMarginGrowsOnSavedPairs) {
  const auto dir = temp_dir("dpo");
  const auto file = dir / "pairs.jsonl";
  save_pairs(file, toy_pairs(32, 1));
  const auto pairs = load_pairs(file);
  ASSERT_EQ(pairs.size(), 32u);
  EXPECT_EQ(pairs[5].chosen, toy_pairs(32, 1)[5].chosen);
  std::filesystem::remove_all(dir);

  auto m = toy_model(2);
  m->params().set_all_trainable(true);
  m->params().allocate_grads();
  DpoConfig dc;
  dc.beta = 0.1;
  dc.lr = 3e-3;
  dc.epochs = 6;
  dc.batch = 8;
  DpoTrainer dpo(*m, nullptr, {&m->params()}, dc);
  dpo.set_reference("train", pairs);
  const auto before = dpo.evaluate("train", pairs);
  EXPECT_NEAR(before.loss, std::log(2.0), 1e-6);  // the policy is the reference
  EXPECT_NEAR(before.margin, 0.0, 1e-6);
  const auto steps = dpo.train("train", pairs);
  ASSERT_EQ(steps.size(), 24u);
  const auto after = dpo.evaluate("train", pairs);
  EXPECT_LT(after.loss, before.loss - 0.2);
  EXPECT_GT(after.margin, 0.5);
  EXPECT_GT(after.accuracy, 0.9);
  const double first = (steps[0].train.loss + steps[1].train.loss + steps[2].train.loss + steps[3].train.loss) / 4;
  const double last = (steps[20].train.loss + steps[21].train.loss + steps[22].train.loss + steps[23].train.loss) / 4;
  EXPECT_LT(last, first);
}

TEST(RlhfDpo, AVeryLargeBetaKeepsThePolicyAtTheReference) {
  const auto pairs = toy_pairs(32, 1);
  std::vector<double> drift;
  for (double beta : {0.1, 1e4}) {
    auto m = toy_model(2);
    auto ref = copy_model(*m);
    m->params().set_all_trainable(true);
    m->params().allocate_grads();
    DpoConfig dc;
    dc.beta = beta;
    dc.lr = 3e-3;
    dc.epochs = 6;
    DpoTrainer dpo(*m, nullptr, {&m->params()}, dc);
    dpo.set_reference("train", pairs);
    dpo.train("train", pairs);
    // Mean |log π − log π_ref| of the pairs' continuations.
    std::vector<std::vector<int32_t>> ps, cs;
    for (const auto& p : pairs) ps.push_back(p.prompt_tokens), cs.push_back(p.chosen), ps.push_back(p.prompt_tokens),
        cs.push_back(p.rejected);
    const auto a = sequence_logprobs(*m, nullptr, ps, cs, 16);
    const auto b = sequence_logprobs(*ref, nullptr, ps, cs, 16);
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d += std::fabs(a[i] - b[i]) / static_cast<double>(a.size());
    drift.push_back(d);
  }
  EXPECT_GT(drift[0], 1.0);
  EXPECT_LT(drift[1], 0.2 * drift[0]) << "drift at beta 0.1: " << drift[0] << ", at 1e4: " << drift[1];
}

TEST(RlhfRewardModel, LearnsAToyPreferenceToHeldOutAccuracy) {
  auto m = toy_model(4);
  const auto train = toy_pairs(128, 1);
  const auto dev = toy_pairs(32, 2);
  const auto test = toy_pairs(64, 3);
  RewardConfig rc;
  rc.train = "lora";
  rc.lr = 3e-3;
  rc.epochs = 6;
  rc.lora.rank = 4;
  rc.lora.dropout = 0.0;
  rc.lora.sites = {"q", "k", "v", "o"};
  RewardModel rm(*m, rc);
  EXPECT_NEAR(rm.accuracy(test), 0.5, 0.3);
  const auto st = rm.fit(train, dev);
  EXPECT_EQ(st.train_loss.size(), 6u);
  EXPECT_LT(st.train_loss.back(), st.train_loss.front());
  EXPECT_GE(rm.accuracy(test), 0.9);
  EXPECT_EQ(rm.trainable_params(), m->config().hidden + 1 + 2 * (2 * 4 * (48 + 48) + 2 * 4 * (48 + 24)));
  RewardConfig bogus;
  bogus.train = "bogus";
  EXPECT_THROW(RewardModel(*m, bogus), InputError);
}

TEST(RlhfRewardModel, ASummedPerTokenRewardLearnsTheToyPreference) {
  auto m = toy_model(4);
  RewardConfig rc;
  rc.train = "lora";
  rc.pool = RewardPool::sum;
  rc.lr = 3e-3;
  rc.epochs = 6;
  rc.lora.rank = 4;
  rc.lora.dropout = 0.0;
  rc.lora.sites = {"q", "k", "v", "o"};
  RewardModel rm(*m, rc);
  const auto test = toy_pairs(64, 3);
  EXPECT_NEAR(rm.accuracy(test), 0.5, 0.3);
  const auto st = rm.fit(toy_pairs(128, 1), toy_pairs(32, 2));
  EXPECT_LT(st.train_loss.back(), st.train_loss.front());
  EXPECT_GE(rm.accuracy(test), 0.9);
}

// ---- sentiment-steer with a tiny tokenizer and model -------------------------------------

struct SteerFixture {
  std::shared_ptr<const tasks::Task> task;
  std::vector<tasks::Example> train, dev, test;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Model> model;
  std::filesystem::path dir = temp_dir("steer");
  methods::Meter meter;

  SteerFixture() {
    static const auto registry = tasks::Registry::standard();
    task = registry.load("sentiment-steer");
    const auto& tr = task->split("train");
    train.assign(tr.begin(), tr.begin() + 48);
    dev.assign(task->split("dev").begin(), task->split("dev").begin() + 12);
    test.assign(task->split("test").begin(), task->split("test").begin() + 12);
    std::vector<std::string> texts;
    for (const auto& ex : tr) texts.push_back(ex.text);
    // Sentiment words as whole tokens, so random continuations often carry a judgement.
    for (int i = 0; i < 50; ++i) texts.push_back("good bad great awful love hate best worst nice poor");
    tok = std::make_unique<Tokenizer>(Tokenizer::train(texts, 1000, {"<|endoftext|>"}));
    ModelConfig c = test::tiny_llama_config(2);
    c.vocab_size = tok->vocab_size();
    c.max_positions = 48;
    c.eos_token_id = c.bos_token_id = *tok->id_of("<|endoftext|>");
    model = std::make_unique<Model>(c);
    model->init_random(0, 0.02f);
  }
  ~SteerFixture() { std::filesystem::remove_all(dir); }

  methods::RunContext context(const methods::MethodInfo& info, const std::map<std::string, std::string>& over) {
    std::map<std::string, std::string> values;
    for (const auto& o : info.options) values[o.name] = o.default_value;
    for (const auto& [k, v] : over) values[k] = v;
    return methods::RunContext{*model, *tok, *task, 0, methods::Options("rlhf", values), meter, 12, dir / "cache",
                               "tiny-model", train, dev};
  }
};

TEST(RlhfPairs, OrderedByTheGoldJudgeWithoutTiesAndDeterministic) {
  SteerFixture f;
  PairSampling ps;
  ps.candidates = 4;
  ps.max_new_tokens = 6;
  ps.seed = 5;
  int64_t generated = 0;
  const auto a = sample_pairs(*f.model, nullptr, *f.tok, *f.task, f.train, "train", ps, &generated);
  const auto b = sample_pairs(*f.model, nullptr, *f.tok, *f.task, f.train, "train", ps);
  ASSERT_GT(a.size(), 5u);
  EXPECT_LE(generated, 48 * 4 * 6);
  EXPECT_GE(generated, 48 * 4);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].chosen, b[i].chosen);
    EXPECT_GT(a[i].chosen_reward, a[i].rejected_reward);
    EXPECT_EQ(a[i].chosen_reward, f.task->gold_reward(a[i].prompt, a[i].chosen_text));
    EXPECT_EQ(a[i].chosen_text, continuation_text(*f.tok, a[i].chosen, f.model->config().eos_token_id));
    EXPECT_EQ(a[i].prompt_tokens.front(), f.model->config().bos_token_id);
  }
  const auto file = f.dir / "p.jsonl";
  save_pairs(file, a);
  const auto c = load_pairs(file);
  ASSERT_EQ(c.size(), a.size());
  EXPECT_EQ(c.back().rejected, a.back().rejected);
  EXPECT_EQ(c.back().rejected_reward, a.back().rejected_reward);
  std::ofstream(file, std::ios::app) << "{\"id\": 1}\n";
  try {
    load_pairs(file);
    FAIL() << "malformed line accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("p.jsonl:" + std::to_string(a.size() + 1)), std::string::npos) << e.what();
  }
}

TEST(RlhfPairs, AllComparisonsKeepTheBestWorstPairsAndOrderEveryOtherByMargin) {
  SteerFixture f;
  PairSampling ps;
  ps.candidates = 4;
  ps.max_new_tokens = 6;
  ps.seed = 5;
  const auto bw = sample_pairs(*f.model, nullptr, *f.tok, *f.task, f.train, "train", ps);
  ps.all_comparisons = true;
  ps.min_margin = 1.0;
  const auto all = sample_pairs(*f.model, nullptr, *f.tok, *f.task, f.train, "train", ps);
  std::vector<PreferencePair> kept;
  for (const auto& p : all) {
    EXPECT_GE(p.chosen_reward - p.rejected_reward, 1.0);
    if (p.best_worst) kept.push_back(p);
  }
  ASSERT_EQ(kept.size(), bw.size());
  EXPECT_GT(all.size(), bw.size());
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i].id, bw[i].id);
    EXPECT_EQ(kept[i].chosen, bw[i].chosen);
    EXPECT_EQ(kept[i].rejected, bw[i].rejected);
  }
  const auto file = f.dir / "all.jsonl";
  save_pairs(file, all);
  const auto back = load_pairs(file);
  ASSERT_EQ(back.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(back[i].best_worst, all[i].best_worst);
  ps.min_margin = 0.0;
  EXPECT_THROW(sample_pairs(*f.model, nullptr, *f.tok, *f.task, f.train, "train", ps), InputError);
}

TEST(RlhfMethod, PpoAndDpoRunEndToEndWithMetricsMemoryAndPairCache) {
  const auto& info = methods::rlhf_method_info();
  for (const std::string algo : {"ppo", "dpo"}) {
    SCOPED_TRACE(algo);
    SteerFixture f;
    const std::map<std::string, std::string> opts = {
        {"algo", algo},          {"pairs", "48"},         {"eval-pairs", "12"},   {"max-new", "6"},
        {"rm-epochs", "3"},      {"ppo-iterations", "2"}, {"rollout-batch", "8"}, {"minibatch", "4"},
        {"ppo-epochs", "2"},     {"dpo-epochs", "1"},     {"lora-rank", "2"}};
    auto ctx = f.context(info, opts);
    auto method = info.make();
    method->prepare(ctx);
    ASSERT_EQ(f.meter.status, "ok");
    const auto preds = method->predict(ctx, f.test);
    ASSERT_EQ(preds.size(), f.test.size());
    std::map<std::string, double> ms;
    for (const auto& m : f.meter.metrics) ms[m.name] = m.value;
    for (const char* name : {"gold_reward", "gold_reward_base", "kl", "win_rate"}) EXPECT_TRUE(ms.count(name)) << name;
    double gold = 0;
    for (size_t i = 0; i < preds.size(); ++i) gold += f.task->gold_reward(f.task->render(f.test[i]), preds[i].text);
    EXPECT_NEAR(ms["gold_reward"], gold / static_cast<double>(preds.size()), 1e-9);
    EXPECT_GE(ms["win_rate"], 0.0);
    EXPECT_LE(ms["win_rate"], 1.0);
    const auto& mem = f.meter.memory;
    EXPECT_EQ(mem.at("reference"), f.model->params().value_bytes());
    EXPECT_GT(mem.at("policy"), 0);
    EXPECT_GT(mem.at("optimizer_state"), 0);
    EXPECT_EQ(mem.at("weights"), mem.at("policy") + mem.at("reference") + mem.at("value_model") + mem.at("reward_model"));
    if (algo == "ppo") {
      EXPECT_TRUE(ms.count("mean_reward"));
      EXPECT_GT(mem.at("value_model"), 0);
      EXPECT_GT(mem.at("reward_model"), 0);
      EXPECT_GT(mem.at("kv_cache"), 0);
      EXPECT_GT(f.meter.details["rollout_tokens_per_s"].get<double>(), 0);
      EXPECT_EQ(f.meter.steps, 2);
    }
    EXPECT_GT(f.meter.details["update_tokens_per_s"].get<double>(), 0);
    EXPECT_GT(method->trainable_params(), 0);
    EXPECT_NE(method->lm_hooks(), nullptr);  // the LoRA policy: forgetting is measured through it
    EXPECT_GT(method->save_adaptation(f.dir / "adapt"), 0);
    EXPECT_TRUE(std::filesystem::exists(f.dir / "adapt" / "adaptation.safetensors"));
    const std::string pairs_file = f.meter.details["pairs"]["file"];
    EXPECT_TRUE(std::filesystem::exists(pairs_file));
    EXPECT_FALSE(f.meter.details["pairs"]["cached"].get<bool>());

    // A second run with the same model and options reuses the saved pairs.
    methods::Meter m2;
    methods::RunContext ctx2{*f.model, *f.tok, *f.task, 0, ctx.options, m2, 12, f.dir / "cache", "tiny-model", f.train, f.dev};
    auto again = info.make();
    again->prepare(ctx2);
    EXPECT_TRUE(m2.details["pairs"]["cached"].get<bool>());
    EXPECT_EQ(m2.details["pairs"]["train"], f.meter.details["pairs"]["train"]);
    // Reading the pairs is a cache hit carrying the sampling's cost, not a free sampling.
    EXPECT_FALSE(f.meter.cache_hit);
    EXPECT_TRUE(m2.cache_hit);
    ASSERT_TRUE(m2.cached_cost.contains("pairs"));
    EXPECT_EQ(m2.cached_cost["pairs"]["tokens"].get<int64_t>(), f.meter.details["pairs"]["sampled_tokens"].get<int64_t>());
    EXPECT_GT(m2.cached_cost["pairs"]["tokens"].get<int64_t>(), 0);
    EXPECT_GT(m2.cached_cost["pairs"]["flops"].get<double>(), 0.0);
  }
}

TEST(RlhfMethod, AFullPolicyTrainsTheModelAgainstAFrozenReferenceCopy) {
  const auto& info = methods::rlhf_method_info();
  SteerFixture f;
  auto ctx = f.context(info, {{"policy", "full"}, {"rm-train", "full"}, {"pairs", "48"}, {"eval-pairs", "12"},
                              {"max-new", "6"}, {"rm-epochs", "1"}, {"ppo-iterations", "2"}, {"rollout-batch", "8"},
                              {"minibatch", "4"}, {"ppo-epochs", "1"}, {"lr", "1e-3"}});
  const auto before = copy_model(*f.model);
  auto method = info.make();
  method->prepare(ctx);
  ASSERT_EQ(f.meter.status, "ok");
  EXPECT_TRUE(method->changes_base());
  EXPECT_EQ(method->lm_hooks(), nullptr);
  const int64_t base = f.model->params().value_bytes();
  EXPECT_EQ(f.meter.memory.at("policy"), base);
  EXPECT_EQ(f.meter.memory.at("reference"), base);
  EXPECT_GT(f.meter.memory.at("reward_model"), base);  // its own trained copy plus the head
  bool moved = false;
  for (size_t i = 0; i < f.model->params().params().size() && !moved; ++i) {
    const auto& a = f.model->params().params()[i];
    moved = !std::equal(a.data, a.data + a.numel(), before->params().params()[i].data);
  }
  EXPECT_TRUE(moved);
  method->predict(ctx, f.test);
  for (const auto& m : f.meter.metrics)
    if (m.name == "kl") EXPECT_TRUE(std::isfinite(m.value));
}

TEST(RlhfMethod, RejectsBadOptionsAndNonPreferenceTasks) {
  const auto& info = methods::rlhf_method_info();
  SteerFixture f;
  for (const auto& [k, v] : std::map<std::string, std::string>{{"algo", "sft"}, {"policy", "half"}, {"rm-train", "x"}, {"rm-pool", "max"}}) {
    auto ctx = f.context(info, {{k, v}, {"pairs", "8"}, {"eval-pairs", "2"}, {"max-new", "4"}});
    auto method = info.make();
    EXPECT_THROW(method->prepare(ctx), InputError) << k;
  }
  const auto classify = tasks::Registry::standard().load("sentiment-amazon");
  auto base = f.context(info, {});
  methods::RunContext ctx{*f.model, *f.tok, *classify, 0, base.options, f.meter, 12, f.dir / "cache", "tiny-model",
                          f.train, f.dev};
  EXPECT_THROW(info.make()->prepare(ctx), InputError);
  EXPECT_EQ(info.supports, std::vector<tasks::OutputType>{tasks::OutputType::preference});
}

}  // namespace
