// AFINN-165 scoring as in npm sentiment@5.0.2; see afinn.h for the algorithm.
#include "datasets/afinn.h"

#include <cstdint>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "datasets/paths.h"
#include "harness/base/errors.h"

namespace tb::data {
namespace {

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open (is npm sentiment@5.0.2 installed? run scripts/deps.sh)");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path.string() + ": " + e.what());
  }
}

// Decodes one UTF-8 code point at s[i] (input is assumed valid; invalid bytes decode as
// themselves, one byte long).
std::uint32_t decode_at(std::string_view s, std::size_t i, std::size_t* len) {
  unsigned char c = s[i];
  int n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
  if (i + n > s.size()) n = 1;
  std::uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *len = static_cast<std::size_t>(n);
  return cp;
}

// JavaScript's \s (ECMAScript WhiteSpace + LineTerminator).
bool js_space(std::uint32_t cp) {
  return cp == 0x09 || cp == 0x0A || cp == 0x0B || cp == 0x0C || cp == 0x0D || cp == 0x20 ||
         cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

bool punct(char c) {
  static const std::string_view set = ".,/#!?$%^&*;:{}=_`\"~()";
  return set.find(c) != std::string_view::npos;
}

}  // namespace

AfinnScorer::AfinnScorer(const std::filesystem::path& package_dir) {
  for (const char* file : {"languages/en/labels.json", "build/emoji.json"}) {
    const auto path = package_dir / file;
    nlohmann::json j = read_json(path);
    if (!j.is_object()) throw FormatError(path.string() + ": expected a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_number_integer())
        throw FormatError(path.string() + ": weight of '" + it.key() + "' is not an integer");
      labels_[it.key()] = it.value().get<int>();
    }
  }
  const auto neg_path = package_dir / "languages/en/negators.json";
  nlohmann::json neg = read_json(neg_path);
  if (!neg.is_object()) throw FormatError(neg_path.string() + ": expected a JSON object");
  for (auto it = neg.begin(); it != neg.end(); ++it)
    if (it.value().is_number() && it.value().get<double>() != 0) negators_.insert(it.key());
}

const AfinnScorer& AfinnScorer::standard() {
  static const AfinnScorer scorer(npm_dir() / "sentiment");
  return scorer;
}

std::vector<std::string> AfinnScorer::tokenize(std::string_view text) const {
  // Pass 1: lower-case, '\n' and punctuation -> ' ' (whitespace is still separate chars).
  std::string s;
  s.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len;
    std::uint32_t cp = decode_at(text, i, &len);
    if (len == 1) {
      char c = text[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c == '\n' || punct(c)) c = ' ';
      s += c;
    } else if (len == 2 && cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) {
      cp += 0x20;  // Latin-1 capitals
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s.append(text.substr(i, len));
    }
    i += len;
  }
  // Pass 2: runs of 2+ JS whitespace -> one ' ' (a single tab survives, as in JS); trim.
  struct Piece {
    std::string bytes;
    bool space;
  };
  std::vector<Piece> pieces;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len;
    std::uint32_t cp = decode_at(s, i, &len);
    pieces.push_back({s.substr(i, len), js_space(cp)});
    i += len;
  }
  std::string collapsed;
  for (std::size_t i = 0; i < pieces.size();) {
    if (pieces[i].space && i + 1 < pieces.size() && pieces[i + 1].space) {
      std::size_t j = i;
      while (j < pieces.size() && pieces[j].space) ++j;
      collapsed += ' ';
      i = j;
      continue;
    }
    collapsed += pieces[i].bytes;
    ++i;
  }
  // trim() strips JS whitespace at both ends.
  std::size_t b = 0, e = collapsed.size();
  while (b < e) {
    std::size_t len;
    if (!js_space(decode_at(collapsed, b, &len))) break;
    b += len;
  }
  while (e > b) {
    std::size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(collapsed[start]) & 0xC0) == 0x80) --start;
    std::size_t len;
    if (!js_space(decode_at(collapsed, start, &len))) break;
    e = start;
  }
  std::string_view trimmed(collapsed.data() + b, e - b);
  std::vector<std::string> tokens;
  std::size_t start = 0;
  while (true) {
    std::size_t sp = trimmed.find(' ', start);
    tokens.emplace_back(trimmed.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start));
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  return tokens;
}

AfinnScorer::Result AfinnScorer::analyze(std::string_view text) const {
  const auto tokens = tokenize(text);
  Result r;
  r.tokens = tokens.size();
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    auto it = labels_.find(tokens[i]);
    if (it == labels_.end()) continue;
    int s = it->second;
    if (i > 0 && negators_.count(tokens[i - 1])) s = -s;
    r.score += s;
  }
  r.comparative = r.tokens > 0 ? static_cast<double>(r.score) / static_cast<double>(r.tokens) : 0.0;
  return r;
}

}  // namespace tb::data
