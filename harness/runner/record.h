// Results records: one JSON file per (method, task, seed), `<method>__<task>__seed<k>.json`
// in a results directory, with four sections (run_info, train_info, metrics, meta_info;
// validate_record's table in record.cpp lists every field). Records are written atomically
// (temp file, fsync, rename) and never overwritten; this header is also how reports, compare
// and tests read them back, with validation whose errors name the file and the field.
//
// The summary (summary.csv with stable columns, summary.md, and the table printed at the end
// of `tunebench run`) is regenerated from every record in a directory, so resumed and
// sharded runs summarise everything.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tb::runner {

// The statuses a record can carry.
// interrupted: SIGTERM/SIGINT stopped the run; the one status --resume runs again.
inline constexpr const char* kStatuses[] = {"ok", "diverged", "oom", "error", "interrupted"};

// `train_subset` is the learning-curve size of the run (run_info.train_subset, "8" or "all"),
// "" for a run outside a learning curve: `<method>__<task>__n<size>__seed<k>.json` then, so
// the sizes of one curve never collide.
std::string record_filename(const std::string& method, const std::string& task, uint64_t seed,
                            const std::string& train_subset = "");
// Whether a directory entry's name has the form of a record file (temp files do not).
bool is_record_filename(const std::string& name);

// A record as read back: the identifying fields, typed, plus the whole JSON.
struct Record {
  std::filesystem::path file;
  std::string method, task;
  uint64_t seed = 0;
  std::string status, message;
  std::string config_hash;
  std::string primary_metric;  // the task's main metric (may be absent from a failed run's metrics)
  // Learning curves (--train-sizes): the size as the matrix named it ("8", "all"; "" outside
  // a curve) and the number of labelled train examples the run had (run_info.train_size; -1
  // when the record does not state it).
  std::string train_subset;
  int64_t train_size = -1;
  nlohmann::json json;

  // The value/stderr of a metric, NAN when the record has none.
  double metric_value(const std::string& name) const;
  double metric_stderr(const std::string& name) const;
};

// Checks the structure of a record: every section and field with its type, a known status,
// metrics as name -> {value, stderr, higher_is_better}. FormatError naming `where` and the
// field (e.g. "x.json: train_info.peak_rss_bytes: missing").
void validate_record(const nlohmann::json& j, const std::string& where);

// ---- per-phase timing (train_info.timing) -----------------------------------------------

// The value at fraction p (0..1) of `values` by linear interpolation between closest ranks
// (rank p·(n−1), as numpy's default percentile); NAN for an empty vector.
double percentile(std::vector<double> values, double p);

// One phase of train_info.timing: {"seconds", "tokens", "flops", "units", "tokens_per_s",
// "flop_per_s", "peak_fraction", "unit_tokens_per_s"}. Rates are null when not positive;
// peak_fraction = flop_per_s / peak_flop_per_s (the peak of the precision that ran; null
// when unknown); unit_tokens_per_s = {"n", "median", "p10", "p25", "p75", "p90"} over each
// unit's tokens / seconds (units of zero seconds are left out), null when there is none.
nlohmann::json phase_timing_json(double seconds, int64_t tokens, double flops, const std::vector<double>& unit_seconds,
                                 const std::vector<int64_t>& unit_tokens, double peak_flop_per_s);
// Checks one train_info.timing object (phase name -> the object above). FormatError naming
// `where` and the field.
void validate_timing(const nlohmann::json& timing, const std::string& where);

// Reads, parses and validates one record file; the file name must match its run_info.
// FormatError / InputError naming the file.
Record read_record(const std::filesystem::path& file);
// Every record file in `dir`, sorted by (method, task, seed). InputError if dir is missing.
std::vector<Record> read_records(const std::filesystem::path& dir);

// summary.csv: one row per record with these columns, in this order (stable: reports and
// scripts read them by name).
const std::vector<std::string>& summary_columns();
std::string summary_csv(const std::vector<Record>& records);
std::string summary_markdown(const std::vector<Record>& records);
std::string summary_table(const std::vector<Record>& records);  // aligned text for a terminal
// Reads every record of `dir`, writes dir/summary.csv and dir/summary.md atomically, and
// returns the records.
std::vector<Record> write_summaries(const std::filesystem::path& dir);

}  // namespace tb::runner
