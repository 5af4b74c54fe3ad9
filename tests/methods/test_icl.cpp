// In-context learning and the LM scoring it shares with prompt and index: k = 0 is exactly
// zero-shot tb::score scoring, candidate scoring equals tb::score for multi-token answers,
// knn selects the true nearest neighbours of a hand-made set, balanced selection takes the
// classes in turn, an overlong prompt is cut by the stated policy and counted, and
// calibration divides out the content-free answer distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "harness/base/errors.h"
#include "harness/core/generate.h"
#include "methods/icl.h"
#include "methods/lm_scoring.h"
#include "tests/methods/method_fixture.h"

using tb::testing::MethodFixture;
namespace m = tb::methods;

namespace {

// Zero-shot reference straight from tb::score: log-probs of " verbaliser" after the prompt.
std::vector<std::vector<double>> zero_shot(MethodFixture& f, const std::vector<tb::tasks::Example>& exs) {
  std::vector<tb::ScoreRequest> reqs;
  for (const auto& ex : exs)
    for (const auto& v : f.task->verbalisers())
      reqs.push_back({m::encode_prompt(*f.model, *f.tok, f.task->render(ex)), f.tok->encode(" " + v)});
  const auto s = tb::score(*f.model, reqs, nullptr, 7);
  std::vector<std::vector<double>> out;
  const size_t K = f.task->verbalisers().size();
  for (size_t i = 0; i < exs.size(); ++i) {
    std::vector<double> row;
    for (size_t c = 0; c < K; ++c) row.push_back(s[i * K + c].sum);
    out.push_back(row);
  }
  return out;
}

}  // namespace

TEST(Icl, KZeroEqualsZeroShotScoring) {
  MethodFixture f(tb::Family::llama);
  const auto info = m::icl_method_info();
  auto ctx = f.context(info, {{"k", "0"}});
  auto method = info.make();
  method->prepare(ctx);
  const auto preds = method->predict(ctx, f.test);
  const auto ref = zero_shot(f, f.test);
  ASSERT_EQ(preds.size(), f.test.size());
  for (size_t i = 0; i < preds.size(); ++i) {
    const auto want = m::log_normalise(ref[i]);
    ASSERT_EQ(preds[i].scores.size(), want.size());
    for (size_t c = 0; c < want.size(); ++c) EXPECT_NEAR(preds[i].scores[c], want[c], 1e-4) << "example " << i;
    EXPECT_EQ(preds[i].label, m::argmax(ref[i]));
  }
  EXPECT_EQ(method->trainable_params(), 0);
  EXPECT_EQ(method->save_adaptation(f.dir), 0);
  EXPECT_EQ(f.meter.details["by_k"]["0"]["truncated_prompts"], 0);
  EXPECT_GT(f.meter.phase("test_eval").tokens, 0);
  EXPECT_GT(f.meter.memory["kv_cache"], 0);
}

TEST(Icl, CandidateScoringEqualsScoreForMultiTokenAnswers) {
  MethodFixture f(tb::Family::gpt2);
  std::vector<std::vector<int32_t>> contexts;
  std::vector<std::vector<std::vector<int32_t>>> cands;
  const std::vector<std::string> answers = {" good", " really wonderful", " the film was terrible", " bad"};
  for (size_t i = 0; i < 5; ++i) {
    contexts.push_back(m::encode_prompt(*f.model, *f.tok, f.test[i].text + ". It was"));
    std::vector<std::vector<int32_t>> c;
    for (const auto& a : answers) c.push_back(f.tok->encode(a));
    cands.push_back(c);
  }
  ASSERT_GT(cands[0][2].size(), 2u);  // a multi-token answer takes the tb::score path
  m::LmCost cost;
  const auto got = m::score_candidates(*f.model, contexts, cands, 3, cost);
  for (size_t i = 0; i < contexts.size(); ++i)
    for (size_t c = 0; c < answers.size(); ++c) {
      const auto want = tb::score(*f.model, {{contexts[i], cands[i][c]}});
      EXPECT_NEAR(got[i][c], want[0].sum, 1e-4) << i << "," << c;
    }
  EXPECT_GT(cost.tokens, 0);
  EXPECT_GT(cost.flops, 0.0);
}

TEST(Icl, KnnReturnsTheTrueNearestNeighbours) {
  // Hand-made unit vectors in 3-d; the query points along x with a little y.
  const std::vector<std::vector<float>> raw = {{1, 0, 0}, {0, 1, 0}, {0.9f, 0.1f, 0}, {0, 0, 1},
                                               {0.7f, 0.7f, 0}, {-1, 0, 0}, {0.6f, 0, 0.8f}};
  std::vector<float> pool;
  for (auto v : raw) {
    const float n = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    for (float x : v) pool.push_back(x / n);
  }
  std::vector<float> q = {1.0f, 0.05f, 0.0f};
  const float qn = std::sqrt(1.0f + 0.0025f);
  for (auto& x : q) x /= qn;
  // Cosines: #2 0.998, #0 0.999, #4 0.742, #6 0.599, #1 0.05, #3 0, #5 -1 → nearest: 0, 2, 4, 6.
  const auto four = m::select_knn(pool.data(), 7, 3, q.data(), 4);
  EXPECT_EQ(four, (std::vector<int64_t>{6, 4, 2, 0}));  // farthest first, nearest next to the query
  EXPECT_EQ(m::select_knn(pool.data(), 7, 3, q.data(), 1), (std::vector<int64_t>{0}));
  EXPECT_EQ(m::select_knn(pool.data(), 7, 3, q.data(), 20).size(), 7u);
  EXPECT_EQ(m::select_knn(pool.data(), 7, 3, q.data(), 20).front(), 5);  // the opposite vector is farthest
}

TEST(Icl, KnnSelectionEndToEndPicksNeighboursFromThePool) {
  MethodFixture f(tb::Family::llama);
  const auto info = m::icl_method_info();
  auto ctx = f.context(info, {{"k", "2"}, {"select", "knn"}});
  auto method = info.make();
  method->prepare(ctx);
  EXPECT_EQ(f.meter.memory["index"], static_cast<int64_t>(f.train.size() * f.model->config().hidden * sizeof(float)));
  const auto preds = method->predict(ctx, f.test);
  EXPECT_EQ(preds.size(), f.test.size());
  EXPECT_EQ(f.meter.details["selection"], "knn");
  EXPECT_GT(f.meter.details["by_k"]["2"]["mean_blocks"].get<double>(), 0.0);
  // The demonstrations reach the model: the scores differ from zero-shot ones.
  const auto ref = zero_shot(f, f.test);
  double diff = 0.0;
  for (size_t i = 0; i < preds.size(); ++i) diff += std::fabs(preds[i].scores[0] - m::log_normalise(ref[i])[0]);
  EXPECT_GT(diff, 1e-3) << "mean blocks " << f.meter.details["by_k"]["2"].dump();
}

TEST(Icl, BalancedSelectionTakesClassesInTurn) {
  std::vector<int> labels;
  for (int i = 0; i < 30; ++i) labels.push_back(i < 24 ? 0 : (i < 27 ? 1 : 2));  // skewed: 24/3/3
  const auto sel = m::select_balanced(labels, 6, 42);
  ASSERT_EQ(sel.size(), 6u);
  std::map<int, int> count;
  for (auto i : sel) ++count[labels[static_cast<size_t>(i)]];
  EXPECT_EQ(count[0], 2);
  EXPECT_EQ(count[1], 2);
  EXPECT_EQ(count[2], 2);
  // Every suffix (a smaller k of the same run) stays balanced to within one.
  for (size_t k = 1; k <= sel.size(); ++k) {
    std::map<int, int> c;
    for (size_t j = sel.size() - k; j < sel.size(); ++j) ++c[labels[static_cast<size_t>(sel[j])]];
    int lo = 100, hi = 0;
    for (int l = 0; l < 3; ++l) lo = std::min(lo, c[l]), hi = std::max(hi, c[l]);
    EXPECT_LE(hi - lo, 1) << "k " << k;
  }
  EXPECT_EQ(std::set<int64_t>(sel.begin(), sel.end()).size(), sel.size());
  EXPECT_EQ(m::select_balanced(labels, 6, 42), sel);  // deterministic in the seed
  const auto r = m::select_random(30, 5, 1);
  EXPECT_EQ(std::set<int64_t>(r.begin(), r.end()).size(), 5u);
}

TEST(Icl, OverlongPromptIsTruncatedByThePolicyAndCounted) {
  MethodFixture f(tb::Family::gpt2);  // context window 64
  const int64_t window = f.model->config().max_positions;
  const std::vector<std::string> blocks = {"first block the film was good", "second block the plot was bad",
                                           "third block the meal was great", "fourth block the book was boring"};
  m::PromptParts q{"Review: ", "the acting was really wonderful", "\nSentiment:"};
  // Room for about two blocks: the farthest (first) ones go.
  const std::string two = blocks[2] + "\n\n" + blocks[3] + "\n\n" + q.whole();
  const int64_t reserve = window - static_cast<int64_t>(m::encode_prompt(*f.model, *f.tok, two).size());
  auto a = m::assemble_prompt(*f.model, *f.tok, blocks, q, "\n\n", reserve);
  EXPECT_EQ(a.blocks_dropped, 2);
  EXPECT_EQ(a.blocks_kept, 2);
  EXPECT_FALSE(a.text_truncated);
  const std::string text = f.tok->decode(a.tokens);
  EXPECT_EQ(text, two);
  EXPECT_LE(static_cast<int64_t>(a.tokens.size()) + reserve, window);

  // A query longer than the window: every block goes, the text is left-truncated, the
  // template around it survives.
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += " word" + std::to_string(i);
  m::PromptParts lq{"Review:", long_text, "\nSentiment:"};
  a = m::assemble_prompt(*f.model, *f.tok, blocks, lq, "\n\n", 2);
  EXPECT_EQ(a.blocks_dropped, 4);
  EXPECT_TRUE(a.text_truncated);
  EXPECT_EQ(static_cast<int64_t>(a.tokens.size()), window - 2);
  const std::string cut = f.tok->decode(a.tokens);
  EXPECT_EQ(cut.rfind("Review:", 0), 0u) << cut;
  EXPECT_NE(cut.find(" word39\nSentiment:"), std::string::npos) << cut;
  EXPECT_EQ(cut.find(" word0 "), std::string::npos) << cut;

  // Through the method: 8 demonstrations never fit a 64-token window; each test prompt
  // is counted once and keeps the demonstrations nearest the query.
  const auto info = m::icl_method_info();
  auto ctx = f.context(info, {{"k", "0,8"}});
  auto method = info.make();
  method->prepare(ctx);
  method->predict(ctx, f.test);
  const auto& by8 = f.meter.details["by_k"]["8"];
  EXPECT_EQ(by8["truncated_prompts"], static_cast<int64_t>(f.test.size()));
  EXPECT_GT(by8["dropped_blocks"].get<int64_t>(), 0);
  EXPECT_LT(by8["mean_blocks"].get<double>(), 8.0);
  EXPECT_EQ(f.meter.details["by_k"]["0"]["truncated_prompts"], 0);
  EXPECT_EQ(f.meter.details["truncated_prompts"], by8["truncated_prompts"]);
  EXPECT_EQ(f.meter.details["prediction_k"], 8);
}

TEST(Icl, CalibrationDividesOutTheContentFreeDistribution) {
  MethodFixture f(tb::Family::llama);
  const auto info = m::icl_method_info();
  auto ctx = f.context(info, {{"k", "0"}, {"calibrate", "true"}});
  auto method = info.make();
  method->prepare(ctx);
  const auto preds = method->predict(ctx, f.test);
  EXPECT_EQ(f.meter.details["by_k"]["0"]["content_free_prompts"], 1);  // one "N/A" prompt serves all
  tb::tasks::Example cf = f.test[0];
  cf.text = "N/A";
  const auto p_cf = m::log_normalise(zero_shot(f, {cf})[0]);
  const auto ref = zero_shot(f, f.test);
  for (size_t i = 0; i < preds.size(); ++i) {
    auto s = m::log_normalise(ref[i]);
    for (size_t c = 0; c < s.size(); ++c) s[c] -= p_cf[c];
    s = m::log_normalise(s);
    for (size_t c = 0; c < s.size(); ++c) EXPECT_NEAR(preds[i].scores[c], s[c], 1e-4);
    EXPECT_EQ(preds[i].label, m::argmax(s));
  }
}

TEST(Icl, BadOptionsAreInputErrors) {
  MethodFixture f(tb::Family::llama);
  const auto info = m::icl_method_info();
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"k", "-1"}, {"select", "nearest"}, {"pool", "max"}, {"calibrate", "maybe"}}) {
    auto ctx = f.context(info, {{k, v}});
    EXPECT_THROW(info.make()->prepare(ctx), tb::InputError) << k << "=" << v;
  }
}

// The record's eval figures are the reported prediction's (the last k): the other k's of
// --icl.k are metered apart, as details.other_k_eval. The demonstrations of the last k are
// the same either way (chosen for the largest k), so the figures are equal exactly.
TEST(Icl, EvalFiguresAreTheReportedKsAlone) {
  auto run = [](const std::string& ks, tb::methods::Meter& out) {
    MethodFixture f(tb::Family::llama);
    const auto info = m::icl_method_info();
    auto ctx = f.context(info, {{"k", ks}, {"select", "random"}});
    auto method = info.make();
    method->prepare(ctx);
    const double f0 = f.model->flop_count();
    method->predict(ctx, f.test);
    out = f.meter;
    return f.model->flop_count() - f0;
  };
  tb::methods::Meter one, several;
  const double model_one = run("2", one);
  const double model_several = run("0,1,2", several);
  EXPECT_EQ(several.phase("test_eval").tokens, one.phase("test_eval").tokens);
  EXPECT_DOUBLE_EQ(several.phase("test_eval").flops, one.phase("test_eval").flops);
  EXPECT_DOUBLE_EQ(one.phase("test_eval").flops, model_one);  // the model's own count of the pass
  EXPECT_DOUBLE_EQ(several.phase("test_eval").flops + several.details["other_k_eval"]["flops"].get<double>(), model_several);
  EXPECT_GT(several.details["other_k_eval"]["tokens"].get<int64_t>(), 0);
  EXPECT_EQ(one.details["other_k_eval"]["tokens"].get<int64_t>(), 0);
}
