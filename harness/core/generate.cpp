// Sampling with a KV cache and batched continuation scoring.
#include "harness/core/generate.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "harness/base/errors.h"

namespace tb {

namespace {

// splitmix64: a small, fully specified generator, so sampled text is reproducible across
// standard libraries (std::uniform_real_distribution is not).
uint64_t next_u64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& s) { return static_cast<double>(next_u64(s) >> 11) * 0x1.0p-53; }

void log_softmax_row(std::vector<double>& out, const float* logits, int64_t V) {
  out.resize(static_cast<size_t>(V));
  double mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double s = 0.0;
  for (int64_t i = 0; i < V; ++i) s += std::exp(logits[i] - mx);
  const double lse = mx + std::log(s);
  for (int64_t i = 0; i < V; ++i) out[i] = logits[i] - lse;
}

}  // namespace

int32_t sample_token(const float* logits, int64_t V, const GenerateOptions& opt, uint64_t& rng) {
  if (opt.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  // Candidates in descending logit order (ties by id), cut by top-k.
  int64_t K = (opt.top_k > 0 && opt.top_k < V) ? opt.top_k : V;
  auto cmp = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + K, idx.end(), cmp);
  idx.resize(static_cast<size_t>(K));
  std::vector<double> p(idx.size());
  const double mx = logits[idx[0]] / opt.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < idx.size(); ++i) sum += p[i] = std::exp(logits[idx[i]] / opt.temperature - mx);
  for (auto& x : p) x /= sum;
  size_t keep = p.size();
  if (opt.top_p < 1.0f) {
    double c = 0.0;
    for (size_t i = 0; i < p.size(); ++i) {
      c += p[i];
      if (c >= opt.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  double u = uniform01(rng) * total;
  for (size_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u <= 0.0) return idx[i];
  }
  return idx[keep - 1];
}

std::vector<Generation> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                 const GenerateOptions& opt, Hooks* hooks) {
  const auto& cfg = model.config();
  const int64_t V = cfg.vocab_size;
  std::vector<Generation> out(prompts.size());
  std::map<size_t, std::vector<size_t>> by_len;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw InputError("generate: prompt " + std::to_string(i) + " is empty");
    by_len[prompts[i].size()].push_back(i);
  }
  const int64_t extra = (hooks ? hooks->num_virtual_tokens() + hooks->prefix_length() : 0);
  for (const auto& [len, members] : by_len) {
    const int64_t B = static_cast<int64_t>(members.size()), T = static_cast<int64_t>(len);
    const int64_t capacity = std::min<int64_t>(cfg.max_positions, extra + T + opt.max_new_tokens);
    if (extra + T >= cfg.max_positions)
      throw InputError("generate: prompt of " + std::to_string(T) + " tokens fills the context of " +
                       std::to_string(cfg.max_positions));
    KVCache cache(cfg, B, capacity);
    std::vector<int32_t> toks(B * T);
    for (int64_t b = 0; b < B; ++b) std::copy(prompts[members[b]].begin(), prompts[members[b]].end(), toks.begin() + b * T);
    std::vector<float> logits(B * V);
    model.forward_cached(toks.data(), B, T, cache, logits.data(), /*last_only=*/true, hooks);
    // One stream per sequence, seeded by the seed and the prompt's index, so a sequence's
    // sample does not depend on which others share its batch.
    std::vector<uint64_t> rng(B);
    for (int64_t b = 0; b < B; ++b) rng[b] = opt.seed * 0x100000001B3ull + members[b] + 1;
    std::vector<bool> done(B, false);
    std::vector<double> lp;
    std::vector<int32_t> next(B);
    for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
      for (int64_t b = 0; b < B; ++b) {
        if (done[b]) {
          next[b] = 0;
          continue;
        }
        const float* row = logits.data() + b * V;
        const int32_t t = sample_token(row, V, opt, rng[b]);
        log_softmax_row(lp, row, V);
        auto& g = out[members[b]];
        g.tokens.push_back(t);
        g.logprobs.push_back(static_cast<float>(lp[t]));
        next[b] = t;
        if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), t) != opt.stop_tokens.end()) {
          done[b] = true;
          g.stop_reason = "stop_token";
        }
      }
      if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
      if (step + 1 == opt.max_new_tokens) break;
      if (cache.len + 1 > cache.S) {
        for (int64_t b = 0; b < B; ++b)
          if (!done[b]) out[members[b]].stop_reason = "context";
        break;
      }
      model.forward_cached(next.data(), B, 1, cache, logits.data(), true, hooks);
    }
    for (int64_t b = 0; b < B; ++b)
      if (out[members[b]].stop_reason.empty()) out[members[b]].stop_reason = "max_new_tokens";
  }
  return out;
}

std::vector<Score> score(Model& model, const std::vector<ScoreRequest>& requests, Hooks* hooks,
                         int64_t batch_size, int64_t* truncated) {
  const auto& cfg = model.config();
  const int64_t V = cfg.vocab_size;
  const int64_t room = cfg.max_positions - (hooks ? hooks->num_virtual_tokens() + hooks->prefix_length() : 0);
  std::vector<Score> out(requests.size());
  if (truncated) *truncated = 0;
  std::vector<double> lp;
  for (size_t start = 0; start < requests.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(requests.size(), start + static_cast<size_t>(batch_size));
    const int64_t B = static_cast<int64_t>(end - start);
    // Each sequence = context + continuation, left-truncated to the window.
    std::vector<std::vector<int32_t>> seqs(B);
    std::vector<int64_t> cont_start(B);
    int64_t T = 1;
    for (int64_t b = 0; b < B; ++b) {
      const auto& r = requests[start + b];
      if (r.continuation.empty())
        throw InputError("score: request " + std::to_string(start + b) + " has an empty continuation");
      auto& s = seqs[b];
      s = r.context;
      s.insert(s.end(), r.continuation.begin(), r.continuation.end());
      int64_t cs = static_cast<int64_t>(r.context.size());
      if (static_cast<int64_t>(s.size()) > room) {
        const int64_t cut = static_cast<int64_t>(s.size()) - room;
        if (cut > cs) throw InputError("score: continuation of request " + std::to_string(start + b) + " is longer than the context window");
        s.erase(s.begin(), s.begin() + cut);
        cs -= cut;
        if (truncated) ++*truncated;
      }
      cont_start[b] = cs;
      T = std::max<int64_t>(T, static_cast<int64_t>(s.size()));
    }
    std::vector<int32_t> toks(B * T, 0);
    for (int64_t b = 0; b < B; ++b) std::copy(seqs[b].begin(), seqs[b].end(), toks.begin() + b * T);
    model.forward(toks.data(), B, T, hooks, false);
    const int64_t Tt = model.seq_len(), Pv = model.virtual_tokens();
    std::vector<float> logits(B * Tt * V);
    model.logits(logits.data());
    for (int64_t b = 0; b < B; ++b) {
      Score& sc = out[start + b];
      const int64_t n = static_cast<int64_t>(seqs[b].size());
      for (int64_t t = cont_start[b]; t < n; ++t) {
        if (t == 0 && Pv == 0) {
          // No position predicts the very first token of an empty-context request.
          sc.token_logprobs.push_back(0.0f);
          continue;
        }
        const float* row = logits.data() + (b * Tt + Pv + t - 1) * V;
        log_softmax_row(lp, row, V);
        const int32_t y = seqs[b][t];
        sc.token_logprobs.push_back(static_cast<float>(lp[y]));
        sc.sum += lp[y];
        if (std::max_element(row, row + V) - row != y) sc.greedy = false;
      }
    }
  }
  return out;
}

}  // namespace tb
