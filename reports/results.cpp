// Reading a set of results directories and grouping their records into task tables; see
// results.h.
#include "reports/results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "harness/base/errors.h"
#include "harness/runner/profile_json.h"

namespace tb::reports {
namespace fs = std::filesystem;
using nlohmann::json;
using runner::Record;

namespace {

double number(const json& j, const char* section, const char* field) {
  if (!j.contains(section) || !j[section].contains(field)) return NAN;
  const auto& v = j[section][field];
  return v.is_number() ? v.get<double>() : NAN;
}


// Value and stderr over seeds, as results.h describes.
std::pair<double, double> combine(const std::vector<const Record*>& runs, const std::string& metric) {
  std::vector<double> vals, ses;
  for (const auto* r : runs) {
    const double v = r->metric_value(metric);
    if (!std::isfinite(v)) continue;
    vals.push_back(v);
    ses.push_back(r->metric_stderr(metric));
  }
  return mean_and_stderr(vals, ses);
}

std::string status_text(const std::vector<const Record*>& runs) {
  std::map<std::string, int> counts;
  for (const auto* r : runs) ++counts[r->status];
  if (counts.size() == 1) return counts.begin()->first;
  std::string s;
  for (const char* st : runner::kStatuses)
    if (counts.count(st)) s += (s.empty() ? "" : ", ") + std::to_string(counts[st]) + " " + st;
  return s;
}

// The options that tell apart the configurations of one method ("rank=16"), or the hash
// when their options are equal (the model, limit or task version differ instead).
std::string config_label(const MethodRow& row, const std::vector<const MethodRow*>& siblings) {
  const json& mine = row.runs.front()->json["run_info"]["options"];
  std::string diff;
  // A tuned option differs by the choice on dev (per seed, shown in the report's tuning section).
  const json& ri = row.runs.front()->json["run_info"];
  const json tuned = ri.contains("tuning") ? ri["tuning"]["grid"] : json::object();
  for (const auto& [k, v] : mine.items()) {
    if (tuned.contains(k)) continue;
    bool differs = false;
    for (const auto* s : siblings) {
      const json& other = s->runs.front()->json["run_info"]["options"];
      differs |= !other.contains(k) || other[k] != v;
    }
    if (differs) diff += (diff.empty() ? "" : ", ") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  // A learning curve's sizes: "n=32" (the labelled train examples of the run).
  const auto* first = row.runs.front();
  bool size_differs = false;
  for (const auto* sib : siblings) size_differs |= sib->runs.front()->train_subset != first->train_subset;
  if (size_differs && !first->train_subset.empty())
    diff = "n=" + std::to_string(first->train_size) + (diff.empty() ? "" : ", " + diff);
  return row.method + " (" + (diff.empty() ? "config " + row.config_hash.substr(0, 8) : diff) + ")";
}

void mark_pareto(std::vector<MethodRow>& rows) {
  for (auto& p : rows) {
    if (p.reference || !p.ok || !std::isfinite(p.value) || !std::isfinite(p.trainable_params)) continue;
    const double sign = p.higher_is_better ? 1.0 : -1.0;
    bool dominated = false;
    for (const auto& q : rows) {
      if (&q == &p || q.reference || !q.ok || !std::isfinite(q.value) || !std::isfinite(q.trainable_params)) continue;
      const bool no_worse = q.trainable_params <= p.trainable_params && sign * q.value >= sign * p.value;
      const bool better = q.trainable_params < p.trainable_params || sign * q.value > sign * p.value;
      dominated |= no_worse && better;
    }
    p.pareto = !dominated;
  }
}

MethodRow make_row(const std::string& method, const std::string& hash, std::vector<const Record*> runs,
                   const std::string& metric) {
  MethodRow row;
  row.method = method;
  row.config_hash = hash;
  row.label = method;
  row.reference = is_reference_method(method);
  row.runs = runs;
  row.metric = metric;
  std::vector<const Record*> ok;
  for (const auto* r : runs) (r->status == "ok" ? ok : row.failed).push_back(r);
  row.ok = static_cast<int>(ok.size());
  row.status = status_text(runs);
  for (const auto* r : ok)
    if (r->json["metrics"].contains(metric)) row.higher_is_better = r->json["metrics"][metric]["higher_is_better"].get<bool>();
  std::tie(row.value, row.stderr_) = combine(ok, metric);
  std::tie(row.forgetting, row.forgetting_stderr) = combine(ok, "forgetting");
  auto over_ok = [&](const char* section, const char* field) {
    std::vector<double> v;
    for (const auto* r : ok) v.push_back(number(r->json, section, field));
    return mean_finite(v);
  };
  row.total_params = over_ok("train_info", "total_params");
  row.trainable_params = over_ok("train_info", "trainable_params");
  row.trainable_percent = over_ok("train_info", "trainable_percent");
  row.adaptation_bytes = over_ok("train_info", "adaptation_bytes");
  row.peak_rss_bytes = over_ok("train_info", "peak_rss_bytes");
  row.train_seconds = over_ok("train_info", "train_seconds");
  row.train_tokens_per_s = over_ok("train_info", "train_tokens_per_s");
  row.eval_tokens_per_s = over_ok("train_info", "eval_tokens_per_s");
  for (const auto& k : memory_keys()) {
    std::vector<double> v;
    for (const auto* r : ok) v.push_back(r->json["train_info"]["memory"][k].get<double>());
    row.memory[k] = mean_finite(v);
  }
  for (const auto* r : ok)
    for (const auto& [name, m] : r->json["metrics"].items())
      if (name != metric && name != "forgetting" && m.is_object() && m.contains("value") && !row.other_metrics.count(name))
        row.other_metrics[name] = combine(ok, name);
  return row;
}

}  // namespace

bool is_reference_method(const std::string& method) { return method == "majority" || method == "lexicon"; }

const std::vector<std::string>& memory_keys() {
  static const std::vector<std::string> k = {"weights", "gradients", "optimizer_state", "activations", "kv_cache", "index"};
  return k;
}

ResultSet read_results(const std::vector<fs::path>& dirs, std::vector<std::string> method_order) {
  if (dirs.empty()) throw InputError("no results directory given");
  ResultSet rs;
  rs.dirs = dirs;
  rs.method_order = std::move(method_order);
  std::map<std::tuple<std::string, std::string, uint64_t, std::string>, fs::path> seen;
  for (const auto& dir : dirs) {
    for (auto& r : runner::read_records(dir)) {
      const auto key = std::make_tuple(r.method, r.task, r.seed, r.config_hash);
      const auto [it, fresh] = seen.emplace(key, r.file);
      if (!fresh)
        throw InputError("run " + r.method + " / " + r.task + " / seed " + std::to_string(r.seed) + " (config " +
                         r.config_hash + ") is in both " + it->second.string() + " and " + r.file.string());
      rs.records.push_back(std::move(r));
    }
    // Hardware profiles: profile.json and any profile-*.json (one per shape or precision,
    // as bench/side_by_side.sh writes them), in name order.
    std::vector<fs::path> profile_files;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && name.rfind("profile", 0) == 0 && e.path().extension() == ".json")
        profile_files.push_back(e.path());
    }
    std::sort(profile_files.begin(), profile_files.end());
    for (const auto& pf : profile_files) {
      std::ifstream in(pf, std::ios::binary);
      if (!in) throw InputError("cannot read " + pf.string());
      json j;
      try {
        j = json::parse(in);
      } catch (const json::exception& e) {
        throw FormatError(pf.string() + ": not valid JSON: " + e.what());
      }
      runner::validate_profile_json(j, pf.string());
      rs.profiles.push_back({pf, std::move(j)});
    }
  }
  std::sort(rs.records.begin(), rs.records.end(), [](const Record& a, const Record& b) {
    return std::tie(a.task, a.method, a.seed, a.config_hash) < std::tie(b.task, b.method, b.seed, b.config_hash);
  });
  return rs;
}

std::vector<TaskSection> build_sections(const ResultSet& results) {
  std::map<std::string, std::map<std::pair<std::string, std::string>, std::vector<const Record*>>> by_task;
  for (const auto& r : results.records) by_task[r.task][{r.method, r.config_hash}].push_back(&r);

  std::vector<TaskSection> out;
  for (const auto& [task, groups] : by_task) {
    TaskSection sec;
    sec.task = task;
    for (const auto& [key, runs] : groups)
      if (sec.metric.empty()) sec.metric = runs.front()->primary_metric;
    for (const auto& [key, runs] : groups) sec.rows.push_back(make_row(key.first, key.second, runs, sec.metric));
    std::stable_sort(sec.rows.begin(), sec.rows.end(), [&results](const MethodRow& a, const MethodRow& b) {
      return std::make_tuple(a.reference, method_rank(results.method_order, a.method), a.method) <
             std::make_tuple(b.reference, method_rank(results.method_order, b.method), b.method);
    });
    for (auto& row : sec.rows) {
      std::vector<const MethodRow*> siblings;
      for (const auto& o : sec.rows)
        if (&o != &row && o.method == row.method) siblings.push_back(&o);
      if (!siblings.empty()) row.label = config_label(row, siblings);
    }
    mark_pareto(sec.rows);
    std::set<std::string> others;
    for (const auto& row : sec.rows)
      for (const auto& [name, v] : row.other_metrics) others.insert(name);
    sec.other_metrics.assign(others.begin(), others.end());
    out.push_back(std::move(sec));
  }
  return out;
}

std::string format_fixed(double v, int digits) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string format_bytes(double b) {
  if (!std::isfinite(b)) return "";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(b) >= 1024 && u < 4) b /= 1024, ++u;
  char buf[64];
  if (u == 0) std::snprintf(buf, sizeof buf, "%.0f B", b);
  else std::snprintf(buf, sizeof buf, std::fabs(b) < 10 ? "%.2f %s" : std::fabs(b) < 100 ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

std::string format_count(double n) {
  if (!std::isfinite(n)) return "";
  char buf[64];
  const double a = std::fabs(n);
  if (a >= 1e9) std::snprintf(buf, sizeof buf, "%.3gG", n / 1e9);
  else if (a >= 1e6) std::snprintf(buf, sizeof buf, "%.3gM", n / 1e6);
  else if (a >= 1e4) std::snprintf(buf, sizeof buf, "%.3gk", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string format_seconds(double s) {
  if (!std::isfinite(s)) return "";
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, s < 10 ? "%.2f s" : "%.1f s", s);
    return buf;
  }
  const auto total = static_cast<int64_t>(std::llround(s));
  if (total < 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(total / 60), static_cast<long long>(total % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  return buf;
}

std::string format_rate(double r) {
  if (!std::isfinite(r)) return "";
  const auto n = static_cast<long long>(std::llround(r));
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

double mean_finite(const std::vector<double>& v) {
  double s = 0;
  int n = 0;
  for (double x : v)
    if (std::isfinite(x)) s += x, ++n;
  return n ? s / n : NAN;
}

std::size_t method_rank(const std::vector<std::string>& order, const std::string& method) {
  for (std::size_t i = 0; i < order.size(); ++i)
    if (order[i] == method) return i;
  return order.size();
}

std::pair<double, double> mean_and_stderr(const std::vector<double>& vals, const std::vector<double>& ses) {
  if (vals.empty()) return {NAN, NAN};
  const double m = mean_finite(vals);
  const double se = mean_finite(ses);
  double var = 0;
  for (double v : vals) var += (v - m) * (v - m);
  const double n = static_cast<double>(vals.size());
  var = vals.size() > 1 ? var / (n - 1) : 0.0;
  return {m, std::sqrt((std::isfinite(se) ? se * se : 0.0) + var / n)};
}

}  // namespace tb::reports
