// Readers of the installed text sources (Debian packages), shared by the task builders and
// by the pretraining-corpus builder. Sharing them matters: pretraining dedup against the
// evaluation items (tasks/registry.h: is_eval_or_heldout) is an exact match of normalised
// text, so both sides must cut the sources into the same units — one verse, one fortune,
// one dictionary entry, one WordNet gloss — with the same clean-up.
//
// Every reader records the files it read (path, size, sha256) in a SourceLog, which the
// builders write into their manifest.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tb::data {

// Files read by a build, with their fingerprints, plus the package versions they came from.
class SourceLog {
 public:
  void add_file(const std::filesystem::path& path);
  // Fingerprint of a command's output (e.g. the `bible` decoder), recorded with its argv.
  void add_output(const std::string& command, const std::string& output);
  void add_package(const std::string& name, const std::string& version);
  nlohmann::json to_json() const;  // {"files": [...], "outputs": [...], "packages": {...}}

 private:
  std::vector<nlohmann::json> files_;
  std::vector<nlohmann::json> outputs_;
  std::map<std::string, std::string> packages_;
};

// Version of an installed Debian package (dpkg-query), or "unknown" if dpkg is unavailable.
std::string debian_package_version(const std::string& package);
// "version" field of <npm_dir>/<package>/package.json; InputError if missing.
std::string npm_package_version(const std::string& package);

// Runs a program (argv[0] looked up on PATH) and returns its stdout; InputError naming the
// program if it cannot be run or exits non-zero.
std::string run_program(const std::vector<std::string>& argv);

// ---- King James Bible (bible-kjv): `bible -f Gen1:1-Rev22:21`, one verse per line -------
struct Verse {
  std::string book;  // the decoder's abbreviation: Ge, Exo, ..., Mat, ..., Rev
  int book_index;    // 0..65 in canon order
  int chapter;
  int verse;
  std::string text;
  bool old_testament() const { return book_index < 39; }
  std::string ref() const;  // "Ge1:1"
};
std::vector<Verse> read_kjv(SourceLog* log);

// ---- fortunes: records separated by a line holding only "%" --------------------------------
// Text: overstriking removed, converted to UTF-8, lines kept, whitespace normalised; empty
// records dropped.
std::vector<std::string> fortune_categories();  // files in fortunes_dir() that have a .dat
std::vector<std::string> read_fortunes(const std::string& category, SourceLog* log);

// ---- dictd dictionaries (.index + gzip'ed .dict.dz) ----------------------------------------
struct DictEntry {
  std::string headword;  // as in the index (first headword pointing at this entry)
  std::string text;      // the entry, cleaned (see clean_dict_entry), at most max_bytes
};
// `name` is the dictionary basename: gcide, foldoc, jargon. Entries in index order, one per
// distinct (offset, length); the 00-database-* meta entries are skipped.
std::vector<DictEntry> read_dict(const std::string& name, SourceLog* log,
                                 std::size_t max_bytes = 2000);

// ---- WordNet 3.0 (wndb(5) data.{noun,verb,adj,adv}) ----------------------------------------
struct Synset {
  std::uint32_t offset;
  char pos;                        // n, v, a, s, r
  int lexfile;                     // 0..44
  std::vector<std::string> words;  // lemmas, underscores kept, adjective markers removed
  std::string definition;          // the gloss before its quoted examples, normalised
  std::vector<std::string> examples;
};
const std::string& lexfile_name(int lexfile);  // "noun.artifact", ...
std::vector<Synset> read_wordnet(SourceLog* log);

}  // namespace tb::data
