// Hard prompt tuning (`prompt`): template pool, dev search, best template on test; see
// prompt.h. The record's details hold every template's dev accuracy, the pool's mean and
// standard deviation (prompt sensitivity) and the winner; save_adaptation stores the winner
// as a small JSON file, which is all a user needs to reproduce the predictions.
#include "methods/prompt.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "harness/base/errors.h"

namespace tb::methods {
namespace {

bool is_choice_task(const tasks::Task& task) {
  return task.output_type() == tasks::OutputType::multiple_choice ||
         task.output_type() == tasks::OutputType::retrieval;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string escape_braces(const std::string& s) {
  std::string out;
  for (char c : s) {
    out += c;
    if (c == '{' || c == '}') out += c;
  }
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// Alternative answer words for common label words, by position: set j of a task exists when
// every label has a j-th synonym.
const std::map<std::string, std::vector<std::string>>& synonyms() {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"negative", {"bad", "terrible"}}, {"positive", {"good", "great"}},
      {"ham", {"normal", "legitimate"}}, {"spam", {"junk", "unwanted"}},
      {"no", {"false", "wrong"}},        {"yes", {"true", "right"}},
  };
  return table;
}

std::vector<AnswerSet> answer_sets(const tasks::Task& task) {
  std::vector<AnswerSet> sets;
  if (is_choice_task(task)) {
    AnswerSet text;
    text.name = "choice-text";
    AnswerSet letters;
    letters.name = "letters";
    letters.letters = true;
    return {text, letters};
  }
  auto add = [&](std::vector<std::string> words) {
    for (const auto& s : sets)
      if (s.verbalisers == words) return;
    AnswerSet a;
    a.name = join(words, "/");
    a.verbalisers = std::move(words);
    sets.push_back(std::move(a));
  };
  add(task_answers(task).verbalisers);
  add(task.label_names());
  const auto& table = synonyms();
  for (size_t j = 0;; ++j) {
    std::vector<std::string> words;
    for (size_t l = 0; l < task.label_names().size(); ++l) {
      auto it = table.find(lower(task.label_names()[l]));
      if (it == table.end() && l < task.verbalisers().size()) it = table.find(lower(task.verbalisers()[l]));
      if (it == table.end() || j >= it->second.size()) break;
      words.push_back(it->second[j]);
    }
    if (words.size() != task.label_names().size() || words.empty()) break;
    add(std::move(words));
  }
  return sets;
}

std::vector<std::string> instructions(const tasks::Task& task, const AnswerSet& answers) {
  std::vector<std::string> c = {""};
  if (!task.spec().description.empty()) {
    std::string d = task.spec().description;
    d[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(d[0])));
    c.push_back(d + ".");
  }
  if (!answers.verbalisers.empty())
    c.push_back("Answer with one of: " + join(answers.verbalisers, ", ") + ".");
  else if (answers.letters)
    c.push_back("Answer with the letter of the correct option.");
  else
    c.push_back("Answer with the correct option.");
  c.push_back("Read the text and choose the best answer.");
  c.push_back("Think about what the text means, then answer.");
  std::vector<std::string> out;
  for (const auto& s : c)
    if (std::find(out.begin(), out.end(), s) == out.end() && out.size() < 4) out.push_back(s);
  return out;
}

std::vector<std::string> formats(const tasks::Task& task) {
  const std::vector<std::string> c =
      is_choice_task(task)
          ? std::vector<std::string>{task.prompt_template(), "Question: {text}\n{choices}\nAnswer:",
                                     "{text}\n{choices}\nThe answer is"}
          : std::vector<std::string>{task.prompt_template(), "Text: {text}\nAnswer:", "Input: {text}\nLabel:"};
  std::vector<std::string> out;
  for (const auto& s : c)
    if (std::find(out.begin(), out.end(), s) == out.end() && out.size() < 2) out.push_back(s);
  return out;
}

class Prompt final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    batch_ = ctx.options.integer("batch");
    if (batch_ < 1) throw InputError("option --prompt.batch must be >= 1");
    const int64_t dev_max = ctx.options.integer("dev-max");
    if (dev_max < 0) throw InputError("option --prompt.dev-max must be >= 0 (0 = the whole split)");
    const bool use_dev = !ctx.dev.empty();
    const auto& split = use_dev ? ctx.dev : ctx.train;
    if (split.empty())
      throw InputError("prompt: task " + ctx.task.name() + " has no dev or train examples to choose a template on");
    // --prompt.dev-max: the hashed subset (as --limit), not the first rows of the split.
    const std::vector<tasks::Example> dev = tasks::hashed_subset(split, dev_max);

    pool_ = template_pool(ctx.task);
    LmCost cost;
    int64_t truncated = 0, done = 0;
    const auto search = search_templates(pool_, [&](const PromptTemplate& t) {
      if (ctx.meter.progress) ctx.meter.progress("templates", done, static_cast<int64_t>(pool_.size()), NAN);
      ++done;
      PromptSet set;
      const auto preds = run(ctx, t, dev, cost, set);
      truncated += set.truncated;
      int64_t right = 0;
      for (size_t i = 0; i < dev.size(); ++i) right += preds[i].label == dev[i].label;
      return static_cast<double>(right) / static_cast<double>(dev.size());
    });
    cost.charge(ctx.meter, /*prepare=*/true);
    best_ = search.best;

    auto& d = ctx.meter.details;
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < pool_.size(); ++i)
      list.push_back({{"name", pool_[i].name},
                      {"template", pool_[i].full()},
                      {"answers", answers_json(pool_[i].answers)},
                      {"dev_accuracy", search.dev_scores[i]}});
    d["templates"] = list;
    d["pool_size"] = pool_.size();
    d["pool_dev_accuracy_mean"] = search.mean;
    d["pool_dev_accuracy_std"] = search.std;
    d["pool_dev_accuracy_min"] = *std::min_element(search.dev_scores.begin(), search.dev_scores.end());
    d["best_template"] = pool_[best_].name;
    d["best_dev_accuracy"] = search.dev_scores[best_];
    d["selection_split"] = use_dev ? "dev" : "train";
    d["selection_examples"] = dev.size();
    d["selection_truncated_prompts"] = truncated;
  }

  std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    TB_CHECK(!pool_.empty(), << "prompt: predict before prepare");
    LmCost cost;
    PromptSet set;
    auto preds = run(ctx, pool_[best_], examples, cost, set);
    cost.charge(ctx.meter, /*prepare=*/false);
    ctx.meter.details["truncated_prompts"] = set.truncated;
    ctx.meter.details["prompts"] = set.counts();
    return preds;
  }

  int64_t trainable_params() const override { return 0; }

  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    if (pool_.empty()) return 0;
    const auto& t = pool_[best_];
    const nlohmann::json j = {{"name", t.name}, {"template", t.full()}, {"answers", answers_json(t.answers)}};
    const auto file = dir / "prompt_template.json";
    std::ofstream out(file, std::ios::binary);
    out << j.dump(2) << "\n";
    out.close();
    if (!out) throw InputError("cannot write " + file.string());
    return static_cast<int64_t>(std::filesystem::file_size(file));
  }

 private:
  static nlohmann::json answers_json(const AnswerSet& a) {
    if (!a.verbalisers.empty()) return a.verbalisers;
    return a.letters ? "letters" : "choice-text";
  }

  std::vector<Prediction> run(RunContext& ctx, const PromptTemplate& t, const std::vector<tasks::Example>& examples,
                              LmCost& cost, PromptSet& set) const {
    const std::string tmpl = t.full();
    for (const auto& ex : examples) set.add(ctx.model, ctx.tokenizer, ctx.task, ex, tmpl, t.answers);
    const auto ll = score_candidates(ctx.model, set.contexts, set.candidates, batch_, cost);
    std::vector<Prediction> preds(examples.size());
    for (size_t i = 0; i < examples.size(); ++i) {
      preds[i].scores = log_normalise(ll[i]);
      preds[i].label = argmax(preds[i].scores);
    }
    return preds;
  }

  int64_t batch_ = 16;
  std::vector<PromptTemplate> pool_;
  size_t best_ = 0;
};

}  // namespace

std::string PromptTemplate::full() const {
  return instruction.empty() ? format : escape_braces(instruction) + "\n" + format;
}

std::vector<PromptTemplate> template_pool(const tasks::Task& task) {
  if (task.output_type() != tasks::OutputType::classify && !is_choice_task(task))
    throw InputError("prompt: task " + task.name() + " is " + tasks::to_string(task.output_type()) +
                     "; templates need classify, multiple_choice or retrieval");
  std::vector<PromptTemplate> pool;
  std::set<std::pair<std::string, std::string>> seen;  // (full template, answer set)
  const auto fmts = formats(task);
  for (const auto& answers : answer_sets(task)) {
    const auto instrs = instructions(task, answers);
    for (size_t i = 0; i < instrs.size(); ++i)
      for (size_t f = 0; f < fmts.size(); ++f) {
        PromptTemplate t;
        t.name = "i";
        t.name += std::to_string(i);
        t.name += ".f";
        t.name += std::to_string(f);
        t.name += ".";
        t.name += answers.name;
        t.instruction = instrs[i];
        t.format = fmts[f];
        t.answers = answers;
        if (seen.emplace(t.full(), answers.name).second) pool.push_back(std::move(t));
      }
  }
  return pool;
}

TemplateSearch search_templates(const std::vector<PromptTemplate>& pool,
                                const std::function<double(const PromptTemplate&)>& dev_score) {
  TB_CHECK(!pool.empty(), << "an empty template pool");
  TemplateSearch s;
  for (const auto& t : pool) s.dev_scores.push_back(dev_score(t));
  const auto& v = s.dev_scores;
  s.best = static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
  double sum = 0.0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0.0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

MethodInfo prompt_method_info() {
  MethodInfo info;
  info.name = "prompt";
  info.summary = "hard prompt tuning: a pool of instruction x format x verbaliser templates, best on dev applied to test";
  info.options = {
      {"dev-max", "200", "dev examples each template is scored on (the first N; 0 = the whole split)"},
      {"batch", "16", "sequences per forward"},
  };
  info.make = [] { return std::make_unique<Prompt>(); };
  info.supports = {tasks::OutputType::classify, tasks::OutputType::multiple_choice};
  return info;
}

}  // namespace tb::methods
