// `head` — selective finetuning: a new classification head on the frozen body. With
// --head.unfreeze-last K the last K blocks and the final norm train too; backward then runs
// only through those blocks (the model stops below the lowest trainable layer), and with
// K = 0 no backward runs through the body at all.
#include <algorithm>
#include <memory>
#include <string>

#include "harness/base/errors.h"
#include "methods/trainer.h"

namespace tb::methods {

namespace {

// The last K blocks' parameters and, with K > 0, the final norm.
bool in_last_blocks(const Param& p, const Model& model, int64_t K) {
  const int l = model.layer_of(p);
  if (l >= 0) return l >= model.config().n_layer - K;
  if (K == 0) return false;
  const auto norm = model.final_norm_params();
  return std::find(norm.begin(), norm.end(), &p) != norm.end();
}

class HeadMethod final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    const auto cfg = TrainConfig::from(ctx.options);
    const auto& mc = ctx.model.config();
    const int64_t K = ctx.options.integer("unfreeze-last");
    if (K < 0 || K > mc.n_layer)
      throw InputError("--head.unfreeze-last must be in 0.." + std::to_string(mc.n_layer) + ", got " + std::to_string(K));
    if (cfg.objective == "lm" && K == 0)
      throw InputError("--head.objective lm trains nothing unless --head.unfreeze-last > 0");
    auto& params = ctx.model.params();
    params.set_all_trainable(false);
    params.set_trainable([&](const Param& p) { return in_last_blocks(p, ctx.model, K); }, true);
    params.allocate_grads();
    unfrozen_ = K;
    trainer_ = std::make_unique<ClassificationTrainer>(ctx, cfg, Adaptation{});
    trainer_->fit();
    model_ = &ctx.model;
    ctx.meter.details["unfreeze_last"] = K;
  }

  std::vector<Prediction> predict(RunContext&, const std::vector<tasks::Example>& examples) override {
    return trainer_->predict(examples);
  }

  int64_t trainable_params() const override {
    return trainer_->head_params() + (model_ ? model_->params().num_trainable() : 0);
  }

  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    std::vector<const ParamStore*> stores = {&model_->params()};
    if (trainer_->head()) stores.push_back(&trainer_->head()->store());
    return save_trainable(dir, stores);
  }

  bool changes_base() const override { return unfrozen_ > 0; }

 private:
  std::unique_ptr<ClassificationTrainer> trainer_;
  Model* model_ = nullptr;
  int64_t unfrozen_ = 0;
};

}  // namespace

MethodInfo head_method_info() {
  auto opts = training_option_specs(TrainDefaults{3e-3, 6, 16, 0.0, "head"});
  opts.insert(opts.begin(), {"unfreeze-last", "0", "also train the last K blocks and the final norm"});
  return {"head",
          "selective finetuning: a new classification head on the frozen body (optionally the last K blocks)",
          opts,
          [] { return std::make_unique<HeadMethod>(); },
          {tasks::OutputType::classify, tasks::OutputType::multiple_choice},
          {},
          true};
}

}  // namespace tb::methods
