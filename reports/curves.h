// Learning curves (`tunebench run --train-sizes`): per task, the quality of each method that
// learns from the train split at each number of labelled examples, the zero-shot and
// majority levels, the best in-context learning setting, and where each method that trains
// parameters first beats that setting (the crossover). Built from the records of a result set
// (those with run_info.train_subset); the report draws it (report.h) and lists it as a table.
//
// Values and error bars are those of the task tables (results.h): the mean over seeds and
// sqrt(mean test-set stderr² + seed variance / n). In-context learning's settings are its
// demonstration counts k (details.by_k, which holds values only: the record's own stderr stands
// in for the test-set part of the other k's error) at each size.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "reports/results.h"

namespace tb::reports {

struct CurveStat {
  std::string subset;        // the --train-sizes entry: "8", "all"
  double n = NAN;            // labelled train examples (run_info.train_size, mean over the runs)
  double value = NAN, err = NAN;
  int seeds = 0;             // ok runs
};

struct CurveMethod {
  std::string method;
  std::vector<CurveStat> points;  // ascending n
};

struct IclSetting {
  double n = NAN;  // labelled examples in the pool the demonstrations came from
  int k = -1;      // demonstrations per prompt
  double value = NAN, err = NAN;
  int seeds = 0;
};

// Where a method first beats the best in-context setting: the first size whose mean is
// better (n), the size before it (n_before, NAN when n is the smallest size: the crossover
// lies below the curve's range), the difference there with its stderr, whether the ±1 stderr
// bars are apart there (clear), and the first size where they are (n_clear, NAN if none).
struct Crossover {
  std::string method;
  bool found = false;
  double n = NAN, n_before = NAN;
  double diff = NAN, diff_err = NAN;
  bool clear = false;
  double n_clear = NAN;
  double largest_n = NAN;  // the largest size the method ran at (what "never" covers)
};

struct LearningCurve {
  std::string task, metric;
  bool higher_is_better = true;
  std::vector<CurveMethod> methods;  // in the set's method order; icl included
  IclSetting zero_shot;              // icl with k = 0 (NAN value when no icl run had k = 0)
  IclSetting best_icl;               // the best icl setting with k > 0 over every size
  double majority = NAN, majority_err = NAN;  // the majority reference row (its whole train split)
  std::vector<Crossover> crossovers;  // one per curve method other than icl, when best_icl exists
};

// One curve per task that has learning-curve records, in task name order.
std::vector<LearningCurve> learning_curves(const ResultSet& results);

}  // namespace tb::reports
