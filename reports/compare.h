// The regression gate (`tunebench compare BASELINE CURRENT`): matches the runs of two
// result sets by (method, task, seed, configuration hash) and checks each matched pair
// against tolerances. A run whose configuration changed counts as missing from CURRENT
// plus new in it, never as a regression of the old configuration.
//
// Default tolerances, all overridable by a JSON tolerance file:
//   quality      — a metric moving the wrong way by more than
//                  max(quality_stderr × stderr, quality_floor), with stderr the larger of
//                  the two runs' bootstrap stderrs (per-metric overrides under "metrics");
//   speed        — for every phase timed per unit (train_info.timing.<phase>: each training
//                  step's or eval batch's tokens/s), the median dropping by more than
//                  max(tokens_per_s_drop, spread of the baseline, spread of the current run),
//                  where a run's spread is half its interquartile range over its median;
//                  phases with fewer than 5 units are not judged. Records without per-unit
//                  timing: train or eval tokens/s dropping by more than tokens_per_s_drop (10%);
//   suite time   — the wall seconds of the runs matched and ok on both sides, summed,
//                  rising by more than max(tokens_per_s_drop, each side's spread: its
//                  runs' largest phase spreads weighted by their wall seconds);
//   memory       — peak RSS rising by more than peak_memory_rise (10%);
//   status       — a run that was ok and no longer is.
// Moves past the same thresholds in the good direction are listed as improvements.
// Missing runs are listed and, with fail_on_missing, are regressions too.
//
// Tolerance file, e.g.
//   {"quality_stderr": 1.0, "quality_floor": 0.01, "tokens_per_s_drop": 0.10,
//    "peak_memory_rise": 0.10, "fail_on_missing": false,
//    "metrics": {"perplexity": {"floor": 0.5}, "accuracy": {"stderr": 2.0}}}
// Every key is optional; an unknown key or a value of the wrong type or sign is an
// InputError naming the file and the key.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "reports/results.h"

namespace tb::reports {

struct Tolerance {
  double quality_stderr = 1.0;
  double quality_floor = 0.01;
  double tokens_per_s_drop = 0.10;
  double peak_memory_rise = 0.10;
  bool fail_on_missing = false;
  struct MetricOverride {
    std::optional<double> stderr_multiple, floor;
  };
  std::map<std::string, MetricOverride> metrics;

  static Tolerance from_json(const nlohmann::json& j, const std::string& where);
  static Tolerance read(const std::filesystem::path& file);
};

struct Finding {
  std::string run;       // "lora / spam / seed 0"
  std::string what;      // metric name, "train_tokens_per_s", "eval_tokens_per_s", "peak_rss_bytes", "status", "run"
  std::string baseline, current, change, tolerance;  // display text
};

struct Comparison {
  int64_t matched = 0;
  std::vector<Finding> regressions, improvements;
  std::vector<std::string> missing, added;  // run names with their configuration hash
  bool regressed() const { return !regressions.empty(); }
};

Comparison compare_results(const ResultSet& baseline, const ResultSet& current, const Tolerance& tol);

// The findings as an aligned text table or as Markdown.
std::string comparison_text(const Comparison& c, bool markdown);

}  // namespace tb::reports
