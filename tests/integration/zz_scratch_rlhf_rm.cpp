// SCRATCH (helper experiment, to be deleted): linear reward-head probes on pooled features.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "harness/core/generate.h"
#include "harness/core/model_io.h"
#include "harness/core/tokenizer.h"
#include "methods/lm_scoring.h"
#include "methods/rlhf_data.h"
#include "tasks/registry.h"

namespace {
using namespace tb;
const std::filesystem::path kModelDir = std::filesystem::path(TB_SOURCE_DIR) / "models" / "default";

std::vector<tasks::Example> sample_prompts(const std::vector<tasks::Example>& xs, int64_t n, uint64_t seed) {
  std::vector<size_t> idx(xs.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::mt19937_64 g(seed);
  std::shuffle(idx.begin(), idx.end(), g);
  idx.resize(std::min(idx.size(), static_cast<size_t>(n)));
  std::vector<tasks::Example> out;
  for (size_t i : idx) out.push_back(xs[i]);
  return out;
}

struct Cand {
  std::vector<int32_t> prompt, cont;
  double r;
  int split, group;
};

struct Pair { int a, b; };  // a preferred

TEST(ZzScratch, RmProbe) {
  if (!std::getenv("TB_SCRATCH")) GTEST_SKIP();
  const int K = 4;
  static const auto registry = tasks::Registry::standard();
  const auto task = registry.load("sentiment-steer");
  auto model = load_model(kModelDir);
  const auto tok = Tokenizer::from_dir(kModelDir.string());
  const int64_t ntrain = std::getenv("TB_NTRAIN") ? std::atoll(std::getenv("TB_NTRAIN")) : 1024;
  auto test_split = task->split("test");
  const std::vector<std::vector<tasks::Example>> prompts = {sample_prompts(task->split("train"), ntrain, 1),
                                                           sample_prompts(task->split("dev"), 64, 2),
                                                           sample_prompts(test_split, 64, 3)};
  std::vector<Cand> cands;
  const int32_t stop = model->config().eos_token_id;
  int group = 0;
  for (int sp = 0; sp < 3; ++sp) {
    std::vector<std::vector<int32_t>> req;
    std::vector<std::string> texts;
    for (const auto& ex : prompts[sp]) {
      texts.push_back(task->render(ex));
      auto e = methods::encode_prompt(*model, tok, texts.back());
      for (int k = 0; k < K; ++k) req.push_back(e);
    }
    GenerateOptions opt;
    opt.max_new_tokens = 12;
    opt.seed = 17 + sp;
    opt.stop_tokens = {stop};
    const auto gens = generate(*model, req, opt);
    for (size_t i = 0; i < prompts[sp].size(); ++i, ++group)
      for (int k = 0; k < K; ++k) {
        Cand c;
        c.prompt = req[i * K + k];
        c.cont = gens[i * K + k].tokens;
        c.r = task->gold_reward(texts[i], methods::rlhf::continuation_text(tok, c.cont, stop));
        c.split = sp;
        c.group = group;
        cands.push_back(c);
      }
  }
  std::printf("candidates %zu\n", cands.size());
  const int64_t C = model->config().hidden;
  const std::vector<int> layers = {1, 2, 3, 4, 6};
  const int NP = 4;  // last, mean-all, mean-cont, sum-cont
  const int NL = static_cast<int>(layers.size());
  std::vector<float> feats(cands.size() * NL * NP * C);
  const size_t bs = 32;
  for (size_t i = 0; i < cands.size(); i += bs) {
    const size_t n = std::min(bs, cands.size() - i);
    int64_t T = 0;
    for (size_t k = 0; k < n; ++k) T = std::max<int64_t>(T, cands[i + k].prompt.size() + cands[i + k].cont.size());
    std::vector<int32_t> toks(n * T, 0);
    for (size_t k = 0; k < n; ++k) {
      std::copy(cands[i + k].prompt.begin(), cands[i + k].prompt.end(), toks.begin() + k * T);
      std::copy(cands[i + k].cont.begin(), cands[i + k].cont.end(), toks.begin() + k * T + cands[i + k].prompt.size());
    }
    model->forward(toks.data(), n, T);
    for (int li = 0; li < NL; ++li) {
      const float* h = model->hidden_state(layers[li]);
      for (size_t k = 0; k < n; ++k) {
        const auto& c = cands[i + k];
        const int64_t P = c.prompt.size(), L = P + c.cont.size();
        float* base = feats.data() + ((i + k) * NL + li) * NP * C;
        for (int64_t d = 0; d < C; ++d) {
          double all = 0, cont = 0;
          for (int64_t t = 0; t < L; ++t) {
            const double v = h[(k * T + t) * C + d];
            all += v;
            if (t >= P) cont += v;
          }
          base[0 * C + d] = h[(k * T + L - 1) * C + d];
          base[1 * C + d] = all / L;
          base[2 * C + d] = cont / (L - P);
          base[3 * C + d] = cont;
        }
      }
    }
  }
  // pair sets
  auto make_pairs = [&](int sp, bool all, double margin) {
    std::vector<Pair> out;
    for (size_t g0 = 0; g0 < cands.size(); g0 += K) {
      if (cands[g0].split != sp) continue;
      if (!all) {
        int best = 0, worst = 0;
        for (int k = 0; k < K; ++k) {
          if (cands[g0 + k].r > cands[g0 + best].r) best = k;
          if (cands[g0 + k].r < cands[g0 + worst].r) worst = k;
        }
        if (cands[g0 + best].r - cands[g0 + worst].r >= margin && cands[g0 + best].r != cands[g0 + worst].r)
          out.push_back({static_cast<int>(g0 + best), static_cast<int>(g0 + worst)});
      } else {
        for (int a = 0; a < K; ++a)
          for (int b = 0; b < K; ++b)
            if (cands[g0 + a].r - cands[g0 + b].r >= std::max(margin, 1e-9))
              out.push_back({static_cast<int>(g0 + a), static_cast<int>(g0 + b)});
      }
    }
    return out;
  };
  const auto dev = make_pairs(1, false, 0), test = make_pairs(2, false, 0);
  std::printf("dev %zu test %zu\n", dev.size(), test.size());
  const char* pool_names[] = {"last", "mean-all", "mean-cont", "sum-cont"};
  for (int li = 0; li < NL; ++li)
    for (int pi = 0; pi < NP; ++pi)
      for (int setting = 0; setting < 3; ++setting) {
        const bool all = setting > 0;
        const double margin = setting == 2 ? 2.0 : 0.0;
        const auto train = make_pairs(0, all, margin);
        auto f = [&](int c) { return feats.data() + (static_cast<size_t>(c) * NL + li) * NP * C + pi * C; };
        // standardise by train-candidate stats
        std::vector<double> mu(C, 0), sd(C, 0);
        int64_t nc = 0;
        for (size_t c = 0; c < cands.size(); ++c)
          if (cands[c].split == 0) {
            ++nc;
            for (int64_t d = 0; d < C; ++d) mu[d] += f(c)[d];
          }
        for (auto& m : mu) m /= nc;
        for (size_t c = 0; c < cands.size(); ++c)
          if (cands[c].split == 0)
            for (int64_t d = 0; d < C; ++d) sd[d] += (f(c)[d] - mu[d]) * (f(c)[d] - mu[d]);
        for (auto& s : sd) s = std::sqrt(s / nc) + 1e-6;
        auto diff = [&](const Pair& p, std::vector<double>& x) {
          x.resize(C);
          for (int64_t d = 0; d < C; ++d) x[d] = (f(p.a)[d] - f(p.b)[d]) / sd[d];
        };
        auto acc = [&](const std::vector<Pair>& ps, const std::vector<double>& w) {
          int c = 0;
          std::vector<double> x;
          for (const auto& p : ps) {
            diff(p, x);
            double z = 0;
            for (int64_t d = 0; d < C; ++d) z += w[d] * x[d];
            c += z > 0;
          }
          return double(c) / ps.size();
        };
        double best_dev = -1, best_test = 0, best_l2 = 0;
        int best_it = 0;
        for (double l2 : {1e-4, 1e-3, 1e-2}) {
          std::vector<double> w(C, 0), m(C, 0), v(C, 0), g(C);
          std::vector<std::vector<double>> X(train.size());
          for (size_t i = 0; i < train.size(); ++i) diff(train[i], X[i]);
          for (int it = 1; it <= 400; ++it) {
            std::fill(g.begin(), g.end(), 0.0);
            for (const auto& x : X) {
              double z = 0;
              for (int64_t d = 0; d < C; ++d) z += w[d] * x[d];
              const double s = -1.0 / (1.0 + std::exp(z));
              for (int64_t d = 0; d < C; ++d) g[d] += s * x[d] / X.size();
            }
            for (int64_t d = 0; d < C; ++d) {
              g[d] += l2 * w[d];
              m[d] = 0.9 * m[d] + 0.1 * g[d];
              v[d] = 0.999 * v[d] + 0.001 * g[d] * g[d];
              w[d] -= 0.01 * (m[d] / (1 - std::pow(0.9, it))) / (std::sqrt(v[d] / (1 - std::pow(0.999, it))) + 1e-8);
            }
            if (it % 50 == 0) {
              const double a = acc(dev, w);
              if (a > best_dev) best_dev = a, best_test = acc(test, w), best_l2 = l2, best_it = it;
            }
          }
        }
        std::printf("layer %d pool %-9s train %-10s n=%5zu  dev %.3f test %.3f (l2 %g it %d)\n", layers[li],
                    pool_names[pi], setting == 0 ? "best-worst" : setting == 1 ? "all" : "all-m2", train.size(), best_dev,
                    best_test, best_l2, best_it);
        std::fflush(stdout);
      }
}

}  // namespace
