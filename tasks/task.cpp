// Task spec parsing (Boost.Program_options INI) and loading of a task's data.
#include "tasks/task.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "datasets/afinn.h"
#include "datasets/builders.h"
#include "harness/base/hash.h"
#include "datasets/loaders.h"
#include "datasets/text.h"
#include "harness/base/errors.h"
#include "tasks/metrics.h"

namespace tb::tasks {
namespace po = boost::program_options;
using json = nlohmann::json;

namespace {

const std::vector<std::pair<OutputType, const char*>> kOutputTypes = {
    {OutputType::classify, "classify"},           {OutputType::multiple_choice, "multiple_choice"},
    {OutputType::generate, "generate"},           {OutputType::loglikelihood, "loglikelihood"},
    {OutputType::retrieval, "retrieval"},         {OutputType::preference, "preference"}};

// Every key a spec may hold, with what it means (also the spec reference in tasks/README.md).
po::options_description spec_keys() {
  po::options_description d("task spec");
  auto s = [&](const char* key, const char* help) { d.add_options()(key, po::value<std::string>(), help); };
  s("name", "task name, [a-z0-9._-]+");
  s("version", "integer ≥ 1; bump when data, splits or template change");
  s("description", "one line");
  s("output_type", "classify | multiple_choice | generate | loglikelihood | retrieval | preference");
  s("data.source", "shorthand: train/dev/test = SOURCE:train/dev/test");
  s("data.train", "comma-separated SOURCE[:SPLIT] items");
  s("data.dev", "comma-separated SOURCE[:SPLIT] items");
  s("data.test", "comma-separated SOURCE[:SPLIT] items");
  s("data.format", "csv | tsv | jsonl (default: from the file extension)");
  s("data.id_field", "column holding a stable example id");
  s("data.text_field", "column holding the input text (default text)");
  s("data.label_field", "column holding the label / answer / target");
  s("data.choices_field", "column holding the choices (JSON array, or |-separated in CSV/TSV)");
  s("data.slice_field", "column naming a sub-population reported separately");
  s("data.split_field", "column holding train/dev/test (default split)");
  s("data.hash_split", "train/dev/test percentages for files without a split column (default 80/10/10)");
  s("data.extra_fields", "other columns to keep, comma-separated");
  s("data.documents", "retrieval: the document collection (SOURCE with id, title?, text)");
  s("data.gold_docs_field", "retrieval: column with the relevant document id(s)");
  s("labels.names", "class names, comma-separated (classify)");
  s("labels.values", "raw label values in the file, one per name (default: the names)");
  s("labels.verbalisers", "answer words, one per name (default: the names)");
  s("prompt.template", "prompt with {text}, {choices}, {label} and {<extra field>}; \\n is a newline");
  s("metrics.names", "comma-separated metric names");
  s("metrics.primary", "metric used for model selection (default: the first)");
  s("judge.name", "preference: the gold judge (afinn)");
  return d;
}

std::vector<std::string> split_list(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t e = s.find(sep, start);
    if (e == std::string::npos) e = s.size();
    std::string item = data::normalize_space(s.substr(start, e - start));
    if (!item.empty()) out.push_back(item);
    start = e + 1;
  }
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Placeholders of a template: {name}; "{{" and "}}" are literal braces.
std::vector<std::string> placeholders(const std::string& t, const std::string& where) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '{') {
      if (i + 1 < t.size() && t[i + 1] == '{') {
        ++i;
        continue;
      }
      std::size_t e = t.find('}', i);
      if (e == std::string::npos) throw InputError(where + ": unclosed '{' in the template");
      names.push_back(t.substr(i + 1, e - i - 1));
      i = e;
    } else if (t[i] == '}' && i + 1 < t.size() && t[i + 1] == '}') {
      ++i;
    }
  }
  return names;
}

struct SourceRef {
  std::string source;  // builtin:<name> or a path as written
  std::string split;   // train | dev | test | * (all rows)
};

SourceRef parse_source_ref(const std::string& item, const std::string& default_split) {
  std::size_t colon = item.rfind(':');
  if (colon != std::string::npos) {
    std::string tail = item.substr(colon + 1);
    if (tail == "train" || tail == "dev" || tail == "test" || tail == "*" || tail == "all")
      return {item.substr(0, colon), tail == "all" ? "*" : tail};
  }
  return {item, default_split};
}

std::filesystem::path resolve_source(const std::string& source, const TaskSpec& spec) {
  if (source.rfind("builtin:", 0) == 0) return data::builtin_dataset(source.substr(8));
  std::filesystem::path p = source;
  if (p.is_relative()) p = spec.file.parent_path() / p;
  return p;
}

}  // namespace

OutputType parse_output_type(const std::string& s, const std::string& where) {
  for (const auto& [t, n] : kOutputTypes)
    if (s == n) return t;
  throw InputError(where + ": unknown output type '" + s +
                   "' (expected classify, multiple_choice, generate, loglikelihood, retrieval or preference)");
}

const char* to_string(OutputType t) {
  for (const auto& [k, n] : kOutputTypes)
    if (k == t) return n;
  return "?";
}

TaskSpec parse_task_spec(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw InputError(file.string() + ": cannot open task spec");
  const std::string f = file.string();
  po::variables_map vm;
  try {
    po::store(po::parse_config_file(in, spec_keys(), /*allow_unregistered=*/false), vm);
  } catch (const po::unknown_option& e) {
    throw InputError(f + ": unknown key '" + e.get_option_name() + "'");
  } catch (const po::multiple_occurrences& e) {
    throw InputError(f + ": key '" + e.get_option_name() + "' given more than once");
  } catch (const po::error& e) {
    // Not e.what(): Boost fills its message template with the offending line, in a loop that
    // never ends when the line contains a placeholder such as %value% (found by fuzzing).
    // The first line that is not blank, a comment, [section] or key = value is named instead.
    std::ifstream again(file);
    std::string line;
    for (int n = 1; std::getline(again, line); ++n) {
      const auto t = line.find_first_not_of(" \t\r");
      if (t == std::string::npos || line[t] == '#' || line[t] == ';') continue;
      if (line[t] == '[' && line.find(']', t) != std::string::npos) continue;
      if (line.find('=') != std::string::npos) continue;
      throw InputError(f + ":" + std::to_string(n) + ": not 'key = value', '[section]' or a comment");
    }
    throw InputError(f + ": invalid task spec syntax");
  }
  auto get = [&](const char* key) { return vm.count(key) ? vm[key].as<std::string>() : std::string(); };
  auto key_error = [&](const std::string& key, const std::string& msg) {
    return InputError(f + ": key '" + key + "': " + msg);
  };

  TaskSpec s;
  s.file = file;
  s.name = get("name");
  static const std::regex name_re("[a-z0-9][a-z0-9._-]*");
  if (!std::regex_match(s.name, name_re)) throw key_error("name", "missing or not of the form [a-z0-9._-]+");
  if (vm.count("version")) {
    try {
      std::size_t pos;
      s.version = std::stoi(get("version"), &pos);
      if (pos != get("version").size() || s.version < 1) throw std::invalid_argument("");
    } catch (const std::logic_error&) {
      throw key_error("version", "'" + get("version") + "' is not an integer ≥ 1");
    }
  }
  s.description = get("description");
  if (!vm.count("output_type")) throw key_error("output_type", "missing");
  s.output_type = parse_output_type(get("output_type"), f + ": key 'output_type'");

  // Data sources per split.
  for (const char* sp : {"train", "dev", "test"}) {
    std::string key = std::string("data.") + sp;
    if (vm.count(key)) s.split_sources[sp] = split_list(get(key.c_str()));
    else if (vm.count("data.source")) s.split_sources[sp] = {get("data.source") + ":" + sp};
  }
  if (!s.split_sources.count("test") || s.split_sources["test"].empty())
    throw key_error("data.test", "no test data (set data.source or data.test)");
  s.format = get("data.format");
  if (!s.format.empty() && s.format != "csv" && s.format != "tsv" && s.format != "jsonl")
    throw key_error("data.format", "'" + s.format + "' is not csv, tsv or jsonl");
  s.id_field = get("data.id_field");
  if (vm.count("data.text_field")) s.text_field = get("data.text_field");
  s.label_field = get("data.label_field");
  s.choices_field = get("data.choices_field");
  s.slice_field = get("data.slice_field");
  if (vm.count("data.split_field")) s.split_field = get("data.split_field");
  if (vm.count("data.hash_split")) {
    auto parts = split_list(get("data.hash_split"), '/');
    std::vector<int> pct;
    for (const auto& p : parts) {
      try {
        pct.push_back(std::stoi(p));
      } catch (const std::logic_error&) {
        pct.clear();
        break;
      }
    }
    if (pct.size() != 3 || pct[0] < 0 || pct[1] < 0 || pct[2] < 0 || pct[0] + pct[1] + pct[2] != 100)
      throw key_error("data.hash_split", "expected three percentages summing to 100, e.g. 80/10/10");
    s.hash_split = pct;
  }
  s.extra_fields = split_list(get("data.extra_fields"));
  s.documents = get("data.documents");
  s.gold_docs_field = get("data.gold_docs_field");

  s.label_names = split_list(get("labels.names"));
  s.verbalisers = vm.count("labels.verbalisers") ? split_list(get("labels.verbalisers")) : s.label_names;
  if (vm.count("prompt.template")) s.prompt_template = unescape(get("prompt.template"));
  s.metrics = split_list(get("metrics.names"));
  s.primary_metric = vm.count("metrics.primary") ? get("metrics.primary")
                                                 : (s.metrics.empty() ? "" : s.metrics[0]);
  s.judge = get("judge.name");

  // Per output type requirements.
  const bool labelled = s.output_type == OutputType::classify ||
                        s.output_type == OutputType::multiple_choice ||
                        s.output_type == OutputType::generate;
  if (labelled && s.label_field.empty()) throw key_error("data.label_field", "required for output type " + std::string(to_string(s.output_type)));
  if (s.output_type == OutputType::classify) {
    if (s.label_names.size() < 2) throw key_error("labels.names", "a classify task needs at least two labels");
    if (std::set<std::string>(s.label_names.begin(), s.label_names.end()).size() != s.label_names.size())
      throw key_error("labels.names", "duplicate label name");
    s.label_values = vm.count("labels.values") ? split_list(get("labels.values")) : s.label_names;
    if (s.label_values.size() != s.label_names.size())
      throw key_error("labels.values", "needs one value per label name");
  }
  if (s.verbalisers.size() != s.label_names.size())
    throw key_error("labels.verbalisers", "needs one verbaliser per label name");
  if (s.output_type == OutputType::multiple_choice && s.choices_field.empty())
    throw key_error("data.choices_field", "required for output type multiple_choice");
  if (s.output_type == OutputType::retrieval && (s.documents.empty() || s.gold_docs_field.empty()))
    throw key_error(s.documents.empty() ? "data.documents" : "data.gold_docs_field", "required for output type retrieval");
  if (s.output_type == OutputType::preference && s.judge != "afinn")
    throw key_error("judge.name", s.judge.empty() ? "required for output type preference (afinn)"
                                                  : "unknown judge '" + s.judge + "' (known: afinn)");
  if (s.metrics.empty()) throw key_error("metrics.names", "at least one metric is required");
  for (const auto& m : s.metrics)
    if (!is_metric(m)) throw key_error("metrics.names", "unknown metric '" + m + "'");
  if (std::find(s.metrics.begin(), s.metrics.end(), s.primary_metric) == s.metrics.end())
    throw key_error("metrics.primary", "'" + s.primary_metric + "' is not one of metrics.names");
  std::set<std::string> allowed = {"text", "choices", "label"};
  allowed.insert(s.extra_fields.begin(), s.extra_fields.end());
  for (const auto& p : placeholders(s.prompt_template, f + ": key 'prompt.template'"))
    if (!allowed.count(p)) throw key_error("prompt.template", "unknown placeholder {" + p + "}");
  return s;
}

std::shared_ptr<const Task> Task::load(const TaskSpec& spec) {
  auto task = std::make_shared<Task>();
  task->spec_ = spec;
  const TaskSpec& s = task->spec_;
  const bool loglik = s.output_type == OutputType::loglikelihood;

  // Declared columns, in a fixed order; the index of each is remembered.
  std::vector<data::Column> cols;
  auto add = [&](const std::string& name, bool required) -> int {
    if (name.empty()) return -1;
    cols.push_back({name, required});
    return static_cast<int>(cols.size()) - 1;
  };
  const int c_text = add(s.text_field, true);
  const int c_label = add(s.label_field, true);
  const int c_id = add(s.id_field, true);
  const int c_choices = add(s.choices_field, true);
  const int c_slice = add(s.slice_field, false);
  const int c_split = add(s.split_field, false);
  const int c_gold = add(s.gold_docs_field, true);
  const int c_units = loglik ? add("units", false) : -1;
  std::vector<int> c_extra;
  for (const auto& e : s.extra_fields) c_extra.push_back(add(e, true));

  const std::vector<std::string>& raw_values = s.label_values;

  std::map<std::filesystem::path, data::Table> tables;
  auto table_of = [&](const std::filesystem::path& path) -> const data::Table& {
    auto it = tables.find(path);
    if (it != tables.end()) return it->second;
    auto fmt = data::parse_file_format(path.extension() == ".jsonl" ? "jsonl" : s.format, path,
                                       s.file.string() + ": key 'data.format'");
    if (fmt != data::FileFormat::jsonl && cols.size() > data::kMaxCsvColumns)
      throw InputError(s.file.string() + ": CSV/TSV data supports at most " +
                       std::to_string(data::kMaxCsvColumns) + " declared columns");
    return tables.emplace(path, data::load_table(path, fmt, cols)).first->second;
  };
  auto cell_text = [](const json& v) { return v.is_string() ? v.get<std::string>() : v.is_null() ? "" : v.dump(); };

  for (const char* sp : {"train", "dev", "test"}) {
    auto& out = task->splits_[sp];
    auto it = s.split_sources.find(sp);
    if (it == s.split_sources.end()) continue;
    for (const auto& item : it->second) {
      const SourceRef ref = parse_source_ref(item, sp);
      const auto path = resolve_source(ref.source, s);
      const data::Table& t = table_of(path);
      for (const data::Row& row : t.rows) {
        const std::string text = cell_text(row.values[c_text]);
        std::string row_split;
        if (c_split >= 0 && !row.values[c_split].is_null()) {
          row_split = cell_text(row.values[c_split]);
          if (row_split != "train" && row_split != "dev" && row_split != "test")
            throw FormatError(t.where(row) + ": split '" + row_split + "' is not train, dev or test");
        } else {
          int b = tb::split_bucket("tunebench", text);
          row_split = b < s.hash_split[0] ? "train" : b < s.hash_split[0] + s.hash_split[1] ? "dev" : "test";
        }
        if (ref.split != "*" && row_split != ref.split) continue;
        Example ex;
        ex.text = text;
        ex.id = c_id >= 0 ? cell_text(row.values[c_id]) : path.filename().string() + ":" + std::to_string(row.line);
        if (c_slice >= 0) ex.slice = cell_text(row.values[c_slice]);
        if (c_choices >= 0) {
          const json& v = row.values[c_choices];
          if (v.is_array()) {
            for (const auto& c : v) {
              if (!c.is_string()) throw FormatError(t.where(row) + ": choices must be strings");
              ex.choices.push_back(c.get<std::string>());
            }
          } else {
            ex.choices = split_list(cell_text(v), '|');
          }
          if (ex.choices.size() < 2) throw FormatError(t.where(row) + ": fewer than two choices");
        }
        if (c_label >= 0) {
          const json& v = row.values[c_label];
          const std::string lv = cell_text(v);
          if (s.output_type == OutputType::classify) {
            auto pos = std::find(raw_values.begin(), raw_values.end(), lv);
            if (pos == raw_values.end()) {
              std::string known;
              for (const auto& r : raw_values) known += (known.empty() ? "" : ", ") + r;
              throw FormatError(t.where(row) + ": unknown label '" + lv + "' (expected one of " + known + ")");
            }
            ex.label = static_cast<int>(pos - raw_values.begin());
          } else if (!ex.choices.empty()) {
            auto pos = std::find(ex.choices.begin(), ex.choices.end(), lv);
            if (pos != ex.choices.end()) {
              ex.label = static_cast<int>(pos - ex.choices.begin());
            } else if (v.is_number_integer() && v.get<int>() >= 0 && v.get<std::size_t>() < ex.choices.size()) {
              ex.label = v.get<int>();
            } else {
              throw FormatError(t.where(row) + ": answer '" + lv + "' is neither a choice nor a choice index");
            }
          } else {
            ex.target = lv;
          }
        }
        if (c_gold >= 0) {
          const json& v = row.values[c_gold];
          if (v.is_array()) for (const auto& g : v) ex.gold_docs.push_back(cell_text(g));
          else ex.gold_docs = split_list(cell_text(v), '|');
        }
        if (c_units >= 0 && row.values[c_units].is_array())
          for (const auto& u : row.values[c_units]) ex.units.push_back(cell_text(u));
        for (std::size_t k = 0; k < c_extra.size(); ++k)
          ex.extra[s.extra_fields[k]] = cell_text(row.values[c_extra[k]]);
        out.push_back(std::move(ex));
      }
    }
  }

  if (!s.documents.empty()) {
    const auto path = resolve_source(parse_source_ref(s.documents, "*").source, s);
    auto fmt = data::parse_file_format(s.format, path, s.file.string() + ": key 'data.documents'");
    data::Table t = data::load_table(path, fmt, {{"id", true}, {"title", false}, {"text", true}});
    std::set<std::string> ids;
    for (const auto& row : t.rows) {
      Document d{cell_text(row.values[0]), cell_text(row.values[1]), cell_text(row.values[2])};
      if (!ids.insert(d.id).second) throw FormatError(t.where(row) + ": duplicate document id '" + d.id + "'");
      task->documents_.push_back(std::move(d));
    }
    for (const auto& [sp, exs] : task->splits_)
      for (const auto& ex : exs)
        for (const auto& g : ex.gold_docs)
          if (!ids.count(g))
            throw FormatError(s.file.string() + ": example '" + ex.id + "' names gold document '" + g +
                              "', which is not in " + path.string());
  }
  return task;
}

const std::vector<Example>& Task::split(std::string_view name) const {
  auto it = splits_.find(name);
  if (it == splits_.end())
    throw InputError("task " + spec_.name + ": unknown split '" + std::string(name) + "' (train, dev or test)");
  return it->second;
}

std::shared_ptr<const Task> Task::with_documents(std::vector<Document> docs) const {
  auto task = std::make_shared<Task>(*this);
  task->documents_ = std::move(docs);
  return task;
}

std::string Task::render(const Example& ex) const { return render(ex, spec_.prompt_template); }

std::string Task::render(const Example& ex, std::string_view t) const {
  std::string out;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if ((t[i] == '{' || t[i] == '}') && i + 1 < t.size() && t[i + 1] == t[i]) {
      out += t[i++];
      continue;
    }
    if (t[i] != '{') {
      out += t[i];
      continue;
    }
    std::size_t e = t.find('}', i);
    const std::string name(t.substr(i + 1, e - i - 1));
    if (name == "text") {
      out += ex.text;
    } else if (name == "choices") {
      for (std::size_t c = 0; c < ex.choices.size(); ++c) {
        if (c) out += '\n';
        out += static_cast<char>('A' + c);
        out += ". " + ex.choices[c];
      }
    } else if (name == "label") {
      if (ex.label >= 0 && static_cast<std::size_t>(ex.label) < spec_.verbalisers.size())
        out += spec_.verbalisers[static_cast<std::size_t>(ex.label)];
      else if (ex.label >= 0 && static_cast<std::size_t>(ex.label) < ex.choices.size())
        out += ex.choices[static_cast<std::size_t>(ex.label)];
      else
        out += ex.target;
    } else {
      auto it = ex.extra.find(name);
      out += it == ex.extra.end() ? std::string() : it->second;
    }
    i = e;
  }
  return out;
}

double Task::gold_reward(std::string_view prompt, std::string_view continuation) const {
  if (spec_.judge != "afinn")
    throw InputError("task " + spec_.name + " has no gold judge (only preference tasks do)");
  const auto& afinn = data::AfinnScorer::standard();
  std::string full(prompt);
  full += ' ';
  full.append(continuation);
  return afinn.analyze(full).score - afinn.analyze(prompt).score;
}

// FNV-1a mixes poorly in its high bits for ids that differ in one character ("train0-1" vs
// "train1-1"), so the order is by its SplitMix64 finalisation.
std::uint64_t subset_key(const std::string& id) {
  std::uint64_t z = tb::fnv1a64(id);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<Example> hashed_subset(const std::vector<Example>& v, int64_t n) {
  if (n <= 0 || static_cast<int64_t>(v.size()) <= n) return v;
  std::vector<std::pair<std::uint64_t, std::size_t>> keyed;
  for (std::size_t i = 0; i < v.size(); ++i) keyed.emplace_back(subset_key(v[i].id.empty() ? v[i].text : v[i].id), i);
  std::nth_element(keyed.begin(), keyed.begin() + n, keyed.end());
  std::vector<std::size_t> chosen;
  for (int64_t i = 0; i < n; ++i) chosen.push_back(keyed[static_cast<std::size_t>(i)].second);
  std::sort(chosen.begin(), chosen.end());
  std::vector<Example> out;
  for (auto i : chosen) out.push_back(v[i]);
  return out;
}

std::vector<Example> balanced_subset(const std::vector<Example>& v, int64_t n) {
  if (n <= 0 || static_cast<int64_t>(v.size()) <= n) return v;
  // Per class (labels < 0 share one group, keyed -1), the indices in subset_key order.
  std::map<int, std::vector<std::pair<std::uint64_t, std::size_t>>> groups;
  for (std::size_t i = 0; i < v.size(); ++i)
    groups[v[i].label < 0 ? -1 : v[i].label].emplace_back(subset_key(v[i].id.empty() ? v[i].text : v[i].id), i);
  for (auto& g : groups) std::sort(g.second.begin(), g.second.end());
  std::vector<std::size_t> chosen;
  for (std::size_t round = 0; static_cast<int64_t>(chosen.size()) < n; ++round)
    for (const auto& g : groups)
      if (round < g.second.size() && static_cast<int64_t>(chosen.size()) < n) chosen.push_back(g.second[round].second);
  std::sort(chosen.begin(), chosen.end());
  std::vector<Example> out;
  for (auto i : chosen) out.push_back(v[i]);
  return out;
}

}  // namespace tb::tasks
