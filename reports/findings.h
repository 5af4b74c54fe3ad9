// The report's Findings: sentences computed from the task sections of a set of results
// (results.h) that answer the three questions people run tunebench for —
//   lora-vs-full            how close LoRA comes to full finetuning, at what fraction of its
//                           trainable parameters, peak memory and training time;
//   softprompt-vs-prefix    what soft prompt and prefix tuning train, where they act, their
//                           quality, forgetting and training cost;
//   icl-vs-finetuning       whether in-context learning or a method that trains parameters
//                           does better on each task, at the number of labelled examples the
//                           records have.
// Every sentence carries the numbers it was computed from (ReportFinding::numbers), so a changed
// record changes the sentence. Uncertainties are the rows' stderrs (test-set bootstrap and
// seed spread, as results.h combines them); two values "cannot be told apart" when their
// ±1 stderr bars overlap, and a comparison without a successful run of both sides says that
// there are not enough runs instead. Where a method has several configurations on a task,
// the one with the best quality stands for it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "reports/results.h"

namespace tb::reports {

enum class Question { lora_vs_full, softprompt_vs_prefix, icl_vs_finetuning };
const std::vector<Question>& questions();
std::string question_id(Question q);     // "lora-vs-full", "softprompt-vs-prefix", "icl-vs-finetuning"
std::string question_title(Question q);  // the section heading

// What a sentence can say: a measured difference or ratio, that the error bars overlap, or
// that the records lack the runs to say anything.
enum class Verdict { measured, indistinguishable, not_enough_runs };
std::string verdict_id(Verdict v);  // "measured", "indistinguishable", "not-enough-runs"

// (Named apart from compare.h's Finding, a regression of `tunebench compare`.)
struct ReportFinding {
  Question question = Question::lora_vs_full;
  Verdict verdict = Verdict::measured;
  std::string task;  // "" when the sentence is about several tasks
  std::string text;
  std::vector<std::pair<std::string, double>> numbers;  // every number the sentence used, by name
  double number(const std::string& name) const;       // NAN when the sentence has no such number
};

// The findings of the sections, grouped by question in questions() order.
std::vector<ReportFinding> derive_findings(const std::vector<TaskSection>& sections);

// One row of the soft prompt vs prefix tuning table: a configuration of either method on a
// task, from the same rows as the task tables.
struct PromptTuningRow {
  std::string task, method, label, metric;
  std::string acts_on;  // where the trained values act, from the method and its details/options
  std::string status;
  int ok = 0, runs = 0;
  double trainable_params = NAN, stored_params = NAN;  // stored: what inference uses (prefix MLP dropped)
  double value = NAN, stderr_ = NAN, forgetting = NAN, forgetting_stderr = NAN;
  double train_seconds = NAN, adaptation_bytes = NAN, peak_rss_bytes = NAN;
};
// Every softprompt and prefix row of the sections, task by task (softprompt first).
std::vector<PromptTuningRow> prompt_tuning_rows(const std::vector<TaskSection>& sections);

}  // namespace tb::reports
