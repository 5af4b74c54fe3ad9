// A task: what the methods see. A spec file (INI, tasks/README.md) names the data, its
// splits, the text/label fields, label names and verbalisers, the output type, a prompt
// template and the metrics; Task::load turns it into examples, loading and (for builtin
// data) building the data on first use.
//
// Output types and what a task of each type provides:
//   classify         text → one of label_names; Example::label is the class index
//   multiple_choice  text → one of Example::choices; Example::label is the index of the answer
//   generate         text → free text; Example::target is the reference output
//   loglikelihood    text only; the metric is the model's loss/perplexity on it (heldout-lm)
//   retrieval        a question (with choices/label for the end task) plus gold_docs, over
//                    the task's document collection (documents())
//   preference       Example::text is a prompt; the gold judge (gold_reward) scores a
//                    continuation (sentiment-steer: the AFINN-165 lexicon)
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tb::tasks {

enum class OutputType { classify, multiple_choice, generate, loglikelihood, retrieval, preference };

// "classify" ... "preference"; InputError naming `where` for anything else.
OutputType parse_output_type(const std::string& s, const std::string& where);
const char* to_string(OutputType t);

struct Example {
  std::string id;
  std::string text;
  int label = -1;                    // class index (classify) or answer index (multiple_choice/retrieval)
  std::string target;                // reference output (generate)
  std::vector<std::string> choices;  // multiple_choice / retrieval
  std::vector<std::string> gold_docs;  // ids of relevant documents (retrieval)
  std::string slice;                 // sub-population for separate reporting (e.g. hard_ham)
  std::vector<std::string> units;    // pretraining-dedup units of a heldout-lm passage
  std::map<std::string, std::string> extra;  // other declared fields, as text
};

struct Document {
  std::string id;
  std::string title;
  std::string text;
};

// The parsed spec file. Paths inside are resolved relative to the spec's directory.
struct TaskSpec {
  std::filesystem::path file;  // where it was read from
  std::string name;
  int version = 1;
  std::string description;
  OutputType output_type = OutputType::classify;

  // Data: each split is a list of "source[:split]" items; a source is builtin:<dataset> or
  // a file path. `source` is shorthand for train/dev/test = source:train/dev/test.
  std::map<std::string, std::vector<std::string>> split_sources;  // "train"|"dev"|"test"
  std::string format;         // csv | tsv | jsonl | "" (from the extension)
  std::string id_field;       // "" -> ids are "<file>:<line>"
  std::string text_field = "text";
  std::string label_field;    // required for classify / multiple_choice / generate
  std::string choices_field;  // multiple_choice / retrieval (JSON array, or "|"-separated in CSV/TSV)
  std::string slice_field;
  std::string split_field = "split";  // files without it are split by hash (hash_split)
  std::vector<int> hash_split = {80, 10, 10};  // train/dev/test percentages
  std::vector<std::string> extra_fields;
  std::string documents;      // retrieval: document collection source
  std::string gold_docs_field;

  std::vector<std::string> label_names;  // classify
  std::vector<std::string> label_values; // raw label values in the data, one per name (default: the names)
  std::vector<std::string> verbalisers;  // one per label (default: the label names)
  std::string prompt_template = "{text}";
  std::vector<std::string> metrics;
  std::string primary_metric;            // first of metrics unless set
  std::string judge;                     // preference: "afinn"
};

// The hashed subset every sample of a split uses (the runner's --limit, the held-out RLHF
// pairs, the prompt method's template search, the majority reference row): the n examples
// whose ids (their text when the id is empty) hash lowest, in split order. The same subset
// for every method and seed, and unbiased when a split file is sorted by label (its first
// n rows would all share one class). n <= 0 or n >= size: the whole split.
std::vector<Example> hashed_subset(const std::vector<Example>& v, int64_t n);
// The order key of that subset (also used for --limit's document subset).
std::uint64_t subset_key(const std::string& id);

// The training subset of a learning curve (`tunebench run --train-sizes`): the first n
// examples of one fixed order of the split, returned in split order. The order deals the
// classes round-robin (class 0, 1, ..., K-1, class 0, ...), each class's examples in
// subset_key order; an example without a class (label < 0) forms one group of its own. So
// the subsets are nested (the 8-example subset is part of the 32-example one), class-balanced
// (class counts differ by at most one until a class runs out) and the same for every method
// and seed. n <= 0 or n >= size: the whole split.
std::vector<Example> balanced_subset(const std::vector<Example>& v, int64_t n);

// Reads and validates a spec. Unknown keys, unknown output types, unknown metrics, a
// template with an unknown placeholder, verbalisers not matching labels → InputError
// naming the file and the key.
TaskSpec parse_task_spec(const std::filesystem::path& file);

class Task {
 public:
  // Loads the data of a parsed spec (building builtin data on first use).
  static std::shared_ptr<const Task> load(const TaskSpec& spec);

  const TaskSpec& spec() const { return spec_; }
  const std::string& name() const { return spec_.name; }
  int version() const { return spec_.version; }
  OutputType output_type() const { return spec_.output_type; }
  const std::vector<std::string>& label_names() const { return spec_.label_names; }
  const std::vector<std::string>& verbalisers() const { return spec_.verbalisers; }
  const std::string& prompt_template() const { return spec_.prompt_template; }
  const std::vector<std::string>& metrics() const { return spec_.metrics; }

  // "train" | "dev" | "test"; InputError for another name. May be empty (heldout-lm train).
  const std::vector<Example>& split(std::string_view name) const;
  const std::vector<Document>& documents() const { return documents_; }
  // The same task over another document collection (the runner's --limit subset of it);
  // every gold document of the kept splits must be in `docs` (not checked here).
  std::shared_ptr<const Task> with_documents(std::vector<Document> docs) const;

  // The prompt of an example: the template with {text}, {choices} (one "A. word" per line),
  // {label} (the gold verbaliser, for demonstrations) and any extra field substituted.
  std::string render(const Example& ex) const;
  // The same with another template (the prompt method's template search); placeholders
  // are those of the spec's template.
  std::string render(const Example& ex, std::string_view prompt_template) const;

  // preference tasks: the gold judge's reward for continuing `prompt` with `continuation` —
  // AFINN score of (prompt + " " + continuation) minus the score of the prompt alone, i.e.
  // the sentiment the continuation adds (negations across the boundary count).
  double gold_reward(std::string_view prompt, std::string_view continuation) const;

 private:
  TaskSpec spec_;
  std::map<std::string, std::vector<Example>, std::less<>> splits_;
  std::vector<Document> documents_;
};

}  // namespace tb::tasks
