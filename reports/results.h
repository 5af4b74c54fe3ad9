// The report's view of a set of results: records read from one or more directories
// (shards of one matrix, or runs made apart), grouped per task into one row per method
// configuration, plus any hardware profiles (profile.json) found beside them. The
// Markdown, HTML and comparison writers all read this one model, so they agree. Reports know
// only the record type (harness/runner/record.h, profile_json.h): the order methods are
// listed in is given by the caller (the CLI passes the method registry's order).
//
// Aggregation over seeds: a row's value is the mean over its ok runs; its stderr combines
// the test-set uncertainty (the mean of the runs' bootstrap stderrs: the runs share one
// test set, so those errors do not average out) with the seed-to-seed spread (sample
// variance / n): sqrt(mean_se² + s²/n).
#pragma once

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "harness/runner/record.h"

namespace tb::reports {

// The reference rows (methods/reference.cpp): shown last in every table, set apart.
bool is_reference_method(const std::string& method);

struct Profile {
  std::filesystem::path file;
  nlohmann::json json;  // validated by runner::validate_profile_json
};

struct ResultSet {
  std::vector<std::filesystem::path> dirs;
  std::vector<runner::Record> records;  // sorted by (task, method, seed)
  std::vector<Profile> profiles;
  // Methods in the order the tables list them; a method not named here comes after these,
  // by name.
  std::vector<std::string> method_order;
};

// Reads every record (and profile.json, when present) of each directory. A run — (method,
// task, seed, configuration hash) — present in two directories is an InputError naming
// both files, since counting it twice would weigh it twice. A missing directory is an
// InputError; a malformed record a FormatError naming the file. `method_order` becomes the
// set's method_order.
ResultSet read_results(const std::vector<std::filesystem::path>& dirs, std::vector<std::string> method_order);

// One row of a task table: every run of one method configuration on the task.
struct MethodRow {
  std::string method, config_hash;
  std::string label;  // the method, plus its differing options when a method has several configs
  bool reference = false;
  std::vector<const runner::Record*> runs;    // every seed, ok or not
  std::vector<const runner::Record*> failed;  // the runs whose status is not ok
  int ok = 0;
  std::string status;  // "ok", "error", "2 ok, 1 diverged", ...
  std::string metric;
  bool higher_is_better = true;
  double value = NAN, stderr_ = NAN;
  double forgetting = NAN, forgetting_stderr = NAN;
  double total_params = NAN, trainable_params = NAN, trainable_percent = NAN, adaptation_bytes = NAN;
  double peak_rss_bytes = NAN, train_seconds = NAN, train_tokens_per_s = NAN, eval_tokens_per_s = NAN;
  std::map<std::string, double> memory;  // breakdown key -> bytes (mean over ok runs)
  // Every other metric of the ok runs (not the primary, not forgetting): name -> (value, stderr),
  // combined over seeds like the primary (e.g. recall@5, mrr, closed_book_accuracy, macro_f1).
  std::map<std::string, std::pair<double, double>> other_metrics;
  bool pareto = false;                   // on the quality / trainable-parameters front
};

struct TaskSection {
  std::string task, metric;
  std::vector<MethodRow> rows;  // methods in the set's method_order, reference rows last
  std::vector<std::string> other_metrics;  // union of the rows' other_metrics, sorted by name
};

// The memory breakdown keys of a record, in display order.
const std::vector<std::string>& memory_keys();

std::vector<TaskSection> build_sections(const ResultSet& results);

// Number formatting shared by the writers ("" for NAN).
std::string format_bytes(double bytes);       // "1.5 KiB", "182 MiB"
std::string format_count(double n);           // "5.31M", "16.4k", "514"
std::string format_seconds(double s);         // "9.5 s", "1:58", "1:05:03"
std::string format_rate(double per_s);        // "2,450"
std::string format_fixed(double v, int digits);
// Mean of the finite values, NAN when there are none.
double mean_finite(const std::vector<double>& v);
// Seeds' values and their test-set stderrs combined: the mean, and
// sqrt(mean stderr² + seed variance / n); {NAN, NAN} when there are no values.
std::pair<double, double> mean_and_stderr(const std::vector<double>& vals, const std::vector<double>& ses);
// Position of a method in the given order; unknown names after it.
std::size_t method_rank(const std::vector<std::string>& order, const std::string& method);

}  // namespace tb::reports
