// Tests of the task layer: spec validation names file and key, the standard registry loads
// with the documented split sizes, a user task loads from --task-file, metrics equal hand
// computations (bootstrap stderr included), reference rows, and `tunebench list tasks`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "datasets/afinn.h"
#include "harness/base/errors.h"
#include "tasks/metrics.h"
#include "tasks/reference.h"
#include "tasks/registry.h"

namespace {

using namespace tb::tasks;
const std::filesystem::path kSource = TB_SOURCE_DIR;
const std::filesystem::path kFixtures = kSource / "tests/data/fixtures";

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

const Registry& standard() {
  static const Registry r = Registry::standard();
  return r;
}

TEST(TaskSpec, ErrorsNameFileAndKey) {
  struct Case {
    const char* file;
    const char* expect;
  } cases[] = {
      {"unknown_key.ini", "unknown_key.ini: unknown key 'data.text_colum'"},
      {"unknown_type.ini", "unknown_type.ini: key 'output_type': unknown output type 'regression'"},
      {"unknown_metric.ini", "unknown_metric.ini: key 'metrics.names': unknown metric 'bleu'"},
      {"bad_placeholder.ini", "bad_placeholder.ini: key 'prompt.template': unknown placeholder {txt}"},
  };
  for (const auto& c : cases) {
    std::string msg = input_error([&] { parse_task_spec(kFixtures / c.file); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
}

TEST(TaskSpec, UnknownLabelNamesFileAndLine) {
  const TaskSpec s = parse_task_spec(kFixtures / "unknown_label.ini");
  std::string msg = input_error([&] { Task::load(s); });
  EXPECT_NE(msg.find("unknown_label.csv:4: unknown label 'neutral'"), std::string::npos) << msg;
}

TEST(TaskSpec, UserTaskFileLoadsTsvWithMappedLabels) {
  const auto file = kSource / "tasks/examples/tiny-sst2.ini";
  Registry reg;
  reg.add_file(file);
  auto t = reg.load("tiny-sst2");
  EXPECT_EQ(t->output_type(), OutputType::classify);
  std::size_t total = 0;
  std::set<std::string> texts;
  for (const char* sp : {"train", "dev", "test"}) {
    total += t->split(sp).size();
    for (const auto& e : t->split(sp)) {
      texts.insert(e.text);
      EXPECT_TRUE(e.label == 0 || e.label == 1);
    }
  }
  EXPECT_EQ(total, 10u);
  EXPECT_EQ(texts.size(), 10u);
  EXPECT_FALSE(t->split("test").empty());
  const auto& ex = t->split("train").at(0);
  EXPECT_EQ(t->render(ex), "Review: " + ex.text + "\nSentiment:");
  // A second spec with the same name is refused, naming both files.
  std::string msg = input_error([&] { reg.add_file(file); });
  EXPECT_NE(msg.find("already defined"), std::string::npos) << msg;
}

TEST(TaskRegistry, StandardSuiteSplitSizes) {
  const auto& reg = standard();
  for (const char* n : {"sentiment-amazon", "sentiment-imdb", "sentiment-yelp", "sentiment-cross", "spam",
                        "fortune-topics", "intent", "wordnet-define", "wordnet-define-open", "kjv-testament",
                        "sentiment-steer", "heldout-lm"})
    EXPECT_TRUE(reg.contains(n)) << n;
  auto size = [&](const char* task) {
    auto t = reg.load(task);
    return t->split("train").size() + t->split("dev").size() + t->split("test").size();
  };
  EXPECT_EQ(size("sentiment-amazon"), 1000u);
  EXPECT_EQ(size("spam"), 6046u);
  EXPECT_EQ(size("intent"), 206u);
  EXPECT_EQ(reg.load("intent")->split("test").size(), 106u);
  EXPECT_EQ(reg.load("sentiment-cross")->split("test").size(), 1000u);
  auto open = reg.load("wordnet-define-open");
  EXPECT_GT(open->documents().size(), 1000u);
  for (const auto& e : open->split("test")) {
    ASSERT_EQ(e.gold_docs.size(), 1u);
    EXPECT_EQ(e.gold_docs[0], "gcide:" + e.choices.at(static_cast<std::size_t>(e.label)));
  }
  // Hard ham is its own slice of spam's test split.
  int hard = 0;
  for (const auto& e : reg.load("spam")->split("test")) hard += e.slice == "hard_ham";
  EXPECT_GT(hard, 20);
  // heldout-lm is test-only text, with dedup units.
  auto h = reg.load("heldout-lm");
  EXPECT_TRUE(h->split("train").empty());
  for (const auto& e : h->split("test")) EXPECT_FALSE(e.units.empty());
}

TEST(TaskRegistry, EvalTextIndexCoversTestItemsAndHeldoutUnits) {
  const EvalTextIndex idx(standard());
  const auto& reg = standard();
  const auto& verse = reg.load("kjv-testament")->split("test").at(0).text;
  EXPECT_TRUE(idx.contains("  " + verse + " "));  // whitespace-normalised
  const auto& unit = reg.load("heldout-lm")->split("test").at(0).units.at(0);
  EXPECT_TRUE(idx.contains(unit));
  EXPECT_FALSE(idx.contains(reg.load("kjv-testament")->split("train").at(0).text));
  EXPECT_FALSE(idx.contains("a sentence that is in no task at all, surely"));
}

TEST(TaskGoldJudge, SentimentSteerRewardIsTheAddedAfinnScore) {
  auto t = standard().load("sentiment-steer");
  EXPECT_DOUBLE_EQ(t->gold_reward("The food was", "great and amazing"), 3 + 4);
  EXPECT_DOUBLE_EQ(t->gold_reward("It was not", "good"), -3);  // negation across the boundary
  std::string msg = input_error([&] { standard().load("spam")->gold_reward("a", "b"); });
  EXPECT_NE(msg.find("no gold judge"), std::string::npos);
}

EvalData labels(std::vector<int> gold, std::vector<int> pred) {
  EvalData d;
  d.gold = std::move(gold);
  d.pred = std::move(pred);
  return d;
}

TEST(Metrics, HandComputedValues) {
  // 3 of 4 correct.
  EXPECT_DOUBLE_EQ(metric_value("accuracy", labels({0, 0, 1, 1}, {0, 1, 1, 1})), 0.75);
  // Class 0: tp1 fp0 fn1 -> F1 2/3; class 1: tp2 fp1 fn0 -> 4/5; mean 11/15.
  EXPECT_NEAR(metric_value("macro_f1", labels({0, 0, 1, 1}, {0, 1, 1, 1})), 11.0 / 15.0, 1e-12);
  EvalData em;
  em.gold_text = {"Paris", "a  b", "x"};
  em.pred_text = {" Paris", "a b", "y"};
  EXPECT_NEAR(metric_value("exact_match", em), 2.0 / 3.0, 1e-12);
  EvalData r;
  r.ranked = {{"d1", "d2", "d3"}, {"d4", "d5", "d6"}, {"d7", "d8", "d9"}};
  r.relevant = {{"d2"}, {"d4", "d9"}, {"d0"}};
  EXPECT_NEAR(metric_value("recall@1", r), (0 + 0.5 + 0) / 3.0, 1e-12);
  EXPECT_NEAR(metric_value("recall@2", r), (1 + 0.5 + 0) / 3.0, 1e-12);
  EXPECT_NEAR(metric_value("mrr", r), (0.5 + 1 + 0) / 3.0, 1e-12);
  EvalData lm;
  lm.nll = {2.0, 6.0};
  lm.tokens = {1, 3};
  lm.nll_base = {1.0, 3.0};
  EXPECT_DOUBLE_EQ(metric_value("loss", lm), 2.0);
  EXPECT_NEAR(metric_value("perplexity", lm), std::exp(2.0), 1e-12);
  EXPECT_DOUBLE_EQ(metric_value("forgetting", lm), 1.0);
  EvalData v;
  v.value = {1, 0.5, 0, 1};
  EXPECT_DOUBLE_EQ(metric_value("win_rate", v), 0.625);
  EXPECT_DOUBLE_EQ(metric_value("kl", v), 0.625);
  EXPECT_TRUE(higher_is_better("accuracy"));
  EXPECT_TRUE(higher_is_better("recall@10"));
  EXPECT_FALSE(higher_is_better("loss"));
  EXPECT_FALSE(higher_is_better("kl"));
  EXPECT_FALSE(higher_is_better("forgetting"));
  EXPECT_THROW(higher_is_better("bleu"), tb::InputError);
  EXPECT_FALSE(is_metric("recall@0"));
}

// The bootstrap stderr of a mean equals, up to resampling noise, the closed form
// sqrt(p(1-p)/n); with 1000 resamples its relative error is about 1/sqrt(2*1000) ≈ 2.2%.
TEST(Metrics, BootstrapStderrMatchesClosedFormAndIsReproducible) {
  std::vector<int> gold(400, 1), pred(400, 1);
  for (int i = 0; i < 100; ++i) pred[static_cast<std::size_t>(i * 4)] = 0;  // p = 0.75
  const auto m = compute_metric("accuracy", labels(gold, pred));
  EXPECT_DOUBLE_EQ(m.value, 0.75);
  const double closed = std::sqrt(0.75 * 0.25 / 400.0);
  EXPECT_NEAR(m.std_error, closed, 0.08 * closed);
  EXPECT_EQ(compute_metric("accuracy", labels(gold, pred)).std_error, m.std_error);
  // Replicates are means of resamples: on {0, 1} data every one is a multiple of 1/n.
  const auto reps = bootstrap_replicates("accuracy", labels({1, 0}, {1, 1}));
  ASSERT_EQ(reps.size(), static_cast<std::size_t>(kBootstrapResamples));
  for (double r : reps) EXPECT_TRUE(r == 0.0 || r == 0.5 || r == 1.0);
}

// Hand-computed bootstrap: the first replicate of a 2-example set, from the documented
// SplitMix64 stream seeded with kBootstrapSeed.
TEST(Metrics, BootstrapDrawsFollowTheDocumentedStream) {
  std::uint64_t state = kBootstrapSeed;
  auto next = [&] {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  EvalData v;
  v.value = {10.0, 20.0, 40.0};
  const auto reps = bootstrap_replicates("mean_reward", v);
  for (int b = 0; b < 3; ++b) {
    double s = 0;
    for (int i = 0; i < 3; ++i) s += v.value[next() % 3];
    EXPECT_DOUBLE_EQ(reps[static_cast<std::size_t>(b)], s / 3.0) << "replicate " << b;
  }
}

// The one subset rule (--limit, held-out RLHF pairs, template search, majority): the n
// examples whose ids hash lowest, in split order — not the first n rows.
TEST(Subset, HashedSubsetIsTheLowestHashedIdsInSplitOrder) {
  std::vector<Example> v;
  for (int i = 0; i < 50; ++i) {
    Example e;
    e.id = "row" + std::to_string(i);
    e.text = "text " + std::to_string(i);
    e.label = i < 25 ? 0 : 1;  // sorted by label: the first rows share one class
    v.push_back(e);
  }
  const auto sub = hashed_subset(v, 10);
  ASSERT_EQ(sub.size(), 10u);
  std::vector<uint64_t> keys;
  for (const auto& e : v) keys.push_back(subset_key(e.id));
  std::vector<uint64_t> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  size_t last = 0;
  for (size_t j = 0; j < sub.size(); ++j) {
    const size_t i = static_cast<size_t>(std::stoi(sub[j].id.substr(3)));
    EXPECT_LE(keys[i], sorted[9]) << sub[j].id;
    if (j > 0) {
      EXPECT_GT(i, last) << "not in split order";
    }
    last = i;
  }
  int ones = 0;
  for (const auto& e : sub) ones += e.label;
  EXPECT_GT(ones, 0);
  EXPECT_LT(ones, 10);
  EXPECT_EQ(hashed_subset(v, 0).size(), 50u);
  EXPECT_EQ(hashed_subset(v, 80).size(), 50u);
}

TEST(Reference, MajorityAndAfinnRows) {
  const auto& reg = standard();
  auto yelp = reg.load("sentiment-yelp");
  EXPECT_EQ(reference_methods(*yelp), (std::vector<std::string>{"majority", "afinn"}));
  auto spam = reg.load("spam");
  EXPECT_EQ(reference_methods(*spam), std::vector<std::string>{"majority"});
  const auto& test = spam->split("test");
  auto pred = reference_predict(*spam, "majority", test, spam->split("train"));
  int ham = 0;
  for (const auto& e : test) ham += e.label == 0;
  auto ev = evaluate_predictions(*spam, test, pred);
  ASSERT_EQ(ev.overall.size(), 2u);
  EXPECT_DOUBLE_EQ(ev.overall[0].value, static_cast<double>(ham) / static_cast<double>(test.size()));
  EXPECT_GT(ev.overall[0].std_error, 0.0);
  EXPECT_DOUBLE_EQ(ev.slices.at("hard_ham")[0].value, 1.0);  // majority = ham
  EXPECT_THROW(reference_predict(*spam, "afinn", test, spam->split("train")), tb::InputError);
  // The majority is that of the examples the run trains on (its --limit subset), not of the
  // task's whole train split: a subset of spam only predicts spam.
  std::vector<Example> spam_rows;
  for (const auto& e : spam->split("train"))
    if (e.label == 1) spam_rows.push_back(e);
  ASSERT_FALSE(spam_rows.empty());
  EXPECT_EQ(reference_predict(*spam, "majority", test, spam_rows), std::vector<int>(test.size(), 1));

  // AFINN on all 1,000 sentences of each domain equals the npm package's own count.
  std::ifstream in(kSource / "tests/data/afinn_reference.json");
  const auto ref = nlohmann::json::parse(in)["accuracy"];
  for (const char* d : {"amazon", "imdb", "yelp"}) {
    auto t = reg.load(std::string("sentiment-") + d);
    std::vector<Example> all;
    for (const char* sp : {"train", "dev", "test"})
      all.insert(all.end(), t->split(sp).begin(), t->split(sp).end());
    auto ev2 = evaluate_predictions(*t, all, reference_predict(*t, "afinn", all, t->split("train")));
    EXPECT_NEAR(ev2.overall[0].value * 1000, ref[d]["correct"].get<double>(), 1e-9) << d;
  }
}

TEST(Cli, ListTasksPrintsSplitSizesAndTaskFile) {
  const std::string cmd = std::string(TB_CLI) + " list tasks --task-file " +
                          (kSource / "tasks/examples/tiny-sst2.ini").string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("intent"), std::string::npos) << out;
  EXPECT_NE(out.find("tiny-sst2"), std::string::npos) << out;
  EXPECT_NE(out.find("multiple_choice"), std::string::npos) << out;
  // spam: 6,046 in all; the row carries its three split sizes.
  const auto row = out.substr(out.find("\nspam "), 120);
  EXPECT_NE(row.find("classify"), std::string::npos) << row;

  const std::string bad = std::string(TB_CLI) + " list tasks --task-file " +
                          (kFixtures / "unknown_key.ini").string() + " 2>&1";
  p = popen(bad.c_str(), "r");
  out.clear();
  while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("unknown key 'data.text_colum'"), std::string::npos) << out;
}

}  // namespace
