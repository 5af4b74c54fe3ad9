// Tests of sampling and scoring: greedy decoding equals the argmax of full recomputation,
// seeds reproduce samples, top-k 1 is greedy, top-p keeps the nucleus, stop tokens end a
// sequence, and batched scoring equals the log-softmax of an unbatched forward.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "harness/base/errors.h"
#include "harness/core/generate.h"
#include "harness/core/model_io.h"

namespace {

const std::string kDir = std::string(TB_SOURCE_DIR) + "/tests/goldens/";

std::vector<float> full_logits(tb::Model& m, const std::vector<int32_t>& seq) {
  m.forward(seq.data(), 1, static_cast<int64_t>(seq.size()));
  std::vector<float> out(seq.size() * m.config().vocab_size);
  m.logits(out.data());
  return out;
}

TEST(Generate, GreedyEqualsArgmaxOfFullRecomputation) {
  for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
    auto m = tb::load_model(kDir + name);
    const int64_t V = m->config().vocab_size;
    tb::GenerateOptions opt;
    opt.temperature = 0.0f;
    opt.max_new_tokens = 8;
    std::vector<std::vector<int32_t>> prompts = {{5, 17, 96}, {1, 2, 3}, {40, 41}};
    auto gens = tb::generate(*m, prompts, opt);
    ASSERT_EQ(gens.size(), 3u);
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto seq = prompts[i];
      ASSERT_EQ(gens[i].tokens.size(), 8u);
      EXPECT_EQ(gens[i].stop_reason, "max_new_tokens");
      for (size_t s = 0; s < gens[i].tokens.size(); ++s) {
        auto lg = full_logits(*m, seq);
        const float* last = lg.data() + (seq.size() - 1) * V;
        const int32_t want = static_cast<int32_t>(std::max_element(last, last + V) - last);
        ASSERT_EQ(gens[i].tokens[s], want) << name << " prompt " << i << " step " << s;
        seq.push_back(want);
      }
    }
  }
}

TEST(Generate, SeedReproducesAndTopKOneIsGreedy) {
  auto m = tb::load_model(kDir + "llama-tiny");
  tb::GenerateOptions opt;
  opt.temperature = 1.0f;
  opt.max_new_tokens = 10;
  opt.seed = 7;
  std::vector<std::vector<int32_t>> prompts = {{5, 6}, {9, 10}};
  auto a = tb::generate(*m, prompts, opt), b = tb::generate(*m, prompts, opt);
  EXPECT_EQ(a[0].tokens, b[0].tokens);
  EXPECT_EQ(a[1].tokens, b[1].tokens);
  // A sequence's sample does not depend on its batch companions.
  auto solo = tb::generate(*m, {prompts[1]}, opt);
  opt.seed = 8;
  auto c = tb::generate(*m, prompts, opt);
  EXPECT_NE(a[0].tokens, c[0].tokens);
  opt.top_k = 1;
  auto k1 = tb::generate(*m, prompts, opt);
  opt.top_k = 0;
  opt.temperature = 0.0f;
  auto greedy = tb::generate(*m, prompts, opt);
  EXPECT_EQ(k1[0].tokens, greedy[0].tokens);
  EXPECT_EQ(k1[1].tokens, greedy[1].tokens);
}

TEST(Generate, TopPKeepsOnlyTheNucleus) {
  // Probabilities ∝ exp(logits): 0.5, 0.3, 0.2 (approx). top_p = 0.6 keeps the first two.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  tb::GenerateOptions opt;
  opt.top_p = 0.6f;
  std::set<int32_t> seen;
  uint64_t rng = 1;
  for (int i = 0; i < 500; ++i) seen.insert(tb::sample_token(logits.data(), 3, opt, rng));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
  opt.top_p = 1.0f;
  seen.clear();
  for (int i = 0; i < 500; ++i) seen.insert(tb::sample_token(logits.data(), 3, opt, rng));
  EXPECT_EQ(seen.size(), 3u);
}

TEST(Generate, StopTokenEndsTheSequence) {
  auto m = tb::load_model(kDir + "gpt2-tiny");
  tb::GenerateOptions opt;
  opt.temperature = 0.0f;
  opt.max_new_tokens = 6;
  auto free_run = tb::generate(*m, {{5, 17, 96}}, opt);
  opt.stop_tokens = {free_run[0].tokens[2]};
  auto stopped = tb::generate(*m, {{5, 17, 96}}, opt);
  const auto& t = stopped[0].tokens;
  EXPECT_EQ(stopped[0].stop_reason, "stop_token");
  EXPECT_EQ(t.back(), free_run[0].tokens[2]);
  EXPECT_LE(t.size(), 3u);
}

TEST(Generate, PromptFillingTheContextIsAnInputError) {
  auto m = tb::load_model(kDir + "gpt2-tiny");
  std::vector<int32_t> long_prompt(m->config().max_positions, 3);
  EXPECT_THROW(tb::generate(*m, {long_prompt}, {}), tb::InputError);
}

TEST(Score, BatchedScoresEqualUnbatchedLogSoftmax) {
  auto m = tb::load_model(kDir + "llama-tiny");
  const int64_t V = m->config().vocab_size;
  std::vector<tb::ScoreRequest> reqs = {{{5, 17, 96}, {0, 42}}, {{1}, {2, 3, 4, 5}}, {{7, 7, 7, 7, 7}, {8}}};
  auto scores = tb::score(*m, reqs, nullptr, /*batch_size=*/3);
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto seq = reqs[i].context;
    seq.insert(seq.end(), reqs[i].continuation.begin(), reqs[i].continuation.end());
    auto lg = full_logits(*m, seq);
    double sum = 0;
    for (size_t j = 0; j < reqs[i].continuation.size(); ++j) {
      const size_t pos = reqs[i].context.size() + j - 1;
      const float* row = lg.data() + pos * V;
      double mx = *std::max_element(row, row + V), s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(row[v] - mx);
      const double want = row[reqs[i].continuation[j]] - mx - std::log(s);
      EXPECT_NEAR(scores[i].token_logprobs[j], want, 1e-4) << i << "," << j;
      sum += want;
    }
    EXPECT_NEAR(scores[i].sum, sum, 1e-3);
  }
}

TEST(Score, LeftTruncationIsCounted) {
  auto m = tb::load_model(kDir + "gpt2-tiny");
  std::vector<int32_t> ctx(m->config().max_positions + 5, 4);
  int64_t truncated = -1;
  auto s = tb::score(*m, {{ctx, {5, 6}}, {{1, 2}, {3}}}, nullptr, 2, &truncated);
  EXPECT_EQ(truncated, 1);
  EXPECT_EQ(s[0].token_logprobs.size(), 2u);
  std::vector<int32_t> huge(m->config().max_positions + 1, 4);
  EXPECT_THROW(tb::score(*m, {{{1}, huge}}), tb::InputError);
}

}  // namespace
