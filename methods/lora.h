// LoRA (Hu et al. 2021, as Hugging Face PEFT implements it): at chosen linear sites the
// frozen W gets a low-rank update, y = W·x + (α/r)·B·A·dropout(x), with A (r,IC)
// Kaiming-uniform and B (OC,r) zero, so a fresh LoRA is the base model. Implemented as a
// delta hook (harness/core/hooks.h); after training the update can be merged into the base
// weights, W += (α/r)·B·A, so inference runs the plain model at no extra cost.
//
// Site names: q, k, v, o, gate, up, down (hooks.h's meanings), `all-linear` (every linear
// site of the family) and, on a family with a fused q,k,v linear, `qkv` (or the family's
// module name for it) = q,k,v; the model's site table (model.h: sites_from_name,
// site_slice) resolves them. GPT-2 runs q, k and v as one fused linear (Site::qkv,
// OC = 3C), so a LoRA on "q" there updates only the q slice (rows [0,C) of the weight),
// "k" [C,2C) and "v" [2C,3C), each with its own A and B, as on Llama.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "harness/core/hooks.h"
#include "harness/core/model.h"
#include "harness/core/params.h"

namespace tb::methods {

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.05;                    // on the LoRA input, training only
  std::vector<std::string> sites = {"q", "v"};
  std::vector<int> layers;                  // empty: every layer
  uint64_t seed = 0;                        // A's init and the dropout stream
};

// One trained (or loaded) pair: y[:, rows of `site`] += scale·B·A·x at layer `layer`, A (rank,
// in) and B (out, rank) with the site's in/out features (site_slice). `site` may also be
// Site::qkv on a fused family: one pair over the whole fused output, as PEFT has it.
struct LoraPair {
  int layer = 0;
  Site site = Site::q;
  int64_t rank = 0;
  float scale = 0.0f;
  std::vector<float> A, B;
};

// The LoRA names of `cfg`'s family that `all-linear` expands to.
std::vector<std::string> lora_all_linear_sites(const ModelConfig& cfg);

class LoraHooks : public Hooks {
 public:
  // Throws InputError naming lora.<field> on bad sites, layers, rank, alpha or dropout.
  LoraHooks(const ModelConfig& cfg, const LoraConfig& lc);
  // The given pairs (a saved adaptation), each with its own rank and scale; `dropout` and
  // `seed` as in LoraConfig, for further training.
  LoraHooks(const ModelConfig& cfg, const std::vector<LoraPair>& pairs, double dropout, uint64_t seed);
  ~LoraHooks() override;

  // Every pair's current values, in the order they were declared.
  std::vector<LoraPair> pairs() const;

  // A and B of every site, all trainable, gradients allocated. Names follow the base
  // linear they update (site_module in model.h): "<module>.lora_A.weight" (r,IC),
  // "<module>.lora_B.weight" (OC,r); a slice of a fused linear adds the site's name,
  // "<module>.q.lora_A.weight".
  ParamStore& store() { return store_; }
  const ParamStore& store() const { return store_; }
  float scale() const { return scale_; }  // of the first pair (all pairs of a LoraConfig share it)
  int64_t num_sites() const;

  int lowest_trainable_layer(int num_layers) const override;
  bool has_delta(int layer, Site site) const override;
  void delta_forward(int layer, Site site, float* y /*(N,OC)*/, const float* x /*(N,IC)*/,
                     int64_t N, int64_t IC, int64_t OC, bool training) override;
  void delta_backward(int layer, Site site, float* dx /*(N,IC) or null*/,
                      const float* dy /*(N,OC)*/, const float* x /*(N,IC)*/, int64_t N,
                      int64_t IC, int64_t OC) override;

  // W[rows of the site] += (α/r)·B·A in `model`'s base weights (accumulated in double);
  // afterwards the hooks add nothing (has_delta is false) and predict runs the merged model.
  void merge_into(Model& model);
  bool merged() const { return merged_; }

  // Restarts the dropout stream: the same seed gives the same masks for the same sequence
  // of training forwards.
  void reseed_dropout(uint64_t seed) { rng_.seed(seed); }
  // Peak bytes held between a training forward and its backward (A·x per site, dropout
  // masks), for the activation line of the memory breakdown.
  int64_t peak_saved_bytes() const { return peak_saved_; }

 private:
  struct Module;
  void declare_and_index(int num_layers);
  const std::vector<int>& modules_at(int layer, Site site) const;
  Module& checked(int index, int64_t IC, int64_t OC);
  void dropout_input(const Module& m, const float* x, int64_t N);

  int64_t rank_;
  float scale_;
  float dropout_;
  ParamStore store_;
  std::vector<Module> modules_;
  std::vector<std::vector<int>> index_;  // (layer·kNumSites + site) -> modules
  bool merged_ = false;
  int64_t peak_saved_ = 0;
  std::mt19937_64 rng_;
  std::vector<float> xd_, dxd_, u_, d_, g_, du_;  // scratch
};

}  // namespace tb::methods
