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
  // Mixed precision: a bf16 copy of `data` for the matmuls (view into the store's shadow
  // block, see ParamStore::enable_bf16), or null. `version` counts writes to `data` after
  // allocation; every writer (optimizer step, load, merge, init) calls touch(), and the
  // copy is refreshed when the version it was made from is older.
  std::uint16_t* bf16 = nullptr;
  std::uint64_t version = 0;
  // True while the gradient buffer holds the zeros of zero_grads()/allocate_grads() and
  // nothing has been accumulated into it: the model then writes a weight gradient with
  // beta = 0 instead of reading zeros back to add to them. Every writer of a gradient
  // clears it; readers never depend on it (the buffer really is zero).
  mutable bool grad_fresh = false;
  mutable std::uint64_t bf16_version = ~std::uint64_t{0};
  int64_t numel() const;
  void touch() { ++version; }
  // The bf16 copy, converted first when `data` changed since the last conversion.
  const std::uint16_t* bf16_data() const;
};

// Values of some parameters of one store (ParamStore::snapshot), for restoring later.
struct ParamSnapshot {
  std::vector<size_t> index;               // parameter indices in the store
  std::vector<std::vector<float>> values;  // their values, in the same order
  bool empty() const { return index.empty(); }
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

  // Gives every parameter matching `pred` a bf16 copy (one block for all of them), made
  // on first use; disable_bf16() frees it. Idempotent for the same predicate.
  void enable_bf16(const std::function<bool(const Param&)>& pred);
  void disable_bf16();
  int64_t bf16_bytes() const { return bf16_count_ * 2; }
  // Marks every value as changed (after a bulk write such as a load).
  void touch_all();

  // A copy of the values of the parameters matching `pred` (default: the trainable ones).
  ParamSnapshot snapshot(const std::function<bool(const Param&)>& pred) const;
  ParamSnapshot snapshot_trainable() const;
  // Writes a snapshot of this store back. Every restored parameter is touched, so derived
  // copies (bf16) are re-made from the restored values before their next use, even when the
  // optimizer had marked them current. The one way a snapshot goes back into a store.
  void restore(const ParamSnapshot& snap);

  int64_t num_params() const;
  int64_t num_trainable() const;
  int64_t value_bytes() const { return num_params() * 4; }
  int64_t grad_bytes() const { return grad_count_ * 4; }

 private:
  std::vector<Param> params_;
  std::unique_ptr<float[]> values_;
  std::unique_ptr<float[]> grads_;
  int64_t grad_count_ = 0;
  std::unique_ptr<std::uint16_t[]> bf16_;
  int64_t bf16_count_ = 0;
};

}  // namespace tb
