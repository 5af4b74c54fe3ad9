// AdamW and learning-rate schedules. The update order (decay, moments, bias-corrected
// step) is torch.optim.AdamW's, so the golden tests can compare losses step for step.
#include "harness/core/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "harness/base/errors.h"
#include "harness/core/dtype.h"

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

namespace {

// Squares are summed in fp32 within blocks of kBlock values and the block sums in double:
// vectorised at full fp32 width, and accurate to about kBlock·2^-24 relative in the worst
// case (torch's clip_grad_norm_ sums in fp32 throughout).
constexpr int64_t kBlock = 2048;

double sum_squares(const float* g, int64_t n) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n >= (1 << 16))
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t i = lo; i < hi; ++i) part += g[i] * g[i];
    s += part;
  }
  return s;
}

struct AdamWScalars {
  float clip, b1, b2, eps, inv_bc2_sqrt, step_size, decay;
};

// One parameter's update; kShadow also writes the bf16 copy. Returns the sum of squares of
// the (unclipped) gradient, accumulated as in sum_squares().
template <bool kShadow>
double adamw_update(float* w, const float* gr, float* m, float* v, std::uint16_t* w16, int64_t n,
                    const AdamWScalars& k) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n >= (1 << 14))
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t i = lo; i < hi; ++i) {
      const float g = gr[i];
      part += g * g;
      const float gi = g * k.clip;
      const float mi = k.b1 * m[i] + (1.0f - k.b1) * gi;
      const float vi = k.b2 * v[i] + (1.0f - k.b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) * k.inv_bc2_sqrt + k.eps;
      const float wi = w[i] * k.decay - k.step_size * mi / denom;
      w[i] = wi;
      if constexpr (kShadow) w16[i] = f32_to_bf16(wi);
    }
    s += part;
  }
  return s;
}

}  // namespace

double AdamW::grad_norm() const {
  double sum = 0.0;
  for (const auto& g : groups_)
    for (const Param* p : g.params) sum += sum_squares(p->grad, p->numel());
  return std::sqrt(sum);
}

float AdamW::step(float lr) {
  // With clipping the norm must be known before the update (its own pass); without, the
  // update loop sums the squares as it goes, so the step reads each gradient once.
  const bool clipping = cfg_.clip_norm > 0.0f;
  const double norm_before = clipping ? grad_norm() : 0.0;
  if (clipping && !std::isfinite(norm_before)) return static_cast<float>(norm_before);  // no update
  ++t_;
  float clip = 1.0f;
  if (clipping) {
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied if < 1.
    const double coef = cfg_.clip_norm / (norm_before + 1e-6);
    if (coef < 1.0) clip = static_cast<float>(coef);
  }
  const double bc1 = 1.0 - std::pow(double(cfg_.beta1), double(t_));
  const double bc2 = 1.0 - std::pow(double(cfg_.beta2), double(t_));
  AdamWScalars k{clip, cfg_.beta1, cfg_.beta2, cfg_.eps, static_cast<float>(1.0 / std::sqrt(bc2)), 0.0f, 1.0f};
  double sumsq = 0.0;
  size_t off = 0;
  for (const auto& g : groups_) {
    const float glr = lr * g.lr_scale;
    k.step_size = static_cast<float>(glr / bc1);
    k.decay = 1.0f - glr * g.weight_decay;
    for (Param* p : g.params) {
      TB_CHECK(p->grad, "parameter " << p->name << " lost its gradient buffer");
      const int64_t n = p->numel();
      float* m = m_.get() + off;
      float* v = v_.get() + off;
      // Mixed precision: the bf16 copy is refreshed in the same pass.
      sumsq += p->bf16 ? adamw_update<true>(p->data, p->grad, m, v, p->bf16, n, k)
                       : adamw_update<false>(p->data, p->grad, m, v, nullptr, n, k);
      p->touch();
      if (p->bf16) p->bf16_version = p->version;
      off += static_cast<size_t>(n);
    }
  }
  return static_cast<float>(clipping ? norm_before : std::sqrt(sumsq));
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
