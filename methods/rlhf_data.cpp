// Preference pairs: sampling from the base policy, ordering by the gold judge, JSONL I/O.
#include "methods/rlhf_data.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness/base/errors.h"
#include "harness/core/generate.h"
#include "methods/lm_scoring.h"

namespace tb::methods::rlhf {

using nlohmann::json;

int32_t stop_token(const Model& model) { return model.config().eos_token_id; }

std::string continuation_text(const Tokenizer& tok, const std::vector<int32_t>& tokens, int32_t stop) {
  std::vector<int32_t> body = tokens;
  if (!body.empty() && stop >= 0 && body.back() == stop) body.pop_back();
  return tok.decode(body);
}

std::vector<PreferencePair> sample_pairs(Model& model, Hooks* hooks, const Tokenizer& tok,
                                         const tasks::Task& task, const std::vector<tasks::Example>& prompts,
                                         const std::string& split, const PairSampling& cfg, int64_t* generated) {
  if (cfg.candidates < 2)
    throw InputError("rlhf.candidates: need at least 2 continuations per prompt, got " + std::to_string(cfg.candidates));
  if (cfg.all_comparisons && !(cfg.min_margin > 0))
    throw InputError("rlhf.rm-margin: must be > 0, got " + std::to_string(cfg.min_margin));
  if (cfg.max_new_tokens < 1)
    throw InputError("rlhf.max-new: must be >= 1, got " + std::to_string(cfg.max_new_tokens));
  const auto K = static_cast<size_t>(cfg.candidates);
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> encoded, requests;
  for (const auto& ex : prompts) {
    texts.push_back(task.render(ex));
    encoded.push_back(encode_prompt(model, tok, texts.back()));
    for (size_t k = 0; k < K; ++k) requests.push_back(encoded.back());
  }
  GenerateOptions opt;
  opt.max_new_tokens = cfg.max_new_tokens;
  opt.temperature = 1.0f;
  opt.seed = cfg.seed;
  const int32_t stop = stop_token(model);
  if (stop >= 0) opt.stop_tokens = {stop};
  const auto gens = generate(model, requests, opt, hooks);

  std::vector<PreferencePair> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    size_t best = 0, worst = 0;
    std::vector<double> reward(K);
    std::vector<std::string> cont(K);
    for (size_t k = 0; k < K; ++k) {
      const auto& g = gens[i * K + k];
      if (generated) *generated += static_cast<int64_t>(g.tokens.size());
      cont[k] = continuation_text(tok, g.tokens, stop);
      reward[k] = task.gold_reward(texts[i], cont[k]);
      if (reward[k] > reward[best]) best = k;
      if (reward[k] < reward[worst]) worst = k;
    }
    if (reward[best] == reward[worst]) continue;  // a tie: the judge prefers neither
    PreferencePair p;
    p.id = prompts[i].id;
    p.split = split;
    p.prompt = texts[i];
    p.prompt_tokens = encoded[i];
    p.chosen = gens[i * K + best].tokens;
    p.rejected = gens[i * K + worst].tokens;
    p.chosen_text = cont[best];
    p.rejected_text = cont[worst];
    p.chosen_reward = reward[best];
    p.rejected_reward = reward[worst];
    out.push_back(p);
    if (!cfg.all_comparisons) continue;
    for (size_t a = 0; a < K; ++a)
      for (size_t b = 0; b < K; ++b) {
        if ((a == best && b == worst) || reward[a] - reward[b] < std::max(cfg.min_margin, 1e-9)) continue;
        PreferencePair q = p;
        q.best_worst = false;
        q.chosen = gens[i * K + a].tokens;
        q.rejected = gens[i * K + b].tokens;
        q.chosen_text = cont[a];
        q.rejected_text = cont[b];
        q.chosen_reward = reward[a];
        q.rejected_reward = reward[b];
        out.push_back(std::move(q));
      }
  }
  return out;
}

void save_pairs(const std::filesystem::path& file, const std::vector<PreferencePair>& pairs) {
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  const auto tmp = file.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error("cannot write " + tmp);
    for (const auto& p : pairs) {
      const json j = {{"id", p.id},
                      {"split", p.split},
                      {"prompt", p.prompt},
                      {"prompt_tokens", p.prompt_tokens},
                      {"chosen", {{"text", p.chosen_text}, {"tokens", p.chosen}, {"reward", p.chosen_reward}}},
                      {"rejected", {{"text", p.rejected_text}, {"tokens", p.rejected}, {"reward", p.rejected_reward}}},
                      {"best_worst", p.best_worst}};
      // Continuations may cut a UTF-8 character at a token boundary: replace, do not throw.
      f << j.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    }
    f.flush();
    if (!f) throw Error("write failed: " + tmp);
  }
  std::filesystem::rename(tmp, file);
}

std::vector<PreferencePair> load_pairs(const std::filesystem::path& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) throw InputError(file.string() + ": cannot open preference pairs");
  std::vector<PreferencePair> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.empty()) continue;
    const std::string where = file.string() + ":" + std::to_string(n);
    try {
      const json j = json::parse(line);
      PreferencePair p;
      p.id = j.at("id").get<std::string>();
      p.split = j.at("split").get<std::string>();
      p.prompt = j.at("prompt").get<std::string>();
      p.prompt_tokens = j.at("prompt_tokens").get<std::vector<int32_t>>();
      const auto& c = j.at("chosen");
      const auto& r = j.at("rejected");
      p.chosen_text = c.at("text").get<std::string>();
      p.chosen = c.at("tokens").get<std::vector<int32_t>>();
      p.chosen_reward = c.at("reward").get<double>();
      p.rejected_text = r.at("text").get<std::string>();
      p.rejected = r.at("tokens").get<std::vector<int32_t>>();
      p.rejected_reward = r.at("reward").get<double>();
      p.best_worst = j.value("best_worst", true);
      if (p.prompt_tokens.empty() || p.chosen.empty() || p.rejected.empty())
        throw FormatError(where + ": empty prompt or continuation tokens");
      if (p.split != "train" && p.split != "dev" && p.split != "test")
        throw FormatError(where + ": split '" + p.split + "' is not train, dev or test");
      out.push_back(std::move(p));
    } catch (const json::exception& e) {
      throw FormatError(where + ": " + e.what());
    }
  }
  return out;
}

std::string digest(const std::string& key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace tb::methods::rlhf
