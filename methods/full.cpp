// `full` — complete finetuning: every parameter of the model plus the classification head
// (or, with --full.objective lm, the LM head scoring the verbalisers).
#include <memory>

#include "methods/trainer.h"

namespace tb::methods {

namespace {

class FullMethod final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    const auto cfg = TrainConfig::from(ctx.options);
    ctx.model.params().set_all_trainable(true);
    ctx.model.params().allocate_grads();
    trainer_ = std::make_unique<ClassificationTrainer>(ctx, cfg, Adaptation{});
    trainer_->fit();
    model_ = &ctx.model;
  }

  std::vector<Prediction> predict(RunContext&, const std::vector<tasks::Example>& examples) override {
    return trainer_->predict(examples);
  }

  int64_t trainable_params() const override { return trainer_->head_params() + model_->params().num_trainable(); }

  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    std::vector<const ParamStore*> stores = {&model_->params()};
    if (trainer_->head()) stores.push_back(&trainer_->head()->store());
    return save_trainable(dir, stores);
  }

  bool changes_base() const override { return true; }

 private:
  std::unique_ptr<ClassificationTrainer> trainer_;
  Model* model_ = nullptr;
};

}  // namespace

MethodInfo full_method_info() {
  return {"full", "complete finetuning: every parameter plus the head",
          training_option_specs(TrainDefaults{3e-4, 4, 16, 0.01, "head"}),
          [] { return std::make_unique<FullMethod>(); },
          {tasks::OutputType::classify, tasks::OutputType::multiple_choice},
          {},
          true};
}

}  // namespace tb::methods
