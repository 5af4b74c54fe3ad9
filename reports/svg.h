// Inline SVG charts for the HTML report: a scatter with a log x axis and a marked Pareto
// front, stacked bars, grouped bars and line charts. Each returns one self-contained
// <svg> element (no scripts, no external references) with an id and the classes the
// browser test looks for ("chart" plus "chart-<kind>"); every data mark carries a <title>
// so hovering shows its exact value.
#pragma once

#include <string>
#include <vector>

namespace tb::reports {

// Escapes &, <, >, " and ' for HTML/SVG text and attribute values.
std::string xml_escape(const std::string& s);

// A colour of the fixed categorical palette (index modulo its size).
const char* palette(std::size_t i);

// Scatter of quality against a cost on a log10 x axis. Points with x == 0 (methods that
// train nothing) sit in a separate "0" band left of the axis break, since log 0 is
// undefined. Points with `front` set are drawn filled and joined by the front's step line.
struct ScatterPoint {
  std::string label;
  double x = 0.0, y = 0.0;
  bool front = false;
  std::string color;
  std::string tooltip;
};
std::string svg_scatter_logx(const std::string& id, const std::string& x_label,
                             const std::string& y_label, const std::vector<ScatterPoint>& points,
                             bool higher_is_better);

// Horizontal bars, one per category; `values[c][s]` is series s of category c. Stacked:
// the series add up (memory breakdown), with an optional marker per category (`markers[c]`,
// NAN for none, e.g. the measured peak RSS). Grouped: one bar per series side by side.
struct BarChart {
  std::string id, kind;            // kind is "stacked" or "grouped"
  std::string value_label;         // axis caption, e.g. "MiB" or "tokens/s"
  std::vector<std::string> categories;
  std::vector<std::string> series;
  std::vector<std::string> series_colors;
  std::vector<std::vector<double>> values;  // NAN = absent
  std::vector<double> markers;
  std::string marker_label;
  std::string (*format)(double) = nullptr;  // value text in tooltips and labels
};
std::string svg_bars(const BarChart& chart);

// One polyline per series over a shared linear x/y frame.
struct LineSeries {
  std::string label, color;
  std::vector<std::pair<double, double>> points;
};
std::string svg_lines(const std::string& id, const std::string& x_label, const std::string& y_label,
                      const std::vector<LineSeries>& series);

// "Nice" axis ticks (1, 2, 5 × 10^k steps) covering [lo, hi], about `n` of them.
std::vector<double> nice_ticks(double lo, double hi, int n);

}  // namespace tb::reports
