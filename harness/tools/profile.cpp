// `tunebench profile`: the cases of profile.h, registered with Google Benchmark at run time.
//
// Each case owns its buffers, optimizer and hooks; they are built on the case's first
// invocation (plus one untimed warm-up step, so primitive creation is never measured) and
// released when the next case starts, since Google Benchmark runs the cases one after the
// other. That keeps the peak memory at one case's, which matters at the 124M shape where
// full finetuning alone holds weights, gradients and two Adam moments.
#include "harness/tools/profile.h"

#include <benchmark/benchmark.h>
#include <malloc.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iomanip>
#include <fstream>
#include <iostream>
#include <optional>
#include <memory>
#include <ostream>
#include <sstream>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/dtype.h"
#include "harness/core/model.h"
#include "harness/core/model_io.h"
#include "harness/core/ops.h"
#include "harness/core/optimizer.h"
#include "harness/runner/machine.h"
#include "harness/runner/meter.h"
#include "methods/lora.h"
#include "methods/trainer.h"

namespace tb::tools {
namespace {

using nlohmann::json;

// One profiled case: what it is, its work per iteration, and how to build it.
struct Case {
  std::string kind, name;
  json method;  // null for ops
  json shape;
  int64_t tokens = 0;     // tokens one iteration processes
  double flops = 0.0;     // model FLOPs per iteration (0: not a matmul op, see bytes)
  double bytes = 0.0;     // compulsory memory traffic per iteration, for memory-bound ops
  // Allocates the case's state and returns one iteration; state lives in its captures.
  std::function<std::function<void()>()> prepare;
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

// Shared float buffers of one op case, by size.
using Buffers = std::shared_ptr<std::vector<std::vector<float>>>;
Buffers buffers(std::initializer_list<int64_t> sizes, uint32_t seed) {
  auto b = std::make_shared<std::vector<std::vector<float>>>();
  for (int64_t n : sizes) b->push_back(random_floats(n, seed++, 0.5f));
  return b;
}

// ---- shapes and FLOP arithmetic -------------------------------------------------------

struct Dims {
  int64_t B, T, N, C, V, L, NH, NKV, hs, F;
  bool gated;  // SwiGLU (gate, up, down) or GELU (fc, proj)
};

Dims dims_of(const ModelConfig& c, int64_t B, int64_t T) {
  return {B, T, B * T, c.hidden, c.vocab_size, c.n_layer, c.n_head, c.n_kv_head, c.head_dim, c.intermediate,
          c.family == Family::llama};
}

// Linear weights of one block (in × out products per token).
double block_linear_macs(const Dims& d) {
  const double qkv = static_cast<double>(d.C) * static_cast<double>((d.NH + 2 * d.NKV) * d.hs);
  const double o = static_cast<double>(d.NH * d.hs) * static_cast<double>(d.C);
  const double mlp = (d.gated ? 3.0 : 2.0) * static_cast<double>(d.C) * static_cast<double>(d.F);
  return qkv + o + mlp;
}

// Causal attention of one layer, forward: scores and weighted sum over the T(T+1)/2 visible
// pairs, 2·hs FLOPs each.
double attention_forward_flops(const Dims& d) {
  return 2.0 * static_cast<double>(d.B * d.NH) * static_cast<double>(d.T) * static_cast<double>(d.T + 1) *
         static_cast<double>(d.hs);
}

// One forward of the body (and of the LM head over every position when `lm_head`).
double forward_flops(const Dims& d, bool lm_head) {
  const double N = static_cast<double>(d.N);
  return 2.0 * N * (static_cast<double>(d.L) * block_linear_macs(d) + (lm_head ? static_cast<double>(d.C * d.V) : 0.0)) +
         static_cast<double>(d.L) * attention_forward_flops(d);
}

// LoRA factors on q, k, v, o of every layer, forward: A·x then B·(A·x).
double lora_forward_flops(const Dims& d, int64_t r) {
  const double q = static_cast<double>(d.NH * d.hs), kv = static_cast<double>(d.NKV * d.hs), C = static_cast<double>(d.C);
  const double io = (C + q) + (C + kv) + (C + kv) + (q + C);
  return 2.0 * static_cast<double>(d.N) * static_cast<double>(r) * io * static_cast<double>(d.L);
}

// ---- the model step cases -------------------------------------------------------------

constexpr int64_t kLoraRank = 8;
constexpr int kHeadClasses = 2;

AdamWConfig adamw_config() {
  AdamWConfig c;
  c.lr = 1e-4f;
  c.weight_decay = 0.1f;
  return c;
}

struct StepContext {
  std::shared_ptr<Model> model;
  int64_t B, T;
  std::vector<int32_t> tokens, targets;  // (B,T)
  // The live step case's analytic memory (bytes by part), set by its prepare_*; read after
  // the warm-up step, when every buffer the step uses exists.
  std::function<json()> analytic;
};

// Weights resident for every case: the model's fp32 values and, in bf16, their bf16 copies.
int64_t model_weight_bytes(const Model& m) { return m.params().value_bytes() + m.params().bf16_bytes(); }

std::function<void()> prepare_full(const std::shared_ptr<StepContext>& s) {
  s->model->params().set_all_trainable(true);
  s->model->params().allocate_grads();
  auto opt = std::make_shared<AdamW>(AdamW::for_stores({&s->model->params()}, adamw_config()));
  Model* m = s->model.get();
  AdamW* o = opt.get();
  s->analytic = [m, o] {
    return json{{"weights", model_weight_bytes(*m)}, {"gradients", m->params().grad_bytes()},
                {"optimizer_state", o->state_bytes()}, {"activations", m->activation_bytes()}};
  };
  return [s, opt] {
    s->model->params().zero_grads();
    s->model->forward(s->tokens.data(), s->B, s->T, nullptr, true);
    s->model->lm_loss(s->targets.data());
    s->model->backward_lm();
    opt->step(adamw_config().lr);
  };
}

std::function<void()> prepare_lora(const std::shared_ptr<StepContext>& s) {
  s->model->params().set_all_trainable(false);
  s->model->params().allocate_grads();
  methods::LoraConfig lc;
  lc.rank = kLoraRank;
  lc.alpha = 16.0;
  lc.dropout = 0.0;
  lc.sites = {"q", "k", "v", "o"};
  auto hooks = std::make_shared<methods::LoraHooks>(s->model->config(), lc);
  auto opt = std::make_shared<AdamW>(AdamW::for_stores({&hooks->store()}, adamw_config()));
  Model* m = s->model.get();
  methods::LoraHooks* h = hooks.get();
  AdamW* o = opt.get();
  s->analytic = [m, h, o] {
    return json{{"weights", model_weight_bytes(*m) + h->store().value_bytes()}, {"gradients", h->store().grad_bytes()},
                {"optimizer_state", o->state_bytes()}, {"activations", m->activation_bytes()}};
  };
  return [s, hooks, opt] {
    hooks->store().zero_grads();
    s->model->forward(s->tokens.data(), s->B, s->T, hooks.get(), true);
    s->model->lm_loss(s->targets.data());
    s->model->backward_lm(hooks.get());
    opt->step(adamw_config().lr);
  };
}

std::function<void()> prepare_head(const std::shared_ptr<StepContext>& s) {
  s->model->params().set_all_trainable(false);
  s->model->params().allocate_grads();
  const int64_t B = s->B, C = s->model->config().hidden;
  auto head = std::make_shared<methods::ClassifierHead>(C, kHeadClasses, 0);
  auto opt = std::make_shared<AdamW>(AdamW::for_stores({&head->store()}, adamw_config()));
  struct Buf {
    std::vector<int32_t> lengths, labels;
    std::vector<float> pooled, logits, losses, dlosses, dlogits;
  };
  auto b = std::make_shared<Buf>();
  b->lengths.assign(static_cast<std::size_t>(B), static_cast<int32_t>(s->T));
  for (int64_t i = 0; i < B; ++i) b->labels.push_back(static_cast<int32_t>(i % kHeadClasses));
  b->pooled.resize(static_cast<std::size_t>(B * C));
  b->logits.resize(static_cast<std::size_t>(B * kHeadClasses));
  b->dlogits.resize(b->logits.size());
  b->losses.resize(static_cast<std::size_t>(B));
  b->dlosses.assign(static_cast<std::size_t>(B), 1.0f / static_cast<float>(B));
  Model* m = s->model.get();
  methods::ClassifierHead* hd = head.get();
  AdamW* o = opt.get();
  s->analytic = [m, hd, o] {
    return json{{"weights", model_weight_bytes(*m) + hd->store().value_bytes()}, {"gradients", hd->store().grad_bytes()},
                {"optimizer_state", o->state_bytes()}, {"activations", m->activation_bytes()}};
  };
  return [s, head, opt, b, B] {
    Model& m = *s->model;
    m.forward(s->tokens.data(), B, s->T, nullptr, false);
    m.pool(b->pooled.data(), static_cast<int>(m.config().n_layer), Pool::last, b->lengths.data());
    head->forward(b->logits.data(), b->pooled.data(), B);
    ops::cross_entropy_forward(b->losses.data(), b->logits.data(), b->labels.data(), B, kHeadClasses);
    std::fill(b->dlogits.begin(), b->dlogits.end(), 0.0f);
    ops::cross_entropy_backward(b->dlogits.data(), b->dlosses.data(), b->logits.data(), b->labels.data(), B, kHeadClasses);
    head->store().zero_grads();
    head->backward(nullptr, b->dlogits.data(), b->pooled.data(), B);
    opt->step(adamw_config().lr);
  };
}

std::function<void()> prepare_infer(const std::shared_ptr<StepContext>& s) {
  s->model->params().set_all_trainable(false);
  s->model->params().allocate_grads();
  auto logits = std::make_shared<std::vector<float>>(static_cast<std::size_t>(s->B * s->T * s->model->config().vocab_size));
  Model* m = s->model.get();
  const int64_t out_bytes = static_cast<int64_t>(logits->size() * sizeof(float));
  s->analytic = [m, out_bytes] {
    return json{{"weights", model_weight_bytes(*m)}, {"gradients", 0}, {"optimizer_state", 0},
                {"activations", m->activation_bytes() + out_bytes}};
  };
  return [s, logits] {
    s->model->forward(s->tokens.data(), s->B, s->T, nullptr, false);
    s->model->logits(logits->data());
  };
}

std::vector<Case> step_cases(const ProfileSpec& spec, const std::shared_ptr<StepContext>& s, const json& shape) {
  const Dims d = dims_of(s->model->config(), s->B, s->T);
  const double fwd_lm = forward_flops(d, true);
  std::vector<Case> out;
  for (const auto& m : spec.methods) {
    Case c;
    c.kind = m == "infer" ? "infer" : "train";
    c.name = m == "infer" ? "infer" : "train." + m;
    c.method = m;
    c.shape = shape;
    c.tokens = d.N;
    if (m == "full") {
      c.flops = 3.0 * fwd_lm;  // forward, input gradients, weight gradients
      c.prepare = [s] { return prepare_full(s); };
    } else if (m == "lora") {
      c.flops = 2.0 * fwd_lm + 3.0 * lora_forward_flops(d, kLoraRank);  // no base weight gradients
      c.prepare = [s] { return prepare_lora(s); };
    } else if (m == "head") {
      c.flops = forward_flops(d, false) + 3.0 * 2.0 * static_cast<double>(d.B * d.C * kHeadClasses);
      c.prepare = [s] { return prepare_head(s); };
    } else {
      c.flops = fwd_lm;
      c.prepare = [s] { return prepare_infer(s); };
    }
    out.push_back(std::move(c));
  }
  return out;
}

// ---- the op cases ---------------------------------------------------------------------

std::vector<Case> op_cases(const ModelConfig& cfg, int64_t B, int64_t T, Precision prec) {
  const Dims d = dims_of(cfg, B, T);
  const int64_t N = d.N, C = d.C;
  std::vector<Case> out;
  auto add = [&](std::string name, json shape, double flops, double bytes, std::function<std::function<void()>()> prep) {
    Case c;
    c.kind = "op";
    c.name = std::move(name);
    c.method = nullptr;
    c.shape = std::move(shape);
    c.tokens = N;
    c.flops = flops;
    c.bytes = bytes;
    c.prepare = std::move(prep);
    out.push_back(std::move(c));
  };
  const double f4 = 4.0;  // bytes per float

  const int64_t maxT = std::max<int64_t>(cfg.max_positions, T);
  const bool pos = cfg.family == Family::gpt2;
  add("embedding.forward", {{"B", B}, {"T", T}, {"C", C}, {"V", d.V}}, 0, f4 * N * C * (pos ? 3 : 2), [=] {
    auto b = buffers({N * C, d.V * C, pos ? maxT * C : 1}, 1);
    auto tok = std::make_shared<std::vector<int32_t>>(random_tokens(N, d.V, 2));
    return std::function<void()>([=] { ops::embedding_forward((*b)[0].data(), tok->data(), (*b)[1].data(), pos ? (*b)[2].data() : nullptr, B, T, C); });
  });
  add("embedding.backward", {{"B", B}, {"T", T}, {"C", C}, {"V", d.V}}, 0, f4 * N * C * (pos ? 5 : 3), [=] {
    auto b = buffers({N * C, d.V * C, pos ? maxT * C : 1}, 3);
    auto tok = std::make_shared<std::vector<int32_t>>(random_tokens(N, d.V, 4));
    return std::function<void()>([=] { ops::embedding_backward((*b)[1].data(), pos ? (*b)[2].data() : nullptr, (*b)[0].data(), tok->data(), B, T, C); });
  });

  struct Lin {
    std::string name;
    int64_t IC, OC;
    bool bias;
  };
  std::vector<Lin> lins;
  if (cfg.family == Family::gpt2) {
    lins = {{"qkv", C, cfg.qkv_dim(), true}, {"attn_out", C, C, true}, {"mlp_up", C, d.F, true}, {"mlp_down", d.F, C, true}};
  } else {
    lins = {{"q", C, d.NH * d.hs, cfg.qkv_bias}, {"kv", C, d.NKV * d.hs, cfg.qkv_bias}, {"attn_out", d.NH * d.hs, C, false},
            {"mlp_gate_up", C, d.F, false}, {"mlp_down", d.F, C, false}};
  }
  lins.push_back({"lm_head", C, d.V, false});
  for (const auto& l : lins) {
    const json shape = {{"N", N}, {"IC", l.IC}, {"OC", l.OC}};
    const double mm = 2.0 * static_cast<double>(N) * static_cast<double>(l.IC) * static_cast<double>(l.OC);
    // bf16: the weight as the model holds it (a bf16 copy); activations are rounded per call.
    const bool bf16 = prec == Precision::bf16;
    auto weight16 = [](const std::vector<float>& w) {
      auto h = std::make_shared<std::vector<uint16_t>>(w.size());
      convert_to_bf16(h->data(), w.data(), static_cast<int64_t>(w.size()));
      return h;
    };
    add("linear." + l.name + ".forward", shape, mm, 0, [=] {
      auto b = buffers({N * l.OC, N * l.IC, l.OC * l.IC, l.OC}, 5);
      auto w16 = weight16((*b)[2]);
      return std::function<void()>([=] {
        const float* bias = l.bias ? (*b)[3].data() : nullptr;
        if (bf16)
          ops::linear_forward_bf16((*b)[0].data(), (*b)[1].data(), w16->data(), bias, N, l.IC, l.OC);
        else
          ops::linear_forward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), bias, N, l.IC, l.OC);
      });
    });
    add("linear." + l.name + ".backward", shape, 2.0 * mm, 0, [=] {
      auto b = buffers({N * l.IC, l.OC * l.IC, l.OC, N * l.OC, N * l.IC, l.OC * l.IC}, 9);
      auto w16 = weight16((*b)[5]);
      return std::function<void()>([=] {
        float* dbias = l.bias ? (*b)[2].data() : nullptr;
        if (bf16)
          ops::linear_backward_bf16((*b)[0].data(), (*b)[1].data(), dbias, (*b)[3].data(), (*b)[4].data(),
                                    w16->data(), N, l.IC, l.OC);
        else
          ops::linear_backward((*b)[0].data(), (*b)[1].data(), dbias, (*b)[3].data(), (*b)[4].data(),
                               (*b)[5].data(), N, l.IC, l.OC);
      });
    });
  }

  const json nc = {{"N", N}, {"C", C}};
  const float eps = cfg.norm_eps;
  if (cfg.family == Family::gpt2) {
    add("layernorm.forward", nc, 0, f4 * 2 * N * C, [=] {
      auto b = buffers({N * C, N, N, N * C, C, C}, 15);
      return std::function<void()>([=] {
        ops::layernorm_forward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), (*b)[3].data(), (*b)[4].data(), (*b)[5].data(), N, C, eps);
      });
    });
    add("layernorm.backward", nc, 0, f4 * 3 * N * C, [=] {
      auto b = buffers({N * C, C, C, N * C, N * C, C, N, N}, 21);
      std::fill((*b)[7].begin(), (*b)[7].end(), 1.0f);  // rstd
      return std::function<void()>([=] {
        ops::layernorm_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), (*b)[3].data(), (*b)[4].data(),
                                (*b)[5].data(), (*b)[6].data(), (*b)[7].data(), N, C);
      });
    });
    const int64_t n = N * d.F;
    add("gelu.forward", {{"n", n}}, 0, f4 * 2 * n, [=] {
      auto b = buffers({n, n}, 29);
      return std::function<void()>([=] { ops::gelu_forward((*b)[0].data(), (*b)[1].data(), n); });
    });
    add("gelu.backward", {{"n", n}}, 0, f4 * 3 * n, [=] {
      auto b = buffers({n, n, n}, 31);
      return std::function<void()>([=] { ops::gelu_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), n); });
    });
  } else {
    add("rmsnorm.forward", nc, 0, f4 * 2 * N * C, [=] {
      auto b = buffers({N * C, N, N * C, C}, 15);
      return std::function<void()>([=] { ops::rmsnorm_forward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), (*b)[3].data(), N, C, eps); });
    });
    add("rmsnorm.backward", nc, 0, f4 * 3 * N * C, [=] {
      auto b = buffers({N * C, C, N * C, N * C, C, N}, 21);
      std::fill((*b)[5].begin(), (*b)[5].end(), 1.0f);  // rstd
      return std::function<void()>([=] {
        ops::rmsnorm_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), (*b)[3].data(), (*b)[4].data(), (*b)[5].data(), N, C);
      });
    });
    const int64_t n = N * d.F;
    add("swiglu.forward", {{"n", n}}, 0, f4 * 3 * n, [=] {
      auto b = buffers({n, n, n}, 29);
      return std::function<void()>([=] { ops::swiglu_forward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), n); });
    });
    add("swiglu.backward", {{"n", n}}, 0, f4 * 5 * n, [=] {
      auto b = buffers({n, n, n, n, n}, 31);
      return std::function<void()>([=] {
        ops::swiglu_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), (*b)[3].data(), (*b)[4].data(), n);
      });
    });
    const int64_t ld = cfg.qkv_dim(), heads = d.NH + d.NKV;
    const json rs = {{"B", B}, {"T", T}, {"heads", heads}, {"hs", d.hs}};
    const float theta = cfg.rope_theta;
    add("rope.forward", rs, 0, f4 * 2 * N * heads * d.hs, [=] {
      auto b = buffers({N * ld}, 37);
      return std::function<void()>([=] { ops::rope_forward((*b)[0].data(), (*b)[0].data(), B, T, heads, d.hs, ld, theta); });
    });
    add("rope.backward", rs, 0, f4 * 2 * N * heads * d.hs, [=] {
      auto b = buffers({N * ld}, 39);
      return std::function<void()>([=] { ops::rope_backward((*b)[0].data(), (*b)[0].data(), B, T, heads, d.hs, ld, theta); });
    });
  }

  ops::AttentionShape as{B, T, d.NH, d.NKV, d.hs};
  const json ashape = {{"B", B}, {"T", T}, {"NH", d.NH}, {"NKV", d.NKV}, {"hs", d.hs}};
  const double att = attention_forward_flops(d);
  const int64_t q_n = N * d.NH * d.hs, kv_n = N * d.NKV * d.hs, att_n = B * d.NH * T * T;
  add("attention.forward", ashape, att, 0, [=] {
    auto b = buffers({q_n, att_n, q_n, kv_n, kv_n}, 41);
    return std::function<void()>([=] {
      ops::attention_forward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), (*b)[3].data(), (*b)[4].data(), nullptr, nullptr, as);
    });
  });
  add("attention.backward", ashape, 2.0 * att, 0, [=] {
    // att must hold real causal probabilities, so run the forward once to fill it.
    auto b = buffers({q_n, kv_n, kv_n, att_n, q_n, att_n, q_n, kv_n, kv_n, q_n}, 47);
    ops::attention_forward((*b)[9].data(), (*b)[5].data(), (*b)[6].data(), (*b)[7].data(), (*b)[8].data(), nullptr, nullptr, as);
    return std::function<void()>([=] {
      ops::attention_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), nullptr, nullptr, (*b)[3].data(), (*b)[4].data(),
                              (*b)[5].data(), (*b)[6].data(), (*b)[7].data(), (*b)[8].data(), nullptr, nullptr, as);
    });
  });

  const int64_t rn = N * C;
  add("residual.forward", {{"n", rn}}, 0, f4 * 3 * rn, [=] {
    auto b = buffers({rn, rn, rn}, 59);
    return std::function<void()>([=] { ops::residual_forward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), rn); });
  });
  add("residual.backward", {{"n", rn}}, 0, f4 * 5 * rn, [=] {
    auto b = buffers({rn, rn, rn}, 61);
    return std::function<void()>([=] { ops::residual_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), rn); });
  });

  // The optimizer step of full finetuning over every parameter of the model: read value,
  // gradient and both moments, write value and moments (and the bf16 copy in bf16).
  const int64_t np = count_params(cfg);
  const bool bf16 = prec == Precision::bf16;
  add("adamw.step", {{"params", np}}, 0, (bf16 ? 30.0 : 28.0) * static_cast<double>(np), [=] {
    auto store = std::make_shared<ParamStore>();
    store->declare("all", {np}, true);
    store->allocate();
    store->set_all_trainable(true);
    store->allocate_grads();
    if (bf16) store->enable_bf16([](const Param&) { return true; });
    auto g = random_floats(np, 73, 1e-3f);
    std::copy(g.begin(), g.end(), store->at(0).grad);
    auto opt = std::make_shared<AdamW>(AdamW::for_stores({store.get()}, adamw_config()));
    return std::function<void()>([store, opt] { opt->step(adamw_config().lr); });
  });

  const json ce = {{"N", N}, {"V", d.V}};
  add("cross_entropy.forward", ce, 0, f4 * N * d.V, [=] {
    auto b = buffers({N, N * d.V}, 67);
    auto tgt = std::make_shared<std::vector<int32_t>>(random_tokens(N, d.V, 68));
    return std::function<void()>([=] { ops::cross_entropy_forward((*b)[0].data(), (*b)[1].data(), tgt->data(), N, d.V); });
  });
  add("cross_entropy.backward", ce, 0, f4 * 3 * N * d.V, [=] {
    auto b = buffers({N * d.V, N, N * d.V}, 71);
    std::fill((*b)[1].begin(), (*b)[1].end(), 1.0f / static_cast<float>(N));
    auto tgt = std::make_shared<std::vector<int32_t>>(random_tokens(N, d.V, 72));
    return std::function<void()>([=] {
      ops::cross_entropy_backward((*b)[0].data(), (*b)[1].data(), (*b)[2].data(), tgt->data(), N, d.V);
    });
  });

  const json pshape = {{"B", B}, {"T", T}, {"C", C}};
  auto lengths = std::make_shared<std::vector<int32_t>>(static_cast<std::size_t>(B), static_cast<int32_t>(T));
  add("mean_pool.forward", pshape, 0, f4 * (N * C + B * C), [=] {
    auto b = buffers({B * C, N * C}, 73);
    return std::function<void()>([=] { ops::mean_pool_forward((*b)[0].data(), (*b)[1].data(), lengths->data(), B, T, C); });
  });
  add("mean_pool.backward", pshape, 0, f4 * (2 * N * C + B * C), [=] {
    auto b = buffers({N * C, B * C}, 75);
    return std::function<void()>([=] { ops::mean_pool_backward((*b)[0].data(), (*b)[1].data(), lengths->data(), B, T, C); });
  });
  add("last_pool.forward", pshape, 0, f4 * 2 * B * C, [=] {
    auto b = buffers({B * C, N * C}, 77);
    return std::function<void()>([=] { ops::last_pool_forward((*b)[0].data(), (*b)[1].data(), lengths->data(), B, T, C); });
  });
  add("last_pool.backward", pshape, 0, f4 * 3 * B * C, [=] {
    auto b = buffers({N * C, B * C}, 79);
    return std::function<void()>([=] { ops::last_pool_backward((*b)[0].data(), (*b)[1].data(), lengths->data(), B, T, C); });
  });
  return out;
}

// ---- peak and running -------------------------------------------------------------------

// Collects the measured runs while printing Google Benchmark's usual console table.
class Collector : public benchmark::ConsoleReporter {
 public:
  explicit Collector(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}
  std::vector<Run> runs;
  void ReportRuns(const std::vector<Run>& reports) override {
    runs.insert(runs.end(), reports.begin(), reports.end());
    ConsoleReporter::ReportRuns(reports);
  }
};

json null_or(double v) { return std::isfinite(v) && v > 0 ? json(v) : json(); }

std::shared_ptr<Model> build_model(const ProfileSpec& spec) {
  if (!spec.model.empty()) return std::shared_ptr<Model>(load_model(spec.model));
  ModelConfig cfg;
  cfg.family = spec.arch == "gpt2" ? Family::gpt2 : Family::llama;
  cfg.model_type = spec.arch;
  cfg.vocab_size = spec.vocab;
  cfg.hidden = spec.dim;
  cfg.n_layer = spec.layers;
  cfg.n_head = spec.heads;
  cfg.n_kv_head = spec.heads;
  cfg.head_dim = spec.dim / spec.heads;
  // GPT-2: 4C; Llama: 8C/3 rounded up to a multiple of 64, as `tunebench pretrain` builds.
  cfg.intermediate = cfg.family == Family::gpt2 ? 4 * spec.dim : ((8 * spec.dim / 3 + 63) / 64) * 64;
  cfg.max_positions = std::max<int64_t>(1024, spec.seq);
  cfg.tied_embeddings = true;
  cfg.validate("profile shape");
  auto m = std::make_shared<Model>(cfg);
  m->init_random(0);
  return m;
}

// ---- the PyTorch reference ---------------------------------------------------------------

// Reads the JSON of bench/pytorch_reference.py; InputError naming the file and field.
json load_reference(const std::filesystem::path& file) {
  const std::string where = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(where + ": cannot read the reference file");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    throw InputError(where + ": not valid JSON (" + e.what() + ")");
  }
  auto bad = [&](const std::string& field, const std::string& what) { throw InputError(where + ": " + field + ": " + what); };
  if (!j.is_object()) bad("(top level)", "must be an object with machine and cases (bench/pytorch_reference.py --json)");
  if (!j.contains("machine") || !j["machine"].is_object() || !j["machine"].contains("torch") || !j["machine"]["torch"].is_string())
    bad("machine.torch", "missing or not a string");
  if (!j.contains("cases") || !j["cases"].is_array()) bad("cases", "missing or not an array");
  for (std::size_t i = 0; i < j["cases"].size(); ++i) {
    const auto& c = j["cases"][i];
    const std::string at = "cases[" + std::to_string(i) + "]";
    if (!c.is_object()) bad(at, "must be an object");
    for (const char* k : {"case", "precision", "arch"})
      if (!c.contains(k) || !c[k].is_string()) bad(at + "." + k, "missing or not a string");
    for (const char* k : {"L", "C", "NH", "V", "T", "B"})
      if (!c.contains(k) || !c[k].is_number_integer()) bad(at + "." + k, "missing or not an integer");
    if (!c.contains("tokens_per_s") || !c["tokens_per_s"].is_number() || !(c["tokens_per_s"].get<double>() > 0))
      bad(at + ".tokens_per_s", "missing or not a positive number");
  }
  return j;
}

// Attaches the reference row measured at the same architecture, shape, case and precision
// to a step case, with tunebench's speed-up over it.
void attach_reference(json& c, const json& ref, const ModelConfig& cfg, int64_t B, int64_t T) {
  if (c["kind"] == "op") return;
  for (const auto& r : ref["cases"]) {
    if (r["case"] != c["method"] || r["precision"] != c["precision"] || r["arch"] != cfg.model_type) continue;
    if (r["L"] != cfg.n_layer || r["C"] != cfg.hidden || r["NH"] != cfg.n_head || r["V"] != cfg.vocab_size ||
        r["T"] != T || r["B"] != B)
      continue;
    const double theirs = r["tokens_per_s"].get<double>();
    c["reference"] = {{"framework", "pytorch " + ref["machine"]["torch"].get<std::string>()},
                      {"tokens_per_s", theirs},
                      {"threads", ref["machine"].value("threads", json())}};
    c["speedup"] = c["tokens_per_s"].get<double>() / theirs;
    return;
  }
}

}  // namespace

const std::vector<std::string>& profile_methods() {
  static const std::vector<std::string> m = {"full", "lora", "head", "infer"};
  return m;
}

void validate_spec(const ProfileSpec& s) {
  parse_precision(s.precision, "--precision");
  if (s.model.empty()) {
    if (s.arch != "gpt2" && s.arch != "llama") throw InputError("--arch: '" + s.arch + "' is not gpt2 or llama");
    if (s.layers < 1) throw InputError("--layers must be >= 1");
    if (s.dim < 1 || s.heads < 1 || s.dim % s.heads != 0) throw InputError("--dim must be a positive multiple of --heads");
    if (s.arch == "llama" && (s.dim / s.heads) % 2 != 0) throw InputError("--dim / --heads must be even for llama (RoPE)");
    if (s.vocab < 2) throw InputError("--vocab must be >= 2");
  }
  if (s.seq < 1) throw InputError("--seq must be >= 1");
  if (s.batch < 1) throw InputError("--batch must be >= 1");
  if (!(s.min_time > 0)) throw InputError("--min-time must be > 0");
  if (s.peak_size < 64) throw InputError("--peak-size must be >= 64");
  for (std::size_t i = 0; i < s.methods.size(); ++i) {
    const auto& m = s.methods[i];
    const auto& known = profile_methods();
    if (std::find(known.begin(), known.end(), m) == known.end())
      throw InputError("--methods: '" + m + "' is not one of full, lora, head, infer");
    if (std::find(s.methods.begin(), s.methods.begin() + static_cast<std::ptrdiff_t>(i), m) != s.methods.begin() + static_cast<std::ptrdiff_t>(i))
      throw InputError("--methods: '" + m + "' is listed twice");
  }
  if (s.methods.empty() && !s.ops) throw InputError("nothing to profile: no --methods and --no-ops");
}

json run_profile(const ProfileSpec& spec, std::ostream& console) {
  validate_spec(spec);
  const Precision prec = parse_precision(spec.precision, "--precision");
  std::optional<json> reference;
  if (!spec.reference.empty()) reference = load_reference(spec.reference);
  auto model = build_model(spec);
  model->set_precision(prec);  // InputError when the CPU cannot run bf16 matmuls
  const ModelConfig& cfg = model->config();
  if (spec.seq > cfg.max_positions)
    throw InputError("--seq " + std::to_string(spec.seq) + " exceeds the model's context of " + std::to_string(cfg.max_positions));

  const auto mi = runner::machine_info();
  const auto di = dnn::info();
  console << "profile: " << mi.summary() << "\nprofile: measuring the matmul peak (" << spec.peak_size << "³)\n"
          << std::flush;
  // The runner's measurement (same function, size and repetitions unless --peak-size).
  const double peak_f32 = runner::measure_matmul_peak_gflops(spec.peak_size, runner::kPeakMatmulReps, false);
  const double peak_bf16 =
      di.bf16_supported ? runner::measure_matmul_peak_gflops(spec.peak_size, runner::kPeakMatmulReps, true) : NAN;

  const int64_t B = spec.batch, T = spec.seq;
  const json shape = {{"arch", cfg.model_type}, {"L", cfg.n_layer}, {"C", cfg.hidden}, {"NH", cfg.n_head},
                      {"NKV", cfg.n_kv_head}, {"F", cfg.intermediate}, {"V", cfg.vocab_size}, {"T", T}, {"B", B}};
  auto ctx = std::make_shared<StepContext>();
  ctx->model = model;
  ctx->B = B;
  ctx->T = T;
  ctx->tokens = random_tokens(B * T, cfg.vocab_size, 11);
  ctx->targets = random_tokens(B * T, cfg.vocab_size, 12);

  std::vector<Case> cases;
  if (spec.ops) cases = op_cases(cfg, B, T, prec);
  // Peak fractions are against the peak of the precision the cases run in.
  const double peak = prec == Precision::bf16 ? peak_bf16 : peak_f32;
  for (auto& c : step_cases(spec, ctx, shape)) cases.push_back(std::move(c));

  static bool initialized = false;
  if (!initialized) {
    // Google Benchmark keeps argv[0] as the executable name of its reports.
    static char name[] = "tunebench profile";
    static char* argv[] = {name, nullptr};
    int argc = 1;
    benchmark::Initialize(&argc, argv);
    initialized = true;
  }
  // The live case: its iteration closure (owning its state) and its index.
  struct Live {
    int index = -1;
    std::function<void()> step;
    std::vector<std::string> errors;
    // Memory of each step case: analytic parts, RSS when it started, peak RSS while it ran.
    std::vector<json> analytic;
    std::vector<int64_t> rss_before, peak;
  };
  auto live = std::make_shared<Live>();
  live->errors.resize(cases.size());
  live->analytic.resize(cases.size());
  live->rss_before.assign(cases.size(), 0);
  live->peak.assign(cases.size(), 0);
  const std::string label = di.isa + ", " + std::to_string(omp_get_max_threads()) + " threads";
  benchmark::ClearRegisteredBenchmarks();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case* c = &cases[i];
    benchmark::RegisterBenchmark(c->name.c_str(), [c, i, live, label, peak, ctx](benchmark::State& state) {
      if (live->index != static_cast<int>(i)) {
        ctx->analytic = nullptr;
        live->step = nullptr;  // release the previous case's buffers first
        // ... including the model's gradient block, which lives in the model, and the heap
        // pages glibc keeps after a free, so the next case's peak is its own.
        ctx->model->params().set_all_trainable(false);
        ctx->model->params().allocate_grads();
        ctx->model->release_activations();
        ::malloc_trim(0);
        // The peak RSS of this case starts from what is resident now (the model, the
        // libraries); it is kept per case so each step's memory can be read on its own.
        live->rss_before[i] = runner::rss_bytes();
        runner::reset_peak_rss();
        try {
          live->step = c->prepare();
          live->step();  // warm-up: primitive creation and first-touch page faults
          live->index = static_cast<int>(i);
          if (c->kind != "op" && ctx->analytic) live->analytic[i] = ctx->analytic();
        } catch (const std::exception& e) {
          live->errors[i] = e.what();
          state.SkipWithError(e.what());
          return;
        }
      }
      for (auto _ : state) {
        try {
          live->step();
        } catch (const std::exception& e) {
          live->errors[i] = e.what();
          state.SkipWithError(e.what());
          break;
        }
      }
      live->peak[i] = std::max(live->peak[i], runner::peak_rss_bytes());
      const auto rate = benchmark::Counter::kIsIterationInvariantRate;
      state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(c->tokens), rate);
      if (c->flops > 0) {
        state.counters["GFLOP/s"] = benchmark::Counter(c->flops * 1e-9, rate);
        state.counters["peak"] = benchmark::Counter(c->flops * 1e-9 / peak, rate);
      }
      if (c->bytes > 0) state.counters["GB/s"] = benchmark::Counter(c->bytes * 1e-9, rate);
      state.counters["threads"] = omp_get_max_threads();
      state.SetLabel(label);
    })->MinTime(spec.min_time)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  Collector reporter(&console == &std::cout && ::isatty(STDOUT_FILENO) == 1);
  reporter.SetOutputStream(&console);
  reporter.SetErrorStream(&console);
  benchmark::RunSpecifiedBenchmarks(&reporter, std::string("."));
  benchmark::ClearRegisteredBenchmarks();
  live->step = nullptr;
  ctx->analytic = nullptr;
  for (std::size_t i = 0; i < cases.size(); ++i)
    if (!live->errors[i].empty()) throw Error("profile case " + cases[i].name + " failed: " + live->errors[i]);

  json out_cases = json::array();
  for (const auto& c : cases) {
    const auto it = std::find_if(reporter.runs.begin(), reporter.runs.end(),
                                 [&](const auto& r) { return r.run_name.function_name == c.name; });
    TB_CHECK(it != reporter.runs.end(), "profile case " << c.name << " produced no measurement");
    TB_CHECK(!it->error_occurred, "profile case " << c.name << ": " << it->error_message);
    const double spi = it->real_accumulated_time / static_cast<double>(it->iterations);
    const double gflops = c.flops > 0 ? c.flops / spi / 1e9 : NAN;
    out_cases.push_back({{"kind", c.kind},
                         {"name", c.name},
                         {"method", c.method},
                         {"precision", spec.precision},
                         {"shape", c.shape},
                         {"tokens_per_s", static_cast<double>(c.tokens) / spi},
                         {"gflop_per_s", null_or(gflops)},
                         {"peak_fraction", null_or(gflops / peak)},
                         {"gbyte_per_s", null_or(c.bytes > 0 ? c.bytes / spi / 1e9 : NAN)},
                         {"seconds_per_iter", spi},
                         {"iterations", static_cast<int64_t>(it->iterations)},
                         {"flops_per_iter", c.flops}});
    const std::size_t i = static_cast<std::size_t>(&c - cases.data());
    if (live->analytic[i].is_object()) {
      int64_t total = 0;
      for (const auto& [k, v] : live->analytic[i].items()) total += v.get<int64_t>();
      const int64_t pk = live->peak[i];
      out_cases.back()["memory"] = {{"analytic", live->analytic[i]},
                                    {"analytic_bytes", total},
                                    {"peak_rss_bytes", pk},
                                    {"rss_before_bytes", live->rss_before[i]},
                                    {"peak_over_analytic", null_or(total > 0 && pk > 0 ? double(pk) / double(total) : NAN)}};
    }
    if (reference) attach_reference(out_cases.back(), *reference, cfg, B, T);
  }
  // Google Benchmark prints rates with a "/s" suffix on every counter, the fraction of peak
  // included; this summary states each figure in its own unit.
  auto cell = [](const json& v, double scale, int digits, int width) {
    std::ostringstream os;
    if (v.is_number()) os << std::fixed << std::setprecision(digits) << scale * v.get<double>();
    else os << "-";
    std::string t = os.str();
    return std::string(static_cast<std::size_t>(std::max<int>(width - static_cast<int>(t.size()), 1)), ' ') + t;
  };
  console << "\n" << std::left << std::setw(28) << "case" << std::right << std::setw(14) << "tokens/s" << std::setw(10)
          << "GFLOP/s" << std::setw(11) << "% of peak" << std::setw(12) << "ms/iter" << "\n";
  for (const auto& c : out_cases)
    console << std::left << std::setw(28) << c["name"].get<std::string>() << std::right << cell(c["tokens_per_s"], 1, 0, 14)
            << cell(c["gflop_per_s"], 1, 2, 10) << cell(c["peak_fraction"], 100, 1, 11) << cell(c["seconds_per_iter"], 1e3, 3, 12)
            << "\n";
  bool any_ref = false, any_mem = false;
  for (const auto& c : out_cases) {
    any_ref = any_ref || c.contains("reference");
    any_mem = any_mem || c.contains("memory");
  }
  if (any_ref) {
    console << "\n" << std::left << std::setw(28) << "case (vs the reference)" << std::right << std::setw(14) << "tokens/s"
            << std::setw(16) << "reference tok/s" << std::setw(10) << "speed-up" << "\n";
    for (const auto& c : out_cases)
      if (c.contains("reference"))
        console << std::left << std::setw(28) << c["name"].get<std::string>() << std::right << cell(c["tokens_per_s"], 1, 0, 14)
                << cell(c["reference"]["tokens_per_s"], 1, 0, 16) << cell(c["speedup"], 1, 2, 9) << "x\n";
  }
  if (any_mem) {
    console << "\n" << std::left << std::setw(28) << "case (memory, MB)" << std::right << std::setw(10) << "weights"
            << std::setw(10) << "grads" << std::setw(10) << "optim" << std::setw(10) << "activ" << std::setw(11)
            << "analytic" << std::setw(11) << "peak RSS" << std::setw(8) << "ratio" << "\n";
    for (const auto& c : out_cases) {
      if (!c.contains("memory")) continue;
      const auto& m = c["memory"];
      const auto& a = m["analytic"];
      console << std::left << std::setw(28) << c["name"].get<std::string>() << std::right << cell(a["weights"], 1e-6, 1, 10)
              << cell(a["gradients"], 1e-6, 1, 10) << cell(a["optimizer_state"], 1e-6, 1, 10)
              << cell(a["activations"], 1e-6, 1, 10) << cell(m["analytic_bytes"], 1e-6, 1, 11)
              << cell(m["peak_rss_bytes"], 1e-6, 1, 11) << cell(m["peak_over_analytic"], 1, 3, 8) << "\n";
    }
  }
  console << std::defaultfloat << "peak (" << spec.peak_size << "³ matmul): f32 " << peak_f32 << " GFLOP/s, bf16 "
          << (std::isfinite(peak_bf16) ? std::to_string(peak_bf16) + " GFLOP/s" : std::string("not supported")) << "; "
          << di.isa << ", " << omp_get_max_threads() << " threads\n";
  json model_json = shape;
  model_json["params"] = count_params(cfg);
  model_json["source"] = spec.model.empty() ? std::string("random init") : spec.model.string();
  return {{"machine",
           {{"cpu", mi.cpu},
            {"threads", omp_get_max_threads()},
            {"cores", mi.cores},
            {"host", mi.host},
            {"isa", di.isa},
            {"onednn_version", di.version},
            {"compiler", mi.compiler},
            {"peak_matmul_size", spec.peak_size},
            {"peak_gflop_per_s", {{"f32", null_or(peak_f32)}, {"bf16", null_or(peak_bf16)}}}}},
          {"model", model_json},
          {"cases", out_cases}};
}

}  // namespace tb::tools
