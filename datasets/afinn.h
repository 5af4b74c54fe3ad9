// The AFINN-165 lexicon scorer of npm `sentiment@5.0.2`, reimplemented exactly: it is the
// reference row for the sentiment tasks and the gold "human" judge of sentiment-steer, so
// its scores must equal the JavaScript package's (tests/data/afinn_reference.* checks this
// against the real package run under node).
//
// The package's algorithm (lib/index.js, lib/tokenize.js, languages/en/*):
//   tokens = lowercase(text), '\n' -> ' ', each of . , / # ! ? $ % ^ & * ; : { } = _ ` " ~ ( )
//            -> ' ', runs of 2+ whitespace -> ' ', trim, split on ' ';
//   score  = sum over tokens found in labels.json ∪ build/emoji.json of their weight, negated
//            when the previous token is a negator (languages/en/negators.json);
//   comparative = score / number of tokens (0 for no tokens).
// Lower-casing covers ASCII and Latin-1 letters; every lexicon key is within that range, so
// scores are exact (JS's full Unicode case mapping only differs on tokens no key can match).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tb::data {

class AfinnScorer {
 public:
  struct Result {
    int score = 0;
    double comparative = 0.0;
    std::size_t tokens = 0;
  };

  // Loads the lexicon from <package_dir> = .../node_modules/sentiment.
  explicit AfinnScorer(const std::filesystem::path& package_dir);

  // The scorer of the pinned package under npm_dir(); loaded once, thread-safe.
  static const AfinnScorer& standard();

  std::vector<std::string> tokenize(std::string_view text) const;
  Result analyze(std::string_view text) const;

  // The package's own classification rule (test/benchmark/validate.js): positive iff
  // comparative >= 0, i.e. score >= 0.
  int classify(std::string_view text) const { return analyze(text).score >= 0 ? 1 : 0; }

  std::size_t lexicon_size() const { return labels_.size(); }

 private:
  std::unordered_map<std::string, int> labels_;
  std::unordered_set<std::string> negators_;
};

}  // namespace tb::data
