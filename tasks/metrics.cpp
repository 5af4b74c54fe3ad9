// Metric definitions and the shared bootstrap; see metrics.h.
#include "tasks/metrics.h"

#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>

#include "datasets/text.h"
#include "harness/base/errors.h"

namespace tb::tasks {
namespace {

using Indices = std::vector<std::size_t>;
using Fn = std::function<double(const EvalData&, const Indices&)>;

struct Def {
  bool higher_is_better;
  Fn fn;
};

double mean_of(const Indices& idx, const std::function<double(std::size_t)>& f) {
  if (idx.empty()) return 0.0;
  double s = 0.0;
  for (std::size_t i : idx) s += f(i);
  return s / static_cast<double>(idx.size());
}

double accuracy(const EvalData& d, const Indices& idx) {
  return mean_of(idx, [&](std::size_t i) { return d.gold[i] == d.pred[i] ? 1.0 : 0.0; });
}

// Mean F1 over the classes that occur in the gold or predicted labels of the sample (as
// scikit-learn's f1_score(average="macro") without an explicit label list).
double macro_f1(const EvalData& d, const Indices& idx) {
  std::map<int, std::array<double, 3>> c;  // class -> tp, fp, fn
  for (std::size_t i : idx) {
    if (d.gold[i] == d.pred[i]) {
      c[d.gold[i]][0] += 1;
    } else {
      c[d.pred[i]][1] += 1;
      c[d.gold[i]][2] += 1;
    }
  }
  if (c.empty()) return 0.0;
  double sum = 0.0;
  for (const auto& [k, v] : c) sum += 2 * v[0] / (2 * v[0] + v[1] + v[2]);
  return sum / static_cast<double>(c.size());
}

double exact_match(const EvalData& d, const Indices& idx) {
  return mean_of(idx, [&](std::size_t i) {
    return data::normalize_space(d.gold_text[i]) == data::normalize_space(d.pred_text[i]) ? 1.0 : 0.0;
  });
}

double recall_at(const EvalData& d, const Indices& idx, std::size_t k) {
  return mean_of(idx, [&](std::size_t i) {
    const auto& rel = d.relevant[i];
    std::set<std::string> top(d.ranked[i].begin(), d.ranked[i].begin() + static_cast<std::ptrdiff_t>(std::min(k, d.ranked[i].size())));
    double hit = 0;
    for (const auto& r : rel) hit += top.count(r) ? 1 : 0;
    return hit / static_cast<double>(rel.size());
  });
}

double mrr(const EvalData& d, const Indices& idx) {
  return mean_of(idx, [&](std::size_t i) {
    std::set<std::string> rel(d.relevant[i].begin(), d.relevant[i].end());
    for (std::size_t r = 0; r < d.ranked[i].size(); ++r)
      if (rel.count(d.ranked[i][r])) return 1.0 / static_cast<double>(r + 1);
    return 0.0;
  });
}

// Token-weighted mean negative log-likelihood (nats per token).
double loss(const EvalData& d, const Indices& idx) {
  double nll = 0, tok = 0;
  for (std::size_t i : idx) nll += d.nll[i], tok += d.tokens[i];
  return tok > 0 ? nll / tok : 0.0;
}

double forgetting(const EvalData& d, const Indices& idx) {
  double diff = 0, tok = 0;
  for (std::size_t i : idx) diff += d.nll[i] - d.nll_base[i], tok += d.tokens[i];
  return tok > 0 ? diff / tok : 0.0;
}

double mean_value(const EvalData& d, const Indices& idx) {
  return mean_of(idx, [&](std::size_t i) { return d.value[i]; });
}

const std::map<std::string, Def>& table() {
  static const std::map<std::string, Def> t = {
      {"accuracy", {true, accuracy}},
      {"macro_f1", {true, macro_f1}},
      {"exact_match", {true, exact_match}},
      {"mrr", {true, mrr}},
      {"loss", {false, loss}},
      {"perplexity", {false, [](const EvalData& d, const Indices& i) { return std::exp(loss(d, i)); }}},
      {"forgetting", {false, forgetting}},
      // Means of a per-example value column; the name says what the value is.
      {"mean_reward", {true, mean_value}},
      {"gold_reward", {true, mean_value}},
      {"kl", {false, mean_value}},
      {"win_rate", {true, mean_value}},
  };
  return t;
}

// recall@K: K parsed from the name; 0 if the name is not of that form.
std::size_t recall_k(const std::string& name) {
  if (name.rfind("recall@", 0) != 0 || name.size() == 7) return 0;
  std::size_t k = 0;
  for (char c : name.substr(7)) {
    if (c < '0' || c > '9' || k > 1000000) return 0;
    k = k * 10 + static_cast<std::size_t>(c - '0');
  }
  return k;
}

Def lookup(const std::string& name) {
  if (std::size_t k = recall_k(name))
    return {true, [k](const EvalData& d, const Indices& i) { return recall_at(d, i, k); }};
  auto it = table().find(name);
  if (it == table().end()) throw InputError("unknown metric '" + name + "'");
  return it->second;
}

// Checks that the columns `name` reads are filled for every example.
void check_columns(const std::string& name, const EvalData& d, std::size_t n) {
  auto need = [&](std::size_t have, const char* col) {
    if (have != n)
      throw Error("metric " + name + ": column '" + col + "' has " + std::to_string(have) +
                  " entries for " + std::to_string(n) + " examples");
  };
  if (name == "accuracy" || name == "macro_f1") need(d.gold.size(), "gold"), need(d.pred.size(), "pred");
  else if (name == "exact_match") need(d.gold_text.size(), "gold_text"), need(d.pred_text.size(), "pred_text");
  else if (name == "mrr" || recall_k(name)) {
    need(d.ranked.size(), "ranked"), need(d.relevant.size(), "relevant");
    for (const auto& r : d.relevant)
      if (r.empty()) throw Error("metric " + name + ": an example has no relevant document");
  } else if (name == "loss" || name == "perplexity") need(d.nll.size(), "nll"), need(d.tokens.size(), "tokens");
  else if (name == "forgetting")
    need(d.nll.size(), "nll"), need(d.nll_base.size(), "nll_base"), need(d.tokens.size(), "tokens");
  else need(d.value.size(), "value");
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::size_t EvalData::size() const {
  std::size_t n = 0;
  for (std::size_t s : {gold.size(), gold_text.size(), ranked.size(), nll.size(), value.size()})
    n = std::max(n, s);
  return n;
}

bool is_metric(const std::string& name) { return recall_k(name) > 0 || table().count(name) > 0; }

bool higher_is_better(const std::string& name) { return lookup(name).higher_is_better; }

std::vector<std::string> metric_names() {
  std::vector<std::string> names;
  for (const auto& [n, d] : table()) names.push_back(n);
  names.push_back("recall@k");
  return names;
}

double metric_value(const std::string& name, const EvalData& d) {
  const Def def = lookup(name);
  const std::size_t n = d.size();
  check_columns(name, d, n);
  Indices all(n);
  std::iota(all.begin(), all.end(), 0);
  return def.fn(d, all);
}

std::vector<double> bootstrap_replicates(const std::string& name, const EvalData& d) {
  const Def def = lookup(name);
  const std::size_t n = d.size();
  check_columns(name, d, n);
  std::vector<double> reps;
  if (n == 0) return reps;
  std::uint64_t state = kBootstrapSeed;
  Indices idx(n);
  for (int b = 0; b < kBootstrapResamples; ++b) {
    for (std::size_t i = 0; i < n; ++i) idx[i] = splitmix64(state) % n;
    reps.push_back(def.fn(d, idx));
  }
  return reps;
}

MetricValue compute_metric(const std::string& name, const EvalData& d) {
  MetricValue m;
  m.name = name;
  m.higher_is_better = higher_is_better(name);
  m.value = metric_value(name, d);
  if (d.size() >= 2) {
    const auto reps = bootstrap_replicates(name, d);
    const double mean = std::accumulate(reps.begin(), reps.end(), 0.0) / static_cast<double>(reps.size());
    double ss = 0;
    for (double r : reps) ss += (r - mean) * (r - mean);
    m.std_error = std::sqrt(ss / static_cast<double>(reps.size() - 1));
  }
  return m;
}

}  // namespace tb::tasks
