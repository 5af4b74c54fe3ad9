// Majority-class and AFINN reference predictors and label-metric evaluation; see reference.h.
#include "tasks/reference.h"

#include <algorithm>

#include "datasets/afinn.h"
#include "harness/base/errors.h"

namespace tb::tasks {
namespace {

bool is_sentiment(const Task& t) {
  const auto& n = t.label_names();
  return t.output_type() == OutputType::classify && n.size() == 2 &&
         std::find(n.begin(), n.end(), "negative") != n.end() &&
         std::find(n.begin(), n.end(), "positive") != n.end();
}

int num_classes(const Task& t, const std::vector<Example>& examples) {
  if (t.output_type() == OutputType::classify) return static_cast<int>(t.label_names().size());
  std::size_t n = 0;
  for (const auto& e : examples) n = std::max(n, e.choices.size());
  return static_cast<int>(n);
}

int majority_label(const Task& t, const std::vector<Example>& train) {
  if (train.empty()) throw InputError("task " + t.name() + ": no train or dev examples to take a majority from");
  std::vector<int> count(static_cast<std::size_t>(std::max(num_classes(t, train), 1)), 0);
  for (const auto& e : train)
    if (e.label >= 0 && static_cast<std::size_t>(e.label) < count.size()) ++count[static_cast<std::size_t>(e.label)];
  return static_cast<int>(std::max_element(count.begin(), count.end()) - count.begin());
}

bool reads_labels(const std::string& metric) { return metric == "accuracy" || metric == "macro_f1"; }

std::vector<MetricValue> label_metrics(const Task& t, const std::vector<const Example*>& exs,
                                       const std::vector<int>& pred) {
  EvalData d;
  for (std::size_t i = 0; i < exs.size(); ++i) {
    d.gold.push_back(exs[i]->label);
    d.pred.push_back(pred[i]);
  }
  std::vector<MetricValue> out;
  for (const auto& m : t.metrics())
    if (reads_labels(m)) out.push_back(compute_metric(m, d));
  return out;
}

}  // namespace

std::vector<std::string> reference_methods(const Task& task) {
  std::vector<std::string> m;
  if (task.output_type() == OutputType::classify || task.output_type() == OutputType::multiple_choice)
    m.push_back("majority");
  if (is_sentiment(task)) m.push_back("afinn");
  return m;
}

std::vector<int> reference_predict(const Task& task, const std::string& method,
                                   const std::vector<Example>& examples, const std::vector<Example>& train) {
  const auto applicable = reference_methods(task);
  if (std::find(applicable.begin(), applicable.end(), method) == applicable.end())
    throw InputError("reference method '" + method + "' does not apply to task " + task.name());
  std::vector<int> pred;
  if (method == "majority") {
    pred.assign(examples.size(), majority_label(task, train));
  } else {
    const auto& names = task.label_names();
    const int pos = static_cast<int>(std::find(names.begin(), names.end(), "positive") - names.begin());
    const int neg = 1 - pos;
    const auto& afinn = data::AfinnScorer::standard();
    for (const auto& e : examples) pred.push_back(afinn.classify(e.text) == 1 ? pos : neg);
  }
  return pred;
}

Evaluation evaluate_predictions(const Task& task, const std::vector<Example>& examples,
                                const std::vector<int>& predicted) {
  TB_CHECK(examples.size() == predicted.size(), "" << examples.size() << " examples, " << predicted.size() << " predictions");
  Evaluation ev;
  std::vector<const Example*> all;
  std::map<std::string, std::pair<std::vector<const Example*>, std::vector<int>>> by_slice;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    all.push_back(&examples[i]);
    if (!examples[i].slice.empty()) {
      by_slice[examples[i].slice].first.push_back(&examples[i]);
      by_slice[examples[i].slice].second.push_back(predicted[i]);
    }
  }
  ev.overall = label_metrics(task, all, predicted);
  for (const auto& [slice, v] : by_slice) ev.slices[slice] = label_metrics(task, v.first, v.second);
  return ev;
}

}  // namespace tb::tasks
