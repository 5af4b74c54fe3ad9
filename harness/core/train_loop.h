// The one training loop of every trainer (the classification trainer, the reward model,
// PPO, DPO, the feature classifier's logistic regression and pretraining). It owns the AdamW
// optimizer over the given parameter stores, the learning-rate schedule (linear warm-up, then
// cosine, linear or constant), gradient clipping (AdamW's global-norm clip), divergence
// detection (a non-finite loss stops training with status "diverged" and a message), the
// progress callback, the loss curve, the best-so-far snapshot (ParamStore::snapshot /
// restore, which keep derived bf16 copies consistent) and the time, tokens and model FLOPs
// of every step.
//
// A trainer calls step() once per optimizer step with a callback that computes the loss and
// the gradients of that step (the loop zeroes the gradients before it), and evaluate() with
// a dev metric whenever it evaluates (best-snapshot selection and early stopping).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "harness/core/model.h"
#include "harness/core/optimizer.h"
#include "harness/core/params.h"

namespace tb {

// One point of a loss curve: the step count after the step, its loss, and the dev metric
// at evaluation points.
struct LossPoint {
  int64_t step;
  double loss;
  double dev_metric = NAN;
};

// The cost of one unit of work (a training step, an evaluation batch).
struct UnitCost {
  double seconds = 0.0;
  int64_t tokens = 0;
  double flops = 0.0;
};

struct TrainLoopConfig {
  AdamWConfig adamw;       // adamw.lr is the peak learning rate; clip_norm 0 = no clipping
  Schedule schedule = Schedule::constant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // for the decay; 0 = constant after warm-up
  float min_lr_ratio = 0.0f;
  int64_t patience = 0;     // evaluations without improvement before stopping; 0 = never stop
  bool record_curve = true; // append every step's loss to loss_curve()
  // The divergence message: "<what>: non-finite <loss_name> at step N" ("<what>: " only
  // when set).
  std::string what;
  std::string loss_name = "training loss";
};

// What a step callback returns: the step's mean loss and the real tokens it consumed.
struct StepResult {
  double loss = 0.0;
  int64_t tokens = 0;
};

class TrainLoop {
 public:
  // `stores`: the trainable parameters, optimised as AdamW::for_stores does (a decay group
  // and a no-decay group). `flops_of`: the model whose Model::flop_count() meters each step
  // (nullptr: the steps' FLOPs are 0, or the trainer adds them with add_flops()).
  TrainLoop(std::vector<ParamStore*> stores, const TrainLoopConfig& cfg, const Model* flops_of = nullptr);
  // The same with explicit parameter groups.
  TrainLoop(std::vector<ParamStore*> stores, std::vector<ParamGroup> groups, const TrainLoopConfig& cfg,
            const Model* flops_of = nullptr);

  // One optimizer step: zero the stores' gradients, run `fn` (loss and gradients), then, when
  // the loss is finite, one AdamW update at the scheduled learning rate; a non-finite loss
  // sets status "diverged" (no update) and returns false, and so does a non-finite gradient
  // (the global norm AdamW returns: with clipping no update is made; without, the update
  // has been made, and the caller stops as for any divergence). TB_FAULT_NAN_GRAD_STEP=N
  // (a fault a test injects) writes a NaN into the first trainable gradient of step N
  // (0-based, as divergence messages count steps) after `fn`. The step's seconds (the callback
  // and the update, plus TB_TEST_STEP_DELAY_MS when set), tokens and model FLOPs are
  // recorded as one unit. `progress` is called after the update.
  bool step(const std::function<StepResult()>& fn);
  // A dev metric (higher is better) at an evaluation point: marks it on the loss curve
  // (unless !on_curve: a stand-in score such as the epoch number when there is no dev set),
  // snapshots the trainable values when it is the best so far, and returns true when
  // training should stop (patience evaluations without improvement).
  bool evaluate(double metric, bool on_curve = true);
  // Writes the best snapshot back (no-op when evaluate() never ran).
  void restore_best();

  bool diverged() const { return status_ == "diverged"; }
  const std::string& status() const { return status_; }
  const std::string& message() const { return message_; }
  int64_t steps() const { return steps_; }
  double best_metric() const { return best_; }
  // Index of the evaluation that gave the best metric (-1 = none yet).
  int64_t best_evaluation() const { return best_eval_; }
  int64_t evaluations() const { return evals_; }
  float last_lr() const { return last_lr_; }
  float last_grad_norm() const { return last_norm_; }

  std::vector<LossPoint>& loss_curve() { return curve_; }
  const std::vector<LossPoint>& loss_curve() const { return curve_; }
  // Every step's cost, in order, and their totals.
  const std::vector<UnitCost>& units() const { return units_; }
  UnitCost total() const;
  // Charges FLOPs the model counter does not see (work on another model) to the last step.
  void add_flops(double flops);

  AdamW& optimizer() { return opt_; }
  // Resuming: continue the schedule and the step count from `steps`.
  void set_steps(int64_t steps);
  // A run sized after its first steps (pretraining by time) sets the schedule's length then.
  void set_total_steps(int64_t total) { cfg_.total_steps = total; }
  std::function<void(int64_t step, int64_t total, double loss)> progress;
  // Called with every step's cost as it is recorded (a diverged step's too).
  std::function<void(const UnitCost&)> on_unit;

  // The learning rate of step `step` (0-based) under the loop's schedule.
  float lr_at(int64_t step) const;
  // TB_TEST_STEP_DELAY_MS as an integer (0 when unset): a test-only slowdown slept inside
  // every timed step.
  static int64_t injected_step_delay_ms();
  // TB_FAULT_NAN_GRAD_STEP as an integer (-1 when unset: no fault).
  static int64_t injected_nan_grad_step();

 private:
  // The injected fault of TB_FAULT_NAN_GRAD_STEP.
  void poison_first_gradient();

  std::vector<ParamStore*> stores_;
  TrainLoopConfig cfg_;
  const Model* flops_of_;
  AdamW opt_;
  int64_t delay_ms_;
  int64_t nan_grad_step_;
  int64_t steps_ = 0;
  std::string status_ = "ok";
  std::string message_;
  std::vector<LossPoint> curve_;
  std::vector<UnitCost> units_;
  std::vector<ParamSnapshot> best_snapshot_;
  double best_ = -INFINITY;
  int64_t best_eval_ = -1, evals_ = 0, since_best_ = 0;
  float last_lr_ = 0.0f, last_norm_ = 0.0f;
};

}  // namespace tb
