// The Findings of a report: sentences derived from the task sections; see findings.h.
#include "reports/findings.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

namespace tb::reports {
namespace {

using nlohmann::json;
using runner::Record;

// How a method is called in a sentence.
std::string pretty(const std::string& method) {
  static const std::map<std::string, std::string> names = {
      {"lora", "LoRA"}, {"full", "full finetuning"}, {"softprompt", "soft prompt tuning"},
      {"prefix", "prefix tuning"}, {"icl", "in-context learning"}};
  const auto it = names.find(method);
  return it == names.end() ? method : it->second;
}

std::string capital(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

// A row as a sentence names it: the method, plus its configuration when the task has several.
std::string name_of(const MethodRow& r) { return pretty(r.method) + (r.label != r.method ? " [" + r.label + "]" : ""); }

double or_zero(double v) { return std::isfinite(v) ? v : 0.0; }

std::string val(double v) { return format_fixed(v, 3); }
std::string pm(double v, double se) { return val(v) + " ± " + val(or_zero(se)); }
std::string signed_val(double v) {
  std::string s = v >= 0 ? "+" : "";
  return s += val(v);
}
std::string signed_pm(double v, double se) { return signed_val(v) + " ± " + val(or_zero(se)); }

// A fraction as a percentage with two significant figures below 10%.
std::string pct(double fraction) {
  const double p = 100.0 * fraction;
  char buf[64];
  const double a = std::fabs(p);
  if (a >= 10) std::snprintf(buf, sizeof buf, "%.0f%%", p);
  else if (a >= 1) std::snprintf(buf, sizeof buf, "%.1f%%", p);
  else if (a >= 0.1) std::snprintf(buf, sizeof buf, "%.2f%%", p);
  else std::snprintf(buf, sizeof buf, "%.2g%%", p);
  return buf;
}

std::string times(double ratio) { return format_fixed(ratio, ratio >= 10 ? 0 : ratio >= 1 ? 1 : 2) + "×"; }

// "a", "a and b", "a, b and c".
std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (std::size_t i = 0; i < parts.size(); ++i) s += (i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i];
  return s;
}

std::string plural(long long n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string seed_range(int lo, int hi) {
  return lo == hi ? plural(lo, "seed", "seeds") : std::to_string(lo) + "–" + std::to_string(hi) + " seeds";
}

std::vector<const MethodRow*> rows_of(const TaskSection& s, const std::string& method) {
  std::vector<const MethodRow*> out;
  for (const auto& r : s.rows)
    if (r.method == method) out.push_back(&r);
  return out;
}

bool usable(const MethodRow& r) { return r.ok > 0 && std::isfinite(r.value); }

// Is a's quality better than b's (strictly)?
bool better(const MethodRow& a, const MethodRow& b) { return a.higher_is_better ? a.value > b.value : a.value < b.value; }

const MethodRow* best_of(const std::vector<const MethodRow*>& rows) {
  const MethodRow* best = nullptr;
  for (const auto* r : rows)
    if (usable(*r) && (!best || better(*r, *best))) best = r;
  return best;
}

const MethodRow* best_ok(const TaskSection& s, const std::string& method) { return best_of(rows_of(s, method)); }

// Two rows' ±1 stderr bars overlap.
bool overlap(double a, double sa, double b, double sb) { return std::fabs(a - b) <= or_zero(sa) + or_zero(sb); }
bool overlap(const MethodRow& a, const MethodRow& b) { return overlap(a.value, a.stderr_, b.value, b.stderr_); }

double diff_stderr(double sa, double sb) { return std::sqrt(or_zero(sa) * or_zero(sa) + or_zero(sb) * or_zero(sb)); }

// Why a method cannot stand in a comparison on a task: "no prefix tuning run", "prefix tuning
// has no successful run (1 error)".
std::string why_missing(const TaskSection& s, const std::string& method) {
  const auto rows = rows_of(s, method);
  if (rows.empty()) return "no " + pretty(method) + " run";
  std::map<std::string, int> counts;
  for (const auto* r : rows)
    for (const auto* run : r->runs) ++counts[run->status];
  std::vector<std::string> parts;
  for (const char* st : runner::kStatuses)
    if (counts.count(st)) parts.push_back(std::to_string(counts[st]) + " " + st);
  return pretty(method) + " has no successful run (" + join(parts) + ")";
}

// A ratio a / b when both are finite and b is positive, NAN otherwise.
double ratio(double a, double b) { return std::isfinite(a) && std::isfinite(b) && b > 0 ? a / b : NAN; }

ReportFinding make(Question q, Verdict v, const std::string& task, std::string text,
             std::vector<std::pair<std::string, double>> numbers = {}) {
  ReportFinding f;
  f.question = q;
  f.verdict = v;
  f.task = task;
  f.text = std::move(text);
  f.numbers = std::move(numbers);
  return f;
}

// The first successful run of a row (or its first run): where its options and details are read.
const json& run_info_of(const MethodRow& r, const char* section) {
  for (const auto* run : r.runs)
    if (run->status == "ok") return run->json[section];
  return r.runs.front()->json[section];
}

// An integer from a run's details (number) or, failing that, its options (text).
double detail_or_option(const MethodRow& r, const char* detail, const char* option) {
  const json& d = run_info_of(r, "train_info")["details"];
  if (d.is_object() && d.contains(detail) && d[detail].is_number()) return d[detail].get<double>();
  const json& o = run_info_of(r, "run_info")["options"];
  if (o.is_object() && o.contains(option)) {
    const json& v = o[option];
    if (v.is_number()) return v.get<double>();
    if (v.is_string()) {
      try {
        std::size_t used = 0;
        const double x = std::stod(v.get<std::string>(), &used);
        if (used == v.get<std::string>().size()) return x;
      } catch (const std::exception&) {
      }
    }
  }
  return NAN;
}

bool detail_or_option_flag(const MethodRow& r, const char* detail, const char* option) {
  const json& d = run_info_of(r, "train_info")["details"];
  if (d.is_object() && d.contains(detail) && d[detail].is_boolean()) return d[detail].get<bool>();
  const json& o = run_info_of(r, "run_info")["options"];
  if (!o.is_object() || !o.contains(option)) return false;
  const json& v = o[option];
  return v.is_boolean() ? v.get<bool>() : v.is_string() && (v == "true" || v == "1" || v == "yes");
}

// Where the trained values of a soft prompt or prefix row act, with their count.
std::string acts_on(const MethodRow& r) {
  if (r.method == "softprompt") {
    const double p = detail_or_option(r, "virtual_tokens", "tokens");
    return "input embeddings" + (std::isfinite(p) ? ": " + plural(std::llround(p), "virtual token", "virtual tokens") + " before every input" : "");
  }
  const double p = detail_or_option(r, "prefix_tokens", "tokens");
  std::string s = "keys and values of every block";
  if (std::isfinite(p)) s += ": " + plural(std::llround(p), "position", "positions") + " per block";
  if (detail_or_option_flag(r, "reparam", "reparam")) s += ", trained through an MLP";
  return s;
}

// The number of labelled training examples of a row: run_info.train_size when its records
// carry it, else run_info.examples.train.
double train_size(const MethodRow& r) {
  const json& ri = run_info_of(r, "run_info");
  if (ri.contains("train_size") && ri["train_size"].is_number()) return ri["train_size"].get<double>();
  if (ri.contains("examples") && ri["examples"].is_object() && ri["examples"].contains("train") &&
      ri["examples"]["train"].is_number())
    return ri["examples"]["train"].get<double>();
  return NAN;
}

// The best rows of methods a and b on a task, compared at the same number of labelled
// examples: with learning-curve records, at the largest size both have a successful run of
// (their best rows over all sizes would compare a method at 512 examples with another at 8).
std::pair<const MethodRow*, const MethodRow*> best_pair(const TaskSection& s, const std::string& a, const std::string& b) {
  auto size_of = [](const MethodRow& r) {
    const double n = train_size(r);
    return std::isfinite(n) && r.runs.front()->train_size >= 0 ? n : -1.0;
  };
  std::set<double> sa, sb;
  for (const auto* r : rows_of(s, a))
    if (usable(*r)) sa.insert(size_of(*r));
  for (const auto* r : rows_of(s, b))
    if (usable(*r)) sb.insert(size_of(*r));
  double common = NAN;
  for (double n : sa)
    if (sb.count(n)) common = n;
  if (!std::isfinite(common) || (sa.size() <= 1 && sb.size() <= 1)) return {best_ok(s, a), best_ok(s, b)};
  std::vector<const MethodRow*> ra, rb;
  for (const auto* r : rows_of(s, a))
    if (size_of(*r) == common) ra.push_back(r);
  for (const auto* r : rows_of(s, b))
    if (size_of(*r) == common) rb.push_back(r);
  return {best_of(ra), best_of(rb)};
}

// " with 32 labelled examples" for a row of a learning curve, "" otherwise.
std::string at_size(const MethodRow& r) {
  return r.runs.front()->train_size >= 0 ? " with " + plural(r.runs.front()->train_size, "labelled example", "labelled examples")
                                         : "";
}

// ---- LoRA vs full finetuning ---------------------------------------------------------------

void lora_vs_full(const std::vector<TaskSection>& sections, std::vector<ReportFinding>& out) {
  const Question q = Question::lora_vs_full;
  std::vector<ReportFinding> per_task;
  std::vector<double> ratios, ratio_ses, params, memory, time;
  std::vector<std::string> beats, trails, level;  // tasks by the per-task verdict
  std::set<std::string> metrics;
  int seeds_lo = 0, seeds_hi = 0, compared = 0;
  bool any = false;
  for (const auto& s : sections) {
    if (rows_of(s, "lora").empty() && rows_of(s, "full").empty()) continue;
    any = true;
    const auto [a, b] = best_pair(s, "lora", "full");
    if (!a || !b) {
      std::vector<std::string> why;
      if (!a) why.push_back(why_missing(s, "lora"));
      if (!b) why.push_back(why_missing(s, "full"));
      per_task.push_back(make(q, Verdict::not_enough_runs, s.task,
                              "Not enough runs to compare LoRA with full finetuning on " + s.task + ": " + join(why) + "."));
      continue;
    }
    ++compared;
    metrics.insert(s.metric);
    const int lo = std::min(a->ok, b->ok), hi = std::max(a->ok, b->ok);
    seeds_lo = compared == 1 ? lo : std::min(seeds_lo, lo);
    seeds_hi = compared == 1 ? hi : std::max(seeds_hi, hi);
    // Quality as a fraction of full finetuning's (inverted for lower-is-better metrics, so
    // above 100% always means LoRA does better), its stderr by the delta method.
    const double num = a->higher_is_better ? a->value : b->value, den = a->higher_is_better ? b->value : a->value;
    const double se_num = a->higher_is_better ? a->stderr_ : b->stderr_, se_den = a->higher_is_better ? b->stderr_ : a->stderr_;
    const double r = num != 0 && den != 0 ? num / den : NAN;
    const double r_se = std::isfinite(r) ? std::fabs(r) * std::sqrt(std::pow(or_zero(se_num) / num, 2) + std::pow(or_zero(se_den) / den, 2)) : NAN;
    ratios.push_back(r);
    ratio_ses.push_back(r_se);
    params.push_back(ratio(a->trainable_params, b->trainable_params));
    memory.push_back(ratio(a->peak_rss_bytes, b->peak_rss_bytes));
    time.push_back(ratio(a->train_seconds, b->train_seconds));

    const double d = a->value - b->value, d_se = diff_stderr(a->stderr_, b->stderr_);
    std::vector<std::pair<std::string, double>> nums = {
        {"lora", a->value}, {"lora_stderr", a->stderr_}, {"full", b->value}, {"full_stderr", b->stderr_},
        {"difference", d}, {"difference_stderr", d_se}, {"lora_seeds", a->ok}, {"full_seeds", b->ok},
        {"quality_ratio", r}, {"quality_ratio_stderr", r_se}};
    const std::string values = s.metric + " " + pm(a->value, a->stderr_) + " vs " + pm(b->value, b->stderr_);
    const std::string seeds = a->ok == b->ok ? plural(a->ok, "seed", "seeds") + " each"
                                             : std::to_string(a->ok) + " vs " + plural(b->ok, "seed", "seeds");
    if (overlap(*a, *b))
      per_task.push_back(make(q, Verdict::indistinguishable, s.task,
                              capital(name_of(*a)) + " and " + name_of(*b) + " cannot be told apart on " + s.task + at_size(*a) +
                                  ": " + values + " (" + seeds + ").",
                              nums));
    else
      per_task.push_back(make(q, Verdict::measured, s.task,
                              capital(name_of(*a)) + (better(*a, *b) ? " beats " : " trails ") + name_of(*b) + " on " + s.task +
                                  at_size(*a) + ": " + values + ", a difference of " + signed_pm(d, d_se) + " (" + seeds + ").",
                              nums));
    (overlap(*a, *b) ? level : better(*a, *b) ? beats : trails).push_back(s.task);
  }
  if (!any) {
    out.push_back(make(q, Verdict::not_enough_runs, "",
                       "Not enough runs to compare LoRA with full finetuning: the records hold no lora run and no full run."));
    return;
  }
  if (compared == 0) {
    out.push_back(make(q, Verdict::not_enough_runs, "",
                       "Not enough runs to compare LoRA with full finetuning: no task has a successful run of both."));
  } else {
    // Over the tasks: the mean of the per-task ratios; the stderr of that mean from the
    // per-task stderrs (independent test sets).
    double r = 0, var = 0;
    int n = 0;
    for (std::size_t i = 0; i < ratios.size(); ++i)
      if (std::isfinite(ratios[i])) r += ratios[i], var += or_zero(ratio_ses[i]) * or_zero(ratio_ses[i]), ++n;
    r = n ? r / n : NAN;
    const double r_se = n ? std::sqrt(var) / n : NAN;
    const double fp = mean_finite(params), fm = mean_finite(memory), ft = mean_finite(time);
    std::string metric_name;
    for (const auto& m : metrics) metric_name += (metric_name.empty() ? "" : ", ") + m;
    metric_name = metrics.size() == 1 ? metric_name : "quality (" + metric_name + ")";
    std::vector<std::string> costs;
    if (std::isfinite(fp)) costs.push_back(pct(fp) + " of its trainable parameters");
    if (std::isfinite(fm)) costs.push_back(pct(fm) + " of its peak memory");
    if (std::isfinite(ft)) costs.push_back(pct(ft) + " of its training time");
    // The headline never contradicts the per-task sentences: a mean ratio is the summary only
    // when every task says the same (LoRA beats, trails, or cannot be told apart from full
    // finetuning); when tasks disagree it says so, task by task, and the mean is marked as
    // averaging tasks that disagree.
    const std::string ratio_text = std::isfinite(r) ? pct(r) + " ± " + pct(r_se) + " of full finetuning's " + metric_name : "";
    const std::string cost_text = costs.empty() ? "" : join(costs);
    const std::string scope = " (" + plural(compared, "task", "tasks") + ", " + seed_range(seeds_lo, seeds_hi) + ")";
    const int kinds = !beats.empty() + !trails.empty() + !level.empty();
    const auto on = [compared](const std::vector<std::string>& tasks) {
      return compared == 1 ? "on " + tasks.front() : "on every one of the " + std::to_string(compared) + " tasks";
    };
    std::string text;
    Verdict verdict = Verdict::measured;
    if (kinds > 1) {
      std::vector<std::string> parts;
      if (!beats.empty()) parts.push_back("beats it on " + join(beats));
      if (!trails.empty()) parts.push_back("trails it on " + join(trails));
      if (!level.empty()) parts.push_back("cannot be told apart from it on " + join(level));
      text = "LoRA's quality against full finetuning differs by task: it " + join(parts) + " (per task below)";
      if (!ratio_text.empty()) text += "; the mean over tasks, " + ratio_text + ", averages tasks that disagree";
      if (!cost_text.empty()) text += "; it uses " + cost_text;
    } else {
      const std::string how = !level.empty() ? "LoRA and full finetuning cannot be told apart " + on(level)
                              : !beats.empty() ? "LoRA beats full finetuning " + on(beats)
                                               : "LoRA trails full finetuning " + on(trails);
      if (!level.empty()) verdict = Verdict::indistinguishable;
      text = how + (ratio_text.empty() ? "" : ": LoRA reaches " + ratio_text) + (cost_text.empty() ? "" : " with " + cost_text);
    }
    text += scope;
    out.push_back(make(q, verdict, "", text + ".",
                       {{"quality_ratio", r}, {"quality_ratio_stderr", r_se}, {"trainable_fraction", fp},
                        {"peak_memory_fraction", fm}, {"train_time_fraction", ft}, {"tasks", compared},
                        {"seeds_min", seeds_lo}, {"seeds_max", seeds_hi}}));
  }
  out.insert(out.end(), per_task.begin(), per_task.end());
}

// ---- soft prompt vs prefix tuning ------------------------------------------------------------

void softprompt_vs_prefix(const std::vector<TaskSection>& sections, std::vector<ReportFinding>& out) {
  const Question q = Question::softprompt_vs_prefix;
  std::vector<ReportFinding> per_task;
  std::vector<std::string> higher, lower, level;  // tasks where prefix scores higher / lower / level
  bool any = false;
  for (const auto& s : sections) {
    if (rows_of(s, "softprompt").empty() && rows_of(s, "prefix").empty()) continue;
    any = true;
    const auto [a, b] = best_pair(s, "softprompt", "prefix");
    if (!a || !b) {
      std::vector<std::string> why;
      if (!a) why.push_back(why_missing(s, "softprompt"));
      if (!b) why.push_back(why_missing(s, "prefix"));
      per_task.push_back(make(q, Verdict::not_enough_runs, s.task,
                              "Not enough runs to compare soft prompt with prefix tuning on " + s.task + ": " + join(why) + "."));
      continue;
    }
    // What each trains and where, and their quality.
    const double d = b->value - a->value, d_se = diff_stderr(a->stderr_, b->stderr_);
    const std::string trains = "On " + s.task + " " + name_of(*a) + " trains " + format_count(a->trainable_params) +
                               " parameters (" + acts_on(*a) + ") and " + name_of(*b) + " " +
                               format_count(b->trainable_params) + " (" + acts_on(*b) + ")";
    std::vector<std::pair<std::string, double>> nums = {
        {"softprompt_trainable", a->trainable_params}, {"prefix_trainable", b->trainable_params},
        {"softprompt", a->value}, {"softprompt_stderr", a->stderr_}, {"prefix", b->value}, {"prefix_stderr", b->stderr_},
        {"difference", d}, {"difference_stderr", d_se}};
    if (overlap(*a, *b)) {
      level.push_back(s.task);
      per_task.push_back(make(q, Verdict::indistinguishable, s.task,
                              trains + "; their " + s.metric + " cannot be told apart: " + pm(a->value, a->stderr_) + " vs " +
                                  pm(b->value, b->stderr_) + ".",
                              nums));
    } else {
      (better(*b, *a) ? higher : lower).push_back(s.task);
      per_task.push_back(make(q, Verdict::measured, s.task,
                              trains + "; " + name_of(*b) + (better(*b, *a) ? " does better" : " does worse") + ": " + s.metric +
                                  " " + pm(b->value, b->stderr_) + " vs " + pm(a->value, a->stderr_) + " (" +
                                  signed_pm(d, d_se) + ").",
                              nums));
    }
    // Forgetting: the change of held-out LM loss each leaves on the base model.
    if (std::isfinite(a->forgetting) && std::isfinite(b->forgetting)) {
      const std::string text = capital(name_of(*b)) + " changes held-out LM loss by " +
                               signed_pm(b->forgetting, b->forgetting_stderr) + " nats/token vs " +
                               signed_pm(a->forgetting, a->forgetting_stderr) + " for " + name_of(*a) + " on " + s.task;
      const bool same = overlap(a->forgetting, a->forgetting_stderr, b->forgetting, b->forgetting_stderr);
      per_task.push_back(make(q, same ? Verdict::indistinguishable : Verdict::measured, s.task,
                              text + (same ? "; the two cannot be told apart." : "."),
                              {{"prefix_forgetting", b->forgetting}, {"prefix_forgetting_stderr", b->forgetting_stderr},
                               {"softprompt_forgetting", a->forgetting}, {"softprompt_forgetting_stderr", a->forgetting_stderr}}));
    } else {
      std::vector<std::string> lack;
      if (!std::isfinite(a->forgetting)) lack.push_back(name_of(*a));
      if (!std::isfinite(b->forgetting)) lack.push_back(name_of(*b));
      per_task.push_back(make(q, Verdict::not_enough_runs, s.task,
                              "Forgetting cannot be compared on " + s.task + ": no held-out LM loss change (forgetting) in the runs of " +
                                  join(lack) + "."));
    }
    // Training cost.
    std::vector<std::string> cost;
    const double tr = ratio(b->train_seconds, a->train_seconds), mr = ratio(b->peak_rss_bytes, a->peak_rss_bytes);
    if (std::isfinite(b->train_seconds) && std::isfinite(a->train_seconds))
      cost.push_back((std::isfinite(tr) ? times(tr) + " the training time (" : "a training time of (") +
                     format_seconds(b->train_seconds) + " vs " + format_seconds(a->train_seconds) + ")");
    if (std::isfinite(mr))
      cost.push_back(times(mr) + " the peak memory (" + format_bytes(b->peak_rss_bytes) + " vs " + format_bytes(a->peak_rss_bytes) + ")");
    if (std::isfinite(a->adaptation_bytes) && std::isfinite(b->adaptation_bytes))
      cost.push_back("an adaptation of " + format_bytes(b->adaptation_bytes) + " vs " + format_bytes(a->adaptation_bytes));
    if (!cost.empty())
      per_task.push_back(make(q, Verdict::measured, s.task,
                              "Training cost on " + s.task + ": " + name_of(*b) + " takes " + join(cost) + " of " + name_of(*a) + ".",
                              {{"train_time_ratio", tr}, {"peak_memory_ratio", mr}, {"prefix_train_seconds", b->train_seconds},
                               {"softprompt_train_seconds", a->train_seconds}, {"prefix_adaptation_bytes", b->adaptation_bytes},
                               {"softprompt_adaptation_bytes", a->adaptation_bytes}}));
  }
  if (!any) {
    out.push_back(make(q, Verdict::not_enough_runs, "",
                       "Not enough runs to compare soft prompt with prefix tuning: the records hold no softprompt run and no prefix run."));
    return;
  }
  const auto n = higher.size() + lower.size() + level.size();
  if (n == 0) {
    out.push_back(make(q, Verdict::not_enough_runs, "",
                       "Not enough runs to compare soft prompt with prefix tuning: no task has a successful run of both."));
  } else if (n > 1) {
    std::vector<std::string> parts;
    if (!higher.empty()) parts.push_back("scores higher than soft prompt tuning on " + plural(higher.size(), "task", "tasks"));
    if (!lower.empty()) parts.push_back("lower on " + plural(lower.size(), "task", "tasks"));
    if (!level.empty()) parts.push_back("cannot be told apart from it on " + plural(level.size(), "task", "tasks"));
    out.push_back(make(q, higher.empty() && lower.empty() ? Verdict::indistinguishable : Verdict::measured, "",
                       "Over " + plural(n, "task", "tasks") + ", prefix tuning " + join(parts) + ".",
                       {{"tasks", static_cast<double>(n)}, {"prefix_higher", static_cast<double>(higher.size())},
                        {"prefix_lower", static_cast<double>(lower.size())}, {"level", static_cast<double>(level.size())}}));
  }
  out.insert(out.end(), per_task.begin(), per_task.end());
}

// ---- in-context learning vs finetuning -------------------------------------------------------

// A row of a method that trains parameters on the labelled examples.
bool trains(const MethodRow& r) {
  return !r.reference && r.method != "icl" && usable(r) && std::isfinite(r.trainable_params) && r.trainable_params > 0;
}

void icl_vs_finetuning(const std::vector<TaskSection>& sections, std::vector<ReportFinding>& out) {
  const Question q = Question::icl_vs_finetuning;
  bool any_icl = false;
  std::vector<std::string> trained_tasks;
  for (const auto& s : sections) {
    any_icl |= !rows_of(s, "icl").empty();
    if (std::any_of(s.rows.begin(), s.rows.end(), trains)) trained_tasks.push_back(s.task);
  }
  if (!any_icl) {
    out.push_back(make(q, Verdict::not_enough_runs, "",
                       "Not enough runs to compare in-context learning with finetuning: the records hold no icl run" +
                           (trained_tasks.empty() ? std::string(" and no successful run of a method that trains parameters")
                                                  : " (methods that train parameters ran on " + join(trained_tasks) + ")") +
                           "."));
    return;
  }
  for (const auto& s : sections) {
    const auto icl_rows = rows_of(s, "icl");
    std::vector<const MethodRow*> trained;
    for (const auto& r : s.rows)
      if (trains(r)) trained.push_back(&r);
    if (icl_rows.empty() && trained.empty()) continue;
    // One comparison per number of labelled examples the task's rows ran with.
    std::map<double, std::pair<std::vector<const MethodRow*>, std::vector<const MethodRow*>>> by_size;
    // (-1: a row whose records give no size.)
    const auto size_of = [](const MethodRow& r) {
      const double n = train_size(r);
      return std::isfinite(n) ? n : -1.0;
    };
    for (const auto* r : icl_rows) by_size[size_of(*r)].first.push_back(r);
    for (const auto* r : trained) by_size[size_of(*r)].second.push_back(r);
    for (const auto& [size, group] : by_size) {
      const std::string at = size >= 0 ? " with " + plural(std::llround(size), "labelled example", "labelled examples") : "";
      const MethodRow* i = best_of(group.first);
      const MethodRow* f = best_of(group.second);
      if (!i || !f) {
        std::string why;
        if (!i) why = icl_rows.empty() ? "no in-context learning run" : group.first.empty() ? "no in-context learning run at this size"
                                                                                             : why_missing(s, "icl");
        if (!f) why += std::string(why.empty() ? "" : " and ") + "no successful run of a method that trains parameters";
        out.push_back(make(q, Verdict::not_enough_runs, s.task,
                           "Not enough runs to compare in-context learning with finetuning on " + s.task + at + ": " + why + "."));
        continue;
      }
      const double k = detail_or_option(*i, "prediction_k", "k");
      const std::string icl_name = name_of(*i) + (std::isfinite(k) ? " (" + plural(std::llround(k), "demonstration", "demonstrations") + ")" : "");
      const double d = f->value - i->value, d_se = diff_stderr(f->stderr_, i->stderr_);
      int above = 0;  // finetuned methods better than icl beyond the error bars
      std::vector<std::string> above_names;
      for (const auto* r : group.second)
        if (usable(*r) && better(*r, *i) && !overlap(*r, *i)) ++above, above_names.push_back(r->label);
      std::vector<std::pair<std::string, double>> nums = {
          {"labelled_examples", size >= 0 ? size : NAN}, {"icl", i->value}, {"icl_stderr", i->stderr_}, {"best_finetuned", f->value},
          {"best_finetuned_stderr", f->stderr_}, {"difference", d}, {"difference_stderr", d_se},
          {"finetuned_methods", static_cast<double>(group.second.size())}, {"finetuned_above_icl", static_cast<double>(above)}};
      if (overlap(*f, *i)) {
        out.push_back(make(q, Verdict::indistinguishable, s.task,
                           capital(icl_name) + " and the best method that trains parameters, " + f->label +
                               ", cannot be told apart on " + s.task + at + ": " + s.metric + " " + pm(i->value, i->stderr_) +
                               " vs " + pm(f->value, f->stderr_) + ".",
                           nums));
      } else if (better(*i, *f)) {
        out.push_back(make(q, Verdict::measured, s.task,
                           capital(icl_name) + " beats every method that trains parameters on " + s.task + at + ": " + s.metric +
                               " " + pm(i->value, i->stderr_) + " vs " + pm(f->value, f->stderr_) + " for the best of them, " +
                               f->label + " (" + signed_pm(-d, d_se) + ").",
                           nums));
      } else {
        out.push_back(make(q, Verdict::measured, s.task,
                           "Finetuning beats " + icl_name + " on " + s.task + at + ": " + f->label + " reaches " + s.metric + " " +
                               pm(f->value, f->stderr_) + " vs " + pm(i->value, i->stderr_) + " (" + signed_pm(d, d_se) + "); " +
                               std::to_string(above) + " of " + plural(group.second.size(), "method", "methods") +
                               " that train parameters score above in-context learning beyond the error bars (" +
                               join(above_names) + ").",
                           nums));
      }
    }
  }
}

}  // namespace

const std::vector<Question>& questions() {
  static const std::vector<Question> q = {Question::lora_vs_full, Question::softprompt_vs_prefix, Question::icl_vs_finetuning};
  return q;
}

std::string question_id(Question q) {
  switch (q) {
    case Question::lora_vs_full: return "lora-vs-full";
    case Question::softprompt_vs_prefix: return "softprompt-vs-prefix";
    case Question::icl_vs_finetuning: return "icl-vs-finetuning";
  }
  return "";
}

std::string question_title(Question q) {
  switch (q) {
    case Question::lora_vs_full: return "How close does LoRA come to full finetuning?";
    case Question::softprompt_vs_prefix: return "Soft prompt tuning vs prefix tuning";
    case Question::icl_vs_finetuning: return "In-context learning vs finetuning";
  }
  return "";
}

std::string verdict_id(Verdict v) {
  switch (v) {
    case Verdict::measured: return "measured";
    case Verdict::indistinguishable: return "indistinguishable";
    case Verdict::not_enough_runs: return "not-enough-runs";
  }
  return "";
}

double ReportFinding::number(const std::string& name) const {
  for (const auto& [k, v] : numbers)
    if (k == name) return v;
  return NAN;
}

std::vector<ReportFinding> derive_findings(const std::vector<TaskSection>& sections) {
  std::vector<ReportFinding> out;
  lora_vs_full(sections, out);
  softprompt_vs_prefix(sections, out);
  icl_vs_finetuning(sections, out);
  return out;
}

std::vector<PromptTuningRow> prompt_tuning_rows(const std::vector<TaskSection>& sections) {
  std::vector<PromptTuningRow> out;
  for (const auto& s : sections)
    for (const char* method : {"softprompt", "prefix"})
      for (const auto* r : rows_of(s, method)) {
        PromptTuningRow p;
        p.task = s.task;
        p.method = r->method;
        p.label = r->label;
        p.metric = s.metric;
        p.acts_on = acts_on(*r);
        p.status = r->status;
        p.ok = r->ok;
        p.runs = static_cast<int>(r->runs.size());
        if (r->ok) {
          p.trainable_params = r->trainable_params;
          const double stored = detail_or_option(*r, "stored_params", "");
          p.stored_params = std::isfinite(stored) ? stored : r->trainable_params;
          p.value = r->value;
          p.stderr_ = r->stderr_;
          p.forgetting = r->forgetting;
          p.forgetting_stderr = r->forgetting_stderr;
          p.train_seconds = r->train_seconds;
          p.adaptation_bytes = r->adaptation_bytes;
          p.peak_rss_bytes = r->peak_rss_bytes;
        }
        out.push_back(std::move(p));
      }
  return out;
}

}  // namespace tb::reports
