// In-context learning (`icl`): demonstrations from the train split before each test prompt,
// answers scored by verbaliser/choice log-likelihood (methods/lm_scoring.h), optional
// contextual calibration (Zhao et al. 2021).
//
// One run evaluates every k of --icl.k on the examples it is given and reports each k's
// metrics in meter.details.by_k; the run's predictions (and so its record's metrics) are
// those of the last k in the list (default 8). Prompts keep as many demonstrations as fit:
// the truncation policy of assemble_prompt drops the demonstration farthest from the query
// first, then left-truncates the test text; every prompt shortened is counted.
//
// Calibration: the answer distribution given a content-free query ("N/A" in place of the
// text, the same demonstrations) is divided out: score = log p(y|x) − log p(y|N/A), both
// normalised over the candidates. The content-free prompts are deduplicated, so with k = 0
// on a classification task one forward serves every example.
#include "methods/icl.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>

#include "harness/base/hash.h"
#include "harness/base/errors.h"
#include "methods/lm_scoring.h"
#include "tasks/reference.h"

namespace tb::methods {
namespace {

constexpr const char* kContentFree = "N/A";

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fisher–Yates with a fully specified generator, so a selection is the same on every platform.
void shuffle(std::vector<int64_t>& v, uint64_t& state) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix64(state) % i]);
}

class Icl final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    const auto& o = ctx.options;
    ks_ = o.int_list("k");
    if (ks_.empty()) throw InputError("option --icl.k: give at least one k (e.g. 0,1,4,8)");
    for (auto k : ks_)
      if (k < 0) throw InputError("option --icl.k: k must be >= 0, got " + std::to_string(k));
    selection_ = parse_selection(o.str("select"), "option --icl.select");
    calibrate_ = o.flag("calibrate");
    pool_kind_ = parse_pool(o.str("pool"), "option --icl.pool");
    batch_ = o.integer("batch");
    if (batch_ < 1) throw InputError("option --icl.batch must be >= 1");
    answers_ = task_answers(ctx.task);

    pool_.clear();
    const auto& source = ctx.train.empty() ? ctx.dev : ctx.train;
    pool_source_ = ctx.train.empty() ? "dev" : "train";
    for (const auto& e : source)
      if (e.label >= 0) pool_.push_back(&e);
    const int64_t kmax = *std::max_element(ks_.begin(), ks_.end());
    if (kmax > 0 && pool_.empty())
      throw InputError("icl: task " + ctx.task.name() + " has no labelled train or dev examples to demonstrate");
    labels_.clear();
    for (const auto* e : pool_) labels_.push_back(e->label);

    pool_emb_.clear();
    if (selection_ == Selection::knn && kmax > 0) {
      std::vector<std::string> texts;
      for (const auto* e : pool_) texts.push_back(e->text);
      LmCost cost;
      pool_emb_ = embed_texts(ctx.model, ctx.tokenizer, texts, pool_kind_, ctx.model.config().max_positions, batch_, cost);
      cost.charge(ctx.meter, /*prepare=*/true);
      ctx.meter.memory["index"] = static_cast<int64_t>(pool_emb_.size() * sizeof(float));
    }
  }

  std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    const int64_t kmax = *std::max_element(ks_.begin(), ks_.end());
    const int64_t C = ctx.model.config().hidden;
    const int64_t N = static_cast<int64_t>(pool_.size());
    const auto t_predict = std::chrono::steady_clock::now();
    // The record's eval figures are the reported prediction's (the last k); the other k's
    // are metered apart, as details.other_k_eval.
    LmCost cost, other_k;
    double other_k_seconds = 0.0;

    // Demonstrations of every example for the largest k; smaller k's take a suffix.
    std::vector<std::vector<int64_t>> chosen(examples.size());
    std::vector<float> query_emb;
    if (selection_ == Selection::knn && kmax > 0) {
      std::vector<std::string> texts;
      for (const auto& e : examples) texts.push_back(e.text);
      query_emb = embed_texts(ctx.model, ctx.tokenizer, texts, pool_kind_, ctx.model.config().max_positions, batch_, cost);
    }
    for (size_t i = 0; i < examples.size() && kmax > 0; ++i) {
      const auto& ex = examples[i];
      // One spare draw, in case the query itself sits in the pool (never its own demonstration).
      const int64_t want = std::min(kmax + 1, N);
      uint64_t seed = ctx.seed ^ tb::fnv1a64(ex.id + "\x1f" + ex.text);
      std::vector<int64_t> idx;
      switch (selection_) {
        case Selection::knn: idx = select_knn(pool_emb_.data(), N, C, query_emb.data() + static_cast<int64_t>(i) * C, want); break;
        case Selection::random: idx = select_random(N, want, seed); break;
        case Selection::balanced: idx = select_balanced(labels_, want, seed); break;
      }
      idx.erase(std::remove_if(idx.begin(), idx.end(),
                               [&](int64_t j) { return !ex.id.empty() && pool_[static_cast<size_t>(j)]->id == ex.id; }),
                idx.end());
      if (static_cast<int64_t>(idx.size()) > kmax) idx.erase(idx.begin(), idx.end() - kmax);
      chosen[i] = std::move(idx);
    }

    std::vector<Prediction> preds;
    nlohmann::json by_k = nlohmann::json::object();
    for (size_t j = 0; j < ks_.size(); ++j) {
      const bool reported = j + 1 == ks_.size();
      const auto t_k = std::chrono::steady_clock::now();
      preds = predict_k(ctx, examples, chosen, ks_[j], reported ? cost : other_k, by_k[std::to_string(ks_[j])]);
      if (!reported) other_k_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_k).count();
    }
    cost.charge(ctx.meter, /*prepare=*/false);
    ctx.meter.phase("test_eval").seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_predict).count() - other_k_seconds;

    auto& d = ctx.meter.details;
    d["selection"] = selection_ == Selection::knn ? "knn" : selection_ == Selection::random ? "random" : "balanced";
    d["demonstration_pool"] = pool_source_;
    d["demonstration_pool_size"] = N;
    d["calibrate"] = calibrate_;
    d["k"] = ks_;
    d["prediction_k"] = ks_.back();
    d["answers"] = answers_.name;
    d["truncation_policy"] =
        "demonstrations farthest from the query are dropped first; then the test text is left-truncated";
    d["by_k"] = by_k;
    d["other_k_eval"] = {{"tokens", other_k.tokens}, {"seconds", other_k_seconds}, {"flops", other_k.flops}};
    d["truncated_prompts"] = by_k[std::to_string(ks_.back())]["truncated_prompts"];
    return preds;
  }

  int64_t trainable_params() const override { return 0; }
  int64_t save_adaptation(const std::filesystem::path&) const override { return 0; }

 private:
  std::vector<Prediction> predict_k(RunContext& ctx, const std::vector<tasks::Example>& examples,
                                    const std::vector<std::vector<int64_t>>& chosen, int64_t k, LmCost& cost,
                                    nlohmann::json& report) {
    const auto& task = ctx.task;
    PromptSet prompts, cf_prompts;
    // Content-free prompts are deduplicated: token sequence -> slot in cf_prompts.
    std::map<std::vector<int32_t>, size_t> cf_slot;
    std::vector<size_t> cf_of(examples.size());
    for (size_t i = 0; i < examples.size(); ++i) {
      const auto& ex = examples[i];
      const auto& all = chosen[i];
      const size_t take = std::min(static_cast<size_t>(k), all.size());
      std::vector<std::string> blocks;
      for (size_t j = all.size() - take; j < all.size(); ++j) {
        const auto& demo = *pool_[static_cast<size_t>(all[j])];
        blocks.push_back(task.render(demo) + gold_answer_text(demo, answers_));
      }
      const auto a = prompts.add(ctx.model, ctx.tokenizer, task, ex, task.prompt_template(), answers_, blocks);
      if (calibrate_) {
        tasks::Example cf = ex;
        cf.text = kContentFree;
        const std::vector<std::string> kept(blocks.begin() + a.blocks_dropped, blocks.end());
        PromptSet one;
        one.add(ctx.model, ctx.tokenizer, task, cf, task.prompt_template(), answers_, kept);
        const auto [it, fresh] = cf_slot.emplace(one.contexts[0], cf_prompts.contexts.size());
        if (fresh) {
          cf_prompts.contexts.push_back(std::move(one.contexts[0]));
          cf_prompts.candidates.push_back(std::move(one.candidates[0]));
        }
        cf_of[i] = it->second;
      }
    }

    const auto ll = score_candidates(ctx.model, prompts.contexts, prompts.candidates, batch_, cost);
    std::vector<std::vector<double>> cf_ll;
    if (calibrate_) cf_ll = score_candidates(ctx.model, cf_prompts.contexts, cf_prompts.candidates, batch_, cost);

    std::vector<Prediction> preds(examples.size());
    std::vector<int> predicted;
    bool labelled = !examples.empty();
    for (size_t i = 0; i < examples.size(); ++i) {
      auto s = log_normalise(ll[i]);
      if (calibrate_) {
        const auto p_cf = log_normalise(cf_ll[cf_of[i]]);
        for (size_t c = 0; c < s.size(); ++c) s[c] -= p_cf[c];
        s = log_normalise(s);
      }
      preds[i].scores = s;
      preds[i].label = argmax(s);
      predicted.push_back(preds[i].label);
      labelled = labelled && examples[i].label >= 0;
    }

    report = prompts.counts();
    if (calibrate_) report["content_free_prompts"] = cf_prompts.contexts.size();
    if (labelled)
      for (const auto& m : tasks::evaluate_predictions(task, examples, predicted).overall) report[m.name] = m.value;
    return preds;
  }

  std::vector<int64_t> ks_;
  Selection selection_ = Selection::random;
  bool calibrate_ = false;
  Pool pool_kind_ = Pool::mean;
  int64_t batch_ = 16;
  AnswerSet answers_;
  std::vector<const tasks::Example*> pool_;
  std::string pool_source_;
  std::vector<int> labels_;
  std::vector<float> pool_emb_;  // (N,C), L2-normalised
};

}  // namespace

Selection parse_selection(const std::string& s, const std::string& option) {
  if (s == "random") return Selection::random;
  if (s == "balanced") return Selection::balanced;
  if (s == "knn") return Selection::knn;
  throw InputError(option + ": expected random, balanced or knn, got '" + s + "'");
}

std::vector<int64_t> select_knn(const float* pool, int64_t N, int64_t D, const float* query, int64_t k) {
  std::vector<std::pair<float, int64_t>> sims(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) dot += pool[i * D + d] * query[d];
    sims[static_cast<size_t>(i)] = {dot, i};
  }
  const size_t kk = static_cast<size_t>(std::clamp<int64_t>(k, 0, N));
  std::partial_sort(sims.begin(), sims.begin() + static_cast<std::ptrdiff_t>(kk), sims.end(),
                    [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  // Farthest first: the nearest neighbour ends up next to the query.
  std::vector<int64_t> out;
  for (size_t j = kk; j-- > 0;) out.push_back(sims[j].second);
  return out;
}

std::vector<int64_t> select_random(int64_t N, int64_t k, uint64_t seed) {
  std::vector<int64_t> all(static_cast<size_t>(std::max<int64_t>(N, 0)));
  std::iota(all.begin(), all.end(), int64_t{0});
  shuffle(all, seed);
  all.resize(static_cast<size_t>(std::clamp<int64_t>(k, 0, N)));
  std::reverse(all.begin(), all.end());  // the first drawn sits next to the query
  return all;
}

std::vector<int64_t> select_balanced(const std::vector<int>& labels, int64_t k, uint64_t seed) {
  std::map<int, std::vector<int64_t>> by_class;
  for (size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(static_cast<int64_t>(i));
  std::vector<std::vector<int64_t>> classes;
  for (auto& [label, members] : by_class) {
    shuffle(members, seed);
    classes.push_back(std::move(members));
  }
  std::vector<int64_t> order(classes.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  shuffle(order, seed);
  std::vector<int64_t> out;
  const int64_t want = std::clamp<int64_t>(k, 0, static_cast<int64_t>(labels.size()));
  for (size_t round = 0; static_cast<int64_t>(out.size()) < want; ++round)
    for (int64_t c : order) {
      const auto& m = classes[static_cast<size_t>(c)];
      if (round < m.size() && static_cast<int64_t>(out.size()) < want) out.push_back(m[round]);
    }
  std::reverse(out.begin(), out.end());  // the first round sits next to the query
  return out;
}

MethodInfo icl_method_info() {
  MethodInfo info;
  info.name = "icl";
  info.summary = "in-context learning: k demonstrations (random, balanced or knn) + verbaliser log-likelihood";
  info.options = {
      {"k", "0,1,4,8", "demonstrations per prompt, a list: every k is reported in details.by_k, the last one is the run's prediction"},
      {"select", "random", "demonstration selection: random | balanced (classes in turn) | knn (nearest by pooled embedding, cosine)"},
      {"calibrate", "false", "contextual calibration: divide by the answer probabilities given the content-free input \"N/A\""},
      {"pool", "mean", "pooling of the final hidden states for knn embeddings: mean | last"},
      {"batch", "16", "sequences per forward"},
  };
  info.make = [] { return std::make_unique<Icl>(); };
  info.supports = {tasks::OutputType::classify, tasks::OutputType::multiple_choice};
  info.learns_from_train = true;  // demonstrations come from the train split
  return info;
}

}  // namespace tb::methods
