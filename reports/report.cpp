// The Markdown, HTML and CSV writers of `tunebench report`; see report.h. Both text
// formats render the same cells (table_cells) so they never disagree.
#include "reports/report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "reports/curves.h"
#include "reports/findings.h"
#include "reports/svg.h"

namespace tb::reports {
namespace {

using nlohmann::json;
using runner::Record;

const std::vector<std::string> kColumns = {"method", "status", "seeds", "", "trainable params", "trainable %",
                                           "adaptation", "peak memory", "train time", "train tok/s",
                                           "eval tok/s", "forgetting"};

std::string metric_cell(double v, double se) {
  if (!std::isfinite(v)) return "";
  return format_fixed(v, 4) + " ± " + format_fixed(std::isfinite(se) ? se : 0.0, 4);
}

// A row's value ± stderr of one of its section's other metrics ("" when it has none).
std::string other_metric_cell(const MethodRow& r, const std::string& metric) {
  const auto it = r.other_metrics.find(metric);
  return it == r.other_metrics.end() ? "" : metric_cell(it->second.first, it->second.second);
}

// The cells of one row, in kColumns order.
std::vector<std::string> table_cells(const MethodRow& r) {
  const bool any_ok = r.ok > 0;
  std::string metric = metric_cell(r.value, r.stderr_);
  if (!any_ok) metric = r.status;
  return {r.label,
          r.status,
          std::to_string(r.runs.size()),
          metric,
          any_ok ? format_count(r.trainable_params) : "",
          any_ok ? format_fixed(r.trainable_percent, r.trainable_percent < 1 ? 3 : 1) : "",
          any_ok ? format_bytes(r.adaptation_bytes) : "",
          any_ok ? format_bytes(r.peak_rss_bytes) : "",
          any_ok ? format_seconds(r.train_seconds) : "",
          format_rate(r.train_tokens_per_s),
          format_rate(r.eval_tokens_per_s),
          metric_cell(r.forgetting, r.forgetting_stderr)};
}

std::string column_title(std::size_t i, const TaskSection& s) {
  return kColumns[i].empty() ? s.metric + " ± stderr" : kColumns[i];
}

std::string direction(const TaskSection& s) {
  for (const auto& r : s.rows)
    if (r.ok) return r.higher_is_better ? "higher is better" : "lower is better";
  return "no successful run";
}

std::string run_name(const Record& r) { return r.method + " / " + r.task + " / seed " + std::to_string(r.seed); }

// One colour per method over the whole report (the same method looks the same in every
// chart), in the order methods first appear; reference rows are grey.
using Colors = std::map<std::string, std::string>;
Colors method_colors(const std::vector<TaskSection>& sections) {
  Colors c;
  for (const auto& s : sections)
    for (const auto& r : s.rows)
      if (!r.reference && !c.count(r.method)) c[r.method] = palette(c.size());
  return c;
}
std::string color_of(const Colors& colors, const MethodRow& r) { return r.reference ? "#9a9a9a" : colors.at(r.method); }

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out;
}

// Distinct values of a few fields over the records, with how many runs have each.
std::vector<std::pair<json, int>> distinct(const std::vector<Record>& records, const json& (*pick)(const Record&, json&)) {
  std::vector<std::pair<json, int>> out;
  for (const auto& r : records) {
    json scratch;
    const json& v = pick(r, scratch);
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& p) { return p.first == v; });
    if (it == out.end()) out.emplace_back(v, 1);
    else ++it->second;
  }
  return out;
}

const json& pick_machine(const Record& r, json&) { return r.json["meta_info"]; }
const json& pick_build(const Record& r, json& s) {
  s = {{"tunebench", r.json["run_info"]["tunebench_version"]}, {"git_sha", r.json["run_info"]["git_sha"]}};
  return s;
}
const json& pick_model(const Record& r, json& s) {
  s = {{"path", r.json["run_info"]["model_path"]}, {"sha256", r.json["run_info"]["model_sha256"]}};
  return s;
}

std::string js(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

std::string machine_line(const json& m) {
  std::string s = js(m["cpu"]) + ", " + js(m["threads"]) + " threads of " + js(m["cores"]) + " cores, host " +
                  js(m["host"]) + ", oneDNN " + js(m["onednn_version"]) + " on " + js(m["isa"]) + ", " + js(m["compiler"]);
  if (m["matmul_peak_gflop_per_s"].is_number())
    s += ", measured matmul peak " + format_fixed(m["matmul_peak_gflop_per_s"].get<double>(), 1) + " GFLOP/s (" +
         js(m["matmul_peak_size"]) + "³ fp32)";
  return s;
}

std::string time_range(const std::vector<Record>& records) {
  std::string lo, hi;
  for (const auto& r : records) {
    const auto t = r.json["run_info"]["start_time"].get<std::string>();
    if (lo.empty() || t < lo) lo = t;
    if (hi.empty() || t > hi) hi = t;
  }
  return lo == hi ? lo : lo + " to " + hi;
}

// "arch=gpt2 L=6 C=384 ...": the dimension names in their usual order, then any others.
std::string shape_text(const json& shape) {
  static const std::vector<std::string> order = {"arch", "L", "C", "NH", "NKV", "hs", "F", "V", "T", "B", "N", "IC", "OC", "n"};
  std::string s;
  auto add = [&](const std::string& k) { s += (s.empty() ? "" : " ") + k + "=" + js(shape[k]); };
  for (const auto& k : order)
    if (shape.contains(k)) add(k);
  for (const auto& [k, v] : shape.items())
    if (std::find(order.begin(), order.end(), k) == order.end()) add(k);
  return s;
}

std::string fraction_pct(const json& v) { return v.is_number() ? format_fixed(100.0 * v.get<double>(), 1) + "%" : ""; }
std::string number_text(const json& v, int digits) { return v.is_number() ? format_fixed(v.get<double>(), digits) : ""; }
std::string rate_text(const json& v) { return v.is_number() ? format_rate(v.get<double>()) : ""; }

std::string profile_machine_line(const json& m) {
  std::string s = js(m["cpu"]) + ", " + js(m["threads"]) + " threads, oneDNN " + js(m["onednn_version"]) + " on " +
                  js(m["isa"]) + "; matmul peak f32 " + number_text(m["peak_gflop_per_s"]["f32"], 1) + " GFLOP/s";
  s += m["peak_gflop_per_s"]["bf16"].is_number() ? ", bf16 " + number_text(m["peak_gflop_per_s"]["bf16"], 1) + " GFLOP/s"
                                                 : ", bf16 not supported";
  return s;
}

const char* kCss = R"CSS(
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #d9dee5; --bg: #ffffff; --band: #f5f7fa; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0 auto; padding: 24px 32px 64px; max-width: 1320px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 6px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.sub, p.note, figcaption { color: var(--muted); }
nav a { margin-right: 14px; }
a { color: #2f5d94; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
th, td { padding: 4px 7px; border-bottom: 1px solid var(--line); white-space: nowrap; font-size: 13px; }
td.status-detail { white-space: normal; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
th { text-align: left; font-weight: 600; background: var(--band); position: sticky; top: 0; }
td.num, th.num { text-align: right; }
tr.reference td { color: var(--muted); font-style: italic; }
tr.reference.first td { border-top: 2px solid var(--line); }
tr.failed td { color: var(--bad); }
tr.failed td.status, tr.partial td.status { font-weight: 600; color: var(--bad); }
tr.pareto td.method::after { content: " \2605"; color: #c98a00; }
ul.failed-runs { color: var(--bad); margin: 6px 0; padding-left: 20px; }
ul.failed-runs code { color: var(--fg); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 18px 24px; margin-top: 14px; }
figure { margin: 0; }
figcaption { font-size: 13px; margin-bottom: 4px; }
svg.chart { max-width: 100%; height: auto; font: 11px system-ui, sans-serif; }
svg .plot { fill: #fbfcfd; stroke: var(--line); }
svg .grid { stroke: #e8ebef; }
svg .axis { stroke: #777; stroke-width: 1.2; }
svg .tick, svg .note { fill: var(--muted); }
svg .axis-label { fill: var(--fg); font-weight: 600; }
svg .lbl, svg .value, svg .point-label { fill: var(--fg); }
svg .value { font-size: 10px; fill: var(--muted); }
svg .pareto-front { fill: none; stroke: #c98a00; stroke-width: 1.6; stroke-dasharray: 5 3; }
svg .point { stroke-width: 2; }
svg .series { fill: none; stroke-width: 1.8; }
svg .marker { stroke: #222; stroke-width: 2.5; }
dl.info { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dl.info dt { color: var(--muted); }
dl.info dd { margin: 0; }
p.empty { color: var(--muted); font-style: italic; }
ul.findings { margin: 6px 0; padding-left: 20px; max-width: 1100px; }
ul.findings li { margin: 3px 0; }
li.finding.not-enough-runs { color: var(--muted); font-style: italic; }
table.side-by-side td:nth-child(3) { white-space: normal; min-width: 150px; }
)CSS";

class Html {
 public:
  std::ostringstream os;
  void cell(const std::string& text, const std::string& cls = "", const std::string& tag = "td") {
    os << "<" << tag << (cls.empty() ? "" : " class=\"" + cls + "\"") << ">" << xml_escape(text) << "</" << tag << ">";
  }
};

void html_table(Html& h, const TaskSection& s) {
  h.os << "<div class=\"table-wrap\"><table class=\"results\" id=\"table-" << html_id(s.task) << "\"><thead><tr>";
  for (std::size_t i = 0; i < kColumns.size(); ++i) h.cell(column_title(i, s), i >= 2 ? "num" : "", "th");
  h.os << "</tr></thead><tbody>";
  bool first_ref = true;
  for (const auto& r : s.rows) {
    std::string cls = r.reference ? "reference" : "method-row";
    if (r.reference && first_ref) cls += " first", first_ref = false;
    if (!r.ok) cls += " failed";
    else if (!r.failed.empty()) cls += " partial";
    if (r.pareto) cls += " pareto";
    h.os << "<tr class=\"" << cls << "\" data-method=\"" << xml_escape(r.method) << "\">";
    const auto cells = table_cells(r);
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i == 3 && !r.ok) {  // a failed row says why instead of showing empty numbers
        const std::string msg = r.failed.front()->message;
        h.os << "<td class=\"status-detail\" colspan=\"" << cells.size() - 3 << "\">" << xml_escape(msg.empty() ? r.status : msg)
             << "</td>";
        break;
      }
      h.cell(cells[i], i == 0 ? "method" : i == 1 ? "status" : "num");
    }
    h.os << "</tr>";
  }
  h.os << "</tbody></table></div>";
  if (!s.other_metrics.empty()) {
    h.os << "<p class=\"sub\">Other metrics (mean over seeds ± stderr)</p><div class=\"table-wrap\"><table class=\"other-metrics\" id=\"other-"
         << html_id(s.task) << "\"><thead><tr>";
    h.cell("method", "", "th");
    for (const auto& m : s.other_metrics) h.cell(m, "num", "th");
    h.os << "</tr></thead><tbody>";
    for (const auto& r : s.rows) {
      if (r.other_metrics.empty()) continue;
      h.os << "<tr data-method=\"" << xml_escape(r.method) << "\">";
      h.cell(r.label, "method");
      for (const auto& m : s.other_metrics) h.cell(other_metric_cell(r, m), "num");
      h.os << "</tr>";
    }
    h.os << "</tbody></table></div>";
  }
  std::vector<const Record*> failed;
  for (const auto& r : s.rows) failed.insert(failed.end(), r.failed.begin(), r.failed.end());
  if (!failed.empty()) {
    h.os << "<ul class=\"failed-runs\">";
    for (const auto* r : failed)
      h.os << "<li class=\"failed-run\"><strong>" << xml_escape(run_name(*r)) << "</strong>: " << xml_escape(r->status)
           << (r->message.empty() ? "" : " — <code>" + xml_escape(r->message) + "</code>") << "</li>";
    h.os << "</ul>";
  }
}

void figure(Html& h, const std::string& caption, const std::string& svg, const std::string& empty_note) {
  h.os << "<figure><figcaption>" << xml_escape(caption) << "</figcaption>";
  if (svg.empty()) h.os << "<p class=\"empty\">" << xml_escape(empty_note) << "</p>";
  else h.os << svg;
  h.os << "</figure>";
}

std::string fmt_mib(double v) { return format_fixed(v, v < 10 ? 2 : 1) + " MiB"; }
std::string fmt_rate_chart(double v) { return format_rate(v); }
std::string fmt_pct(double v) { return format_fixed(v, 1) + "%"; }

void html_charts(Html& h, const TaskSection& s, const Colors& colors) {
  const std::string id = html_id(s.task);
  h.os << "<div class=\"charts\">";

  std::vector<ScatterPoint> pts;
  for (const auto& r : s.rows) {
    if (!r.ok || !std::isfinite(r.value)) continue;
    pts.push_back({r.label, std::isfinite(r.trainable_params) ? r.trainable_params : 0.0, r.value, r.pareto,
                   color_of(colors, r),
                   r.label + ": " + s.metric + " " + metric_cell(r.value, r.stderr_) + ", " +
                       format_count(r.trainable_params) + " trainable parameters" + (r.pareto ? " (Pareto front)" : "")});
  }
  bool higher_is_better = true;
  for (const auto& r : s.rows)
    if (r.ok) {
      higher_is_better = r.higher_is_better;
      break;
    }
  figure(h, s.metric + " against trainable parameters (filled: Pareto front)",
         pts.empty() ? "" : svg_scatter_logx("pareto-" + id, "trainable parameters", s.metric, pts, higher_is_better),
         "no successful run to plot");

  std::vector<std::string> used_keys;
  for (const auto& k : memory_keys())
    for (const auto& r : s.rows)
      if (r.ok && r.memory.at(k) > 0 && std::find(used_keys.begin(), used_keys.end(), k) == used_keys.end()) used_keys.push_back(k);
  BarChart mem{"memory-" + id, "stacked", "MiB (analytic breakdown; black line: measured peak RSS)", {}, {}, {}, {}, {}, "peak RSS", fmt_mib};
  for (std::size_t i = 0; i < used_keys.size(); ++i) {
    mem.series.push_back(used_keys[i]);
    mem.series_colors.push_back(palette(i + 6));
  }
  BarChart tput{"throughput-" + id, "grouped", "tokens/s", {}, {"train", "eval"}, {"#4e79a7", "#f28e2b"}, {}, {}, "", fmt_rate_chart};
  std::vector<LineSeries> curves;
  for (const auto& r : s.rows) {
    if (!r.ok) continue;
    mem.categories.push_back(r.label);
    std::vector<double> v;
    for (const auto& k : used_keys) v.push_back(r.memory.at(k) / (1024.0 * 1024.0));
    mem.values.push_back(v);
    mem.markers.push_back(r.peak_rss_bytes / (1024.0 * 1024.0));
    if (std::isfinite(r.train_tokens_per_s) || std::isfinite(r.eval_tokens_per_s)) {
      tput.categories.push_back(r.label);
      tput.values.push_back({r.train_tokens_per_s, r.eval_tokens_per_s});
    }
    for (const auto* run : r.runs) {
      if (run->status != "ok" || run->json["train_info"]["loss_curve"].empty()) continue;
      LineSeries ls{r.label + (r.runs.size() > 1 ? " seed " + std::to_string(run->seed) : ""), color_of(colors, r), {}};
      for (const auto& p : run->json["train_info"]["loss_curve"])
        if (p["loss"].is_number()) ls.points.emplace_back(p["step"].get<double>(), p["loss"].get<double>());
      if (!ls.points.empty()) curves.push_back(std::move(ls));
    }
  }
  figure(h, "Memory: analytic breakdown (stacked) and measured peak RSS", mem.categories.empty() ? "" : svg_bars(mem),
         "no successful run to plot");
  figure(h, "Throughput: train and eval tokens/s", tput.categories.empty() ? "" : svg_bars(tput),
         "no throughput recorded");
  figure(h, "Training loss", curves.empty() ? "" : svg_lines("loss-" + id, "step", "loss", curves),
         "no loss curve recorded (no method here trains with a loss)");
  h.os << "</div>";
}

// ---- Findings and the soft prompt vs prefix table --------------------------------------------

const char* kFindingsNote =
    "Every sentence below is computed from the records of this report. Values are means over seeds ± stderr "
    "(test-set bootstrap and seed spread); two results cannot be told apart when their ±1 stderr bars overlap.";

const std::vector<std::string> kPromptColumns = {"task", "method", "where it acts", "seeds", "trainable params",
                                                 "quality ± stderr", "forgetting (nats/token)", "train time",
                                                 "peak memory", "adaptation"};

// The cells of one side-by-side row, in kPromptColumns order.
std::vector<std::string> prompt_cells(const PromptTuningRow& p) {
  const bool ok = p.ok > 0;
  std::string params = ok ? format_count(p.trainable_params) : "";
  if (ok && std::isfinite(p.stored_params) && p.stored_params != p.trainable_params)
    params += " (stores " + format_count(p.stored_params) + ")";
  return {p.task,
          p.label,
          p.acts_on,
          std::to_string(p.ok) + "/" + std::to_string(p.runs),
          params,
          ok ? p.metric + " " + metric_cell(p.value, p.stderr_) : p.status,
          ok ? metric_cell(p.forgetting, p.forgetting_stderr) : "",
          ok ? format_seconds(p.train_seconds) : "",
          ok ? format_bytes(p.peak_rss_bytes) : "",
          ok ? format_bytes(p.adaptation_bytes) : ""};
}

void markdown_findings(std::ostringstream& os, const std::vector<TaskSection>& sections) {
  const auto findings = derive_findings(sections);
  os << "\n## Findings\n\n" << kFindingsNote << "\n";
  for (const Question q : questions()) {
    os << "\n### " << question_title(q) << "\n\n";
    for (const auto& f : findings)
      if (f.question == q) os << "- " << f.text << "\n";
    if (q != Question::softprompt_vs_prefix) continue;
    const auto rows = prompt_tuning_rows(sections);
    if (rows.empty()) continue;
    os << "\nSide by side, from the same runs:\n\n|";
    for (const auto& c : kPromptColumns) os << " " << c << " |";
    os << "\n|";
    for (std::size_t i = 0; i < kPromptColumns.size(); ++i) os << (i < 3 ? " --- |" : " ---: |");
    os << "\n";
    for (const auto& p : rows) {
      os << "|";
      for (const auto& cell : prompt_cells(p)) os << " " << md_escape(cell) << " |";
      os << "\n";
    }
  }
}

void html_findings(Html& h, const std::vector<TaskSection>& sections) {
  const auto findings = derive_findings(sections);
  h.os << "<section id=\"findings\"><h2>Findings</h2><p class=\"sub\">" << xml_escape(kFindingsNote) << "</p>";
  for (const Question q : questions()) {
    h.os << "<h3>" << xml_escape(question_title(q)) << "</h3><ul class=\"findings\" id=\"findings-" << question_id(q) << "\">";
    for (const auto& f : findings)
      if (f.question == q)
        h.os << "<li class=\"finding " << verdict_id(f.verdict) << "\" data-verdict=\"" << verdict_id(f.verdict)
             << "\" data-task=\"" << xml_escape(f.task) << "\">" << xml_escape(f.text) << "</li>";
    h.os << "</ul>";
    if (q != Question::softprompt_vs_prefix) continue;
    const auto rows = prompt_tuning_rows(sections);
    if (rows.empty()) continue;
    h.os << "<p class=\"sub\">Side by side, from the same runs</p><div class=\"table-wrap\"><table class=\"side-by-side\" "
         << "id=\"softprompt-vs-prefix\"><thead><tr>";
    for (std::size_t i = 0; i < kPromptColumns.size(); ++i) h.cell(kPromptColumns[i], i >= 3 ? "num" : "", "th");
    h.os << "</tr></thead><tbody>";
    for (const auto& p : rows) {
      h.os << "<tr class=\"prompt-row" << (p.ok ? "" : " failed") << "\" data-method=\"" << xml_escape(p.method)
           << "\" data-task=\"" << xml_escape(p.task) << "\">";
      const auto cells = prompt_cells(p);
      for (std::size_t i = 0; i < cells.size(); ++i) h.cell(cells[i], i >= 3 ? "num" : "");
      h.os << "</tr>";
    }
    h.os << "</tbody></table></div>";
  }
  h.os << "</section>";
}

// ---- learning curves and tuning --------------------------------------------------------------

const char* kCurvesNote =
    "Quality against the number of labelled train examples (log x), from the runs of --train-sizes: each method that "
    "learns from train ran on a class-balanced subset of train, the subsets nested (the smaller set is part of the larger), "
    "the same for every method and seed; in-context learning drew its demonstrations from the same subset. Points are means "
    "over seeds with ±1 stderr bars (test-set bootstrap and seed spread). Dashed: the zero-shot level (icl with k = 0), "
    "the majority reference and the best in-context setting (best k and size, chosen on test, so the bar favours in-context "
    "learning). A diamond marks the first size where a method's mean beats that setting; the shaded band spans the sizes "
    "between which the crossover lies.";

std::string size_text(double n) { return std::isfinite(n) ? std::to_string(std::llround(n)) : "?"; }

std::string icl_setting_text(const IclSetting& s) {
  return "icl" + (s.k >= 0 ? " k=" + std::to_string(s.k) : std::string()) + " from " + size_text(s.n) + " examples";
}

// One sentence per crossover, from the curve's numbers.
std::string crossover_text(const LearningCurve& c, const Crossover& x) {
  const std::string best = icl_setting_text(c.best_icl) + ", " + c.metric + " " + metric_cell(c.best_icl.value, c.best_icl.err);
  if (!x.found)
    return x.method + " does not beat the best in-context setting (" + best + ") on " + c.task + " at any size up to " +
           size_text(x.largest_n) + " labelled examples.";
  std::string where = std::isfinite(x.n_before)
                          ? "between " + size_text(x.n_before) + " and " + size_text(x.n) + " labelled examples"
                          : "at or below " + size_text(x.n) + " labelled examples, the smallest size run";
  std::string t = x.method + " first beats the best in-context setting (" + best + ") on " + c.task + " " + where + ": by " +
                  (x.diff >= 0 ? "+" : "") + format_fixed(x.diff, 4) + " ± " + format_fixed(x.diff_err, 4) + " at " +
                  size_text(x.n);
  if (x.clear) t += ", beyond the error bars.";
  else if (std::isfinite(x.n_clear)) t += " within the error bars; beyond them from " + size_text(x.n_clear) + " examples.";
  else t += ", within the error bars at every size (the crossover is not established).";
  return t;
}

void markdown_curves(std::ostringstream& os, const std::vector<LearningCurve>& curves) {
  if (curves.empty()) return;
  os << "\n## Learning curves\n\n" << kCurvesNote << " The plots are in report.html.\n";
  for (const auto& c : curves) {
    std::set<std::string> subsets_seen;
    std::vector<std::pair<double, std::string>> sizes;
    for (const auto& m : c.methods)
      for (const auto& p : m.points)
        if (subsets_seen.insert(p.subset).second) sizes.emplace_back(p.n, p.subset);
    std::sort(sizes.begin(), sizes.end());
    os << "\n### " << c.task << "\n\n" << c.metric << " ± stderr by labelled train examples.\n\n| method |";
    for (const auto& sz : sizes) os << " " << (sz.second == "all" ? "all (" + size_text(sz.first) + ")" : sz.second) << " |";
    os << "\n| --- |";
    for (std::size_t i = 0; i < sizes.size(); ++i) os << " ---: |";
    os << "\n";
    for (const auto& m : c.methods) {
      os << "| " << m.method << " |";
      for (const auto& sz : sizes) {
        const auto it = std::find_if(m.points.begin(), m.points.end(), [&sz](const CurveStat& p) { return p.subset == sz.second; });
        os << " " << (it == m.points.end() ? "" : metric_cell(it->value, it->err)) << " |";
      }
      os << "\n";
    }
    os << "\n";
    if (std::isfinite(c.zero_shot.value)) os << "- zero-shot (icl k=0): " << metric_cell(c.zero_shot.value, c.zero_shot.err) << "\n";
    if (std::isfinite(c.majority)) os << "- majority reference: " << metric_cell(c.majority, c.majority_err) << "\n";
    if (std::isfinite(c.best_icl.value))
      os << "- best in-context setting: " << icl_setting_text(c.best_icl) << ", " << metric_cell(c.best_icl.value, c.best_icl.err) << "\n";
    else
      os << "- no in-context learning run with demonstrations: no crossover to mark\n";
    for (const auto& x : c.crossovers) os << "- " << crossover_text(c, x) << "\n";
  }
}

void html_curves(Html& h, const std::vector<LearningCurve>& curves, const Colors& colors) {
  if (curves.empty()) return;
  h.os << "<section id=\"learning-curves\"><h2>Learning curves</h2><p class=\"sub\">" << xml_escape(kCurvesNote) << "</p>";
  for (const auto& c : curves) {
    const std::string id = html_id(c.task);
    std::vector<CurveLine> lines;
    std::vector<CurveMark> marks;
    for (const auto& m : c.methods) {
      const std::string color = colors.count(m.method) ? colors.at(m.method) : palette(lines.size());
      CurveLine l{m.method, color, {}};
      for (const auto& p : m.points)
        l.points.push_back({p.n, p.value, p.err,
                            m.method + " at " + size_text(p.n) + " labelled examples (" + p.subset + "): " + c.metric + " " +
                                metric_cell(p.value, p.err) + ", " + std::to_string(p.seeds) + " seed" + (p.seeds == 1 ? "" : "s")});
      lines.push_back(std::move(l));
      for (const auto& x : c.crossovers)
        if (x.method == m.method && x.found) {
          const auto it = std::find_if(m.points.begin(), m.points.end(), [&x](const CurveStat& p) { return p.n == x.n; });
          marks.push_back({color, crossover_text(c, x), std::isfinite(x.n_before) ? x.n_before : 0.0, x.n,
                           it == m.points.end() ? NAN : it->value});
        }
    }
    std::vector<CurveLevel> levels;
    if (std::isfinite(c.zero_shot.value))
      levels.push_back({"zero-shot " + metric_cell(c.zero_shot.value, c.zero_shot.err), "#555555", c.zero_shot.value, c.zero_shot.err});
    if (std::isfinite(c.majority)) levels.push_back({"majority " + metric_cell(c.majority, c.majority_err), "#9a9a9a", c.majority, c.majority_err});
    if (std::isfinite(c.best_icl.value))
      levels.push_back({"best icl (" + (c.best_icl.k >= 0 ? "k=" + std::to_string(c.best_icl.k) + ", " : std::string()) + "n=" +
                            size_text(c.best_icl.n) + ")",
                        colors.count("icl") ? colors.at("icl") : "#333333", c.best_icl.value, c.best_icl.err});
    h.os << "<div class=\"curve\" id=\"curve-block-" << id << "\"><h3>" << xml_escape(c.task) << "</h3>";
    figure(h, c.metric + " against labelled train examples",
           svg_learning_curve("curve-" + id, "labelled train examples", c.metric, lines, levels, marks), "");
    h.os << "<ul class=\"crossovers\" id=\"crossovers-" << id << "\">";
    if (!std::isfinite(c.best_icl.value))
      h.os << "<li class=\"crossover-none\">No in-context learning run with demonstrations on " << xml_escape(c.task)
           << ": no crossover to mark.</li>";
    for (const auto& x : c.crossovers)
      h.os << "<li class=\"crossover\" data-method=\"" << xml_escape(x.method) << "\">" << xml_escape(crossover_text(c, x)) << "</li>";
    h.os << "</ul></div>";
  }
  h.os << "</section>";
}

// The tuned runs of a set: one row per (task, method, size) with the grid, each seed's choice
// and dev scores.
struct TuningRow {
  std::string task, method, subset, grid, metric;
  std::vector<std::string> seeds;  // "seed 0: lr=1e-3 (dev 0.71; lr=1e-4 0.62, ...)"
};

std::string option_text(const json& options) {
  std::string t;
  for (auto it = options.begin(); it != options.end(); ++it)
    t += (t.empty() ? "" : ",") + it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  return t;
}

std::vector<TuningRow> tuning_rows(const ResultSet& rs, std::vector<std::string>& untuned) {
  std::map<std::tuple<std::string, std::string, double>, TuningRow> rows;
  std::set<std::string> untuned_set;
  for (const auto& r : rs.records) {
    const json& ri = r.json["run_info"];
    if (!ri.contains("tuning")) {
      const json& ti = r.json["train_info"];
      if (ti["trainable_params"].is_number() && ti["trainable_params"].get<double>() > 0) untuned_set.insert(r.method + " on " + r.task);
      continue;
    }
    const json& t = ri["tuning"];
    auto& row = rows[{r.task, r.method, static_cast<double>(r.train_size)}];
    row.task = r.task;
    row.method = r.method;
    row.subset = r.train_subset;
    row.metric = t["metric"].get<std::string>();
    std::string grid;
    for (auto it = t["grid"].begin(); it != t["grid"].end(); ++it) {
      std::string vals;
      for (const auto& v : it.value()) vals += (vals.empty() ? "" : ",") + (v.is_string() ? v.get<std::string>() : v.dump());
      grid += (grid.empty() ? "" : "; ") + it.key() + " ∈ {" + vals + "}";
    }
    row.grid = grid;
    std::string trials;
    for (const auto& tr : t["trials"])
      trials += (trials.empty() ? "" : ", ") + option_text(tr["options"]) + " " +
                (tr["dev"].is_number() ? format_fixed(tr["dev"].get<double>(), 4) : tr["status"].get<std::string>());
    row.seeds.push_back("seed " + std::to_string(r.seed) + ": chose " + option_text(t["chosen"]) + " (dev " + trials + ")" +
                        (t.contains("note") ? " — " + t["note"].get<std::string>() : ""));
  }
  untuned.assign(untuned_set.begin(), untuned_set.end());
  std::vector<TuningRow> out;
  for (auto& e : rows) out.push_back(std::move(e.second));
  return out;
}

const char* kTuningNote =
    "Tuned runs (--tune or a suite's [tune] section) trained once per value of their grid on train, scored the task's "
    "primary metric on dev, and trained again with the best value to score test once; the tables show that last run.";

void markdown_tuning(std::ostringstream& os, const ResultSet& rs) {
  std::vector<std::string> untuned;
  const auto rows = tuning_rows(rs, untuned);
  os << "\n## Tuning\n\n";
  if (rows.empty()) {
    os << "No run was tuned: every run used the fixed options in its record (run_info.options).\n";
    return;
  }
  os << kTuningNote << "\n\n| task | method | train size | grid | choice and dev " << rows.front().metric << " per seed |\n"
     << "| --- | --- | ---: | --- | --- |\n";
  for (const auto& r : rows) {
    std::string seeds;
    for (const auto& s : r.seeds) seeds += (seeds.empty() ? "" : "; ") + s;
    os << "| " << r.task << " | " << r.method << " | " << (r.subset.empty() ? "" : r.subset) << " | " << md_escape(r.grid)
       << " | " << md_escape(seeds) << " |\n";
  }
  if (!untuned.empty()) {
    os << "\nNot tuned (fixed options) though they train parameters:";
    for (std::size_t i = 0; i < untuned.size(); ++i) os << (i ? ", " : " ") << untuned[i];
    os << ".\n";
  }
}

void html_tuning(Html& h, const ResultSet& rs) {
  std::vector<std::string> untuned;
  const auto rows = tuning_rows(rs, untuned);
  h.os << "<section id=\"tuning\"><h2>Tuning</h2>";
  if (rows.empty()) {
    h.os << "<p class=\"sub\">No run was tuned: every run used the fixed options in its record (run_info.options).</p></section>";
    return;
  }
  h.os << "<p class=\"sub\">" << xml_escape(kTuningNote) << "</p><div class=\"table-wrap\"><table class=\"tuning\" id=\"tuning-table\">"
       << "<thead><tr>";
  for (const char* c : {"task", "method", "train size", "grid", "choice and dev score per seed"}) h.cell(c, "", "th");
  h.os << "</tr></thead><tbody>";
  for (const auto& r : rows) {
    h.os << "<tr class=\"tuned\" data-method=\"" << xml_escape(r.method) << "\" data-task=\"" << xml_escape(r.task) << "\">";
    h.cell(r.task);
    h.cell(r.method, "method");
    h.cell(r.subset, "num");
    h.cell(r.grid);
    std::string seeds;
    for (const auto& s : r.seeds) seeds += (seeds.empty() ? "" : "; ") + s;
    h.cell(seeds, "tuning-trials");
    h.os << "</tr>";
  }
  h.os << "</tbody></table></div>";
  if (!untuned.empty()) {
    std::string list;
    for (const auto& u : untuned) list += (list.empty() ? "" : ", ") + u;
    h.os << "<p class=\"note\" id=\"untuned\">Not tuned (fixed options) though they train parameters: " << xml_escape(list) << ".</p>";
  }
  h.os << "</section>";
}

void html_machine(Html& h, const ResultSet& rs) {
  h.os << "<section id=\"machine\"><h2>Machine and build</h2><dl class=\"info\">";
  auto item = [&](const std::string& k, const std::string& v) {
    h.os << "<dt>" << xml_escape(k) << "</dt><dd>" << xml_escape(v) << "</dd>";
  };
  for (const auto& [m, n] : distinct(rs.records, pick_machine)) item("machine (" + std::to_string(n) + " runs)", machine_line(m));
  for (const auto& [b, n] : distinct(rs.records, pick_build))
    item("build (" + std::to_string(n) + " runs)", "tunebench " + js(b["tunebench"]) + ", git " + js(b["git_sha"]));
  for (const auto& [m, n] : distinct(rs.records, pick_model))
    item("model (" + std::to_string(n) + " runs)", js(m["path"]) + ", sha256 " + js(m["sha256"]));
  if (!rs.records.empty()) item("runs started", time_range(rs.records));
  std::string dirs;
  for (const auto& d : rs.dirs) dirs += (dirs.empty() ? "" : ", ") + d.string();
  item("results", dirs);
  h.os << "</dl></section>";
}

// Optional columns of a profile's table: a PyTorch (or other) reference matched by
// `tunebench profile --reference`, and the analytic vs measured memory of step cases.
struct HardwareExtras {
  bool reference = false, memory = false;
  std::string framework;
};
HardwareExtras hardware_extras(const json& profile) {
  HardwareExtras ex;
  for (const auto& c : profile["cases"]) {
    if (c.contains("reference") && c["reference"].is_object()) {
      ex.reference = true;
      if (ex.framework.empty()) ex.framework = c["reference"].value("framework", std::string("reference"));
    }
    ex.memory = ex.memory || (c.contains("memory") && c["memory"].is_object());
  }
  return ex;
}

void html_hardware(Html& h, const ResultSet& rs) {
  if (rs.profiles.empty()) return;
  h.os << "<section id=\"hardware\"><h2>Hardware profile</h2>";
  for (std::size_t k = 0; k < rs.profiles.size(); ++k) {
    const auto& p = rs.profiles[k].json;
    h.os << "<h3>" << xml_escape(rs.profiles[k].file.string()) << "</h3><p class=\"sub\">"
         << xml_escape(profile_machine_line(p["machine"])) << "<br>model: " << xml_escape(shape_text(p["model"])) << "</p>";
    const HardwareExtras ex = hardware_extras(p);
    h.os << "<table class=\"hardware\" id=\"hardware-cases-" << k << "\"><thead><tr>";
    for (const char* c : {"kind", "case", "method", "precision", "shape", "tokens/s", "GFLOP/s", "% of peak", "ms/iter"})
      h.cell(c, std::string(c).find_first_of("/%") != std::string::npos ? "num" : "", "th");
    if (ex.reference) {
      h.cell(ex.framework + " tokens/s", "num", "th");
      h.cell("speed-up", "num", "th");
    }
    if (ex.memory)
      for (const char* c : {"analytic MB", "peak RSS MB", "peak ÷ analytic"}) h.cell(c, "num", "th");
    h.os << "</tr></thead><tbody>";
    BarChart chart{"hardware-peak-" + std::to_string(k), "grouped", "% of the measured matmul peak (same precision)",
                   {}, {"model FLOP/s ÷ peak"}, {"#59a14f"}, {}, {}, "", fmt_pct};
    for (const auto& c : p["cases"]) {
      h.os << "<tr class=\"case-" << xml_escape(js(c["kind"])) << "\">";
      h.cell(js(c["kind"]));
      h.cell(js(c["name"]));
      h.cell(js(c["method"]));
      h.cell(js(c["precision"]));
      h.cell(shape_text(c["shape"]));
      h.cell(rate_text(c["tokens_per_s"]), "num");
      h.cell(number_text(c["gflop_per_s"], 2), "num");
      h.cell(fraction_pct(c["peak_fraction"]), "num");
      const json spi = c.value("seconds_per_iter", json());
      const double ms = spi.is_number() ? 1e3 * spi.get<double>() : NAN;
      h.cell(format_fixed(ms, ms >= 100 ? 0 : ms >= 10 ? 1 : 3), "num");
      if (ex.reference) {
        const bool has = c.contains("reference");
        h.cell(has ? rate_text(c["reference"]["tokens_per_s"]) : "", "num");
        h.cell(has ? number_text(c["speedup"], 2) + "×" : "", "num");
      }
      if (ex.memory) {
        const json mem = c.value("memory", json());
        const auto mb = [&](const char* key) {
          return mem.is_object() && mem[key].is_number() ? format_fixed(mem[key].get<double>() / 1e6, 1) : std::string();
        };
        h.cell(mb("analytic_bytes"), "num");
        h.cell(mb("peak_rss_bytes"), "num");
        h.cell(mem.is_object() ? number_text(mem["peak_over_analytic"], 3) : "", "num");
      }
      h.os << "</tr>";
      if (c["peak_fraction"].is_number()) {
        chart.categories.push_back(js(c["name"]));
        chart.values.push_back({100.0 * c["peak_fraction"].get<double>()});
      }
    }
    h.os << "</tbody></table><div class=\"charts\">";
    figure(h, "Fraction of the measured matmul peak, per case", chart.categories.empty() ? "" : svg_bars(chart),
           "no case has a peak fraction");
    h.os << "</div>";
  }
  h.os << "</section>";
}

struct Counts {
  int64_t runs = 0, ok = 0;
  std::set<std::string> tasks, methods;
};
Counts counts(const ResultSet& rs) {
  Counts c;
  for (const auto& r : rs.records) {
    ++c.runs;
    c.ok += r.status == "ok";
    c.tasks.insert(r.task);
    c.methods.insert(r.method);
  }
  return c;
}

}  // namespace

std::string html_id(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ? c : '-';
  return out;
}

std::string report_csv(const ResultSet& results) { return runner::summary_csv(results.records); }

std::string report_markdown(const ResultSet& rs) {
  const auto sections = build_sections(rs);
  const auto c = counts(rs);
  std::ostringstream os;
  os << "# tunebench report\n\n"
     << c.runs << " runs (" << c.ok << " ok, " << c.runs - c.ok << " not ok) of " << c.methods.size() << " methods on "
     << c.tasks.size() << " tasks. Charts (quality against trainable parameters, memory, throughput, loss curves) are "
     << "in report.html.\n";
  markdown_findings(os, sections);
  markdown_curves(os, learning_curves(rs));
  markdown_tuning(os, rs);
  for (const auto& s : sections) {
    os << "\n## " << s.task << "\n\n" << s.metric << " (" << direction(s) << "), mean over seeds ± stderr.\n\n|";
    for (std::size_t i = 0; i < kColumns.size(); ++i) os << " " << column_title(i, s) << " |";
    os << "\n|";
    for (std::size_t i = 0; i < kColumns.size(); ++i) os << (i < 2 ? " --- |" : " ---: |");
    os << "\n";
    for (const auto& r : s.rows) {
      auto cells = table_cells(r);
      if (r.reference) cells[0] = "*" + cells[0] + " (reference)*";
      if (r.pareto) cells[0] += " ★";
      if (!r.ok) cells[1] = "**" + cells[1] + "**";
      os << "|";
      for (const auto& cell : cells) os << " " << md_escape(cell) << " |";
      os << "\n";
    }
    std::vector<const MethodRow*> front;  // cheapest first
    for (const auto& r : s.rows)
      if (r.pareto) front.push_back(&r);
    std::stable_sort(front.begin(), front.end(), [](auto a, auto b) { return a->trainable_params < b->trainable_params; });
    if (!front.empty()) {
      os << "\n★ Pareto front of " << s.metric << " against trainable parameters:";
      for (std::size_t i = 0; i < front.size(); ++i) os << (i ? ", " : " ") << front[i]->label;
      os << ".\n";
    }
    if (!s.other_metrics.empty()) {
      os << "\nOther metrics, mean over seeds ± stderr:\n\n| method |";
      for (const auto& m : s.other_metrics) os << " " << md_escape(m) << " |";
      os << "\n| --- |";
      for (std::size_t i = 0; i < s.other_metrics.size(); ++i) os << " ---: |";
      os << "\n";
      for (const auto& r : s.rows) {
        if (r.other_metrics.empty()) continue;
        os << "| " << md_escape(r.label) << " |";
        for (const auto& m : s.other_metrics) os << " " << md_escape(other_metric_cell(r, m)) << " |";
        os << "\n";
      }
    }
    bool header = false;
    for (const auto& r : s.rows)
      for (const auto* f : r.failed) {
        if (!header) os << "\nFailed runs:\n\n", header = true;
        os << "- **" << run_name(*f) << "**: " << f->status << (f->message.empty() ? "" : " — `" + f->message + "`") << "\n";
      }
  }
  os << "\n## Machine and build\n\n";
  for (const auto& [m, n] : distinct(rs.records, pick_machine)) os << "- machine (" << n << " runs): " << machine_line(m) << "\n";
  for (const auto& [b, n] : distinct(rs.records, pick_build))
    os << "- build (" << n << " runs): tunebench " << js(b["tunebench"]) << ", git " << js(b["git_sha"]) << "\n";
  for (const auto& [m, n] : distinct(rs.records, pick_model))
    os << "- model (" << n << " runs): " << js(m["path"]) << ", sha256 " << js(m["sha256"]) << "\n";
  if (!rs.records.empty()) os << "- runs started: " << time_range(rs.records) << "\n";
  for (const auto& p : rs.profiles) {
    os << "\n## Hardware profile (" << p.file.string() << ")\n\n"
       << profile_machine_line(p.json["machine"]) << "; model " << shape_text(p.json["model"]) << ".\n\n"
       << "| kind | case | method | precision | shape | tokens/s | GFLOP/s | % of peak |";
    const HardwareExtras ex = hardware_extras(p.json);
    if (ex.reference) os << " " << ex.framework << " tokens/s | speed-up |";
    if (ex.memory) os << " analytic MB | peak RSS MB | peak ÷ analytic |";
    os << "\n| --- | --- | --- | --- | --- | ---: | ---: | ---: |" << (ex.reference ? " ---: | ---: |" : "")
       << (ex.memory ? " ---: | ---: | ---: |" : "") << "\n";
    for (const auto& cs : p.json["cases"]) {
      os << "| " << js(cs["kind"]) << " | " << md_escape(js(cs["name"])) << " | " << js(cs["method"]) << " | "
         << js(cs["precision"]) << " | " << md_escape(shape_text(cs["shape"])) << " | " << rate_text(cs["tokens_per_s"])
         << " | " << number_text(cs["gflop_per_s"], 2) << " | " << fraction_pct(cs["peak_fraction"]) << " |";
      if (ex.reference) {
        const bool has = cs.contains("reference");
        os << " " << (has ? rate_text(cs["reference"]["tokens_per_s"]) : "") << " | "
           << (has ? number_text(cs["speedup"], 2) + "×" : "") << " |";
      }
      if (ex.memory) {
        const json mem = cs.value("memory", json());
        const auto mb = [&](const char* key) {
          return mem.is_object() && mem[key].is_number() ? format_fixed(mem[key].get<double>() / 1e6, 1) : std::string();
        };
        os << " " << mb("analytic_bytes") << " | " << mb("peak_rss_bytes") << " | "
           << (mem.is_object() ? number_text(mem["peak_over_analytic"], 3) : "") << " |";
      }
      os << "\n";
    }
  }
  return os.str();
}

std::string report_html(const ResultSet& rs) {
  const auto sections = build_sections(rs);
  const auto colors = method_colors(sections);
  const auto c = counts(rs);
  Html h;
  h.os << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       << "<title>tunebench report</title><style>" << kCss << "</style></head><body>";
  h.os << "<header><h1>tunebench report</h1><p class=\"sub\" id=\"summary\">" << c.runs << " runs (" << c.ok << " ok, "
       << c.runs - c.ok << " not ok) of " << c.methods.size() << " methods on " << c.tasks.size()
       << " tasks. Metric values are means over seeds ± stderr; ★ marks the Pareto front of quality against "
       << "trainable parameters.</p><nav><a href=\"#findings\">findings</a>";
  for (const auto& s : sections) h.os << "<a href=\"#task-" << html_id(s.task) << "\">" << xml_escape(s.task) << "</a>";
  h.os << "<a href=\"#machine\">machine</a>";
  if (!rs.profiles.empty()) h.os << "<a href=\"#hardware\">hardware</a>";
  if (!learning_curves(rs).empty()) h.os << "<a href=\"#learning-curves\">learning curves</a>";
  h.os << "<a href=\"#tuning\">tuning</a>";
  h.os << "</nav></header>";
  html_findings(h, sections);
  const auto curves = learning_curves(rs);
  html_curves(h, curves, colors);
  html_tuning(h, rs);
  for (const auto& s : sections) {
    h.os << "<section class=\"task\" id=\"task-" << html_id(s.task) << "\"><h2>" << xml_escape(s.task) << "</h2>"
         << "<p class=\"sub\">" << xml_escape(s.metric + " (" + direction(s) + ")") << "</p>";
    html_table(h, s);
    html_charts(h, s, colors);
    h.os << "</section>";
  }
  html_machine(h, rs);
  html_hardware(h, rs);
  h.os << "</body></html>\n";
  return h.os.str();
}

}  // namespace tb::reports
