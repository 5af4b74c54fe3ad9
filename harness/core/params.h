// Parameters: named tensors living in one allocation per store (llm.c style), each with a
// trainable flag. A frozen parameter owns no gradient buffer (grad == nullptr) and gets no
// optimizer state, which is how every method that freezes the base model saves its memory:
// gradients are allocated, contiguously, only for what trains.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tb {

struct Param {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;   // view into the store's value buffer
  float* grad = nullptr;   // view into the store's gradient buffer; null when frozen
  bool trainable = false;
  bool decay = true;       // member of the weight-decay group (matrices); false for
                           // biases, norms and (by convention) embeddings
  int64_t numel() const;
};

class ParamStore {
 public:
  ParamStore() = default;
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;
  ParamStore(ParamStore&&) = default;
  ParamStore& operator=(ParamStore&&) = default;

  // Declares a parameter; only valid before allocate(). Returns its index.
  size_t declare(std::string name, std::vector<int64_t> shape, bool decay);
  // Allocates (zeroed) values for every declared parameter, in one block.
  void allocate();
  bool allocated() const { return static_cast<bool>(values_); }

  // Sets the trainable flag of every parameter whose name matches `pred`; then call
  // allocate_grads(). Flags may change between runs on the same store.
  void set_trainable(const std::function<bool(const Param&)>& pred, bool trainable);
  void set_all_trainable(bool trainable);
  // (Re)allocates one gradient block for the trainable parameters only, zeroed; frozen
  // parameters get grad == nullptr.
  void allocate_grads();
  void zero_grads();

  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  Param& at(size_t i) { return params_.at(i); }
  const Param& at(size_t i) const { return params_.at(i); }
  // Throws tb::ModelError naming the parameter when it does not exist.
  Param& get(const std::string& name);
  const Param& get(const std::string& name) const;
  Param* find(const std::string& name);
  const Param* find(const std::string& name) const;

  int64_t num_params() const;
  int64_t num_trainable() const;
  int64_t value_bytes() const { return num_params() * 4; }
  int64_t grad_bytes() const { return grad_count_ * 4; }

 private:
  std::vector<Param> params_;
  std::unique_ptr<float[]> values_;
  std::unique_ptr<float[]> grads_;
  int64_t grad_count_ = 0;
};

}  // namespace tb
