// Hard prompt tuning (`prompt`): a pool of discrete templates — instructions × input
// formats × answer sets (verbalisers, or choice text vs letters) — each scored by accuracy on
// the dev split; the best one is applied to the test split. Exposed here: the pool and the
// search, so tests can rig the scores.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "methods/lm_scoring.h"
#include "methods/method.h"

namespace tb::methods {

struct PromptTemplate {
  std::string name;         // "i2.f1.good/bad": instruction, format and answer set
  std::string instruction;  // a line before the prompt; "" for none
  std::string format;       // a template with the task's placeholders ({text}, {choices}, ...)
  AnswerSet answers;
  // The full template: instruction line (braces escaped) + format.
  std::string full() const;
};

// At least 8 templates for a classify, multiple_choice or retrieval task: 4 instructions
// (none, the task's description, "answer with one of ...", a generic one) × 2 formats (the
// task's template and a generic one) × the answer sets (the task's verbalisers, its label
// names when they differ, synonym sets for common label words such as negative/positive;
// choices: the choice text and the letter). Duplicates are removed.
std::vector<PromptTemplate> template_pool(const tasks::Task& task);

struct TemplateSearch {
  std::vector<double> dev_scores;  // one per template
  size_t best = 0;                 // the highest score; ties go to the earlier template
  double mean = 0.0;
  double std = 0.0;                // sample standard deviation over the pool (0 for one template)
};

// Scores every template and picks the best.
TemplateSearch search_templates(const std::vector<PromptTemplate>& pool,
                                const std::function<double(const PromptTemplate&)>& dev_score);

MethodInfo prompt_method_info();

}  // namespace tb::methods
