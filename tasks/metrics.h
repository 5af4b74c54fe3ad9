// The metrics registry. Every metric is an aggregate over per-example statistics, so one
// bootstrap serves them all: resample examples with replacement (kBootstrapResamples times,
// a fixed-seed SplitMix64 stream, so the stderr of a result is reproducible bit for bit on
// every platform) and take the sample standard deviation (n−1) of the recomputed metric.
//
// Names are shared across tasks and the metrics of results records: accuracy, macro_f1,
// exact_match, recall@K (any K ≥ 1), mrr, loss, perplexity, mean_reward, gold_reward, kl,
// win_rate, forgetting.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tb::tasks {

inline constexpr int kBootstrapResamples = 1000;
inline constexpr std::uint64_t kBootstrapSeed = 20240611;

// Per-example outcomes of one evaluation. Fill the fields the requested metrics read:
//   accuracy, macro_f1       gold, pred (class or choice indices); num_classes for macro_f1
//   exact_match              gold_text, pred_text (compared after whitespace normalisation)
//   recall@K, mrr            ranked (retrieved ids, best first), relevant (gold ids)
//   loss, perplexity         nll (summed over an example's tokens), tokens (count)
//   forgetting               nll (after), nll_base (before), tokens
//   mean_reward, gold_reward, kl, win_rate   value (per-example reward, KL, or 1/0.5/0 win)
struct EvalData {
  std::vector<int> gold, pred;
  int num_classes = 0;
  std::vector<std::string> gold_text, pred_text;
  std::vector<std::vector<std::string>> ranked, relevant;
  std::vector<double> nll, nll_base, tokens;
  std::vector<double> value;

  std::size_t size() const;  // number of examples (checks the filled fields agree)
};

struct MetricValue {
  std::string name;
  double value = 0.0;
  double std_error = 0.0;  // bootstrap standard error
  bool higher_is_better = true;
};

// Whether `name` is a known metric (recall@K with K ≥ 1 included).
bool is_metric(const std::string& name);
bool higher_is_better(const std::string& name);  // InputError for an unknown name
std::vector<std::string> metric_names();          // recall@K listed as "recall@k"

// The metric on all examples, without stderr.
double metric_value(const std::string& name, const EvalData& d);
// The metric with its bootstrap stderr (0 for fewer than 2 examples).
MetricValue compute_metric(const std::string& name, const EvalData& d);

// The bootstrap itself, exposed for tests: replicate b uses indices drawn as
// splitmix64(seed, b, i) % n; returns the kBootstrapResamples replicate values.
std::vector<double> bootstrap_replicates(const std::string& name, const EvalData& d);

}  // namespace tb::tasks
