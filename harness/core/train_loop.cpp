// The training loop (see train_loop.h).
#include "harness/core/train_loop.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <thread>

#include "harness/base/errors.h"

namespace tb {

TrainLoop::TrainLoop(std::vector<ParamStore*> stores, const TrainLoopConfig& cfg, const Model* flops_of)
    : stores_(std::move(stores)),
      cfg_(cfg),
      flops_of_(flops_of),
      opt_(AdamW::for_stores(stores_, cfg.adamw)),
      delay_ms_(injected_step_delay_ms()),
      nan_grad_step_(injected_nan_grad_step()) {}

TrainLoop::TrainLoop(std::vector<ParamStore*> stores, std::vector<ParamGroup> groups, const TrainLoopConfig& cfg,
                     const Model* flops_of)
    : stores_(std::move(stores)),
      cfg_(cfg),
      flops_of_(flops_of),
      opt_(std::move(groups), cfg.adamw),
      delay_ms_(injected_step_delay_ms()),
      nan_grad_step_(injected_nan_grad_step()) {}

namespace {

// A test-only environment variable holding a non-negative integer (`unset` when unset).
int64_t env_count(const char* name, int64_t unset) {
  const char* v = std::getenv(name);
  if (!v || !*v) return unset;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n < 0 || errno == ERANGE)
    throw InputError(std::string(name) + " must be a non-negative integer, got '" + v + "'");
  return static_cast<int64_t>(n);
}

}  // namespace

int64_t TrainLoop::injected_step_delay_ms() { return env_count("TB_TEST_STEP_DELAY_MS", 0); }

int64_t TrainLoop::injected_nan_grad_step() { return env_count("TB_FAULT_NAN_GRAD_STEP", -1); }

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
  if (nan_grad_step_ == steps_) poison_first_gradient();
  const bool finite_loss = std::isfinite(r.loss);
  bool finite_grad = true;
  if (finite_loss) {
    last_lr_ = lr_at(steps_);
    last_norm_ = opt_.step(last_lr_);
    finite_grad = std::isfinite(last_norm_);
    if (finite_grad) ++steps_;
  }
  const bool finite = finite_loss && finite_grad;
  if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
  UnitCost u;
  u.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  u.tokens = r.tokens;
  u.flops = flops_of_ ? flops_of_->flop_count() - f0 : 0.0;
  units_.push_back(u);
  if (on_unit) on_unit(u);
  if (!finite) {
    status_ = "diverged";
    message_ = (cfg_.what.empty() ? "" : cfg_.what + ": ") + "non-finite " +
               (finite_loss ? std::string("gradient") : cfg_.loss_name) + " at step " + std::to_string(steps_);
    return false;
  }
  if (cfg_.record_curve) curve_.push_back({steps_, r.loss});
  if (progress) progress(steps_, cfg_.total_steps, r.loss);
  return true;
}

void TrainLoop::poison_first_gradient() {
  for (auto* s : stores_)
    for (auto& p : s->params())
      if (p.trainable && p.grad && p.numel() > 0) {
        p.grad[0] = std::numeric_limits<float>::quiet_NaN();
        p.grad_fresh = false;
        return;
      }
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
