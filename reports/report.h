// `tunebench report`: the method-comparison report of a set of results, as Markdown
// (report.md), one self-contained HTML page (report.html: inline CSS and SVG, no script,
// no external reference of any kind, so it opens offline and from a CI artefact store)
// and the stable-column summary.csv.
//
// First the Findings (findings.h): sentences computed from the records that answer how close
// LoRA comes to full finetuning, how soft prompt and prefix tuning differ (with their table
// side by side) and whether in-context learning or finetuning does better. With
// learning-curve records (curves.h), a Learning curves section: per task a chart of quality
// against labelled examples (svg.chart-curve#curve-<task>) and ul.crossovers#crossovers-<task>.
// Then section#tuning: the tuned runs (table.tuning#tuning-table), or that none was tuned.
// Then per task: a table with one row per method configuration (metric ± stderr, trainable
// parameters and %, adaptation size, peak memory, train time, train and eval tokens/s,
// forgetting), the reference rows set apart below, failed runs kept with their status and
// message; charts of quality against trainable parameters (log x, Pareto front marked),
// the memory breakdown as stacked bars, throughput bars and loss curves. Then the machine
// and build information of the records and, when a profile.json sits in a results
// directory, the hardware section.
//
// Element ids and classes the browser test relies on: section#findings with
// ul.findings#findings-<question> of li.finding, table.side-by-side#softprompt-vs-prefix,
// table.results#table-<task>,
// svg.chart-pareto#pareto-<task>, svg.chart-stacked#memory-<task>, svg.chart-bars#throughput-<task>,
// svg.chart-loss#loss-<task>, tr.failed, section#machine, section#hardware,
// table#hardware-cases-<k>, svg#hardware-peak-<k>.
#pragma once

#include <filesystem>
#include <string>

#include "reports/results.h"

namespace tb::reports {

std::string report_markdown(const ResultSet& results);
std::string report_html(const ResultSet& results);
std::string report_csv(const ResultSet& results);

// Ids are built from task names; anything outside [A-Za-z0-9_-] becomes '-'.
std::string html_id(const std::string& s);

}  // namespace tb::reports
