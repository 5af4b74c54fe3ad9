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

// A learning curve chart: quality against labelled examples on a log10 x axis. One line per
// method through its points, each with a vertical error bar (y ± err); horizontal reference
// levels (zero-shot, majority, the best in-context setting) drawn dashed across the plot; and
// crossover marks: a shaded band over [x_lo, x_hi] (the sizes between which a method first
// beats a level) with a diamond at (x_hi, y). Every mark carries a <title>; the legend sits
// right of the plot.
struct CurvePointXY {
  double x = 0.0, y = 0.0, err = 0.0;
  std::string tooltip;
};
struct CurveLine {
  std::string label, color;
  std::vector<CurvePointXY> points;
};
struct CurveLevel {
  std::string label, color;
  double y = 0.0, err = 0.0;
};
struct CurveMark {
  std::string color, tooltip;
  double x_lo = 0.0, x_hi = 0.0, y = 0.0;
};
std::string svg_learning_curve(const std::string& id, const std::string& x_label, const std::string& y_label,
                               const std::vector<CurveLine>& lines, const std::vector<CurveLevel>& levels,
                               const std::vector<CurveMark>& marks);

// "Nice" axis ticks (1, 2, 5 × 10^k steps) covering [lo, hi], about `n` of them.
std::vector<double> nice_ticks(double lo, double hi, int n);

}  // namespace tb::reports
