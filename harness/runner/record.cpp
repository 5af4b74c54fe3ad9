// Writing, reading, validating and summarising results records; see record.h.
#include "harness/runner/record.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <regex>
#include <sstream>

#include "harness/base/errors.h"
#include "harness/base/files.h"

namespace tb::runner {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

enum class Kind { string, integer, unsigned_integer, number, number_or_null, boolean, object, array };

struct Field {
  const char* name;
  Kind kind;
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::string: return "a string";
    case Kind::integer: return "an integer";
    case Kind::unsigned_integer: return "a non-negative integer";
    case Kind::number: return "a number";
    case Kind::number_or_null: return "a number or null";
    case Kind::boolean: return "a boolean";
    case Kind::object: return "an object";
    case Kind::array: return "an array";
  }
  return "?";
}

bool has_kind(const json& v, Kind k) {
  switch (k) {
    case Kind::string: return v.is_string();
    case Kind::integer: return v.is_number_integer();
    case Kind::unsigned_integer: return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
    case Kind::number: return v.is_number();
    case Kind::number_or_null: return v.is_number() || v.is_null();
    case Kind::boolean: return v.is_boolean();
    case Kind::object: return v.is_object();
    case Kind::array: return v.is_array();
  }
  return false;
}

const std::vector<std::pair<const char*, std::vector<Field>>>& schema() {
  static const std::vector<std::pair<const char*, std::vector<Field>>> s = {
      {"run_info",
       {{"tunebench_version", Kind::string}, {"git_sha", Kind::string}, {"command_line", Kind::string},
        {"method", Kind::string}, {"options", Kind::object}, {"config_hash", Kind::string},
        {"task", Kind::string}, {"task_version", Kind::integer}, {"primary_metric", Kind::string},
        {"model_path", Kind::string}, {"model_sha256", Kind::string}, {"seed", Kind::unsigned_integer},
        {"threads", Kind::integer}, {"limit", Kind::integer}, {"examples", Kind::object},
        {"start_time", Kind::string}}},
      {"train_info",
       {{"status", Kind::string}, {"message", Kind::string}, {"total_params", Kind::integer},
        {"trainable_params", Kind::integer}, {"trainable_percent", Kind::number},
        {"adaptation_bytes", Kind::integer}, {"peak_rss_bytes", Kind::integer},
        {"rss_after_load_bytes", Kind::integer}, {"rss_delta_bytes", Kind::integer},
        {"memory", Kind::object}, {"train_seconds", Kind::number}, {"train_tokens", Kind::integer},
        {"train_tokens_per_s", Kind::number_or_null}, {"steps", Kind::integer}, {"epochs", Kind::integer},
        {"loss_curve", Kind::array}, {"eval_seconds", Kind::number}, {"eval_tokens", Kind::integer},
        {"eval_tokens_per_s", Kind::number_or_null}, {"train_flops", Kind::number},
        {"eval_flops", Kind::number}, {"train_flop_per_s", Kind::number_or_null},
        {"eval_flop_per_s", Kind::number_or_null}, {"train_peak_fraction", Kind::number_or_null},
        {"eval_peak_fraction", Kind::number_or_null}, {"run_seconds", Kind::number},
        {"details", Kind::object}}},
      {"metrics", {}},
      {"meta_info",
       {{"host", Kind::string}, {"cpu", Kind::string}, {"threads", Kind::integer}, {"cores", Kind::integer},
        {"isa", Kind::string}, {"onednn_version", Kind::string}, {"compiler", Kind::string},
        {"matmul_peak_gflop_per_s", Kind::number_or_null}, {"matmul_peak_size", Kind::integer}}},
  };
  return s;
}

const char* kMemoryKeys[] = {"weights", "gradients", "optimizer_state", "activations", "kv_cache", "index"};

[[noreturn]] void bad(const std::string& where, const std::string& field, const std::string& what) {
  throw FormatError(where + ": " + field + ": " + what);
}

// Optional run_info fields of learning curves and tuned runs (records without them stay valid):
//   train_subset  "8" | "all" ...: the --train-sizes entry of the run (in its file name);
//   train_size    the number of labelled train examples the run had (required with
//                 train_subset; alone, it states the size of a run outside a curve);
//   tuning        {"split", "metric", "higher_is_better", "grid": {option: [values]},
//                  "trials": [{"options": {option: value}, "status", "dev": number|null}],
//                  "chosen": {option: value}, "seconds"}: the options chosen on dev (--tune).
void validate_curve_and_tuning(const json& ri, const std::string& where) {
  if (ri.contains("train_subset")) {
    static const std::regex re(R"(all|[1-9][0-9]*)");
    if (!ri["train_subset"].is_string() || !std::regex_match(ri["train_subset"].get<std::string>(), re))
      bad(where, "run_info.train_subset", "must be a string: a positive integer or \"all\"");
    if (!ri.contains("train_size")) bad(where, "run_info.train_size", "missing (run_info.train_subset is present)");
  }
  if (ri.contains("train_size") && !has_kind(ri["train_size"], Kind::unsigned_integer))
    bad(where, "run_info.train_size", "must be a non-negative integer");
  if (!ri.contains("tuning")) return;
  const json& t = ri["tuning"];
  if (!t.is_object()) bad(where, "run_info.tuning", "must be an object");
  for (const char* f : {"split", "metric"})
    if (!t.contains(f) || !t[f].is_string()) bad(where, std::string("run_info.tuning.") + f, "missing or not a string");
  if (!t.contains("higher_is_better") || !t["higher_is_better"].is_boolean())
    bad(where, "run_info.tuning.higher_is_better", "missing or not a boolean");
  if (!t.contains("seconds") || !t["seconds"].is_number()) bad(where, "run_info.tuning.seconds", "missing or not a number");
  if (!t.contains("grid") || !t["grid"].is_object() || t["grid"].empty())
    bad(where, "run_info.tuning.grid", "missing or not a non-empty object option -> [values]");
  for (auto it = t["grid"].begin(); it != t["grid"].end(); ++it)
    if (!it.value().is_array() || it.value().empty()) bad(where, "run_info.tuning.grid." + it.key(), "must be a non-empty array");
  if (!t.contains("chosen") || !t["chosen"].is_object()) bad(where, "run_info.tuning.chosen", "missing or not an object");
  if (!t.contains("trials") || !t["trials"].is_array() || t["trials"].empty())
    bad(where, "run_info.tuning.trials", "missing or not a non-empty array");
  for (const auto& tr : t["trials"])
    if (!tr.is_object() || !tr.contains("options") || !tr["options"].is_object() || !tr.contains("status") ||
        !tr["status"].is_string() || !tr.contains("dev") || !(tr["dev"].is_number() || tr["dev"].is_null()))
      bad(where, "run_info.tuning.trials", "entries must be {options: object, status: string, dev: number or null}");
}

void validate_metric(const json& m, const std::string& where, const std::string& field) {
  if (!m.is_object()) bad(where, field, "must be an object {value, stderr, higher_is_better}");
  if (!m.contains("value") || !m["value"].is_number()) bad(where, field + ".value", "missing or not a number");
  if (!m.contains("stderr") || !m["stderr"].is_number()) bad(where, field + ".stderr", "missing or not a number");
  if (!m.contains("higher_is_better") || !m["higher_is_better"].is_boolean())
    bad(where, field + ".higher_is_better", "missing or not a boolean");
}

std::string fmt(double v, const char* f = "%.6g") {
  if (!std::isfinite(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

double num(const json& j, const char* section, const char* field) {
  if (!j.contains(section) || !j[section].contains(field)) return NAN;
  const auto& v = j[section][field];
  return v.is_number() ? v.get<double>() : NAN;
}

// One summary row as text cells, in summary_columns() order.
std::vector<std::string> summary_cells(const Record& r) {
  const auto& j = r.json;
  const double peak = num(j, "train_info", "peak_rss_bytes");
  return {r.method,
          r.task,
          std::to_string(r.seed),
          r.status,
          r.primary_metric,
          fmt(r.metric_value(r.primary_metric)),
          fmt(r.metric_stderr(r.primary_metric)),
          fmt(num(j, "train_info", "trainable_params"), "%.0f"),
          fmt(num(j, "train_info", "trainable_percent"), "%.4g"),
          fmt(num(j, "train_info", "adaptation_bytes"), "%.0f"),
          fmt(peak > 0 ? peak / (1024.0 * 1024.0) : NAN, "%.1f"),
          fmt(num(j, "train_info", "train_seconds"), "%.3f"),
          fmt(num(j, "train_info", "train_tokens_per_s"), "%.1f"),
          fmt(num(j, "train_info", "eval_tokens_per_s"), "%.1f"),
          fmt(r.metric_value("forgetting")),
          r.train_size >= 0 ? std::to_string(r.train_size) : ""};
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::string record_filename(const std::string& method, const std::string& task, uint64_t seed,
                            const std::string& train_subset) {
  return method + "__" + task + (train_subset.empty() ? "" : "__n" + train_subset) + "__seed" + std::to_string(seed) +
         ".json";
}

bool is_record_filename(const std::string& name) {
  static const std::regex re(R"([^.][^/]*__[^/]+__seed[0-9]+\.json)");
  return std::regex_match(name, re);
}

double Record::metric_value(const std::string& name) const {
  if (name.empty() || !json["metrics"].contains(name) || name == "slices") return NAN;
  return json["metrics"][name]["value"].get<double>();
}

double Record::metric_stderr(const std::string& name) const {
  if (name.empty() || !json["metrics"].contains(name) || name == "slices") return NAN;
  return json["metrics"][name]["stderr"].get<double>();
}

void validate_record(const json& j, const std::string& where) {
  if (!j.is_object()) bad(where, "(top level)", "must be a JSON object");
  for (const auto& [section, fields] : schema()) {
    if (!j.contains(section)) bad(where, section, "missing");
    const auto& s = j[section];
    if (!s.is_object()) bad(where, section, "must be an object");
    for (const auto& f : fields) {
      const std::string name = std::string(section) + "." + f.name;
      if (!s.contains(f.name)) bad(where, name, "missing");
      if (!has_kind(s[f.name], f.kind)) bad(where, name, std::string("must be ") + kind_name(f.kind));
    }
  }
  const auto status = j["train_info"]["status"].get<std::string>();
  if (std::find(std::begin(kStatuses), std::end(kStatuses), status) == std::end(kStatuses)) {
    std::string known;
    for (const char* k : kStatuses) known += (known.empty() ? "" : ", ") + std::string(k);
    bad(where, "train_info.status", "'" + status + "' is not one of " + known);
  }
  for (const char* k : kMemoryKeys) {
    const auto& m = j["train_info"]["memory"];
    if (!m.contains(k) || !m[k].is_number_integer()) bad(where, std::string("train_info.memory.") + k, "missing or not an integer");
  }
  for (const auto& p : j["train_info"]["loss_curve"])
    if (!p.is_object() || !p.contains("step") || !p["step"].is_number_integer() || !p.contains("loss") ||
        !(p["loss"].is_number() || p["loss"].is_null()))
      bad(where, "train_info.loss_curve", "entries must be {step: integer, loss: number, ...}");
  // Optional (records before per-phase timing lack it), type-checked when present.
  if (j["train_info"].contains("timing")) validate_timing(j["train_info"]["timing"], where);
  validate_curve_and_tuning(j["run_info"], where);
  for (const auto& [name, m] : j["metrics"].items()) {
    if (name != "slices") {
      validate_metric(m, where, "metrics." + name);
      continue;
    }
    if (!m.is_object()) bad(where, "metrics.slices", "must be an object slice -> metrics");
    for (const auto& [slice, ms] : m.items()) {
      if (!ms.is_object()) bad(where, "metrics.slices." + slice, "must be an object");
      for (const auto& [mname, mv] : ms.items()) validate_metric(mv, where, "metrics.slices." + slice + "." + mname);
    }
  }
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 1.0) * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

namespace {

json positive_or_null(double v) { return std::isfinite(v) && v > 0 ? json(v) : json(); }

}  // namespace

json phase_timing_json(double seconds, int64_t tokens, double flops, const std::vector<double>& unit_seconds,
                       const std::vector<int64_t>& unit_tokens, double peak_flop_per_s) {
  TB_CHECK(unit_seconds.size() == unit_tokens.size(), "unit seconds and tokens of different lengths");
  const double flop_per_s = seconds > 0 ? flops / seconds : NAN;
  json t = {{"seconds", seconds},
            {"tokens", tokens},
            {"flops", flops},
            {"units", static_cast<int64_t>(unit_seconds.size())},
            {"tokens_per_s", positive_or_null(seconds > 0 ? static_cast<double>(tokens) / seconds : NAN)},
            {"flop_per_s", positive_or_null(flop_per_s)},
            {"peak_fraction", positive_or_null(peak_flop_per_s > 0 ? flop_per_s / peak_flop_per_s : NAN)},
            {"unit_tokens_per_s", json()}};
  std::vector<double> rates;
  for (size_t i = 0; i < unit_seconds.size(); ++i)
    if (unit_seconds[i] > 0) rates.push_back(static_cast<double>(unit_tokens[i]) / unit_seconds[i]);
  if (!rates.empty())
    t["unit_tokens_per_s"] = {{"n", static_cast<int64_t>(unit_seconds.size())},
                              {"median", percentile(rates, 0.5)},
                              {"p10", percentile(rates, 0.1)},
                              {"p25", percentile(rates, 0.25)},
                              {"p75", percentile(rates, 0.75)},
                              {"p90", percentile(rates, 0.9)}};
  return t;
}

void validate_timing(const json& timing, const std::string& where) {
  if (!timing.is_object()) bad(where, "train_info.timing", "must be an object phase -> figures");
  for (auto it = timing.begin(); it != timing.end(); ++it) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in the lambda below.
    const json& t = it.value();
    const std::string at = "train_info.timing." + it.key();
    if (!t.is_object()) bad(where, at, "must be an object");
    auto need = [&](const char* f, bool ok, const char* what) {
      if (!t.contains(f)) bad(where, at + "." + f, "missing");
      if (!ok) bad(where, at + "." + f, std::string("must be ") + what);
    };
    need("seconds", t.contains("seconds") && t["seconds"].is_number(), "a number");
    need("tokens", t.contains("tokens") && t["tokens"].is_number_integer(), "an integer");
    need("flops", t.contains("flops") && t["flops"].is_number(), "a number");
    need("units", t.contains("units") && t["units"].is_number_integer(), "an integer");
    for (const char* f : {"tokens_per_s", "flop_per_s", "peak_fraction"})
      need(f, t.contains(f) && (t[f].is_number() || t[f].is_null()), "a number or null");
    need("unit_tokens_per_s", t.contains("unit_tokens_per_s") && (t["unit_tokens_per_s"].is_object() || t["unit_tokens_per_s"].is_null()),
         "an object or null");
    const auto& u = t["unit_tokens_per_s"];
    if (u.is_object()) {
      if (!u.contains("n") || !u["n"].is_number_integer()) bad(where, at + ".unit_tokens_per_s.n", "missing or not an integer");
      for (const char* f : {"median", "p10", "p25", "p75", "p90"})
        if (!u.contains(f) || !u[f].is_number()) bad(where, at + ".unit_tokens_per_s." + f, "missing or not a number");
    }
  }
}

Record read_record(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError("cannot read record " + file.string());
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw FormatError(file.string() + ": not valid JSON: " + e.what());
  }
  validate_record(j, file.string());
  Record r;
  r.file = file;
  r.method = j["run_info"]["method"].get<std::string>();
  r.task = j["run_info"]["task"].get<std::string>();
  r.seed = j["run_info"]["seed"].get<uint64_t>();
  r.status = j["train_info"]["status"].get<std::string>();
  r.message = j["train_info"]["message"].get<std::string>();
  r.config_hash = j["run_info"]["config_hash"].get<std::string>();
  r.primary_metric = j["run_info"]["primary_metric"].get<std::string>();
  if (j["run_info"].contains("train_subset")) r.train_subset = j["run_info"]["train_subset"].get<std::string>();
  if (j["run_info"].contains("train_size")) r.train_size = j["run_info"]["train_size"].get<int64_t>();
  const auto expected = record_filename(r.method, r.task, r.seed, r.train_subset);
  if (file.filename() != expected)
    throw FormatError(file.string() + ": run_info names " + expected + ", not this file");
  r.json = std::move(j);
  return r;
}

std::vector<Record> read_records(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw InputError("results directory " + dir.string() + " does not exist");
  std::vector<Record> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && is_record_filename(e.path().filename().string())) out.push_back(read_record(e.path()));
  std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) {
    return std::tie(a.method, a.task, a.train_size, a.seed) < std::tie(b.method, b.task, b.train_size, b.seed);
  });
  return out;
}

const std::vector<std::string>& summary_columns() {
  static const std::vector<std::string> c = {
      "method", "task", "seed", "status", "metric", "value", "stderr", "trainable_params",
      "trainable_percent", "adaptation_bytes", "peak_rss_mb", "train_seconds", "train_tokens_per_s",
      "eval_tokens_per_s", "forgetting", "train_size"};
  return c;
}

std::string summary_csv(const std::vector<Record>& records) {
  std::ostringstream os;
  const auto& cols = summary_columns();
  for (std::size_t i = 0; i < cols.size(); ++i) os << (i ? "," : "") << cols[i];
  os << "\n";
  for (const auto& r : records) {
    const auto cells = summary_cells(r);
    for (std::size_t i = 0; i < cells.size(); ++i) os << (i ? "," : "") << csv_cell(cells[i]);
    os << "\n";
  }
  return os.str();
}

std::string summary_markdown(const std::vector<Record>& records) {
  std::ostringstream os;
  os << "# tunebench results\n\n" << records.size() << " run" << (records.size() == 1 ? "" : "s") << ".\n\n|";
  for (const auto& c : summary_columns()) os << " " << c << " |";
  os << "\n|";
  for (std::size_t i = 0; i < summary_columns().size(); ++i) os << (i < 4 ? " --- |" : " ---: |");
  os << "\n";
  for (const auto& r : records) {
    os << "|";
    for (auto cell : summary_cells(r)) {
      std::string esc;
      for (char c : cell) esc += c == '|' ? std::string("\\|") : std::string(1, c);
      os << " " << esc << " |";
    }
    os << "\n";
  }
  bool any_failed = false;
  for (const auto& r : records) any_failed |= r.status != "ok";
  if (any_failed) {
    os << "\n## Failed runs\n\n";
    for (const auto& r : records)
      if (r.status != "ok") os << "- " << r.method << " / " << r.task << " / seed " << r.seed << ": " << r.status
                               << (r.message.empty() ? "" : " — " + r.message) << "\n";
  }
  return os.str();
}

std::string summary_table(const std::vector<Record>& records) {
  std::vector<std::vector<std::string>> rows = {
      {"method", "task", "seed", "status", "metric", "trainable", "peak MB", "train s", "train tok/s", "eval tok/s", "forgetting",
       "train n"}};
  for (const auto& r : records) {
    const auto c = summary_cells(r);
    std::string metric = r.primary_metric;
    if (!c[5].empty())
      metric.append(" ").append(fmt(r.metric_value(r.primary_metric), "%.4f")).append(" ± ")
          .append(fmt(r.metric_stderr(r.primary_metric), "%.4f"));
    rows.push_back({c[0], c[1], c[2], c[3], metric, c[7], c[10], c[11], c[12], c[13], c[14], c[15]});
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::ostringstream os;
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i) os << "  ";
      if (i < 5) os << std::left << std::setw(static_cast<int>(width[i])) << row[i];
      else os << std::right << std::setw(static_cast<int>(width[i])) << row[i];
    }
    os << "\n";
  }
  return os.str();
}

std::vector<Record> write_summaries(const fs::path& dir) {
  auto records = read_records(dir);
  write_file_atomic(dir / "summary.csv", summary_csv(records));
  write_file_atomic(dir / "summary.md", summary_markdown(records));
  return records;
}

}  // namespace tb::runner
