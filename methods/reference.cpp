// The reference rows as methods, so they are run, recorded and summarised like any other:
//   majority — always the most frequent train label (classification, multiple choice);
//   lexicon  — the AFINN-165 lexicon, for negative/positive sentiment tasks only.
// Both wrap tasks/reference.h; they train nothing, store nothing and leave the model alone.
#include <algorithm>

#include "methods/method.h"
#include "tasks/reference.h"

namespace tb::methods {
namespace {

class ReferenceMethod : public Method {
 public:
  explicit ReferenceMethod(std::string reference) : reference_(std::move(reference)) {}
  void prepare(RunContext&) override {}
  std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    // The majority of the run's own train split (dev when there is none): the --limit subset.
    const auto labels = tasks::reference_predict(ctx.task, reference_, examples, ctx.train.empty() ? ctx.dev : ctx.train);
    std::vector<Prediction> out(labels.size());
    for (std::size_t i = 0; i < labels.size(); ++i) out[i].label = labels[i];
    return out;
  }
  int64_t trainable_params() const override { return 0; }
  int64_t save_adaptation(const std::filesystem::path&) const override { return 0; }

 private:
  std::string reference_;  // the name tasks/reference.h knows it by
};

bool reference_applies(const tasks::Task& task, const std::string& reference) {
  const auto m = tasks::reference_methods(task);
  return std::find(m.begin(), m.end(), reference) != m.end();
}

}  // namespace

MethodInfo majority_method_info() {
  MethodInfo info;
  info.name = "majority";
  info.summary = "reference row: always predicts the most frequent train label";
  info.make = [] { return std::make_unique<ReferenceMethod>("majority"); };
  info.supports = {tasks::OutputType::classify, tasks::OutputType::multiple_choice};
  info.applies = [](const tasks::Task& t) { return reference_applies(t, "majority"); };
  return info;
}

MethodInfo lexicon_method_info() {
  MethodInfo info;
  info.name = "lexicon";
  info.summary = "reference row: AFINN-165 sentiment lexicon (negative/positive tasks only)";
  info.make = [] { return std::make_unique<ReferenceMethod>("afinn"); };
  info.supports = {tasks::OutputType::classify};
  info.applies = [](const tasks::Task& t) { return reference_applies(t, "afinn"); };
  return info;
}

}  // namespace tb::methods
