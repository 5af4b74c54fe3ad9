// SVG chart rendering for the HTML report; see svg.h. Coordinates are computed here in
// pixels so the output needs no script; text sizes and colours come from the report's CSS
// classes where possible, so the charts follow the page's look.
#include "reports/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace tb::reports {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string tick_text(double v) {
  char buf[32];
  if (v == 0.0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e9) std::snprintf(buf, sizeof buf, "%gG", v / 1e9);
  else if (a >= 1e6) std::snprintf(buf, sizeof buf, "%gM", v / 1e6);
  else if (a >= 1e4) std::snprintf(buf, sizeof buf, "%gk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string default_format(double v) { return tick_text(v); }

// Width in pixels of a text at a font size, an upper estimate for the report's sans-serif
// fonts (0.62 em per character; wide capitals and digits stay under it), counting UTF-8
// code points, so labels can be fitted inside their chart.
double text_width(const std::string& s, double font_px = 11) {
  double n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return 0.62 * font_px * n;
}

// `s` cut to fit `width` pixels, ending in "…" when cut (the full text stays in a <title>).
std::string fit(const std::string& s, double width, double font_px = 11) {
  if (text_width(s, font_px) <= width) return s;
  std::string out;
  double w = text_width("…", font_px);
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 1;
    while (i + len < s.size() && (static_cast<unsigned char>(s[i + len]) & 0xC0) == 0x80) ++len;
    if (w + 0.62 * font_px > width) break;
    out += s.substr(i, len);
    w += 0.62 * font_px;
    i += len;
  }
  return out + "…";
}

// Linear map of [d0, d1] onto [p0, p1].
struct Scale {
  double d0, d1, p0, p1;
  double operator()(double v) const { return d1 == d0 ? (p0 + p1) / 2 : p0 + (v - d0) / (d1 - d0) * (p1 - p0); }
};

void open_svg(std::ostringstream& os, const std::string& id, const std::string& kind, double w, double h,
              const std::string& title) {
  os << "<svg id=\"" << xml_escape(id) << "\" class=\"chart chart-" << kind
     << "\" viewBox=\"0 0 " << num(w) << " " << num(h) << "\" width=\"" << num(w) << "\" height=\"" << num(h)
     << "\" role=\"img\" aria-label=\"" << xml_escape(title) << "\">";
}

void text(std::ostringstream& os, double x, double y, const std::string& s, const char* anchor = "start",
          const char* cls = "lbl", const std::string& extra = "") {
  os << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" text-anchor=\"" << anchor << "\" class=\"" << cls << "\""
     << extra << ">" << xml_escape(s) << "</text>";
}

void line(std::ostringstream& os, double x1, double y1, double x2, double y2, const char* cls) {
  os << "<line x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\"" << num(x2) << "\" y2=\"" << num(y2)
     << "\" class=\"" << cls << "\"/>";
}

// The width of a legend entry: swatch, gap, text and the space before the next one.
double legend_entry_width(const std::string& name) { return 22 + text_width(name); }

// How many rows a legend needs between x0 and x1.
int legend_rows(const std::vector<std::string>& names, double x0, double x1) {
  int rows = names.empty() ? 0 : 1;
  double x = x0;
  for (const auto& n : names) {
    if (x > x0 && x + legend_entry_width(n) > x1) ++rows, x = x0;
    x += legend_entry_width(n);
  }
  return rows;
}

// Legend swatches in rows 16 px apart from (x0, y), wrapped before x1.
void legend(std::ostringstream& os, double x0, double x1, double y, const std::vector<std::string>& names,
            const std::vector<std::string>& colors) {
  double x = x0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (x > x0 && x + legend_entry_width(names[i]) > x1) x = x0, y += 16;
    os << "<rect class=\"swatch\" x=\"" << num(x) << "\" y=\"" << num(y - 9) << "\" width=\"10\" height=\"10\" fill=\""
       << colors[i] << "\"/>";
    text(os, x + 14, y, names[i]);
    x += legend_entry_width(names[i]);
  }
}

std::pair<double, double> finite_range(const std::vector<double>& v) {
  double lo = INFINITY, hi = -INFINITY;
  for (double x : v)
    if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
  return {lo, hi};
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* palette(std::size_t i) {
  static const char* colors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                                 "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b"};
  return colors[i % (sizeof colors / sizeof colors[0])];
}

std::vector<double> nice_ticks(double lo, double hi, int n) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    const double pad = lo == 0.0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(n, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  // From the step at or below lo to the step at or above hi, so every value lies inside the
  // axis (a point above the last tick would be drawn outside the plot).
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double k = first; k <= last; k += 1) {
    const double t = k * step;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  if (ticks.size() < 2) ticks.push_back(ticks.empty() ? lo : ticks.back() + step);
  return ticks;
}

std::string svg_scatter_logx(const std::string& id, const std::string& x_label, const std::string& y_label,
                             const std::vector<ScatterPoint>& points, bool higher_is_better) {
  const double W = 600, H = 340, left = 64, right = 130, top = 28, bottom = 52;
  std::ostringstream os;
  open_svg(os, id, "pareto", W, H, y_label + " against " + x_label);

  std::vector<double> ys, xs;
  bool any_zero = false;
  for (const auto& p : points) {
    ys.push_back(p.y);
    if (p.x > 0) xs.push_back(std::log10(p.x));
    else any_zero = true;
  }
  auto [ylo, yhi] = finite_range(ys);
  const auto yt = nice_ticks(ylo, yhi, 5);
  auto [xlo, xhi] = finite_range(xs);
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  xlo = std::floor(xlo);
  xhi = std::max(std::ceil(xhi), xlo + 1);

  const double band = any_zero ? 46 : 0;  // the "0 trainable" band left of the axis break
  const double px0 = left, px1 = W - right, py0 = H - bottom, py1 = top;
  const Scale sy{yt.empty() ? 0 : yt.front(), yt.empty() ? 1 : yt.back(), py0, py1};
  const Scale sx{xlo, xhi, px0 + band + (any_zero ? 26 : 0), px1};
  auto xpix = [&](double x) { return x > 0 ? sx(std::log10(x)) : px0 + band / 2; };

  os << "<rect class=\"plot\" x=\"" << num(px0) << "\" y=\"" << num(py1) << "\" width=\"" << num(px1 - px0)
     << "\" height=\"" << num(py0 - py1) << "\"/>";
  for (double t : yt) {
    line(os, px0, sy(t), px1, sy(t), "grid");
    text(os, px0 - 6, sy(t) + 4, tick_text(t), "end", "tick");
  }
  for (double e = xlo; e <= xhi + 1e-9; e += 1) {
    line(os, sx(e), py0, sx(e), py1, "grid");
    text(os, sx(e), py0 + 16, tick_text(std::pow(10.0, e)), "middle", "tick");
  }
  if (any_zero) {
    text(os, px0 + band / 2, py0 + 16, "0", "middle", "tick");
    const double bx = px0 + band + 8;
    line(os, bx - 4, py0 + 5, bx + 1, py0 - 5, "axis");
    line(os, bx + 1, py0 + 5, bx + 6, py0 - 5, "axis");
  }
  text(os, (px0 + px1) / 2, H - 12, x_label + " (log scale)", "middle", "axis-label");
  text(os, 14, (py0 + py1) / 2, y_label, "middle", "axis-label",
       " transform=\"rotate(-90 14 " + num((py0 + py1) / 2) + ")\"");

  // The front as a staircase from the cheapest point: each step first widens the cost,
  // then improves the quality.
  std::vector<const ScatterPoint*> front;
  for (const auto& p : points)
    if (p.front && std::isfinite(p.y)) front.push_back(&p);
  std::sort(front.begin(), front.end(), [](auto a, auto b) { return a->x < b->x; });
  if (front.size() > 1) {
    os << "<polyline class=\"pareto-front\" points=\"";
    for (std::size_t i = 0; i < front.size(); ++i) {
      if (i) os << num(xpix(front[i]->x)) << "," << num(sy(front[i - 1]->y)) << " ";
      os << num(xpix(front[i]->x)) << "," << num(sy(front[i]->y)) << " ";
    }
    os << "\"/>";
  }
  for (const auto& p : points) {
    if (!std::isfinite(p.y)) continue;
    const double cx = xpix(p.x), cy = sy(p.y);
    os << "<circle class=\"point" << (p.front ? " on-front" : "") << "\" cx=\"" << num(cx) << "\" cy=\"" << num(cy)
       << "\" r=\"5\" stroke=\"" << p.color << "\" fill=\"" << (p.front ? p.color : "#fff") << "\"><title>"
       << xml_escape(p.tooltip) << "</title></circle>";
    // The label right of the point, or left of it when it would cross the chart's edge.
    const double room_right = W - 2 - (cx + 8), room_left = cx - 8 - 2, w = text_width(p.label);
    if (w <= room_right || room_right >= room_left) text(os, cx + 8, cy + 4, fit(p.label, room_right), "start", "point-label");
    else text(os, cx - 8, cy + 4, fit(p.label, room_left), "end", "point-label");
  }
  const double lx = px1 + 12;
  os << "<circle cx=\"" << num(lx + 5) << "\" cy=\"" << num(top + 6) << "\" r=\"5\" fill=\"#444\" stroke=\"#444\"/>";
  text(os, lx + 14, top + 10, "Pareto front");
  os << "<circle cx=\"" << num(lx + 5) << "\" cy=\"" << num(top + 24) << "\" r=\"5\" fill=\"#fff\" stroke=\"#444\"/>";
  text(os, lx + 14, top + 28, "dominated");
  text(os, lx, top + 50, higher_is_better ? "higher is better" : "lower is better", "start", "note");
  os << "</svg>";
  return os.str();
}

std::string svg_bars(const BarChart& c) {
  const bool stacked = c.kind == "stacked";
  const auto format = c.format ? c.format : default_format;
  const std::size_t ns = c.series.size();
  const double W = 600, bottom = 40;
  // The margins fit the labels: category names right-aligned before the bars (up to a third
  // of the width; a longer name is cut, whole in its tooltip), and the value and marker
  // labels written after the longest bar.
  double name_w = 0, value_w = 0;
  for (const auto& cat : c.categories) name_w = std::max(name_w, text_width(cat));
  for (std::size_t k = 0; k < c.categories.size(); ++k) {
    if (!stacked)
      for (double v : c.values[k])
        if (std::isfinite(v) && v > 0) value_w = std::max(value_w, text_width(format(v), 10));
    if (k < c.markers.size() && std::isfinite(c.markers[k])) value_w = std::max(value_w, text_width(format(c.markers[k]), 10));
  }
  const double left = std::clamp(name_w + 16, 132.0, W / 3), right = std::max(80.0, value_w + 12);
  std::vector<std::string> names = c.series, colors = c.series_colors;
  if (!c.marker_label.empty()) {
    names.push_back(c.marker_label);
    colors.push_back("#222");
  }
  const double top = 18 + 16 * std::max(legend_rows(names, 8, W - 8), 1);
  const double row = stacked ? 24 : 8 + 12 * static_cast<double>(ns);
  const double H = top + bottom + row * static_cast<double>(std::max<std::size_t>(c.categories.size(), 1));
  std::ostringstream os;
  open_svg(os, c.id, c.kind == "stacked" ? "stacked" : "bars", W, H, c.value_label);

  double vmax = 0;
  for (std::size_t k = 0; k < c.categories.size(); ++k) {
    double sum = 0;
    for (double v : c.values[k])
      if (std::isfinite(v)) sum = stacked ? sum + v : std::max(sum, v);
    vmax = std::max(vmax, sum);
    if (k < c.markers.size() && std::isfinite(c.markers[k])) vmax = std::max(vmax, c.markers[k]);
  }
  const auto ticks = nice_ticks(0, vmax > 0 ? vmax : 1, 5);
  const Scale sx{0, ticks.back(), left, W - right};
  const double py0 = top, py1 = H - bottom;
  for (double t : ticks) {
    line(os, sx(t), py0, sx(t), py1, "grid");
    text(os, sx(t), py1 + 16, tick_text(t), "middle", "tick");
  }
  text(os, (left + W - right) / 2, H - 6, c.value_label, "middle", "axis-label");
  legend(os, 8, W - 8, 16, names, colors);

  for (std::size_t k = 0; k < c.categories.size(); ++k) {
    const double y = py0 + row * static_cast<double>(k);
    const std::string shown = fit(c.categories[k], left - 12);
    os << "<text x=\"" << num(left - 8) << "\" y=\"" << num(y + row / 2 + 4) << "\" text-anchor=\"end\" class=\"lbl\">"
       << xml_escape(shown) << (shown != c.categories[k] ? "<title>" + xml_escape(c.categories[k]) + "</title>" : "") << "</text>";
    double acc = 0;
    for (std::size_t s = 0; s < ns; ++s) {
      const double v = c.values[k][s];
      if (!std::isfinite(v) || v <= 0) continue;
      const double x0 = stacked ? sx(acc) : left;
      const double x1 = stacked ? sx(acc + v) : sx(v);
      const double by = stacked ? y + 4 : y + 4 + 12 * static_cast<double>(s);
      const double bh = stacked ? row - 8 : 10;
      os << "<rect class=\"bar\" x=\"" << num(x0) << "\" y=\"" << num(by) << "\" width=\"" << num(std::max(x1 - x0, 0.5))
         << "\" height=\"" << num(bh) << "\" fill=\"" << c.series_colors[s] << "\"><title>"
         << xml_escape(c.categories[k] + " — " + c.series[s] + ": " + format(v)) << "</title></rect>";
      if (!stacked) text(os, x1 + 4, by + 9, format(v), "start", "value");
      acc += v;
    }
    if (k < c.markers.size() && std::isfinite(c.markers[k])) {
      const double mx = sx(c.markers[k]);
      os << "<line class=\"marker\" x1=\"" << num(mx) << "\" y1=\"" << num(y + 1) << "\" x2=\"" << num(mx) << "\" y2=\""
         << num(y + row - 1) << "\"><title>" << xml_escape(c.categories[k] + " — " + c.marker_label + ": " + format(c.markers[k]))
         << "</title></line>";
      text(os, mx + 4, y + row / 2 + 4, format(c.markers[k]), "start", "value");
    }
  }
  os << "</svg>";
  return os.str();
}

std::string svg_lines(const std::string& id, const std::string& x_label, const std::string& y_label,
                      const std::vector<LineSeries>& series) {
  // The legend right of the plot: as wide as its longest label (up to 45% of the chart,
  // longer labels are cut, whole in the series' tooltip) and as tall as its entries.
  double label_w = 0;
  for (const auto& s : series) label_w = std::max(label_w, text_width(s.label));
  const double W = 600, left = 60, top = 20, bottom = 48, right = std::clamp(label_w + 34, 130.0, 0.45 * W);
  const double H = std::max(320.0, top + 16 * static_cast<double>(series.size()) + 12);
  std::ostringstream os;
  open_svg(os, id, "loss", W, H, y_label + " against " + x_label);
  std::vector<double> xs, ys;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) xs.push_back(x), ys.push_back(y);
  auto [xlo, xhi] = finite_range(xs);
  auto [ylo, yhi] = finite_range(ys);
  const auto xt = nice_ticks(std::min(xlo, 0.0), xhi, 6), yt = nice_ticks(ylo, yhi, 5);
  const double px0 = left, px1 = W - right, py0 = H - bottom, py1 = top;
  const Scale sx{xt.empty() ? 0 : xt.front(), xt.empty() ? 1 : xt.back(), px0, px1};
  const Scale sy{yt.empty() ? 0 : yt.front(), yt.empty() ? 1 : yt.back(), py0, py1};
  os << "<rect class=\"plot\" x=\"" << num(px0) << "\" y=\"" << num(py1) << "\" width=\"" << num(px1 - px0)
     << "\" height=\"" << num(py0 - py1) << "\"/>";
  for (double t : yt) {
    line(os, px0, sy(t), px1, sy(t), "grid");
    text(os, px0 - 6, sy(t) + 4, tick_text(t), "end", "tick");
  }
  for (double t : xt) {
    line(os, sx(t), py0, sx(t), py1, "grid");
    text(os, sx(t), py0 + 16, tick_text(t), "middle", "tick");
  }
  text(os, (px0 + px1) / 2, H - 10, x_label, "middle", "axis-label");
  text(os, 14, (py0 + py1) / 2, y_label, "middle", "axis-label",
       " transform=\"rotate(-90 14 " + num((py0 + py1) / 2) + ")\"");
  double ly = top + 8;
  for (const auto& s : series) {
    os << "<polyline class=\"series\" stroke=\"" << s.color << "\" points=\"";
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) os << num(sx(x)) << "," << num(sy(y)) << " ";
    os << "\"><title>" << xml_escape(s.label) << "</title></polyline>";
    os << "<rect class=\"swatch\" x=\"" << num(px1 + 12) << "\" y=\"" << num(ly - 9) << "\" width=\"10\" height=\"10\" fill=\""
       << s.color << "\"/>";
    text(os, px1 + 26, ly, fit(s.label, W - 4 - (px1 + 26)));
    ly += 16;
  }
  os << "</svg>";
  return os.str();
}

std::string svg_learning_curve(const std::string& id, const std::string& x_label, const std::string& y_label,
                               const std::vector<CurveLine>& lines, const std::vector<CurveLevel>& levels,
                               const std::vector<CurveMark>& marks) {
  std::vector<std::string> names;
  for (const auto& l : lines) names.push_back(l.label);
  for (const auto& l : levels) names.push_back(l.label);
  double label_w = 0;
  for (const auto& n : names) label_w = std::max(label_w, text_width(n));
  const double W = 600, left = 60, top = 20, bottom = 48, right = std::clamp(label_w + 34, 130.0, 0.4 * W);
  const double H = std::max(320.0, top + 16 * static_cast<double>(names.size()) + 12);
  std::ostringstream os;
  open_svg(os, id, "curve", W, H, y_label + " against " + x_label);
  std::vector<double> xs, ys;
  for (const auto& l : lines)
    for (const auto& p : l.points)
      if (p.x > 0 && std::isfinite(p.y)) {
        xs.push_back(std::log10(p.x));
        ys.push_back(p.y - (std::isfinite(p.err) ? p.err : 0.0));
        ys.push_back(p.y + (std::isfinite(p.err) ? p.err : 0.0));
      }
  for (const auto& l : levels)
    if (std::isfinite(l.y)) ys.push_back(l.y);
  auto [xlo, xhi] = finite_range(xs);
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  xlo = std::floor(xlo);
  xhi = std::max(std::ceil(xhi), xlo + 1);
  auto [ylo, yhi] = finite_range(ys);
  const auto yt = nice_ticks(ylo, yhi, 5);
  const double px0 = left, px1 = W - right, py0 = H - bottom, py1 = top;
  const Scale sx{xlo, xhi, px0 + 10, px1 - 10};
  const Scale sy{yt.empty() ? 0 : yt.front(), yt.empty() ? 1 : yt.back(), py0, py1};
  auto xpix = [&](double x) { return sx(std::log10(x)); };
  os << "<rect class=\"plot\" x=\"" << num(px0) << "\" y=\"" << num(py1) << "\" width=\"" << num(px1 - px0)
     << "\" height=\"" << num(py0 - py1) << "\"/>";
  for (double t : yt) {
    line(os, px0, sy(t), px1, sy(t), "grid");
    text(os, px0 - 6, sy(t) + 4, tick_text(t), "end", "tick");
  }
  // Ticks at 1, 2, 5 × 10^k inside the range (log scale).
  for (double e = xlo; e <= xhi + 1e-9; e += 1)
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = m * std::pow(10.0, e);
      if (std::log10(v) > xhi + 1e-9) break;
      line(os, xpix(v), py0, xpix(v), py1, m == 1.0 ? "grid" : "grid minor");
      if (m == 1.0 || xhi - xlo <= 2) text(os, xpix(v), py0 + 16, tick_text(v), "middle", "tick");
    }
  text(os, (px0 + px1) / 2, H - 10, x_label + " (log scale)", "middle", "axis-label");
  text(os, 14, (py0 + py1) / 2, y_label, "middle", "axis-label",
       " transform=\"rotate(-90 14 " + num((py0 + py1) / 2) + ")\"");
  for (const auto& m : marks) {
    if (!(m.x_hi > 0) || !std::isfinite(m.y)) continue;
    const double x0 = m.x_lo > 0 ? xpix(m.x_lo) : px0, x1 = xpix(m.x_hi);
    os << "<g class=\"crossover\"><title>" << xml_escape(m.tooltip) << "</title><rect class=\"crossover-band\" x=\""
       << num(std::min(x0, x1)) << "\" y=\"" << num(py1) << "\" width=\"" << num(std::fabs(x1 - x0)) << "\" height=\""
       << num(py0 - py1) << "\" fill=\"" << m.color << "\" fill-opacity=\"0.10\"/>";
    const double cx = x1, cy = sy(m.y);
    os << "<path class=\"crossover-mark\" d=\"M" << num(cx) << " " << num(cy - 8) << " L" << num(cx + 7) << " " << num(cy)
       << " L" << num(cx) << " " << num(cy + 8) << " L" << num(cx - 7) << " " << num(cy) << " Z\" fill=\"none\" stroke=\""
       << m.color << "\" stroke-width=\"2\"/></g>";
  }
  for (const auto& l : levels) {
    if (!std::isfinite(l.y)) continue;
    os << "<line class=\"level\" x1=\"" << num(px0) << "\" y1=\"" << num(sy(l.y)) << "\" x2=\"" << num(px1) << "\" y2=\""
       << num(sy(l.y)) << "\" stroke=\"" << l.color << "\" stroke-dasharray=\"5 4\"><title>" << xml_escape(l.label)
       << "</title></line>";
  }
  for (const auto& l : lines) {
    os << "<g class=\"curve-line\"><polyline class=\"series\" stroke=\"" << l.color << "\" points=\"";
    for (const auto& p : l.points)
      if (p.x > 0 && std::isfinite(p.y)) os << num(xpix(p.x)) << "," << num(sy(p.y)) << " ";
    os << "\"><title>" << xml_escape(l.label) << "</title></polyline>";
    for (const auto& p : l.points) {
      if (!(p.x > 0) || !std::isfinite(p.y)) continue;
      const double cx = xpix(p.x), cy = sy(p.y);
      if (std::isfinite(p.err) && p.err > 0)
        os << "<line class=\"error-bar\" x1=\"" << num(cx) << "\" y1=\"" << num(sy(p.y - p.err)) << "\" x2=\"" << num(cx)
           << "\" y2=\"" << num(sy(p.y + p.err)) << "\" stroke=\"" << l.color << "\"/>";
      os << "<circle class=\"point\" cx=\"" << num(cx) << "\" cy=\"" << num(cy) << "\" r=\"3.5\" fill=\"" << l.color
         << "\" stroke=\"" << l.color << "\"><title>" << xml_escape(p.tooltip) << "</title></circle>";
    }
    os << "</g>";
  }
  double ly = top + 8;
  for (const auto& l : lines) {
    os << "<rect class=\"swatch\" x=\"" << num(px1 + 12) << "\" y=\"" << num(ly - 9) << "\" width=\"10\" height=\"10\" fill=\""
       << l.color << "\"/>";
    text(os, px1 + 26, ly, fit(l.label, W - 4 - (px1 + 26)));
    ly += 16;
  }
  for (const auto& l : levels) {
    os << "<line x1=\"" << num(px1 + 10) << "\" y1=\"" << num(ly - 4) << "\" x2=\"" << num(px1 + 22) << "\" y2=\"" << num(ly - 4)
       << "\" stroke=\"" << l.color << "\" stroke-dasharray=\"3 2\" stroke-width=\"2\"/>";
    text(os, px1 + 26, ly, fit(l.label, W - 4 - (px1 + 26)));
    ly += 16;
  }
  os << "</svg>";
  return os.str();
}

}  // namespace tb::reports
