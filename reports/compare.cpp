// Matching two result sets and applying the tolerances; see compare.h.
#include "reports/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>

#include "harness/base/errors.h"

namespace tb::reports {
namespace {

using nlohmann::json;
using runner::Record;

// Fewer timed units than this and a phase's median says nothing about speed.
constexpr int64_t kMinSpeedUnits = 5;

using Key = std::tuple<std::string, std::string, uint64_t, std::string>;

Key key_of(const Record& r) { return {r.method, r.task, r.seed, r.config_hash}; }

std::string run_name(const Record& r) { return r.method + " / " + r.task + " / seed " + std::to_string(r.seed); }

std::string g(double v, int digits = 4) { return format_fixed(v, digits); }

std::string signed_text(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.*f", digits, v);
  return buf;
}

std::string pct(double rel) { return signed_text(100.0 * rel, 1) + "%"; }

double train_number(const Record& r, const char* field) {
  const auto& v = r.json["train_info"][field];
  return v.is_number() ? v.get<double>() : NAN;
}

double number_field(const json& j, const std::string& where, const std::string& key, bool allow_zero = true) {
  if (!j.is_number()) throw InputError(where + ": " + key + " must be a number");
  const double v = j.get<double>();
  if (!std::isfinite(v) || v < 0 || (!allow_zero && v == 0)) throw InputError(where + ": " + key + " must be a non-negative number");
  return v;
}

void compare_quality(const Record& b, const Record& c, const Tolerance& tol, Comparison& out) {
  for (const auto& [name, bm] : b.json["metrics"].items()) {
    if (name == "slices") continue;
    const std::string run = run_name(b);
    if (!c.json["metrics"].contains(name)) {
      out.regressions.push_back({run, name, g(bm["value"].get<double>()), "absent", "", "metric no longer reported"});
      continue;
    }
    const auto& cm = c.json["metrics"][name];
    const double bv = bm["value"].get<double>(), cv = cm["value"].get<double>();
    const double se = std::max(bm["stderr"].get<double>(), cm["stderr"].get<double>());
    double k = tol.quality_stderr, floor = tol.quality_floor;
    if (const auto it = tol.metrics.find(name); it != tol.metrics.end()) {
      if (it->second.stderr_multiple) k = *it->second.stderr_multiple;
      if (it->second.floor) floor = *it->second.floor;
    }
    const double threshold = std::max(k * se, floor);
    const double sign = bm["higher_is_better"].get<bool>() ? 1.0 : -1.0;
    const double gain = sign * (cv - bv);
    const std::string tol_text = "max(" + format_fixed(k, 2) + "×stderr " + g(se) + ", floor " + g(floor) + ") = " + g(threshold);
    if (!std::isfinite(cv) && std::isfinite(bv)) {
      out.regressions.push_back({run, name, g(bv), "not finite", "", tol_text});
    } else if (-gain > threshold) {
      out.regressions.push_back({run, name, g(bv), g(cv), signed_text(cv - bv, 4), tol_text});
    } else if (gain > threshold) {
      out.improvements.push_back({run, name, g(bv), g(cv), signed_text(cv - bv, 4), tol_text});
    }
  }
}

// Relative change of a cost-like or rate-like figure; `higher_is_better` for rates.
void compare_relative(const Record& b, const Record& c, const char* field, double limit, bool higher_is_better,
                      Comparison& out) {
  const double bv = train_number(b, field), cv = train_number(c, field);
  if (!(bv > 0) || !std::isfinite(bv)) return;  // nothing measured in the baseline
  const std::string run = run_name(b);
  const bool bytes = std::string(field).find("bytes") != std::string::npos;
  auto show = [&](double v) { return bytes ? format_bytes(v) : format_rate(v); };
  const std::string tol_text = (higher_is_better ? "drop > " : "rise > ") + format_fixed(100.0 * limit, 1) + "%";
  if (!(cv > 0) || !std::isfinite(cv)) {
    out.regressions.push_back({run, field, show(bv), "not measured", "", tol_text});
    return;
  }
  const double rel = cv / bv - 1.0;
  const double worse = higher_is_better ? -rel : rel;
  if (worse > limit) out.regressions.push_back({run, field, show(bv), show(cv), pct(rel), tol_text});
  else if (-worse > limit) out.improvements.push_back({run, field, show(bv), show(cv), pct(rel), tol_text});
}

// The per-unit speed of one timed phase of a record (train_info.timing.<phase>.unit_tokens_per_s):
// the median of each step's (or eval batch's) tokens/s and its interquartile range.
struct UnitSpeed {
  int64_t n = 0;
  double median = NAN, p25 = NAN, p75 = NAN;
  // Half the interquartile range relative to the median: how far a typical step sits from
  // the median in this run.
  double spread() const { return (p75 - p25) / (2.0 * median); }
};

std::optional<UnitSpeed> unit_speed(const Record& r, const std::string& phase) {
  const auto& ti = r.json["train_info"];
  if (!ti.contains("timing") || !ti["timing"].is_object() || !ti["timing"].contains(phase)) return std::nullopt;
  const auto& u = ti["timing"][phase].value("unit_tokens_per_s", json());
  if (!u.is_object()) return std::nullopt;
  UnitSpeed s;
  s.n = u.value("n", int64_t{0});
  s.median = u.value("median", NAN);
  s.p25 = u.value("p25", NAN);
  s.p75 = u.value("p75", NAN);
  if (s.n < 1 || !(s.median > 0) || !std::isfinite(s.median) || !std::isfinite(s.p25) || !std::isfinite(s.p75))
    return std::nullopt;
  return s;
}

std::string speed_text(const UnitSpeed& s) {
  return format_rate(s.median) + " ±" + format_fixed(100.0 * s.spread(), 1) + "% (" + std::to_string(s.n) + ")";
}

// Speed judged against its own uncertainty: for every phase the baseline timed over at
// least kMinSpeedUnits units, the median per-unit tokens/s moving by more than
// max(min effect, spread of the baseline, spread of the current run). Records without
// per-unit timing (older versions) fall back to the flat tokens/s fields and the fixed
// minimum effect.
void compare_speed(const Record& b, const Record& c, const Tolerance& tol, Comparison& out) {
  const auto& bt = b.json["train_info"].value("timing", json());
  if (!bt.is_object()) {
    compare_relative(b, c, "train_tokens_per_s", tol.tokens_per_s_drop, true, out);
    compare_relative(b, c, "eval_tokens_per_s", tol.tokens_per_s_drop, true, out);
    return;
  }
  const std::string run = run_name(b);
  for (const auto& [phase, unused] : bt.items()) {
    const auto bs = unit_speed(b, phase);
    if (!bs || bs->n < kMinSpeedUnits) continue;  // too few units to tell speed from noise
    const std::string what = "timing." + phase + ".tokens_per_s";
    const auto cs = unit_speed(c, phase);
    if (!cs) {
      out.regressions.push_back({run, what, speed_text(*bs), "not measured", "", "phase no longer timed"});
      continue;
    }
    const double threshold = std::max({tol.tokens_per_s_drop, bs->spread(), cs->spread()});
    const std::string tol_text = "max(min " + format_fixed(100.0 * tol.tokens_per_s_drop, 1) + "%, spreads " +
                                 format_fixed(100.0 * bs->spread(), 1) + "%, " + format_fixed(100.0 * cs->spread(), 1) +
                                 "%) = " + format_fixed(100.0 * threshold, 1) + "%";
    const double rel = cs->median / bs->median - 1.0;
    if (-rel > threshold) out.regressions.push_back({run, what, speed_text(*bs), speed_text(*cs), pct(rel), tol_text});
    else if (rel > threshold) out.improvements.push_back({run, what, speed_text(*bs), speed_text(*cs), pct(rel), tol_text});
  }
}

// A run's timing spread: the largest spread of its phases timed over kMinSpeedUnits or more
// units; 0 when it has none.
double run_spread(const Record& r) {
  const auto& t = r.json["train_info"].value("timing", json());
  double s = 0.0;
  if (!t.is_object()) return s;
  for (const auto& [phase, unused] : t.items())
    if (const auto u = unit_speed(r, phase); u && u->n >= kMinSpeedUnits) s = std::max(s, u->spread());
  return s;
}

// Wall time of the matched runs together (the suite's wall time as far as both sides ran
// it), judged like speed: a rise beyond max(min effect, each side's spread), a side's spread
// being its runs' timing spreads weighted by their wall seconds.
void compare_suite_time(const std::vector<std::pair<const Record*, const Record*>>& pairs, const Tolerance& tol,
                        Comparison& out) {
  double bsum = 0, csum = 0, bw = 0, cw = 0;
  for (const auto& [b, c] : pairs) {
    const double bs = train_number(*b, "run_seconds"), cs = train_number(*c, "run_seconds");
    if (!(bs > 0) || !(cs > 0)) continue;
    bsum += bs;
    csum += cs;
    bw += bs * run_spread(*b);
    cw += cs * run_spread(*c);
  }
  if (!(bsum > 0)) return;
  const double bspread = bw / bsum, cspread = cw / csum;
  const double threshold = std::max({tol.tokens_per_s_drop, bspread, cspread});
  const std::string run = "suite (" + std::to_string(pairs.size()) + " matched runs)";
  const std::string tol_text = "max(min " + format_fixed(100.0 * tol.tokens_per_s_drop, 1) + "%, spreads " +
                               format_fixed(100.0 * bspread, 1) + "%, " + format_fixed(100.0 * cspread, 1) +
                               "%) = " + format_fixed(100.0 * threshold, 1) + "%";
  auto secs = [](double v) { return format_fixed(v, 1) + " s"; };
  const double rel = csum / bsum - 1.0;
  if (rel > threshold) out.regressions.push_back({run, "run_seconds", secs(bsum), secs(csum), pct(rel), tol_text});
  else if (-rel > threshold) out.improvements.push_back({run, "run_seconds", secs(bsum), secs(csum), pct(rel), tol_text});
}

std::string status_text(const Record& r) { return r.status + (r.message.empty() ? "" : ": " + r.message); }

std::string with_hash(const Record& r) { return run_name(r) + " (config " + r.config_hash + ")"; }

void text_table(std::ostringstream& os, const std::vector<Finding>& rows, bool markdown) {
  const std::vector<std::string> head = {"run", "what", "baseline", "current", "change", "tolerance"};
  auto cells = [](const Finding& f) { return std::vector<std::string>{f.run, f.what, f.baseline, f.current, f.change, f.tolerance}; };
  if (markdown) {
    os << "| run | what | baseline | current | change | tolerance |\n| --- | --- | ---: | ---: | ---: | --- |\n";
    for (const auto& f : rows) {
      os << "|";
      for (auto c : cells(f)) {
        std::string esc;
        for (char ch : c) esc += ch == '|' ? std::string("\\|") : std::string(1, ch);
        os << " " << esc << " |";
      }
      os << "\n";
    }
    return;
  }
  std::vector<std::size_t> w(head.size());
  for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& f : rows) {
    const auto c = cells(f);
    for (std::size_t i = 0; i < c.size(); ++i) w[i] = std::max(w[i], c[i].size());
  }
  auto line = [&](const std::vector<std::string>& c) {
    os << " ";
    for (std::size_t i = 0; i < c.size(); ++i) {
      os << " ";
      if (i >= 2 && i <= 4) os << std::right;
      else os << std::left;
      os << std::setw(static_cast<int>(w[i])) << c[i];
    }
    os << "\n";
  };
  line(head);
  for (const auto& f : rows) line(cells(f));
}

}  // namespace

Tolerance Tolerance::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": a tolerance file must be a JSON object");
  Tolerance t;
  for (const auto& [k, v] : j.items()) {
    if (k == "quality_stderr") t.quality_stderr = number_field(v, where, k);
    else if (k == "quality_floor") t.quality_floor = number_field(v, where, k);
    else if (k == "tokens_per_s_drop") t.tokens_per_s_drop = number_field(v, where, k);
    else if (k == "peak_memory_rise") t.peak_memory_rise = number_field(v, where, k);
    else if (k == "fail_on_missing") {
      if (!v.is_boolean()) throw InputError(where + ": fail_on_missing must be true or false");
      t.fail_on_missing = v.get<bool>();
    } else if (k == "metrics") {
      if (!v.is_object()) throw InputError(where + ": metrics must be an object metric -> {stderr, floor}");
      for (const auto& [m, o] : v.items()) {
        if (!o.is_object()) throw InputError(where + ": metrics." + m + " must be an object {stderr, floor}");
        MetricOverride mo;
        for (const auto& [ok, ov] : o.items()) {
          if (ok == "stderr") mo.stderr_multiple = number_field(ov, where, "metrics." + m + ".stderr");
          else if (ok == "floor") mo.floor = number_field(ov, where, "metrics." + m + ".floor");
          else throw InputError(where + ": metrics." + m + "." + ok + ": unknown key (expected stderr, floor)");
        }
        t.metrics[m] = mo;
      }
    } else {
      throw InputError(where + ": " + k + ": unknown key (expected quality_stderr, quality_floor, tokens_per_s_drop, "
                       "peak_memory_rise, fail_on_missing, metrics)");
    }
  }
  return t;
}

Tolerance Tolerance::read(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError("cannot read tolerance file " + file.string());
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw FormatError(file.string() + ": not valid JSON: " + e.what());
  }
  return from_json(j, file.string());
}

Comparison compare_results(const ResultSet& baseline, const ResultSet& current, const Tolerance& tol) {
  Comparison out;
  std::map<Key, const Record*> cur;
  for (const auto& r : current.records) cur[key_of(r)] = &r;
  std::map<Key, const Record*> base;
  for (const auto& b : baseline.records) base[key_of(b)] = &b;

  std::vector<std::pair<const Record*, const Record*>> ok_pairs;  // matched, ok on both sides
  for (const auto& [key, b] : base) {
    const auto it = cur.find(key);
    if (it == cur.end()) {
      out.missing.push_back(with_hash(*b));
      if (tol.fail_on_missing)
        out.regressions.push_back({run_name(*b), "run", "present", "missing", "", "fail_on_missing"});
      continue;
    }
    const Record& c = *it->second;
    ++out.matched;
    const bool b_ok = b->status == "ok", c_ok = c.status == "ok";
    if (b_ok && !c_ok) {
      out.regressions.push_back({run_name(*b), "status", "ok", status_text(c), "", "status must stay ok"});
      continue;
    }
    if (!b_ok) {
      if (c_ok) out.improvements.push_back({run_name(*b), "status", status_text(*b), "ok", "", ""});
      continue;
    }
    ok_pairs.emplace_back(b, &c);
    compare_quality(*b, c, tol, out);
    compare_speed(*b, c, tol, out);
    compare_relative(*b, c, "peak_rss_bytes", tol.peak_memory_rise, false, out);
  }
  compare_suite_time(ok_pairs, tol, out);
  for (const auto& [key, c] : cur)
    if (!base.count(key)) out.added.push_back(with_hash(*c));
  return out;
}

std::string comparison_text(const Comparison& c, bool markdown) {
  std::ostringstream os;
  const std::string verdict = c.regressed() ? "REGRESSION" : "ok";
  const std::string counts = std::to_string(c.matched) + " runs matched, " + std::to_string(c.regressions.size()) +
                             " regressions, " + std::to_string(c.improvements.size()) + " improvements, " +
                             std::to_string(c.missing.size()) + " missing, " + std::to_string(c.added.size()) + " new";
  if (markdown) os << "# tunebench compare: " << verdict << "\n\n" << counts << ".\n";
  else os << "compare: " << verdict << " — " << counts << "\n";
  auto findings = [&](const char* title, const std::vector<Finding>& rows) {
    if (rows.empty()) return;
    os << (markdown ? "\n## " : "\n") << title << (markdown ? "\n\n" : ":\n");
    text_table(os, rows, markdown);
  };
  auto runs = [&](const char* title, const std::vector<std::string>& rows) {
    if (rows.empty()) return;
    os << (markdown ? "\n## " : "\n") << title << (markdown ? "\n\n" : ":\n");
    for (const auto& r : rows) os << (markdown ? "- " : "  ") << r << "\n";
  };
  findings("Regressions", c.regressions);
  findings("Improvements", c.improvements);
  runs("Missing runs (in the baseline, not in the current results)", c.missing);
  runs("New runs (in the current results, not in the baseline)", c.added);
  return os.str();
}

}  // namespace tb::reports
