// Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): a small residual MLP
// h = h + up(act(down(h))) on a sublayer's output, before the block's residual add.
// Houlsby puts one after attention and one after the MLP of every block, Pfeiffer one
// after the MLP only. The down-projection starts small and random (Kaiming-uniform with
// a = √5, as adapter-transformers' "mam" init) and the up-projection at zero, so a fresh
// adapter is the identity and the adapted model starts as the base model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/params.h"

namespace tb::methods {

enum class AdapterKind { houlsby, pfeiffer };
enum class AdapterAct { gelu, relu };

struct AdapterConfig {
  AdapterKind kind = AdapterKind::houlsby;
  int64_t size = 16;  // bottleneck width m
  AdapterAct act = AdapterAct::gelu;
  uint64_t seed = 0;
};

// "houlsby" | "pfeiffer" and "gelu" | "relu"; InputError naming adapter.<field> otherwise.
AdapterKind parse_adapter_kind(const std::string& s);
AdapterAct parse_adapter_act(const std::string& s);

class AdapterHooks : public Hooks {
 public:
  AdapterHooks(const ModelConfig& cfg, const AdapterConfig& ac);
  ~AdapterHooks() override;

  // Per adapter "<layer prefix>adapter.<attention|mlp>.{down,up}.{weight,bias}":
  // down (m,C) + (m), up (C,m) + (C); all trainable, gradients allocated.
  ParamStore& store() { return store_; }
  const ParamStore& store() const { return store_; }

  int lowest_trainable_layer(int num_layers) const override { return num_layers > 0 ? 0 : num_layers; }
  bool has_after(int layer, Sublayer s) const override;
  void after_forward(int layer, Sublayer s, float* h /*(N,C)*/, int64_t N, int64_t C,
                     bool training) override;
  void after_backward(int layer, Sublayer s, float* dh /*(N,C)*/, int64_t N, int64_t C) override;

  // Peak bytes held between a training forward and its backward (inputs and bottleneck
  // activations of every adapter), for the activation line of the memory breakdown.
  int64_t peak_saved_bytes() const { return peak_saved_; }

 private:
  struct Unit;
  Unit* unit(int layer, Sublayer s);
  const Unit* unit(int layer, Sublayer s) const;
  void activate(float* a, const float* z, int64_t n) const;

  int64_t C_, m_;
  AdapterKind kind_;
  AdapterAct act_;
  ParamStore store_;
  std::vector<Unit> units_;
  int64_t peak_saved_ = 0;  // (layer, attention|mlp); attention entries unused for Pfeiffer
  std::vector<float> z_, a_, o_, da_, dz_;  // scratch for inference and backward
};

}  // namespace tb::methods
