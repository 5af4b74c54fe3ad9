// AdamW and learning-rate schedules. The update order (decay, moments, bias-corrected
// step) is torch.optim.AdamW's, so the golden tests can compare losses step for step.
#include "harness/core/optimizer.h"

#include <cmath>
#include <cstring>

#include "harness/core/common.h"

namespace tb {

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWConfig& cfg)
    : groups_(std::move(groups)), cfg_(cfg) {
  for (const auto& g : groups_)
    for (const Param* p : g.params) {
      TB_CHECK(p->trainable && p->grad, "AdamW given frozen parameter " << p->name);
      state_count_ += static_cast<size_t>(p->numel());
    }
  if (state_count_) {
    m_ = std::make_unique<float[]>(state_count_);
    v_ = std::make_unique<float[]>(state_count_);
  }
}

AdamW AdamW::for_stores(const std::vector<ParamStore*>& stores, const AdamWConfig& cfg) {
  ParamGroup decay{{}, 1.0f, cfg.weight_decay}, no_decay{{}, 1.0f, 0.0f};
  for (ParamStore* s : stores)
    for (auto& p : s->params())
      if (p.trainable) (p.decay ? decay : no_decay).params.push_back(&p);
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!no_decay.params.empty()) groups.push_back(std::move(no_decay));
  return AdamW(std::move(groups), cfg);
}

double AdamW::grad_norm() const {
  double sum = 0.0;
  for (const auto& g : groups_)
    for (const Param* p : g.params) {
      const int64_t n = p->numel();
      const float* gr = p->grad;
      double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
      for (int64_t i = 0; i < n; ++i) s += double(gr[i]) * gr[i];
      sum += s;
    }
  return std::sqrt(sum);
}

float AdamW::step(float lr) {
  ++t_;
  const double norm = grad_norm();
  float clip = 1.0f;
  if (cfg_.clip_norm > 0.0f) {
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied if < 1.
    const double coef = cfg_.clip_norm / (norm + 1e-6);
    if (coef < 1.0) clip = static_cast<float>(coef);
  }
  const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
  const double bc1 = 1.0 - std::pow(double(b1), double(t_));
  const double bc2 = 1.0 - std::pow(double(b2), double(t_));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  size_t off = 0;
  for (const auto& g : groups_) {
    const float glr = lr * g.lr_scale;
    const float step_size = static_cast<float>(glr / bc1);
    const float decay = 1.0f - glr * g.weight_decay;
    for (Param* p : g.params) {
      TB_CHECK(p->grad, "parameter " << p->name << " lost its gradient buffer");
      const int64_t n = p->numel();
      float* w = p->data;
      float* gr = p->grad;
      float* m = m_.get() + off;
      float* v = v_.get() + off;
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float gi = gr[i] * clip;
        w[i] *= decay;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
        w[i] -= step_size * m[i] / denom;
      }
      off += static_cast<size_t>(n);
    }
  }
  return static_cast<float>(norm);
}

float schedule_lr(Schedule kind, float lr, int64_t step, int64_t warmup, int64_t total_steps,
                  float min_ratio) {
  if (warmup > 0 && step < warmup) return lr * float(step + 1) / float(warmup);
  if (kind == Schedule::constant || total_steps <= warmup) return lr;
  double progress = double(step - warmup) / double(std::max<int64_t>(1, total_steps - warmup));
  progress = std::min(1.0, std::max(0.0, progress));
  const double floor = min_ratio * lr;
  if (kind == Schedule::linear) return static_cast<float>(floor + (lr - floor) * (1.0 - progress));
  return static_cast<float>(floor + (lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace tb
