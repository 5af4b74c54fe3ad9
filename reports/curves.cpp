// Learning curves from the records; see curves.h.
#include "reports/curves.h"

#include <algorithm>
#include <map>
#include <set>

namespace tb::reports {
namespace {

using nlohmann::json;
using runner::Record;

bool better(double a, double b, bool higher) { return higher ? a > b : a < b; }

}  // namespace

std::vector<LearningCurve> learning_curves(const ResultSet& rs) {
  // task -> method -> subset -> ok runs
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<const Record*>>>> by;
  for (const auto& r : rs.records)
    if (!r.train_subset.empty() && r.status == "ok") by[r.task][r.method][r.train_subset].push_back(&r);
  std::vector<LearningCurve> out;
  for (const auto& task_entry : by) {
    LearningCurve c;
    c.task = task_entry.first;
    for (const auto& method_entry : task_entry.second) {
      CurveMethod cm;
      cm.method = method_entry.first;
      for (const auto& subset_entry : method_entry.second) {
        const auto& runs = subset_entry.second;
        if (c.metric.empty()) c.metric = runs.front()->primary_metric;
        CurveStat st;
        st.subset = subset_entry.first;
        std::vector<double> vals, ses, ns;
        for (const auto* r : runs) {
          const double v = r->metric_value(c.metric);
          if (!std::isfinite(v)) continue;
          vals.push_back(v);
          ses.push_back(r->metric_stderr(c.metric));
          ns.push_back(static_cast<double>(r->train_size));
          const auto& m = r->json["metrics"][c.metric];
          c.higher_is_better = m["higher_is_better"].get<bool>();
        }
        if (vals.empty()) continue;
        std::tie(st.value, st.err) = mean_and_stderr(vals, ses);
        st.n = mean_finite(ns);
        st.seeds = static_cast<int>(vals.size());
        cm.points.push_back(st);
        if (cm.method != "icl") continue;
        // Every demonstration count of the icl runs at this size.
        std::map<int, std::vector<double>> by_k;
        for (const auto* r : runs) {
          const json& d = r->json["train_info"]["details"];
          if (!d.is_object() || !d.contains("by_k") || !d["by_k"].is_object()) continue;
          for (auto it = d["by_k"].begin(); it != d["by_k"].end(); ++it)
            if (it.value().is_object() && it.value().contains(c.metric) && it.value()[c.metric].is_number())
              by_k[std::stoi(it.key())].push_back(it.value()[c.metric].get<double>());
        }
        for (const auto& k_entry : by_k) {
          IclSetting s;
          s.n = st.n;
          s.k = k_entry.first;
          std::tie(s.value, s.err) = mean_and_stderr(k_entry.second, ses);
          s.seeds = static_cast<int>(k_entry.second.size());
          if (s.k == 0) {
            // No demonstrations: the same at every size; the largest size's runs stand for it.
            if (!std::isfinite(c.zero_shot.n) || s.n > c.zero_shot.n) c.zero_shot = s;
          } else if (!std::isfinite(c.best_icl.value) || better(s.value, c.best_icl.value, c.higher_is_better)) {
            c.best_icl = s;
          }
        }
        if (by_k.empty() && (!std::isfinite(c.best_icl.value) || better(st.value, c.best_icl.value, c.higher_is_better))) {
          // Records without details.by_k: the run's own prediction stands for its k.
          c.best_icl = {st.n, -1, st.value, st.err, st.seeds};
        }
      }
      std::sort(cm.points.begin(), cm.points.end(), [](const CurveStat& a, const CurveStat& b) { return a.n < b.n; });
      if (!cm.points.empty()) c.methods.push_back(std::move(cm));
    }
    if (c.methods.empty()) continue;
    std::stable_sort(c.methods.begin(), c.methods.end(), [&rs](const CurveMethod& a, const CurveMethod& b) {
      return method_rank(rs.method_order, a.method) < method_rank(rs.method_order, b.method);
    });
    std::vector<double> mv, ms;
    for (const auto& r : rs.records)
      if (r.task == c.task && r.method == "majority" && r.status == "ok" && std::isfinite(r.metric_value(c.metric))) {
        mv.push_back(r.metric_value(c.metric));
        ms.push_back(r.metric_stderr(c.metric));
      }
    std::tie(c.majority, c.majority_err) = mean_and_stderr(mv, ms);
    if (std::isfinite(c.best_icl.value))
      for (const auto& m : c.methods) {
        if (m.method == "icl") continue;
        Crossover x;
        x.method = m.method;
        x.largest_n = m.points.back().n;
        for (std::size_t i = 0; i < m.points.size(); ++i) {
          const auto& p = m.points[i];
          const double d = p.value - c.best_icl.value;
          const double e = std::sqrt(p.err * p.err + c.best_icl.err * c.best_icl.err);
          const bool above = better(p.value, c.best_icl.value, c.higher_is_better);
          const bool apart = std::fabs(d) > (std::isfinite(p.err) ? p.err : 0.0) + (std::isfinite(c.best_icl.err) ? c.best_icl.err : 0.0);
          if (above && !x.found) {
            x.found = true;
            x.n = p.n;
            x.n_before = i > 0 ? m.points[i - 1].n : NAN;
            x.diff = d;
            x.diff_err = e;
            x.clear = apart;
          }
          if (above && apart && !std::isfinite(x.n_clear)) x.n_clear = p.n;
        }
        c.crossovers.push_back(x);
      }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace tb::reports
