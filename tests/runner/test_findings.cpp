// Tests of the report's Findings (reports/findings.h) and the soft prompt vs prefix table on
// the hand-written records of tests/runner/fixtures/results, merged into one directory, and
// on copies of them changed record by record: every sentence's numbers come from the
// records (change a record, the sentence changes), overlapping error bars say "cannot be
// told apart", a missing or failed method says "not enough runs", and the rendered report
// opens with the section. Also the chart labels that used to cross their SVG's edge.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <regex>
#include <set>

#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/findings.h"
#include "reports/report.h"
#include "reports/results.h"
#include "reports/svg.h"
#include "tests/runner/test_report_cli.h"

namespace tb::test {
namespace {

using nlohmann::json;
using reports::ReportFinding;
using reports::Question;
using reports::Verdict;

class Findings : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    results_ = dir_ / "results";
    fs::create_directories(results_);
    for (const char* shard : {"shard0", "shard1"})
      for (const auto& e : fs::directory_iterator(fixtures() / "results" / shard))
        fs::copy_file(e.path(), results_ / e.path().filename());
  }

  json record(const std::string& file) { return read_json(results_ / file); }
  void put(const json& j) {
    write_json(results_ / (j["run_info"]["method"].get<std::string>() + "__" + j["run_info"]["task"].get<std::string>() +
                           "__seed" + std::to_string(j["run_info"]["seed"].get<uint64_t>()) + ".json"),
               j);
  }
  void remove(const std::string& file) { fs::remove(results_ / file); }
  void set_metric(const std::string& file, const std::string& metric, double value, double stderr_) {
    auto j = record(file);
    j["metrics"][metric]["value"] = value;
    j["metrics"][metric]["stderr"] = stderr_;
    put(j);
  }

  reports::ResultSet results() { return reports::read_results({results_}, runner::method_names(methods::registry())); }
  std::vector<ReportFinding> findings() { return reports::derive_findings(reports::build_sections(results())); }

  // The findings of one question (and task, when given).
  std::vector<ReportFinding> of(Question q, const std::string& task = "*") {
    std::vector<ReportFinding> out;
    for (const auto& f : findings())
      if (f.question == q && (task == "*" || f.task == task)) out.push_back(f);
    return out;
  }
  ReportFinding one(Question q, const std::string& task, const std::string& starts_with) {
    for (const auto& f : of(q, task))
      if (f.text.rfind(starts_with, 0) == 0) return f;
    std::string all;
    for (const auto& f : of(q)) all += "\n  " + f.text;
    ADD_FAILURE() << "no finding starting with '" << starts_with << "' on '" << task << "' among:" << all;
    return {};
  }

  // A prefix tuning run on sentiment-imdb, made from the soft prompt one.
  json prefix_imdb() {
    auto j = record("softprompt__sentiment-imdb__seed0.json");
    j["run_info"]["method"] = "prefix";
    j["run_info"]["options"] = {{"tokens", "10"}, {"reparam", "false"}};
    j["run_info"]["config_hash"] = "7e1a00c2b5d94f31";
    j["train_info"]["trainable_params"] = 61440;
    j["train_info"]["details"] = {{"prefix_tokens", 10}, {"reparam", false}, {"trained_params", 61440}, {"stored_params", 61440}};
    j["train_info"]["train_seconds"] = 84.0;
    j["train_info"]["peak_rss_bytes"] = 99614720;
    j["train_info"]["adaptation_bytes"] = 245760;
    j["metrics"]["accuracy"] = {{"value", 0.80}, {"stderr", 0.02}, {"higher_is_better", true}};
    j["metrics"]["forgetting"] = {{"value", 0.8}, {"stderr", 0.05}, {"higher_is_better", false}};
    return j;
  }

  // An in-context learning run on spam (8 demonstrations), made from the majority one.
  json icl_spam(double accuracy, double stderr_) {
    auto j = record("majority__spam__seed0.json");
    j["run_info"]["method"] = "icl";
    j["run_info"]["options"] = {{"k", "0,1,4,8"}, {"selection", "balanced"}};
    j["run_info"]["config_hash"] = "c0ffee00d15ea5e1";
    j["train_info"]["details"] = {{"prediction_k", 8}, {"k", {0, 1, 4, 8}}};
    j["metrics"]["accuracy"] = {{"value", accuracy}, {"stderr", stderr_}, {"higher_is_better", true}};
    return j;
  }

  fs::path results_;
};

// The fixture numbers, worked by hand: sentiment-imdb has two seeds of lora (0.77, 0.75;
// stderrs 0.023, 0.024) and full (0.79, 0.77; the same stderrs), spam one of each (lora
// 0.95 ± 0.006, full 0.97 ± 0.005).
TEST_F(Findings, LoraVsFullStatesTheQualityRatioAndCostFractionsOfTheRecords) {
  const double imdb_se = std::sqrt(0.0235 * 0.0235 + 0.0002 / 2);  // results.h: sqrt(mean_se² + s²/n)
  const double r_imdb = 0.76 / 0.78, r_spam = 0.95 / 0.97;
  const double se_imdb = r_imdb * std::hypot(imdb_se / 0.76, imdb_se / 0.78);
  const double se_spam = r_spam * std::hypot(0.006 / 0.95, 0.005 / 0.97);
  const double memory = (100663296.0 / 190840832 + 157286400.0 / 272629760) / 2;
  const double time = (63.5 / 118.5 + 330.0 / 610) / 2;

  const auto head = one(Question::lora_vs_full, "", "LoRA");
  EXPECT_NEAR(head.number("quality_ratio"), (r_imdb + r_spam) / 2, 1e-12);
  EXPECT_NEAR(head.number("quality_ratio_stderr"), std::hypot(se_imdb, se_spam) / 2, 1e-12);
  EXPECT_NEAR(head.number("trainable_fraction"), 16384.0 / 5312768, 1e-12);
  EXPECT_NEAR(head.number("peak_memory_fraction"), memory, 1e-12);
  EXPECT_NEAR(head.number("train_time_fraction"), time, 1e-12);
  EXPECT_EQ(head.number("tasks"), 2);
  // The tasks disagree (LoRA trails on spam beyond the error bars, cannot be told apart on
  // sentiment-imdb): the headline says so task by task instead of calling the two level on
  // average (97.69% is within the mean ratio's stderr of 100%), which spam's sentence contradicts.
  EXPECT_EQ(head.text,
            "LoRA's quality against full finetuning differs by task: it trails it on spam and cannot be told apart from "
            "it on sentiment-imdb (per task below); the mean over tasks, 98% ± 2.3% of full finetuning's accuracy, "
            "averages tasks that disagree; it uses 0.31% of its trainable parameters, 55% of its peak memory and 54% of "
            "its training time (2 tasks, 1–2 seeds).");
  EXPECT_EQ(head.verdict, Verdict::measured);
  EXPECT_EQ(head.text.find("level"), std::string::npos) << head.text;

  // Widen spam's error bars: now every task says "cannot be told apart", and so does the headline.
  set_metric("lora__spam__seed0.json", "accuracy", 0.95, 0.02);
  set_metric("full__spam__seed0.json", "accuracy", 0.96, 0.02);
  const auto level = one(Question::lora_vs_full, "", "LoRA");
  EXPECT_EQ(level.verdict, Verdict::indistinguishable);
  EXPECT_EQ(level.text.rfind("LoRA and full finetuning cannot be told apart on every one of the 2 tasks: LoRA reaches 98% ± ", 0),
            0u)
      << level.text;
  EXPECT_NEAR(level.number("quality_ratio"), (0.76 / 0.78 + 0.95 / 0.96) / 2, 1e-12);

  // LoRA below full finetuning on both tasks beyond the error bars: the headline says it trails on every task.
  set_metric("lora__spam__seed0.json", "accuracy", 0.90, 0.006);
  set_metric("full__spam__seed0.json", "accuracy", 0.97, 0.005);
  for (const char* f : {"lora__sentiment-imdb__seed0.json", "lora__sentiment-imdb__seed1.json"})
    set_metric(f, "accuracy", 0.60, 0.01);
  const auto gap = one(Question::lora_vs_full, "", "LoRA");
  EXPECT_EQ(gap.verdict, Verdict::measured);
  EXPECT_EQ(gap.text.rfind("LoRA trails full finetuning on every one of the 2 tasks: LoRA reaches ", 0), 0u) << gap.text;
  EXPECT_EQ(one(Question::lora_vs_full, "sentiment-imdb", "LoRA").text.rfind("LoRA trails full finetuning", 0), 0u);
}

// No headline may contradict a per-task sentence: over many random record changes, a
// headline that says LoRA beats / trails / cannot be told apart "on every one" of the tasks
// has per-task sentences that all say the same, and one that says the tasks differ has
// per-task sentences of more than one kind.
TEST_F(Findings, TheLoraHeadlineNeverContradictsThePerTaskSentences) {
  std::mt19937 g(16);
  std::uniform_real_distribution<double> acc(0.6, 0.99), se(0.002, 0.03);
  for (int trial = 0; trial < 25; ++trial) {
    for (const char* f : {"lora__spam__seed0.json", "full__spam__seed0.json", "lora__sentiment-imdb__seed0.json",
                          "lora__sentiment-imdb__seed1.json", "full__sentiment-imdb__seed0.json", "full__sentiment-imdb__seed1.json"})
      set_metric(f, "accuracy", acc(g), se(g));
    const auto all = of(Question::lora_vs_full);
    std::set<std::string> kinds;
    std::string head;
    for (const auto& f : all) {
      if (f.task.empty()) head = f.text;
      else if (f.text.find("cannot be told apart") != std::string::npos) kinds.insert("level");
      else if (f.text.find(" beats ") != std::string::npos) kinds.insert("beats");
      else if (f.text.find(" trails ") != std::string::npos) kinds.insert("trails");
    }
    SCOPED_TRACE(head);
    ASSERT_FALSE(head.empty());
    if (kinds.size() > 1) {
      EXPECT_EQ(head.rfind("LoRA's quality against full finetuning differs by task", 0), 0u);
    } else {
      const std::string k = *kinds.begin();
      const std::string expected = k == "level" ? "LoRA and full finetuning cannot be told apart on every one"
                                   : k == "beats" ? "LoRA beats full finetuning on every one"
                                                  : "LoRA trails full finetuning on every one";
      EXPECT_EQ(head.rfind(expected, 0), 0u);
    }
  }
}

TEST_F(Findings, LoraVsFullPerTaskSaysWhetherTheErrorBarsOverlap) {
  // imdb: 0.760 vs 0.780, each ± 0.0255: the bars overlap.
  const auto imdb = one(Question::lora_vs_full, "sentiment-imdb", "LoRA and full finetuning cannot be told apart");
  EXPECT_EQ(imdb.verdict, Verdict::indistinguishable);
  EXPECT_EQ(imdb.text, "LoRA and full finetuning cannot be told apart on sentiment-imdb: accuracy 0.760 ± 0.026 vs "
                       "0.780 ± 0.026 (2 seeds each).");
  // spam: 0.950 ± 0.006 vs 0.970 ± 0.005 are 0.020 apart, more than 0.011.
  const auto spam = one(Question::lora_vs_full, "spam", "LoRA trails full finetuning");
  EXPECT_EQ(spam.verdict, Verdict::measured);
  EXPECT_EQ(spam.text, "LoRA trails full finetuning on spam: accuracy 0.950 ± 0.006 vs 0.970 ± 0.005, a difference of "
                       "-0.020 ± 0.008 (1 seed each).");
  EXPECT_NEAR(spam.number("difference_stderr"), std::hypot(0.006, 0.005), 1e-12);

  // Widen spam's error bars: now they overlap and the sentence says so.
  set_metric("lora__spam__seed0.json", "accuracy", 0.95, 0.02);
  set_metric("full__spam__seed0.json", "accuracy", 0.96, 0.02);
  const auto level = one(Question::lora_vs_full, "spam", "LoRA and full finetuning cannot be told apart");
  EXPECT_EQ(level.verdict, Verdict::indistinguishable);
  EXPECT_EQ(level.text, "LoRA and full finetuning cannot be told apart on spam: accuracy 0.950 ± 0.020 vs 0.960 ± 0.020 "
                        "(1 seed each).");
}

TEST_F(Findings, ChangingARecordChangesTheSentence) {
  const auto before = one(Question::lora_vs_full, "", "LoRA");
  // LoRA on spam: twice the peak memory, lower accuracy, slower.
  auto j = record("lora__spam__seed0.json");
  j["train_info"]["peak_rss_bytes"] = 2 * 157286400;
  j["train_info"]["train_seconds"] = 610.0;
  j["metrics"]["accuracy"]["value"] = 0.485;
  put(j);
  const auto after = one(Question::lora_vs_full, "", "LoRA");
  EXPECT_NE(before.text, after.text);
  EXPECT_NEAR(after.number("peak_memory_fraction"), (100663296.0 / 190840832 + 2 * 157286400.0 / 272629760) / 2, 1e-12);
  EXPECT_NEAR(after.number("train_time_fraction"), (63.5 / 118.5 + 1.0) / 2, 1e-12);
  EXPECT_NEAR(after.number("quality_ratio"), (0.76 / 0.78 + 0.485 / 0.97) / 2, 1e-12);
  EXPECT_NE(after.text.find("the mean over tasks, 74% ± "), std::string::npos) << after.text;
  EXPECT_NE(after.text.find("84% of its peak memory and 77% of its training time"), std::string::npos) << after.text;
  EXPECT_NE(one(Question::lora_vs_full, "spam", "LoRA trails").text.find("accuracy 0.485 ± 0.006 vs 0.970 ± 0.005"),
            std::string::npos);
}

TEST_F(Findings, AMissingOrFailedMethodSaysThereAreNotEnoughRuns) {
  remove("full__spam__seed0.json");
  auto spam = one(Question::lora_vs_full, "spam", "Not enough runs");
  EXPECT_EQ(spam.verdict, Verdict::not_enough_runs);
  EXPECT_EQ(spam.text, "Not enough runs to compare LoRA with full finetuning on spam: no full finetuning run.");
  // The headline then covers the one task left.
  EXPECT_EQ(one(Question::lora_vs_full, "", "LoRA and full finetuning cannot be told apart on sentiment-imdb: LoRA reaches ")
                .number("tasks"),
            1);

  // A failed run is not a run to compare.
  auto j = read_json(fixtures() / "results" / "shard1" / "full__spam__seed0.json");
  j["train_info"]["status"] = "diverged";
  j["train_info"]["message"] = "loss became NaN at step 12";
  j["metrics"] = json::object();
  put(j);
  spam = one(Question::lora_vs_full, "spam", "Not enough runs");
  EXPECT_EQ(spam.text, "Not enough runs to compare LoRA with full finetuning on spam: full finetuning has no successful run "
                       "(1 diverged).");

  // No full run anywhere, nor LoRA: one sentence says so.
  for (const char* f : {"full__spam__seed0.json", "full__sentiment-imdb__seed0.json", "full__sentiment-imdb__seed1.json"})
    remove(f);
  EXPECT_EQ(one(Question::lora_vs_full, "", "Not enough runs").text,
            "Not enough runs to compare LoRA with full finetuning: no task has a successful run of both.");
  for (const char* f : {"lora__spam__seed0.json", "lora__sentiment-imdb__seed0.json", "lora__sentiment-imdb__seed1.json"})
    remove(f);
  const auto none = of(Question::lora_vs_full);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].text, "Not enough runs to compare LoRA with full finetuning: the records hold no lora run and no full run.");
}

TEST_F(Findings, SoftPromptVsPrefixComparesWhatTheyTrainQualityForgettingAndCost) {
  // The fixtures: soft prompt on sentiment-imdb only, prefix failed on spam.
  EXPECT_EQ(one(Question::softprompt_vs_prefix, "sentiment-imdb", "Not enough").text,
            "Not enough runs to compare soft prompt with prefix tuning on sentiment-imdb: no prefix tuning run.");
  EXPECT_EQ(one(Question::softprompt_vs_prefix, "spam", "Not enough").text,
            "Not enough runs to compare soft prompt with prefix tuning on spam: no soft prompt tuning run and prefix "
            "tuning has no successful run (1 error).");

  put(prefix_imdb());
  const auto q = one(Question::softprompt_vs_prefix, "sentiment-imdb", "On sentiment-imdb");
  EXPECT_EQ(q.verdict, Verdict::measured);
  EXPECT_EQ(q.text,
            "On sentiment-imdb soft prompt tuning trains 5120 parameters (input embeddings: 20 virtual tokens before every "
            "input) and prefix tuning 61.4k (keys and values of every block: 10 positions per block); prefix tuning does "
            "better: accuracy 0.800 ± 0.020 vs 0.660 ± 0.027 (+0.140 ± 0.034).");
  const auto f = one(Question::softprompt_vs_prefix, "sentiment-imdb", "Prefix tuning changes held-out LM loss");
  EXPECT_EQ(f.verdict, Verdict::measured);
  EXPECT_EQ(f.text, "Prefix tuning changes held-out LM loss by +0.800 ± 0.050 nats/token vs +0.000 ± 0.000 for soft prompt "
                    "tuning on sentiment-imdb.");
  const auto c = one(Question::softprompt_vs_prefix, "sentiment-imdb", "Training cost");
  EXPECT_NEAR(c.number("train_time_ratio"), 84.0 / 70.0, 1e-12);
  EXPECT_EQ(c.text, "Training cost on sentiment-imdb: prefix tuning takes 1.2× the training time (1:24 vs 1:10), 1.1× the "
                    "peak memory (95.0 MiB vs 90.0 MiB) and an adaptation of 240 KiB vs 20.0 KiB of soft prompt tuning.");

  // Overlapping quality and forgetting bars.
  auto j = prefix_imdb();
  j["metrics"]["accuracy"] = {{"value", 0.67}, {"stderr", 0.03}, {"higher_is_better", true}};
  j["metrics"]["forgetting"] = {{"value", 0.004}, {"stderr", 0.005}, {"higher_is_better", false}};
  put(j);
  EXPECT_NE(one(Question::softprompt_vs_prefix, "sentiment-imdb", "On sentiment-imdb")
                .text.find("; their accuracy cannot be told apart: 0.660 ± 0.027 vs 0.670 ± 0.030."),
            std::string::npos);
  EXPECT_EQ(one(Question::softprompt_vs_prefix, "sentiment-imdb", "Prefix tuning changes").verdict, Verdict::indistinguishable);

  // No forgetting measured for one side.
  j["metrics"].erase("forgetting");
  put(j);
  EXPECT_EQ(one(Question::softprompt_vs_prefix, "sentiment-imdb", "Forgetting").text,
            "Forgetting cannot be compared on sentiment-imdb: no held-out LM loss change (forgetting) in the runs of prefix tuning.");
}

TEST_F(Findings, TheSideBySideTableHoldsTheRecordsNumbers) {
  put(prefix_imdb());
  const auto rows = reports::prompt_tuning_rows(reports::build_sections(results()));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].task, "sentiment-imdb");
  EXPECT_EQ(rows[0].method, "softprompt");
  EXPECT_EQ(rows[0].acts_on, "input embeddings: 20 virtual tokens before every input");  // from options.tokens
  EXPECT_EQ(rows[0].trainable_params, 5120);
  EXPECT_EQ(rows[0].adaptation_bytes, 20480);
  EXPECT_EQ(rows[0].train_seconds, 70.0);
  EXPECT_NEAR(rows[0].value, 0.66, 1e-12);
  EXPECT_EQ(rows[1].method, "prefix");
  EXPECT_EQ(rows[1].acts_on, "keys and values of every block: 10 positions per block");  // from details.prefix_tokens
  EXPECT_EQ(rows[1].trainable_params, 61440);
  EXPECT_NEAR(rows[1].forgetting, 0.8, 1e-12);
  EXPECT_EQ(rows[2].task, "spam");
  EXPECT_EQ(rows[2].status, "error");
  EXPECT_TRUE(std::isnan(rows[2].value));

  const auto r = run("report " + shell_quote(results_.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto md = slurp(results_ / "report.md");
  EXPECT_NE(md.find("| sentiment-imdb | softprompt | input embeddings: 20 virtual tokens before every input | 1/1 | 5120 | "
                    "accuracy 0.6600 ± 0.0270 | 0.0000 ± 0.0000 | 1:10 | 90.0 MiB | 20.0 KiB |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| sentiment-imdb | prefix | keys and values of every block: 10 positions per block | 1/1 | 61.4k | "
                    "accuracy 0.8000 ± 0.0200 | 0.8000 ± 0.0500 | 1:24 | 95.0 MiB | 240 KiB |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| spam | prefix | keys and values of every block: 10 positions per block | 0/1 |  | error |"), std::string::npos)
      << md;
  const auto h = slurp(results_ / "report.html");
  EXPECT_NE(h.find("<table class=\"side-by-side\" id=\"softprompt-vs-prefix\">"), std::string::npos);
  EXPECT_NE(h.find("<tr class=\"prompt-row\" data-method=\"prefix\" data-task=\"sentiment-imdb\">"), std::string::npos);
}

TEST_F(Findings, InContextLearningVsFinetuningAtTheRecordsTrainingSetSize) {
  // No icl record at all.
  auto all = of(Question::icl_vs_finetuning);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].text, "Not enough runs to compare in-context learning with finetuning: the records hold no icl run "
                         "(methods that train parameters ran on sentiment-imdb and spam).");

  // icl on spam below the best finetuned method (full 0.970 ± 0.005) beyond the bars; lora
  // (0.950 ± 0.006) is above it too, head (0.910) below.
  put(icl_spam(0.93, 0.01));
  const auto below = one(Question::icl_vs_finetuning, "spam", "Finetuning beats");
  EXPECT_EQ(below.verdict, Verdict::measured);
  EXPECT_EQ(below.text, "Finetuning beats in-context learning (8 demonstrations) on spam with 600 labelled examples: full "
                        "reaches accuracy 0.970 ± 0.005 vs 0.930 ± 0.010 (+0.040 ± 0.011); 2 of 3 methods that train "
                        "parameters score above in-context learning beyond the error bars (full and lora).");
  EXPECT_EQ(below.number("labelled_examples"), 600);
  EXPECT_EQ(one(Question::icl_vs_finetuning, "sentiment-imdb", "Not enough").text,
            "Not enough runs to compare in-context learning with finetuning on sentiment-imdb with 600 labelled examples: "
            "no in-context learning run.");

  put(icl_spam(0.985, 0.005));
  EXPECT_EQ(one(Question::icl_vs_finetuning, "spam", "In-context learning").text,
            "In-context learning (8 demonstrations) beats every method that trains parameters on spam with 600 labelled "
            "examples: accuracy 0.985 ± 0.005 vs 0.970 ± 0.005 for the best of them, full (+0.015 ± 0.007).");

  put(icl_spam(0.965, 0.01));
  const auto level = one(Question::icl_vs_finetuning, "spam", "In-context learning");
  EXPECT_EQ(level.verdict, Verdict::indistinguishable);
  EXPECT_EQ(level.text, "In-context learning (8 demonstrations) and the best method that trains parameters, full, cannot be "
                        "told apart on spam with 600 labelled examples: accuracy 0.965 ± 0.010 vs 0.970 ± 0.005.");

  // A record's train_size, when it carries one, is the number of labelled examples.
  auto j = icl_spam(0.93, 0.01);
  j["run_info"]["train_size"] = 32;
  put(j);
  for (const char* m : {"full", "lora", "head"}) {
    auto t = record(std::string(m) + "__spam__seed0.json");
    t["run_info"]["train_size"] = 32;
    put(t);
  }
  EXPECT_EQ(one(Question::icl_vs_finetuning, "spam", "Finetuning beats").number("labelled_examples"), 32);
}

TEST_F(Findings, TheReportOpensWithTheFindings) {
  put(prefix_imdb());
  put(icl_spam(0.93, 0.01));
  const auto r = run("report " + shell_quote(results_.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto md = slurp(results_ / "report.md");
  const auto at = md.find("\n## Findings\n");
  ASSERT_NE(at, std::string::npos) << md;
  EXPECT_LT(at, md.find("\n## sentiment-imdb\n"));
  EXPECT_NE(md.find("### How close does LoRA come to full finetuning?\n\n- LoRA's quality against full finetuning differs by task"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("### Soft prompt tuning vs prefix tuning\n\n- On sentiment-imdb soft prompt tuning trains"), std::string::npos)
      << md;
  EXPECT_NE(md.find("### In-context learning vs finetuning\n\n- Not enough runs to compare in-context learning with finetuning "
                    "on sentiment-imdb"),
            std::string::npos)
      << md;
  // Every finding is in both files, the HTML one with its question and verdict.
  const auto h = slurp(results_ / "report.html");
  EXPECT_LT(h.find("<section id=\"findings\">"), h.find("<section class=\"task\""));
  const auto all = findings();
  for (const auto& f : all) {
    EXPECT_NE(md.find("- " + f.text + "\n"), std::string::npos) << f.text;
    EXPECT_NE(h.find("data-verdict=\"" + reports::verdict_id(f.verdict) + "\" data-task=\"" + f.task + "\">" +
                     reports::xml_escape(f.text) + "</li>"),
              std::string::npos)
        << f.text;
  }
  for (const auto q : reports::questions())
    EXPECT_NE(h.find("<ul class=\"findings\" id=\"findings-" + reports::question_id(q) + "\">"), std::string::npos);
}

// Labels stay inside their chart: the largest peak-RSS marker of a memory chart (its value
// is written right of it), a long method name, and the top point of a Pareto chart.
double estimated_width(const std::string& s, double px) {
  double n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return 0.62 * px * n;
}

void expect_text_inside(const std::string& svg) {
  const std::regex vb(R"re(viewBox="0 0 ([0-9.]+) ([0-9.]+)")re");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, vb));
  const double W = std::stod(m[1]), H = std::stod(m[2]);
  const std::regex txt(R"re(<text x="(-?[0-9.]+)" y="(-?[0-9.]+)" text-anchor="(\w+)" class="([\w-]+)"([^>]*)>([^<]*))re");
  int n = 0;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), txt); it != std::sregex_iterator(); ++it, ++n) {
    const double x = std::stod((*it)[1]), y = std::stod((*it)[2]);
    const std::string anchor = (*it)[3], cls = (*it)[4], extra = (*it)[5], s = (*it)[6];
    if (extra.find("rotate(") != std::string::npos) continue;  // the vertical axis title
    const double w = estimated_width(s, cls == "value" ? 10 : 11);
    const double x0 = anchor == "start" ? x : anchor == "end" ? x - w : x - w / 2;
    EXPECT_GE(x0, 0) << s;
    EXPECT_LE(x0 + w, W) << s;
    EXPECT_GE(y - 10, 0) << s;
    EXPECT_LE(y, H) << s;
  }
  EXPECT_GT(n, 3);
}

TEST(ReportSvgLabels, EveryLabelFitsItsChart) {
  // A tick step of 50 for 0..170: the axis used to end at 150, so the 170 MiB marker and its
  // label were drawn past the right edge.
  const auto t = reports::nice_ticks(0, 170, 5);
  EXPECT_GE(t.back(), 170);
  reports::BarChart mem{"memory-x", "stacked", "MiB", {"lora (rank=16, alpha=32, sites=q,k,v,o,up,down)", "full"},
                        {"weights", "gradients", "optimizer_state", "activations", "kv_cache", "index"},
                        {"#111", "#222", "#333", "#444", "#555", "#666"},
                        {{20, 0, 0, 5, 0, 0}, {20, 20, 40, 60, 0, 0}}, {60.0, 170.0}, "peak RSS",
                        +[](double v) { return reports::format_fixed(v, 1) + " MiB"; }};
  expect_text_inside(reports::svg_bars(mem));
  reports::BarChart tput{"throughput-x", "grouped", "tokens/s", {"feature", "prefix (tokens=10, reparam=true)"},
                         {"train", "eval"}, {"#4e79a7", "#f28e2b"}, {{123456789, 2000}, {170, 1700000}}, {}, "", nullptr};
  expect_text_inside(reports::svg_bars(tput));
  const std::vector<reports::ScatterPoint> pts = {{"head", 514, 0.71, true, "#111", ""},
                                                  {"full finetuning with a long label", 5312768, 0.97, true, "#222", ""},
                                                  {"majority", 0, 0.5, false, "#333", ""}};
  const auto pareto = reports::svg_scatter_logx("pareto-x", "trainable parameters", "accuracy", pts, true);
  expect_text_inside(pareto);
  // The top point lies inside the plot (y at or below the plot's top edge, 28).
  const std::regex circle(R"re(<circle class="point on-front" cx="([0-9.]+)" cy="(-?[0-9.]+)")re");
  for (auto it = std::sregex_iterator(pareto.begin(), pareto.end(), circle); it != std::sregex_iterator(); ++it)
    EXPECT_GE(std::stod((*it)[2]), 28.0);
  std::vector<reports::LineSeries> lines;
  for (int s = 0; s < 24; ++s)
    lines.push_back({"lora (rank=16, alpha=32, sites=q,k,v,o) seed " + std::to_string(s), "#123", {{0, 2.0}, {10, 1.0 + s}}});
  expect_text_inside(reports::svg_lines("loss-x", "step", "loss", lines));
  // The learning curve: long method labels and level labels in its legend, points at both
  // ends of the log axis, a crossover mark at the largest size.
  std::vector<reports::CurveLine> curve = {
      {"lora (rank=16, alpha=32, sites=q,k,v,o,up,down)", "#111", {{8, 0.5, 0.05, ""}, {2000, 0.97, 0.01, ""}}},
      {"icl", "#222", {{8, 0.6, 0.02, ""}, {2000, 0.66, 0.02, ""}}}};
  const std::vector<reports::CurveLevel> levels = {{"zero-shot 0.5500 ± 0.0200", "#555", 0.55, 0.02},
                                                   {"majority 0.5000 ± 0.0300", "#999", 0.5, 0.03},
                                                   {"best icl (k=4, n=2000)", "#222", 0.66, 0.02}};
  const std::vector<reports::CurveMark> marks = {{"#111", "lora first beats", 128, 2000, 0.97}};
  const auto lc = reports::svg_learning_curve("curve-x", "labelled train examples", "accuracy", curve, levels, marks);
  expect_text_inside(lc);
  EXPECT_NE(lc.find("class=\"crossover-mark\""), std::string::npos);
}

}  // namespace
}  // namespace tb::test
