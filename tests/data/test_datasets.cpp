// Tests of the data layer: builders reproduce the source counts and are deterministic,
// text/MIME decoding, loaders name file:line for every malformed-input case, and the AFINN
// scorer equals the real npm package (tests/data/afinn_reference.{js,json}).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "datasets/afinn.h"
#include "datasets/builders.h"
#include "harness/base/hash.h"
#include "datasets/loaders.h"
#include "datasets/mime.h"
#include "datasets/paths.h"
#include "datasets/text.h"
#include "harness/base/errors.h"

namespace {

using nlohmann::json;
const std::filesystem::path kFixtures = std::filesystem::path(TB_SOURCE_DIR) / "tests/data/fixtures";

std::vector<json> read_jsonl(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

// Message of the InputError `f` throws; fails the test if it throws nothing.
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const tb::InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected tb::InputError";
  return "";
}

TEST(DataHash, Sha256KnownVectors) {
  EXPECT_EQ(tb::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(tb::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(tb::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(DataHash, Fnv1aKnownVectors) {
  EXPECT_EQ(tb::fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(tb::fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(tb::fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(DataText, Decoders) {
  EXPECT_EQ(tb::data::decode_quoted_printable("caf=C3=A9 soft=\nbreak =3D"), "caf\xC3\xA9 softbreak =");
  EXPECT_EQ(tb::data::decode_base64("aGVsbG8gd29y\nbGQ="), "hello world");
  EXPECT_EQ(tb::data::decode_header_words("=?iso-8859-1?Q?Caf=E9?= =?utf-8?B?w6k=?= ok"), "Caf\xC3\xA9\xC3\xA9 ok");
  EXPECT_EQ(tb::data::to_utf8("\xE9t\xE9", "iso-8859-1"), "\xC3\xA9t\xC3\xA9");
  EXPECT_EQ(tb::data::to_utf8("\x93quoted\x94", ""), "\xE2\x80\x9Cquoted\xE2\x80\x9D");
  EXPECT_EQ(tb::data::strip_overstrike("_\bb_\bo_\bl_\bd"), "bold");
  EXPECT_EQ(tb::data::html_to_text("<html><head><title>x</title></head><body><p>Hi &amp; bye</p>"
                                   "<script>var a=1;</script><!-- c --><br>line&nbsp;2 &#65;</body>"),
            "Hi & bye\n\nline 2 A");  // </p> then <br>: one paragraph break
  EXPECT_FALSE(tb::data::find_invalid_utf8("caf\xC3\xA9"));
  EXPECT_EQ(tb::data::find_invalid_utf8("ab\xC3"), 2u);
  EXPECT_EQ(tb::data::find_invalid_utf8("\xED\xA0\x80"), 0u);  // surrogate
  EXPECT_EQ(tb::data::truncate_utf8("a\xC3\xA9", 2), "a");
}

TEST(DataMime, MultipartAlternativePrefersPlainAndDecodes) {
  const std::string mail =
      "From someone\nSubject: =?utf-8?Q?Hello_there?=\nContent-Type: multipart/mixed; boundary=\"OUT\"\n\n"
      "preamble\n--OUT\nContent-Type: multipart/alternative; boundary=IN\n\n"
      "--IN\nContent-Type: text/html\n\n<p>html version</p>\n"
      "--IN\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
      "plain caf=E9 ver=\nsion\n--IN--\n"
      "--OUT\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAAA\n"
      "--OUT\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGI+Ym9sZDwvYj4gdGV4dA==\n--OUT--\n";
  const auto m = tb::data::mail_to_text(mail);
  EXPECT_EQ(m.subject, "Hello there");
  EXPECT_EQ(m.body, "plain caf\xC3\xA9 version\n\nbold text");
}

TEST(DataLoaders, ReadsQuotedCsvAndNamesColumns) {
  auto t = tb::data::load_table(kFixtures / "good.csv", tb::data::FileFormat::csv,
                                {{"text", true}, {"label", true}, {"absent", false}});
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0].values[0], "quoted, with comma");
  EXPECT_EQ(t.rows[1].values[0], "say \"hi\"");
  EXPECT_EQ(t.rows[1].line, 3u);
  EXPECT_TRUE(t.rows[0].values[2].is_null());
}

// A 10 MB example on one line (CSV, TSV and JSONL) loads whole: no line-length limit cuts
// it and nothing grows beyond a few copies of it.
TEST(DataLoaders, ATenMegabyteLineLoads) {
  using F = tb::data::FileFormat;
  const auto dir = std::filesystem::temp_directory_path() / ("tb_bigline_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string big(10'000'000, 'a');
  const std::pair<const char*, F> files[] = {{"big.csv", F::csv}, {"big.tsv", F::tsv}, {"big.jsonl", F::jsonl}};
  for (const auto& [name, format] : files) {
    {
      std::ofstream f(dir / name);
      if (format == F::jsonl)
        f << "{\"text\": \"" << big << "\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"y\"}\n";
      else
        f << "text" << (format == F::csv ? ',' : '\t') << "label\n" << big << (format == F::csv ? ',' : '\t') << "x\nb"
          << (format == F::csv ? ',' : '\t') << "y\n";
    }
    const auto t = tb::data::load_table(dir / name, format, {{"text", true}, {"label", true}});
    ASSERT_EQ(t.rows.size(), 2u) << name;
    EXPECT_EQ(t.rows[0].values[0].get<std::string>().size(), big.size()) << name;
    EXPECT_EQ(t.rows[1].values[1], "y") << name;
  }
  std::filesystem::remove_all(dir);
}

struct Malformed {
  const char* file;
  tb::data::FileFormat format;
  const char* where;  // expected "<file>:<line>"
  const char* what;   // expected words of the message
};

TEST(DataLoaders, EveryMalformedInputNamesFileAndLine) {
  using F = tb::data::FileFormat;
  const Malformed cases[] = {
      {"bad_quote.csv", F::csv, "bad_quote.csv:3:", "unterminated quote"},
      {"short_row.csv", F::csv, "short_row.csv:3:", "missing column"},
      {"missing_column.csv", F::csv, "missing_column.csv:1:", "missing column 'text'"},
      {"bad_utf8.csv", F::csv, "bad_utf8.csv:3:", "invalid UTF-8"},
      {"bad_utf8.jsonl", F::jsonl, "bad_utf8.jsonl:2:", "invalid UTF-8"},
      {"bad_json.jsonl", F::jsonl, "bad_json.jsonl:3:", "malformed JSON"},
      {"missing_field.jsonl", F::jsonl, "missing_field.jsonl:2:", "missing column 'text'"},
  };
  for (const auto& c : cases) {
    std::string msg = input_error([&] {
      tb::data::load_table(kFixtures / c.file, c.format, {{"text", true}, {"label", true}});
    });
    EXPECT_NE(msg.find(c.where), std::string::npos) << c.file << ": " << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << c.file << ": " << msg;
  }
  std::string msg = input_error([] {
    tb::data::load_table(kFixtures / "nope.csv", tb::data::FileFormat::csv, {{"text", true}});
  });
  EXPECT_NE(msg.find("nope.csv"), std::string::npos) << msg;
}

// Builds every group twice into fresh directories: sizes equal the source counts, and the
// two builds are byte-identical.
TEST(DataBuild, SourceCountsAndDeterminism) {
  const auto root = std::filesystem::path(TB_BINARY_DIR) / "test-data-build";
  std::filesystem::remove_all(root);
  std::map<std::string, json> first;
  for (const char* run : {"a", "b"}) {
    for (const auto& b : tb::data::builders()) {
      json m = tb::data::build_group(b.group, root / run);
      for (const auto& [name, o] : m["outputs"].items()) {
        if (std::string(run) == "a") {
          first[name] = o;
        } else {
          EXPECT_EQ(o["sha256"], first[name]["sha256"]) << name;
          EXPECT_EQ(o["splits"], first[name]["splits"]) << name;
        }
      }
      for (const auto& f : m["sources"]["files"]) EXPECT_EQ(f["sha256"].get<std::string>().size(), 64u);
    }
  }
  const auto dir = root / "a";
  // Sentiment: 1,001 entries per file, the empty null-class one dropped; 500/500.
  for (const char* d : {"sentiment-amazon", "sentiment-imdb", "sentiment-yelp"}) {
    auto recs = read_jsonl(dir / (std::string(d) + ".jsonl"));
    EXPECT_EQ(recs.size(), 1000u) << d;
    int pos = 0;
    for (const auto& r : recs) pos += r["label"] == "positive";
    EXPECT_EQ(pos, 500) << d;
  }
  // Spam: 6,046 = 4,150 ham (250 hard) + 1,896 spam.
  std::map<std::string, int> spam_label, spam_slice;
  for (const auto& r : read_jsonl(dir / "spam.jsonl")) {
    ++spam_label[r["label"].get<std::string>()];
    ++spam_slice[r["slice"].get<std::string>()];
  }
  EXPECT_EQ(spam_label["ham"], 4150);
  EXPECT_EQ(spam_label["spam"], 1896);
  EXPECT_EQ(spam_slice["hard_ham"], 250);
  EXPECT_EQ(spam_slice["easy_ham"], 3900);
  // Intent: 206 sentences, the corpus's own 100/106 split.
  std::map<std::string, int> intent;
  for (const auto& r : read_jsonl(dir / "intent.jsonl")) ++intent[r["split"].get<std::string>()];
  EXPECT_EQ(intent["train"] + intent["dev"], 100);
  EXPECT_EQ(intent["test"], 106);
  // fortune-topics: ≥ 8 classes with ≥ 500 each, balanced test.
  std::map<std::string, int> per_class, test_per_class;
  for (const auto& r : read_jsonl(dir / "fortune-topics.jsonl")) {
    ++per_class[r["label"].get<std::string>()];
    if (r["split"] == "test") ++test_per_class[r["label"].get<std::string>()];
  }
  EXPECT_GE(per_class.size(), 8u);
  for (const auto& [c, n] : per_class) {
    EXPECT_GE(n, 500) << c;
    EXPECT_EQ(test_per_class[c], 100) << c;
  }
  // wordnet-define: 4 distinct choices, the answer at `label`, distractors from its lexfile.
  auto wn = read_jsonl(dir / "wordnet-define.jsonl");
  EXPECT_EQ(wn.size(), 1700u);
  std::map<int, int> answer_pos;
  for (const auto& r : wn) {
    auto ch = r["choices"].get<std::vector<std::string>>();
    ASSERT_EQ(ch.size(), 4u);
    EXPECT_EQ(std::set<std::string>(ch.begin(), ch.end()).size(), 4u);
    EXPECT_EQ(ch[r["label"].get<std::size_t>()], r["answer"]);
    ++answer_pos[r["label"].get<int>()];
  }
  for (int p = 0; p < 4; ++p) EXPECT_GT(answer_pos[p], 300) << "answer position " << p;
  // kjv-testament samples no verse of a held-out chapter.
  for (const auto& r : read_jsonl(dir / "kjv-testament.jsonl")) {
    const std::string id = r["id"];
    const std::string book = r["book"];
    const int chapter = std::stoi(id.substr(book.size(), id.find(':') - book.size()));
    EXPECT_FALSE(tb::data::kjv_chapter_heldout(book, chapter)) << id;
  }
  std::filesystem::remove_all(root);
}

TEST(DataAfinn, MatchesTheNpmPackage) {
  std::ifstream in(std::filesystem::path(TB_SOURCE_DIR) / "tests/data/afinn_reference.json");
  const json ref = json::parse(in);
  const auto& afinn = tb::data::AfinnScorer::standard();
  for (const auto& c : ref["cases"]) {
    const auto r = afinn.analyze(c["text"].get<std::string>());
    EXPECT_EQ(r.score, c["score"].get<int>()) << c["text"];
    EXPECT_EQ(r.tokens, c["tokens"].get<std::size_t>()) << c["text"];
    EXPECT_DOUBLE_EQ(r.comparative, c["comparative"].get<double>()) << c["text"];
  }
}

}  // namespace
