// AdamW with decoupled weight decay, bias correction, parameter groups and global-norm
// gradient clipping, matching torch.optim.AdamW + torch.nn.utils.clip_grad_norm_ step for
// step. Moments are allocated only for trainable parameters (a frozen parameter has no
// gradient and is skipped), so optimizer memory is 2 floats per trainable value.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "harness/core/params.h"

namespace tb {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // applied to params with decay == true (see no_decay_lr_groups)
  float clip_norm = 0.0f;     // global L2 norm clip; 0 disables
};

// A group shares a learning rate and a weight decay; lr of a group = base lr × lr_scale.
struct ParamGroup {
  std::vector<Param*> params;
  float lr_scale = 1.0f;
  float weight_decay = 0.0f;
};

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamWConfig& cfg);
  // Convenience: every trainable param of the stores, split into a decay group
  // (Param::decay) with cfg.weight_decay and a no-decay group with 0.
  static AdamW for_stores(const std::vector<ParamStore*>& stores, const AdamWConfig& cfg);

  // One update with base learning rate `lr` (the schedule's value for this step). Clips
  // gradients first when clip_norm > 0. Returns the global gradient norm before clipping.
  // A non-finite gradient is returned as a non-finite norm: with clipping (the norm is
  // known before the update) nothing is updated and the step is not counted; without, the
  // update has already been applied when the norm is known, so the caller must stop
  // (TrainLoop records the run diverged). Throws tb::Error if a param in a group has no
  // gradient buffer.
  float step(float lr);

  int64_t steps() const { return t_; }
  int64_t state_bytes() const { return static_cast<int64_t>(state_count_) * 2 * 4; }
  // Global L2 norm of all gradients in the optimizer's groups.
  double grad_norm() const;

  // Checkpointing: the moments as one flat array each (params in group order) and the
  // step count, so a resumed run continues bit for bit.
  int64_t state_count() const { return static_cast<int64_t>(state_count_); }
  float* first_moments() { return m_.get(); }
  float* second_moments() { return v_.get(); }
  void set_steps(int64_t t) { t_ = t; }

 private:
  std::vector<ParamGroup> groups_;
  AdamWConfig cfg_;
  int64_t t_ = 0;
  size_t state_count_ = 0;
  std::unique_ptr<float[]> m_, v_;
};

// Learning-rate schedules of the training loop: linear warm-up, then cosine or linear
// decay to min_ratio × lr at total_steps.
enum class Schedule { constant, cosine, linear };
float schedule_lr(Schedule kind, float lr, int64_t step, int64_t warmup, int64_t total_steps,
                  float min_ratio = 0.0f);

}  // namespace tb
