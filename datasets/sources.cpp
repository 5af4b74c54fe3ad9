// Readers of the installed text sources; see sources.h.
#include "datasets/sources.h"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <cstring>
#include <regex>
#include <set>
#include <sstream>

#include "harness/base/hash.h"
#include "datasets/paths.h"
#include "datasets/text.h"
#include "harness/base/errors.h"

namespace tb::data {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open for reading (is its package installed? see scripts/deps.sh)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < s.size()) {
    std::size_t e = s.find('\n', start);
    if (e == std::string::npos) e = s.size();
    std::string line = s.substr(start, e - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = e + 1;
  }
  return lines;
}

// Book abbreviations in the order `bible -f` prints them (canon order, 39 OT + 27 NT).
const std::vector<std::string>& kjv_books() {
  static const std::vector<std::string> books = {
      "Ge",   "Exo",  "Lev",  "Num",  "Deu",  "Josh", "Jdgs", "Ruth",  "1Sm",  "2Sm",  "1Ki",
      "2Ki",  "1Chr", "2Chr", "Ezra", "Neh",  "Est",  "Job",  "Psa",   "Prv",  "Eccl", "SSol",
      "Isa",  "Jer",  "Lam",  "Eze",  "Dan",  "Hos",  "Joel", "Amos",  "Obad", "Jonah", "Mic",
      "Nahum", "Hab", "Zep",  "Hag",  "Zec",  "Mal",  "Mat",  "Mark",  "Luke", "John", "Acts",
      "Rom",  "1Cor", "2Cor", "Gal",  "Eph",  "Phi",  "Col",  "1Th",   "2Th",  "1Tim", "2Tim",
      "Titus", "Phmn", "Heb", "Jas",  "1Pet", "2Pet", "1Jn",  "2Jn",   "3Jn",  "Jude", "Rev"};
  return books;
}

// dictd's base64 alphabet encodes offsets/lengths most-significant digit first.
std::uint64_t dict_b64(const std::string& s, const std::filesystem::path& file, std::size_t line) {
  static const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::uint64_t v = 0;
  for (char c : s) {
    std::size_t d = alphabet.find(c);
    if (d == std::string::npos || v > (std::uint64_t(1) << 56))
      throw FormatError(file.string() + ":" + std::to_string(line) + ": bad base64 number '" + s + "'");
    v = v * 64 + d;
  }
  return v;
}

// GCIDE entries carry pronunciation (\A*ban"don\), source tags ([1913 Webster]) and
// markup; they are noise for a language model and for retrieval, so they go. A hand-written
// scan, because std::regex over 40 MB of entries costs seconds.
std::string clean_dict_entry(const std::string& raw) {
  static const char* kTags[] = {"[1913 Webster", "[Webster 1913", "[WordNet", "[PJC]",
                                "[Century", "[RN]", "[Chambers"};
  std::string s;
  s.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size();) {
    if (raw[i] == '[') {
      bool tag = false;
      for (const char* t : kTags) tag = tag || raw.compare(i, std::strlen(t), t) == 0;
      std::size_t close = raw.find(']', i);
      if (tag && close != std::string::npos) {
        i = close + 1;
        continue;
      }
    } else if (raw[i] == '\\') {
      std::size_t close = raw.find('\\', i + 1);
      if (close != std::string::npos && close - i <= 80 &&
          raw.find('\n', i) > close) {
        i = close + 1;
        continue;
      }
    }
    s += raw[i++];
  }
  return normalize_lines(to_utf8(s, ""));
}

}  // namespace

// ---- SourceLog ------------------------------------------------------------------------

void SourceLog::add_file(const std::filesystem::path& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) throw InputError(path.string() + ": cannot stat (is its package installed? see scripts/deps.sh)");
  files_.push_back({{"path", path.string()}, {"size", size}, {"sha256", sha256_file(path)}});
}

void SourceLog::add_output(const std::string& command, const std::string& output) {
  outputs_.push_back({{"command", command}, {"bytes", output.size()}, {"sha256", sha256_hex(output)}});
}

void SourceLog::add_package(const std::string& name, const std::string& version) {
  packages_[name] = version;
}

nlohmann::json SourceLog::to_json() const {
  return {{"files", files_}, {"outputs", outputs_}, {"packages", packages_}};
}

std::string debian_package_version(const std::string& package) {
  try {
    std::string v = run_program({"dpkg-query", "-W", "-f=${Version}", package});
    return v.empty() ? "unknown" : v;
  } catch (const InputError&) {
    return "unknown";
  }
}

std::string npm_package_version(const std::string& package) {
  const auto path = npm_dir() / package / "package.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path.string() + ": " + e.what());
  }
  if (!j.contains("version") || !j["version"].is_string())
    throw FormatError(path.string() + ": no \"version\" field");
  return j["version"].get<std::string>();
}

std::string run_program(const std::vector<std::string>& argv) {
  TB_CHECK(!argv.empty(), "run_program needs a program");
  std::string cmd;
  for (const auto& a : argv) cmd += shell_quote(a) + " ";
  cmd += "2>/dev/null";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) throw InputError("cannot run '" + argv[0] + "'");
  std::string out;
  std::array<char, 1 << 16> buf;
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = ::pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    int code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    throw InputError("'" + argv[0] + "' failed (exit " + std::to_string(code) + ")" +
                     (code == 127 ? ": program not found; run scripts/deps.sh" : ""));
  }
  return out;
}

// ---- KJV ------------------------------------------------------------------------------

std::string Verse::ref() const {
  return book + std::to_string(chapter) + ":" + std::to_string(verse);
}

std::vector<Verse> read_kjv(SourceLog* log) {
  const auto data = bible_data();
  if (!std::filesystem::exists(data))
    throw InputError(data.string() + ": KJV text not found (install bible-kjv-text, see scripts/deps.sh)");
  // -f turns pretty-printing off: one "Ref text" line per verse. -p/-d point the decoder at
  // the data file so TUNEBENCH_BIBLE_DATA is honoured.
  const std::vector<std::string> argv = {bible_program(), "-f", "-p", data.parent_path().string(),
                                         "-d", data.filename().string(), "Gen1:1-Rev22:21"};
  const std::string out = run_program(argv);
  if (log) {
    log->add_file(data);
    log->add_output("bible -f -p DIR -d bible.data Gen1:1-Rev22:21", out);
  }
  static const std::regex line_re(R"(^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$)");
  const auto& books = kjv_books();
  std::vector<Verse> verses;
  std::size_t lineno = 0;
  for (const std::string& line : split_lines(out)) {
    ++lineno;
    if (line.empty()) continue;
    std::smatch m;
    if (!std::regex_match(line, m, line_re))
      throw FormatError("bible output line " + std::to_string(lineno) + ": unexpected format: " + line.substr(0, 60));
    auto it = std::find(books.begin(), books.end(), m[1].str());
    if (it == books.end())
      throw FormatError("bible output line " + std::to_string(lineno) + ": unknown book '" + m[1].str() + "'");
    verses.push_back({m[1].str(), static_cast<int>(it - books.begin()), std::stoi(m[2].str()),
                      std::stoi(m[3].str()), normalize_space(to_utf8(m[4].str(), ""))});
  }
  if (verses.size() != 31102)
    throw FormatError("bible output: expected 31102 verses, got " + std::to_string(verses.size()) +
                      " (a different bible-kjv-text?)");
  return verses;
}

// ---- fortunes -------------------------------------------------------------------------

std::vector<std::string> fortune_categories() {
  std::vector<std::string> cats;
  const auto dir = fortunes_dir();
  if (!std::filesystem::is_directory(dir))
    throw InputError(dir.string() + ": fortunes not found (install fortunes, see scripts/deps.sh)");
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().has_extension()) continue;
    if (std::filesystem::exists(e.path().string() + ".dat")) cats.push_back(e.path().filename().string());
  }
  std::sort(cats.begin(), cats.end());
  return cats;
}

std::vector<std::string> read_fortunes(const std::string& category, SourceLog* log) {
  const auto path = fortunes_dir() / category;
  const std::string raw = read_file(path);
  if (log) log->add_file(path);
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    std::string t = normalize_lines(to_utf8(strip_overstrike(cur), ""));
    if (!t.empty()) out.push_back(std::move(t));
    cur.clear();
  };
  for (const std::string& line : split_lines(raw)) {
    if (line == "%") {
      flush();
      continue;
    }
    cur += line;
    cur += '\n';
  }
  flush();
  return out;
}

// ---- dictd ----------------------------------------------------------------------------

std::vector<DictEntry> read_dict(const std::string& name, SourceLog* log, std::size_t max_bytes) {
  const auto index_path = dictd_dir() / (name + ".index");
  const auto dict_path = dictd_dir() / (name + ".dict.dz");
  const std::string index = read_file(index_path);
  if (!std::filesystem::exists(dict_path))
    throw InputError(dict_path.string() + ": not found (install dict-" + name + ", see scripts/deps.sh)");
  // .dict.dz is dictzip, a gzip file with random-access extras; gzip (always present on
  // Debian) decompresses it whole, which is faster than seeking for a full scan.
  const std::string body = run_program({"gzip", "-dc", "--", dict_path.string()});
  if (log) {
    log->add_file(index_path);
    log->add_file(dict_path);
  }
  std::vector<DictEntry> entries;
  std::set<std::pair<std::uint64_t, std::uint64_t>> seen;
  std::size_t lineno = 0;
  for (const std::string& line : split_lines(index)) {
    ++lineno;
    if (line.empty()) continue;
    std::size_t t1 = line.find('\t');
    std::size_t t2 = t1 == std::string::npos ? t1 : line.find('\t', t1 + 1);
    if (t2 == std::string::npos)
      throw FormatError(index_path.string() + ":" + std::to_string(lineno) + ": expected headword<TAB>offset<TAB>length");
    std::size_t t3 = line.find('\t', t2 + 1);
    std::string head = line.substr(0, t1);
    if (head.rfind("00-database", 0) == 0 || head.rfind("00database", 0) == 0) continue;
    std::uint64_t off = dict_b64(line.substr(t1 + 1, t2 - t1 - 1), index_path, lineno);
    std::uint64_t len = dict_b64(line.substr(t2 + 1, t3 == std::string::npos ? std::string::npos : t3 - t2 - 1), index_path, lineno);
    if (off + len > body.size())
      throw FormatError(index_path.string() + ":" + std::to_string(lineno) + ": entry beyond the end of " + dict_path.string());
    if (!seen.insert({off, len}).second) continue;
    std::string text = truncate_utf8(clean_dict_entry(body.substr(off, len)), max_bytes);
    if (text.empty()) continue;
    entries.push_back({to_utf8(head, ""), std::move(text)});
  }
  return entries;
}

// ---- WordNet --------------------------------------------------------------------------

const std::string& lexfile_name(int lexfile) {
  static const std::vector<std::string> names = {
      "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
      "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
      "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
      "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
      "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance",
      "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
      "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion",
      "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
      "verb.weather", "adj.ppl"};
  TB_CHECK(lexfile >= 0 && lexfile < static_cast<int>(names.size()), "lexfile " << lexfile);
  return names[static_cast<std::size_t>(lexfile)];
}

std::vector<Synset> read_wordnet(SourceLog* log) {
  std::vector<Synset> out;
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    const auto path = wordnet_dir() / (std::string("data.") + pos);
    const std::string raw = read_file(path);
    if (log) log->add_file(path);
    std::size_t lineno = 0;
    for (const std::string& line : split_lines(raw)) {
      ++lineno;
      if (line.empty() || line[0] == ' ') continue;  // licence header lines start with spaces
      auto bad = [&](const std::string& what) {
        return FormatError(path.string() + ":" + std::to_string(lineno) + ": " + what);
      };
      std::size_t bar = line.find(" | ");
      if (bar == std::string::npos) throw bad("no ' | ' before the gloss");
      std::istringstream ss(line.substr(0, bar));
      Synset s;
      std::string lexfile, ss_type, w_cnt_hex;
      if (!(ss >> s.offset >> lexfile >> ss_type >> w_cnt_hex) || ss_type.size() != 1)
        throw bad("malformed synset header");
      s.pos = ss_type[0];
      s.lexfile = std::stoi(lexfile);
      if (s.lexfile < 0 || s.lexfile > 44) throw bad("lexicographer file out of range");
      int w_cnt = std::stoi(w_cnt_hex, nullptr, 16);
      for (int i = 0; i < w_cnt; ++i) {
        std::string word, lex_id;
        if (!(ss >> word >> lex_id)) throw bad("fewer words than w_cnt");
        if (std::size_t paren = word.find('('); paren != std::string::npos && word.back() == ')')
          word.erase(paren);  // adjective position markers: (a), (p), (ip)
        s.words.push_back(word);
      }
      std::string gloss = normalize_space(line.substr(bar + 3));
      std::size_t quote = gloss.find('"');
      std::string def = gloss.substr(0, quote);
      while (!def.empty() && (def.back() == ' ' || def.back() == ';')) def.pop_back();
      s.definition = def;
      while (quote != std::string::npos) {
        std::size_t close = gloss.find('"', quote + 1);
        if (close == std::string::npos) break;
        s.examples.push_back(gloss.substr(quote + 1, close - quote - 1));
        quote = gloss.find('"', close + 1);
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace tb::data
