// Cost-balanced shard assignment; see shard.h.
#include "harness/runner/shard.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <queue>
#include <utility>

namespace tb::runner {

namespace {

// A per-run cost cap: a matrix of a million runs still sums without overflow.
constexpr double kMaxRunCost = 1e12;

bool declares(const methods::MethodInfo& info, const std::string& name) {
  return std::any_of(info.options.begin(), info.options.end(), [&](const auto& o) { return o.name == name; });
}

// The integers of a comma-separated value ("0,4"); those that do not parse are left out.
std::vector<double> numbers(const std::string& text) {
  std::vector<double> out;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    auto end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    auto b = text.find_first_not_of(' ', begin);
    int64_t v = 0;
    if (b != std::string::npos && b < end) {
      const auto e = text.find_last_not_of(' ', end - 1) + 1;
      const auto [ptr, ec] = std::from_chars(text.data() + b, text.data() + e, v);
      if (ec == std::errc() && ptr == text.data() + e && v >= 0) out.push_back(static_cast<double>(v));
    }
    begin = end + 1;
  }
  return out;
}

double option_number(const std::map<std::string, std::string>& options, const std::string& name, double fallback) {
  const auto it = options.find(name);
  if (it == options.end()) return fallback;
  const auto v = numbers(it->second);
  return v.size() == 1 && v[0] > 0 ? v[0] : fallback;
}

}  // namespace

int64_t estimate_run_cost(const methods::MethodInfo& info, const std::map<std::string, std::string>& options,
                          const CostInputs& n) {
  const double train = static_cast<double>(n.train), dev = static_cast<double>(n.dev),
               test = static_cast<double>(n.test), docs = static_cast<double>(n.documents);
  const double len = option_number(options, "max-length", 128);
  double cost = 0;
  if (info.options.empty()) {
    cost = train + dev + test;
  } else if (declares(info, "epochs")) {
    const double epochs = option_number(options, "epochs", 1);
    cost = 3 * epochs * train * len + (epochs * dev + test) * len;
  } else if (declares(info, "k")) {
    const auto it = options.find("k");
    auto ks = it == options.end() ? std::vector<double>{} : numbers(it->second);
    if (ks.empty()) ks = {0};
    for (const double k : ks) cost += (dev + test) * (1 + k) * len;
    cost += docs * len;
  } else {
    cost = (train + dev + test) * len;
  }
  if (!(cost >= 1)) return 1;
  return static_cast<int64_t>(std::min(std::round(cost), kMaxRunCost));
}

std::vector<int64_t> assign_shards(const std::vector<int64_t>& costs, int64_t shard_count) {
  std::vector<int64_t> shard(costs.size(), 0);
  if (shard_count <= 1) return shard;
  std::vector<int64_t> order(costs.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return costs[a] > costs[b]; });
  // Min-heap of (load, shard): the least loaded shard, the lower index on ties. Shards that
  // have no run yet are taken in order without entering the heap, so a huge shard count
  // costs nothing.
  using Load = std::pair<int64_t, int64_t>;
  std::priority_queue<Load, std::vector<Load>, std::greater<Load>> heap;
  int64_t next_empty = 0;
  for (const int64_t run : order) {
    const int64_t cost = std::max<int64_t>(costs[run], 1);  // a free run still counts, so loads order shards
    int64_t s = 0;
    if (next_empty < shard_count) {
      s = next_empty++;
      heap.push({cost, s});
    } else {
      auto top = heap.top();
      heap.pop();
      s = top.second;
      top.first += cost;
      heap.push(top);
    }
    shard[run] = s;
  }
  return shard;
}

}  // namespace tb::runner
