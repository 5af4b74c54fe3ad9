// Language-model queries shared by icl, prompt and index; see lm_scoring.h.
#include "methods/lm_scoring.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/base/errors.h"
#include "harness/core/generate.h"

namespace tb::methods {
namespace {

// Stands in for the example text while rendering, to find where the text sits in a prompt.
constexpr std::string_view kTextMark = "\x1e\x1dtunebench-text\x1d\x1e";

bool is_choice_task(const tasks::Task& task) {
  return task.output_type() == tasks::OutputType::multiple_choice ||
         task.output_type() == tasks::OutputType::retrieval;
}

// Indices 0..n-1 ordered by decreasing length, so a batch pads little.
std::vector<size_t> by_length_desc(const std::vector<int64_t>& len) {
  std::vector<size_t> order(len.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len[a] > len[b]; });
  return order;
}

void log_softmax(std::vector<double>& out, const float* row, int64_t V) {
  out.resize(static_cast<size_t>(V));
  const float mx = *std::max_element(row, row + V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
  const double lse = static_cast<double>(mx) + std::log(sum);
  for (int64_t v = 0; v < V; ++v) out[static_cast<size_t>(v)] = static_cast<double>(row[v]) - lse;
}

}  // namespace

AnswerSet task_answers(const tasks::Task& task) {
  AnswerSet a;
  if (is_choice_task(task)) {
    a.name = "choices";
  } else {
    a.name = "verbalisers";
    a.verbalisers = task.verbalisers().empty() ? task.label_names() : task.verbalisers();
  }
  return a;
}

std::vector<std::string> answer_texts(const tasks::Example& ex, const AnswerSet& answers) {
  std::vector<std::string> out;
  if (!answers.verbalisers.empty()) {
    for (const auto& v : answers.verbalisers) out.push_back(" " + v);
    return out;
  }
  if (ex.choices.empty()) throw InputError("example " + ex.id + " has no choices to score");
  for (size_t c = 0; c < ex.choices.size(); ++c)
    out.push_back(answers.letters ? std::string(" ") + static_cast<char>('A' + c) : " " + ex.choices[c]);
  return out;
}

std::string gold_answer_text(const tasks::Example& ex, const AnswerSet& answers) {
  const auto all = answer_texts(ex, answers);
  if (ex.label < 0 || static_cast<size_t>(ex.label) >= all.size())
    throw InputError("example " + ex.id + " has no gold label to demonstrate (label " +
                     std::to_string(ex.label) + ")");
  return all[static_cast<size_t>(ex.label)];
}

std::vector<int32_t> encode_prompt(const Model& model, const Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids;
  if (model.config().bos_token_id >= 0) ids.push_back(model.config().bos_token_id);
  const auto body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

void drop_prompt_front(const Model& model, std::vector<int32_t>& ids, int64_t n) {
  const int64_t head = model.config().bos_token_id >= 0 && !ids.empty() ? 1 : 0;
  n = std::clamp<int64_t>(n, 0, static_cast<int64_t>(ids.size()) - head);
  ids.erase(ids.begin() + head, ids.begin() + head + n);
}

std::vector<int32_t> encode_prompt_capped(const Model& model, const Tokenizer& tok, std::string_view text,
                                          int64_t max_len) {
  auto ids = encode_prompt(model, tok, text);
  if (ids.empty()) ids.push_back(tok.eos_id().value_or(0));  // no BOS and an empty text
  if (static_cast<int64_t>(ids.size()) > max_len) drop_prompt_front(model, ids, static_cast<int64_t>(ids.size()) - max_len);
  return ids;
}

PromptParts split_prompt(const tasks::Task& task, const tasks::Example& ex, std::string_view tmpl) {
  tasks::Example marked = ex;
  marked.text = std::string(kTextMark);
  const std::string r = task.render(marked, tmpl);
  const size_t at = r.find(kTextMark);
  PromptParts p;
  if (at == std::string::npos || r.find(kTextMark, at + 1) != std::string::npos) {
    p.prefix = task.render(ex, tmpl);
    return p;
  }
  p.prefix = r.substr(0, at);
  p.text = ex.text;
  p.suffix = r.substr(at + kTextMark.size());
  return p;
}

Assembled assemble_prompt(const Model& model, const Tokenizer& tok, const std::vector<std::string>& blocks,
                          const PromptParts& query, std::string_view sep, int64_t reserve) {
  const int64_t room = model.config().max_positions - reserve;
  if (room < 2)
    throw InputError("answers of " + std::to_string(reserve) + " tokens leave no room in the context window of " +
                     std::to_string(model.config().max_positions));
  const std::string q = query.whole();
  const int64_t n = static_cast<int64_t>(blocks.size());
  // Estimate with blocks encoded one by one, then confirm on the joined text (BPE merges
  // across a boundary can change the count by a token or two).
  std::vector<int64_t> block_len(static_cast<size_t>(n));
  int64_t total = static_cast<int64_t>(encode_prompt(model, tok, q).size());
  for (int64_t i = 0; i < n; ++i) {
    block_len[static_cast<size_t>(i)] = static_cast<int64_t>(tok.encode(blocks[static_cast<size_t>(i)] + std::string(sep)).size());
    total += block_len[static_cast<size_t>(i)];
  }
  int64_t first = 0;
  while (first < n && total > room) total -= block_len[static_cast<size_t>(first++)];
  auto joined = [&](int64_t from) {
    std::string text;
    for (int64_t i = from; i < n; ++i) text += blocks[static_cast<size_t>(i)] + std::string(sep);
    return encode_prompt(model, tok, text + q);
  };
  auto fits = [&](const std::vector<int32_t>& t) { return static_cast<int64_t>(t.size()) <= room; };
  Assembled a;
  a.tokens = joined(first);
  while (!fits(a.tokens) && first < n) a.tokens = joined(++first);
  while (first > 0 && fits(a.tokens)) {
    auto more = joined(first - 1);
    if (!fits(more)) break;
    a.tokens = std::move(more);
    --first;
  }
  a.blocks_kept = n - first;
  a.blocks_dropped = first;
  if (static_cast<int64_t>(a.tokens.size()) <= room) return a;

  a.text_truncated = true;
  auto head = encode_prompt(model, tok, query.prefix);
  const auto tail = tok.encode(query.suffix);
  const auto body = tok.encode(query.text);
  const int64_t avail = room - static_cast<int64_t>(head.size() + tail.size());
  if (avail > 0) {
    head.insert(head.end(), body.end() - std::min<int64_t>(avail, static_cast<int64_t>(body.size())), body.end());
    head.insert(head.end(), tail.begin(), tail.end());
    a.tokens = std::move(head);
  } else {
    a.tokens.erase(a.tokens.begin(), a.tokens.end() - room);
  }
  return a;
}

Assembled PromptSet::add(const Model& model, const Tokenizer& tok, const tasks::Task& task, const tasks::Example& ex,
                         std::string_view tmpl, const AnswerSet& answers, const std::vector<std::string>& blocks) {
  std::vector<std::vector<int32_t>> cand;
  int64_t reserve = 0;
  for (const auto& a : answer_texts(ex, answers)) {
    cand.push_back(tok.encode(a));
    reserve = std::max<int64_t>(reserve, static_cast<int64_t>(cand.back().size()));
  }
  Assembled a = assemble_prompt(model, tok, blocks, split_prompt(task, ex, tmpl), "\n\n", reserve);
  truncated += a.blocks_dropped > 0 || a.text_truncated;
  blocks_dropped += a.blocks_dropped;
  blocks_kept += a.blocks_kept;
  texts_cut += a.text_truncated;
  contexts.push_back(a.tokens);
  candidates.push_back(std::move(cand));
  return a;
}

nlohmann::json PromptSet::counts() const {
  return {{"prompts", contexts.size()},
          {"truncated_prompts", truncated},
          {"dropped_blocks", blocks_dropped},
          {"left_truncated_texts", texts_cut},
          {"mean_blocks", contexts.empty() ? 0.0 : static_cast<double>(blocks_kept) / static_cast<double>(contexts.size())}};
}

void LmCost::add_forward(const Model& model, const std::vector<int64_t>& lengths, int64_t T) {
  const auto& cfg = model.config();
  for (int64_t len : lengths) tokens += len;
  const int64_t B = static_cast<int64_t>(lengths.size());
  kv_bytes = std::max(kv_bytes, cfg.n_layer * B * T * 2 * cfg.n_kv_head * cfg.head_dim * 4);
  activation_bytes = std::max(activation_bytes, model.activation_bytes());
  weight_bytes = model.params().value_bytes();
}

void LmCost::charge(Meter& meter, bool prepare) const {
  (prepare ? meter.phase("train").tokens : meter.phase("test_eval").tokens) += tokens;
  (prepare ? meter.phase("train").flops : meter.phase("test_eval").flops) += flops;
  auto raise = [&](const char* key, int64_t v) {
    auto& m = meter.memory[key];
    m = std::max(m, v);
  };
  raise("kv_cache", kv_bytes);
  raise("activations", activation_bytes);
  raise("weights", weight_bytes);
}

std::vector<std::vector<double>> score_candidates(Model& model, const std::vector<std::vector<int32_t>>& contexts,
                                                  const std::vector<std::vector<std::vector<int32_t>>>& candidates,
                                                  int64_t batch, LmCost& cost) {
  TB_CHECK(contexts.size() == candidates.size(), << contexts.size() << " contexts, " << candidates.size() << " candidate lists");
  TB_CHECK(batch > 0, << "batch " << batch);
  const FlopScope flops(model, cost.flops);
  const int64_t V = model.config().vocab_size;
  const int64_t maxT = model.config().max_positions;
  const size_t N = contexts.size();
  std::vector<std::vector<double>> out(N);
  std::vector<int64_t> len(N);
  for (size_t i = 0; i < N; ++i) {
    if (contexts[i].empty()) throw InputError("score: context " + std::to_string(i) + " is empty");
    len[i] = static_cast<int64_t>(contexts[i].size());
    int64_t longest = 0;
    for (const auto& c : candidates[i]) {
      if (c.empty()) throw InputError("score: an answer of context " + std::to_string(i) + " encodes to no tokens");
      longest = std::max<int64_t>(longest, static_cast<int64_t>(c.size()));
    }
    TB_CHECK(len[i] + longest <= maxT, << "context " << i << " of " << len[i] << " tokens + answer of " << longest
                                       << " exceeds the window of " << maxT << " (assemble_prompt must fit it)");
    out[i].assign(candidates[i].size(), 0.0);
  }

  // First answer token of every candidate: one forward per context.
  const auto order = by_length_desc(len);
  std::vector<float> logits;
  std::vector<double> lp;
  for (size_t s = 0; s < N; s += static_cast<size_t>(batch)) {
    const size_t e = std::min(N, s + static_cast<size_t>(batch));
    const int64_t B = static_cast<int64_t>(e - s);
    const int64_t T = len[order[s]];
    std::vector<int32_t> toks(static_cast<size_t>(B * T), 0);
    std::vector<int64_t> lens;
    for (size_t j = s; j < e; ++j) {
      const auto& c = contexts[order[j]];
      std::copy(c.begin(), c.end(), toks.begin() + static_cast<int64_t>(j - s) * T);
      lens.push_back(len[order[j]]);
    }
    model.forward(toks.data(), B, T);
    logits.resize(static_cast<size_t>(B * T * V));
    model.logits(logits.data());
    cost.add_forward(model, lens, T);
    for (size_t j = s; j < e; ++j) {
      const size_t i = order[j];
      log_softmax(lp, logits.data() + (static_cast<int64_t>(j - s) * T + len[i] - 1) * V, V);
      for (size_t c = 0; c < candidates[i].size(); ++c) out[i][c] = lp[static_cast<size_t>(candidates[i][c][0])];
    }
  }

  // The remaining tokens of multi-token candidates, through tb::score.
  std::vector<ScoreRequest> reqs;
  std::vector<std::pair<size_t, size_t>> owner;
  std::vector<int64_t> req_len;
  for (size_t i = 0; i < N; ++i)
    for (size_t c = 0; c < candidates[i].size(); ++c) {
      const auto& cand = candidates[i][c];
      if (cand.size() < 2) continue;
      ScoreRequest r;
      r.context = contexts[i];
      r.context.push_back(cand[0]);
      r.continuation.assign(cand.begin() + 1, cand.end());
      req_len.push_back(static_cast<int64_t>(r.context.size() + r.continuation.size()));
      reqs.push_back(std::move(r));
      owner.emplace_back(i, c);
    }
  if (reqs.empty()) return out;
  const auto rorder = by_length_desc(req_len);
  std::vector<ScoreRequest> sorted;
  sorted.reserve(reqs.size());
  for (size_t j : rorder) sorted.push_back(std::move(reqs[j]));
  int64_t truncated = 0;
  const auto scores = score(model, sorted, nullptr, batch, &truncated);
  cost.truncated += truncated;
  for (size_t s = 0; s < sorted.size(); s += static_cast<size_t>(batch)) {
    const size_t e = std::min(sorted.size(), s + static_cast<size_t>(batch));
    std::vector<int64_t> lens;
    for (size_t j = s; j < e; ++j) lens.push_back(req_len[rorder[j]]);
    cost.add_forward(model, lens, lens.front());
  }
  for (size_t j = 0; j < sorted.size(); ++j) {
    const auto [i, c] = owner[rorder[j]];
    out[i][c] += scores[j].sum;
  }
  return out;
}

int argmax(const std::vector<double>& v) {
  if (v.empty()) return -1;
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<double> log_normalise(const std::vector<double>& v) {
  if (v.empty()) return {};
  const double mx = *std::max_element(v.begin(), v.end());
  double sum = 0.0;
  for (double x : v) sum += std::exp(x - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] - lse;
  return out;
}

std::vector<float> embed_sequences(Model& model, const std::vector<std::vector<int32_t>>& seqs, Pool pool,
                                   int64_t batch, LmCost& cost, int layer) {
  TB_CHECK(batch > 0, << "batch " << batch);
  const FlopScope flops(model, cost.flops);
  const int64_t C = model.config().hidden;
  const int64_t maxT = model.config().max_positions;
  const size_t N = seqs.size();
  std::vector<int64_t> len(N);
  for (size_t i = 0; i < N; ++i) {
    if (seqs[i].empty()) throw InputError("embed: sequence " + std::to_string(i) + " is empty");
    TB_CHECK(static_cast<int64_t>(seqs[i].size()) <= maxT, << "sequence " << i << " of " << seqs[i].size()
                                                            << " tokens exceeds the window of " << maxT);
    len[i] = static_cast<int64_t>(seqs[i].size());
  }
  std::vector<float> out(N * static_cast<size_t>(C));
  std::vector<float> pooled;
  const auto order = by_length_desc(len);
  for (size_t s = 0; s < N; s += static_cast<size_t>(batch)) {
    const size_t e = std::min(N, s + static_cast<size_t>(batch));
    const int64_t B = static_cast<int64_t>(e - s);
    const int64_t T = len[order[s]];
    std::vector<int32_t> toks(static_cast<size_t>(B * T), 0);
    std::vector<int32_t> lengths;
    std::vector<int64_t> lens;
    for (size_t j = s; j < e; ++j) {
      const auto& q = seqs[order[j]];
      std::copy(q.begin(), q.end(), toks.begin() + static_cast<int64_t>(j - s) * T);
      lengths.push_back(static_cast<int32_t>(q.size()));
      lens.push_back(len[order[j]]);
    }
    model.forward(toks.data(), B, T);
    pooled.resize(static_cast<size_t>(B * C));
    model.pool(pooled.data(), layer < 0 ? static_cast<int>(model.config().n_layer) : layer, pool, lengths.data());
    cost.add_forward(model, lens, T);
    for (size_t j = s; j < e; ++j) {
      const float* src = pooled.data() + static_cast<int64_t>(j - s) * C;
      float* dst = out.data() + static_cast<int64_t>(order[j]) * C;
      double norm = 0.0;
      for (int64_t c = 0; c < C; ++c) norm += static_cast<double>(src[c]) * src[c];
      const float inv = norm > 0.0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
      for (int64_t c = 0; c < C; ++c) dst[c] = src[c] * inv;
    }
  }
  return out;
}

std::vector<float> embed_texts(Model& model, const Tokenizer& tok, const std::vector<std::string>& texts, Pool pool,
                               int64_t max_tokens, int64_t batch, LmCost& cost, int layer) {
  const int64_t cap = std::min(max_tokens, model.config().max_positions);
  TB_CHECK(cap > 0, << "max_tokens " << max_tokens);
  std::vector<std::vector<int32_t>> seqs;
  seqs.reserve(texts.size());
  for (const auto& t : texts) {
    auto ids = tok.encode(t);
    if (static_cast<int64_t>(ids.size()) > cap) ids.resize(static_cast<size_t>(cap));
    if (ids.empty()) {
      const int32_t stand_in = model.config().bos_token_id >= 0 ? model.config().bos_token_id
                                                                : std::max(model.config().eos_token_id, 0);
      ids.push_back(stand_in);
    }
    seqs.push_back(std::move(ids));
  }
  return embed_sequences(model, seqs, pool, batch, cost, layer);
}

Pool parse_pool(const std::string& s, const std::string& option) {
  if (s == "mean") return Pool::mean;
  if (s == "last") return Pool::last;
  throw InputError(option + ": expected mean or last, got '" + s + "'");
}

}  // namespace tb::methods
