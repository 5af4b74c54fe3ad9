// Hard prompt tuning: the pool has at least 8 distinct templates (instructions × formats ×
// answer sets), the search picks the template with the best dev score on a rigged pool
// (ties to the earlier one) with the right mean and std, and the method applies the dev
// winner to test, records every template's dev score and stores the winner.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include "methods/lm_scoring.h"
#include "methods/prompt.h"
#include "tests/methods/method_fixture.h"

using tb::testing::MethodFixture;
namespace m = tb::methods;

TEST(Prompt, PoolHasAtLeastEightDistinctTemplates) {
  MethodFixture f(tb::Family::llama);
  const auto pool = m::template_pool(*f.task);
  EXPECT_GE(pool.size(), 8u);
  std::set<std::pair<std::string, std::string>> seen;
  std::set<std::string> names, answer_sets;
  for (const auto& t : pool) {
    EXPECT_TRUE(seen.emplace(t.full(), t.answers.name).second) << t.name;
    EXPECT_TRUE(names.insert(t.name).second) << t.name;
    answer_sets.insert(t.answers.name);
    EXPECT_NE(t.full().find("{text}"), std::string::npos) << t.name;
    EXPECT_EQ(t.answers.verbalisers.size(), f.task->label_names().size()) << t.name;
  }
  // bad/good (the task's), negative/positive (its label names) and the synonym sets.
  EXPECT_TRUE(answer_sets.count("bad/good"));
  EXPECT_TRUE(answer_sets.count("negative/positive"));
  EXPECT_TRUE(answer_sets.count("terrible/great"));
  // Every template renders with the task's placeholders.
  for (const auto& t : pool) {
    const std::string r = f.task->render(f.test[0], t.full());
    EXPECT_NE(r.find(f.test[0].text), std::string::npos) << t.name;
    EXPECT_EQ(r.find('{'), std::string::npos) << t.name;
  }
}

TEST(Prompt, SearchPicksTheBestDevScoreOfARiggedPool) {
  MethodFixture f(tb::Family::llama);
  const auto pool = m::template_pool(*f.task);
  ASSERT_GE(pool.size(), 8u);
  const size_t rigged = pool.size() - 3;
  std::vector<double> planted;
  for (size_t i = 0; i < pool.size(); ++i) planted.push_back(i == rigged ? 0.9 : 0.4 + 0.01 * static_cast<double>(i % 5));
  auto score_of = [&](const m::PromptTemplate& t) {
    for (size_t i = 0; i < pool.size(); ++i)
      if (pool[i].name == t.name) return planted[i];
    ADD_FAILURE() << "unknown template " << t.name;
    return 0.0;
  };
  const auto s = m::search_templates(pool, score_of);
  EXPECT_EQ(s.best, rigged);
  EXPECT_EQ(s.dev_scores, planted);
  double mean = 0.0;
  for (double x : planted) mean += x / static_cast<double>(planted.size());
  double ss = 0.0;
  for (double x : planted) ss += (x - mean) * (x - mean);
  EXPECT_NEAR(s.mean, mean, 1e-12);
  EXPECT_NEAR(s.std, std::sqrt(ss / static_cast<double>(planted.size() - 1)), 1e-12);

  // Ties go to the earlier template.
  const auto tie = m::search_templates(pool, [&](const m::PromptTemplate& t) { return t.name == pool[2].name || t.name == pool[5].name ? 1.0 : 0.0; });
  EXPECT_EQ(tie.best, 2u);
}

TEST(Prompt, MethodAppliesTheDevWinnerToTest) {
  MethodFixture f(tb::Family::gpt2);
  const auto info = m::prompt_method_info();
  auto ctx = f.context(info, {{"dev-max", "20"}});
  auto method = info.make();
  method->prepare(ctx);
  const auto& d = f.meter.details;
  const auto& list = d["templates"];
  ASSERT_GE(list.size(), 8u);
  EXPECT_EQ(d["pool_size"], list.size());
  EXPECT_EQ(d["selection_examples"], 20);
  size_t best = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    const double acc = list[i]["dev_accuracy"].get<double>();
    EXPECT_GE(acc, 0.0);
    EXPECT_LE(acc, 1.0);
    if (acc > list[best]["dev_accuracy"].get<double>()) best = i;
  }
  EXPECT_EQ(d["best_template"], list[best]["name"]);
  EXPECT_DOUBLE_EQ(d["best_dev_accuracy"].get<double>(), list[best]["dev_accuracy"].get<double>());
  EXPECT_GE(d["pool_dev_accuracy_std"].get<double>(), 0.0);

  // Predictions are the winner's: recompute them from its template and answers.
  const auto preds = method->predict(ctx, f.test);
  const auto pool = m::template_pool(*f.task);
  const m::PromptTemplate* win = nullptr;
  for (const auto& t : pool)
    if (t.name == d["best_template"]) win = &t;
  ASSERT_NE(win, nullptr);
  m::PromptSet set;
  for (const auto& ex : f.test) set.add(*f.model, *f.tok, *f.task, ex, win->full(), win->answers);
  m::LmCost cost;
  const auto ll = m::score_candidates(*f.model, set.contexts, set.candidates, 16, cost);
  ASSERT_EQ(preds.size(), f.test.size());
  for (size_t i = 0; i < preds.size(); ++i) EXPECT_EQ(preds[i].label, m::argmax(ll[i])) << i;

  EXPECT_EQ(method->trainable_params(), 0);
  const auto bytes = method->save_adaptation(f.dir);
  EXPECT_EQ(bytes, static_cast<int64_t>(std::filesystem::file_size(f.dir / "prompt_template.json")));
  std::ifstream in(f.dir / "prompt_template.json");
  const auto saved = nlohmann::json::parse(in);
  EXPECT_EQ(saved["name"], d["best_template"]);
  EXPECT_EQ(saved["template"], win->full());
}

TEST(Prompt, MultipleChoicePoolScoresLettersAndChoiceText) {
  MethodFixture f(tb::Family::llama);
  // A multiple-choice task written as a user task.
  {
    std::ofstream q(f.dir / "mc.jsonl");
    for (int i = 0; i < 12; ++i)
      q << nlohmann::json{{"id", "q" + std::to_string(i)}, {"text", "the film was good " + std::to_string(i)},
                          {"choices", {"good", "bad", "boring"}}, {"answer", i % 3 == 0 ? "bad" : "good"},
                          {"split", i < 6 ? "train" : (i < 9 ? "dev" : "test")}}
               .dump()
        << "\n";
    std::ofstream ini(f.dir / "mc.ini");
    ini << "name = mc\nversion = 1\ndescription = pick the word\noutput_type = multiple_choice\n\n[data]\n"
        << "source = mc.jsonl\nid_field = id\nlabel_field = answer\nchoices_field = choices\n\n"
        << "[prompt]\ntemplate = Q: {text}\\n{choices}\\nA:\n\n[metrics]\nnames = accuracy\n";
  }
  tb::tasks::Registry reg = tb::tasks::Registry::from_dir(f.dir);
  const auto task = reg.load("mc");
  const auto pool = m::template_pool(*task);
  EXPECT_GE(pool.size(), 8u);
  bool letters = false, text = false;
  for (const auto& t : pool) {
    letters |= t.answers.letters;
    text |= !t.answers.letters;
    EXPECT_NE(t.full().find("{choices}"), std::string::npos) << t.name;
  }
  EXPECT_TRUE(letters && text);
  const auto ex = task->split("test").at(0);
  m::AnswerSet l;
  l.letters = true;
  EXPECT_EQ(m::answer_texts(ex, l), (std::vector<std::string>{" A", " B", " C"}));
  EXPECT_EQ(m::answer_texts(ex, m::AnswerSet{}), (std::vector<std::string>{" good", " bad", " boring"}));
}
