// ParamStore: one value block, one gradient block for the trainable subset.
#include "harness/core/params.h"

#include <algorithm>
#include <cstring>

#include "harness/base/errors.h"
#include "harness/core/dtype.h"

namespace tb {

int64_t Param::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

const std::uint16_t* Param::bf16_data() const {
  TB_CHECK(bf16, "parameter " << name << " has no bf16 copy (enable_bf16 first)");
  if (bf16_version != version) {
    convert_to_bf16(bf16, data, numel());
    bf16_version = version;
  }
  return bf16;
}

size_t ParamStore::declare(std::string name, std::vector<int64_t> shape, bool decay) {
  TB_CHECK(!values_, "declare after allocate: " << name);
  TB_CHECK(find(name) == nullptr, "duplicate parameter " << name);
  for (auto d : shape) TB_CHECK(d > 0, "parameter " << name << " has a non-positive dim");
  Param p;
  p.name = std::move(name);
  p.shape = std::move(shape);
  p.decay = decay;
  params_.push_back(std::move(p));
  return params_.size() - 1;
}

void ParamStore::allocate() {
  TB_CHECK(!values_, "ParamStore allocated twice");
  const int64_t n = num_params();
  values_ = std::make_unique<float[]>(static_cast<size_t>(std::max<int64_t>(n, 1)));
  float* p = values_.get();
  for (auto& q : params_) {
    q.data = p;
    p += q.numel();
  }
}

void ParamStore::set_trainable(const std::function<bool(const Param&)>& pred, bool trainable) {
  for (auto& p : params_)
    if (pred(p)) p.trainable = trainable;
}

void ParamStore::set_all_trainable(bool trainable) {
  for (auto& p : params_) p.trainable = trainable;
}

void ParamStore::allocate_grads() {
  grad_count_ = 0;
  for (const auto& p : params_)
    if (p.trainable) grad_count_ += p.numel();
  grads_.reset();
  if (grad_count_ > 0) grads_ = std::make_unique<float[]>(static_cast<size_t>(grad_count_));
  float* g = grads_.get();
  for (auto& p : params_) {
    if (p.trainable) {
      p.grad = g;
      g += p.numel();
    } else {
      p.grad = nullptr;
    }
    p.grad_fresh = p.grad != nullptr;
  }
}

void ParamStore::zero_grads() {
  if (grads_) std::memset(grads_.get(), 0, static_cast<size_t>(grad_count_) * sizeof(float));
  for (auto& p : params_) p.grad_fresh = p.grad != nullptr;
}

void ParamStore::enable_bf16(const std::function<bool(const Param&)>& pred) {
  TB_CHECK(values_, "enable_bf16 before allocate");
  int64_t n = 0;
  for (const auto& p : params_)
    if (pred(p)) n += p.numel();
  if (bf16_ && n == bf16_count_) {
    bool same = true;
    for (const auto& p : params_) same = same && (pred(p) == (p.bf16 != nullptr));
    if (same) return;
  }
  disable_bf16();
  if (n == 0) return;
  bf16_ = std::make_unique<std::uint16_t[]>(static_cast<size_t>(n));
  bf16_count_ = n;
  std::uint16_t* b = bf16_.get();
  for (auto& p : params_)
    if (pred(p)) {
      p.bf16 = b;
      p.bf16_version = ~std::uint64_t{0};
      b += p.numel();
    }
}

void ParamStore::disable_bf16() {
  for (auto& p : params_) {
    p.bf16 = nullptr;
    p.bf16_version = ~std::uint64_t{0};
  }
  bf16_.reset();
  bf16_count_ = 0;
}

void ParamStore::touch_all() {
  for (auto& p : params_) p.touch();
}

ParamSnapshot ParamStore::snapshot(const std::function<bool(const Param&)>& pred) const {
  ParamSnapshot s;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    if (!pred(p)) continue;
    s.index.push_back(i);
    s.values.emplace_back(p.data, p.data + p.numel());
  }
  return s;
}

ParamSnapshot ParamStore::snapshot_trainable() const {
  return snapshot([](const Param& p) { return p.trainable; });
}

void ParamStore::restore(const ParamSnapshot& snap) {
  TB_CHECK(snap.index.size() == snap.values.size(), "malformed parameter snapshot");
  for (size_t k = 0; k < snap.index.size(); ++k) {
    TB_CHECK(snap.index[k] < params_.size(), "snapshot of another store (index " << snap.index[k] << ")");
    Param& p = params_[snap.index[k]];
    TB_CHECK(static_cast<int64_t>(snap.values[k].size()) == p.numel(), "snapshot mismatch at " << p.name);
    std::copy(snap.values[k].begin(), snap.values[k].end(), p.data);
    p.touch();
  }
}

Param* ParamStore::find(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

const Param* ParamStore::find(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

Param& ParamStore::get(const std::string& name) {
  if (Param* p = find(name)) return *p;
  throw ModelError("no parameter named '" + name + "'");
}

const Param& ParamStore::get(const std::string& name) const {
  if (const Param* p = find(name)) return *p;
  throw ModelError("no parameter named '" + name + "'");
}

int64_t ParamStore::num_params() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.numel();
  return n;
}

int64_t ParamStore::num_trainable() const {
  int64_t n = 0;
  for (const auto& p : params_)
    if (p.trainable) n += p.numel();
  return n;
}

}  // namespace tb
