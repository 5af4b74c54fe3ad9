// Preference data for RLHF, built the way the classic "steer a language model towards
// positive reviews" experiment does it: for each prompt, sample several
// continuations from the base policy (temperature 1, seeded), let the task's gold judge
// score them, and keep the best against the worst as one (chosen, rejected) pair; prompts
// whose candidates all score the same are dropped as ties.
//
// Pairs are saved as JSONL (one pair per line; the token ids are what a reload uses, the
// texts are for reading and may show U+FFFD where a continuation cut a UTF-8 character)
// under the run's cache directory, keyed by the model hash and every sampling option, so
// the reward model, PPO and DPO of later runs read the same pairs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/tokenizer.h"
#include "tasks/task.h"

namespace tb::methods::rlhf {

struct PreferencePair {
  std::string id;     // the prompt example's id
  std::string split;  // train | dev | test
  std::string prompt;
  std::vector<int32_t> prompt_tokens;  // BOS + encoded prompt
  std::vector<int32_t> chosen, rejected;  // continuation tokens (stop token included)
  std::string chosen_text, rejected_text;
  double chosen_reward = 0.0, rejected_reward = 0.0;  // the gold judge's scores
  bool best_worst = true;  // the prompt's best against its worst candidate (else another
                           // ranked comparison among its candidates)
};

struct PairSampling {
  int64_t candidates = 4;       // continuations sampled per prompt (>= 2)
  int64_t max_new_tokens = 16;
  uint64_t seed = 0;
  // Besides each prompt's best-vs-worst pair, every other pair of its candidates whose gold
  // scores differ by at least min_margin (> 0), better first.
  bool all_comparisons = false;
  double min_margin = 1.0;
};

// The stop token of generation: the config's EOS, or none (-1).
int32_t stop_token(const Model& model);

// Text of a continuation: its tokens decoded, a trailing stop token dropped.
std::string continuation_text(const Tokenizer& tok, const std::vector<int32_t>& tokens, int32_t stop);

// Samples pairs for `prompts` (one split) from model + hooks. `generated` (when non-null)
// accumulates the number of sampled tokens.
std::vector<PreferencePair> sample_pairs(Model& model, Hooks* hooks, const Tokenizer& tok,
                                         const tasks::Task& task, const std::vector<tasks::Example>& prompts,
                                         const std::string& split, const PairSampling& cfg,
                                         int64_t* generated = nullptr);

// Written atomically (temporary file + rename).
void save_pairs(const std::filesystem::path& file, const std::vector<PreferencePair>& pairs);
// FormatError naming file:line for a malformed line; InputError when the file is missing.
std::vector<PreferencePair> load_pairs(const std::filesystem::path& file);

// A stable 64-bit FNV-1a digest of `key` in hex, for cache file names.
std::string digest(const std::string& key);

}  // namespace tb::methods::rlhf
