// The training loop (see train_loop.h).
#include "harness/core/train_loop.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include "harness/base/errors.h"

namespace tb {

TrainLoop::TrainLoop(std::vector<ParamStore*> stores, const TrainLoopConfig& cfg, const Model* flops_of)
    : stores_(std::move(stores)),
      cfg_(cfg),
      flops_of_(flops_of),
      opt_(AdamW::for_stores(stores_, cfg.adamw)),
      delay_ms_(injected_step_delay_ms()) {}

TrainLoop::TrainLoop(std::vector<ParamStore*> stores, std::vector<ParamGroup> groups, const TrainLoopConfig& cfg,
                     const Model* flops_of)
    : stores_(std::move(stores)),
      cfg_(cfg),
      flops_of_(flops_of),
      opt_(std::move(groups), cfg.adamw),
      delay_ms_(injected_step_delay_ms()) {}

int64_t TrainLoop::injected_step_delay_ms() {
  const char* v = std::getenv("TB_TEST_STEP_DELAY_MS");
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long long ms = std::strtoll(v, &end, 10);
  if (*end != '\0' || ms < 0) throw InputError(std::string("TB_TEST_STEP_DELAY_MS must be a non-negative integer, got '") + v + "'");
  return static_cast<int64_t>(ms);
}

float TrainLoop::lr_at(int64_t step) const {
  return schedule_lr(cfg_.schedule, cfg_.adamw.lr, step, cfg_.warmup_steps, cfg_.total_steps, cfg_.min_lr_ratio);
}

void TrainLoop::set_steps(int64_t steps) {
  steps_ = steps;
  opt_.set_steps(steps);
}

bool TrainLoop::step(const std::function<StepResult()>& fn) {
  TB_CHECK(!diverged(), "TrainLoop::step after divergence");
  const auto t0 = std::chrono::steady_clock::now();
  const double f0 = flops_of_ ? flops_of_->flop_count() : 0.0;
  for (auto* s : stores_) s->zero_grads();
  const StepResult r = fn();
  const bool finite = std::isfinite(r.loss);
  if (finite) {
    last_lr_ = lr_at(steps_);
    last_norm_ = opt_.step(last_lr_);
    ++steps_;
  }
  if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
  UnitCost u;
  u.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  u.tokens = r.tokens;
  u.flops = flops_of_ ? flops_of_->flop_count() - f0 : 0.0;
  units_.push_back(u);
  if (on_unit) on_unit(u);
  if (!finite) {
    status_ = "diverged";
    message_ = (cfg_.what.empty() ? "" : cfg_.what + ": ") + "non-finite " + cfg_.loss_name + " at step " +
               std::to_string(steps_);
    return false;
  }
  if (cfg_.record_curve) curve_.push_back({steps_, r.loss});
  if (progress) progress(steps_, cfg_.total_steps, r.loss);
  return true;
}

bool TrainLoop::evaluate(double metric, bool on_curve) {
  const int64_t index = evals_++;
  if (on_curve && !curve_.empty()) curve_.back().dev_metric = metric;
  if (metric > best_) {
    best_ = metric;
    best_eval_ = index;
    since_best_ = 0;
    best_snapshot_.clear();
    for (auto* s : stores_) best_snapshot_.push_back(s->snapshot_trainable());
    return false;
  }
  ++since_best_;
  return cfg_.patience > 0 && since_best_ >= cfg_.patience;
}

void TrainLoop::restore_best() {
  if (best_snapshot_.empty()) return;
  TB_CHECK(best_snapshot_.size() == stores_.size(), "snapshot of another set of stores");
  for (size_t i = 0; i < stores_.size(); ++i) stores_[i]->restore(best_snapshot_[i]);
}

UnitCost TrainLoop::total() const {
  UnitCost t;
  for (const auto& u : units_) {
    t.seconds += u.seconds;
    t.tokens += u.tokens;
    t.flops += u.flops;
  }
  return t;
}

void TrainLoop::add_flops(double flops) {
  TB_CHECK(!units_.empty(), "TrainLoop::add_flops before the first step");
  units_.back().flops += flops;
}

}  // namespace tb
