// Reference rows every classification result is read against, computed by tunebench itself:
//   majority  — always the most frequent train label (ties: the lowest index);
//   afinn     — the AFINN-165 lexicon (npm sentiment@5.0.2): positive iff score ≥ 0, for
//               tasks whose labels are {negative, positive}.
// The runner records them like any method; evaluate_predictions is also what methods use to
// turn predicted indices into metrics, overall and per slice (e.g. spam's hard_ham).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tasks/metrics.h"
#include "tasks/task.h"

namespace tb::tasks {

// Reference methods that apply to a task ("majority" for classify and multiple_choice,
// "afinn" additionally for negative/positive sentiment tasks).
std::vector<std::string> reference_methods(const Task& task);

// Predicted label indices of a reference method on examples; InputError if it does not
// apply to the task. `train`: the labelled examples the majority is taken from — the run's
// train split (its dev split when train is empty), i.e. the --limit subset the run sees.
std::vector<int> reference_predict(const Task& task, const std::string& method,
                                   const std::vector<Example>& examples, const std::vector<Example>& train);

struct Evaluation {
  std::vector<MetricValue> overall;                          // in the task's metric order
  std::map<std::string, std::vector<MetricValue>> slices;    // only when examples have slices
};

// The task's label metrics (accuracy, macro_f1, those that read gold/pred) of predicted
// indices, with bootstrap stderr, overall and per slice.
Evaluation evaluate_predictions(const Task& task, const std::vector<Example>& examples,
                                const std::vector<int>& predicted);

}  // namespace tb::tasks
