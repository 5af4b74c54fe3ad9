// Benchmarks of the core ops at GPT-2-small shapes (C = 768, N = B·T = 512, NH = 12, hs = 64),
// and large fp32 / bf16 matmuls as the machine's measured peak. Compute-bound ops report
// `GFLOP/s` (the FLOPs of the products actually computed: attention counts the full T×T
// score block, masked half included); memory-bound ops report bytes/s of their compulsory
// traffic. Run with OMP_NUM_THREADS set to the cores to use, e.g.
//   OMP_NUM_THREADS=2 tunebench_bench --benchmark_filter=Linear --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "harness/core/dnnl/dnn.h"
#include "harness/core/ops.h"

namespace {

using tb::ops::AttentionShape;

std::vector<float> random_vec(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

void set_gflops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void set_bytes(benchmark::State& state, double bytes_per_iter) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter) * state.iterations());
}

// ---- matmul peak ------------------------------------------------------------------------

void BM_MatmulF32(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto a = random_vec(n * n, 1), b = random_vec(n * n, 2);
  std::vector<float> c(static_cast<size_t>(n * n));
  for (auto _ : state) tb::dnn::gemm(c.data(), a.data(), b.data(), nullptr, n, n, n, false, false);
  set_gflops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_MatmulF32)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_MatmulBF16(benchmark::State& state) {
  if (!tb::dnn::info().bf16_supported) {
    state.SkipWithError("no native bf16 dot products on this CPU");
    return;
  }
  const int64_t n = state.range(0);
  auto a = random_vec(n * n, 1), b = random_vec(n * n, 2);
  std::vector<uint16_t> a16(a.size()), b16(b.size());
  tb::dnn::to_bf16(a16.data(), a.data(), n * n);
  tb::dnn::to_bf16(b16.data(), b.data(), n * n);
  std::vector<float> c(static_cast<size_t>(n * n));
  const auto bf = tb::dnn::DType::bf16;
  for (auto _ : state)
    tb::dnn::matmul(c.data(), tb::dnn::View::dense({n, n}), a16.data(),
                    tb::dnn::View::dense({n, n}, bf), b16.data(), tb::dnn::View::dense({n, n}, bf),
                    nullptr);
  set_gflops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_MatmulBF16)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- linear -----------------------------------------------------------------------------

// Args: N, IC, OC.
void linear_shapes(benchmark::internal::Benchmark* b) {
  for (auto [ic, oc] : {std::pair{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}})
    b->Args({512, ic, oc});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

struct LinearData {
  int64_t N, IC, OC;
  std::vector<float> x, w, bias, out, dout, dx, dw, db;
  explicit LinearData(const benchmark::State& s)
      : N(s.range(0)),
        IC(s.range(1)),
        OC(s.range(2)),
        x(random_vec(N * IC, 1)),
        w(random_vec(OC * IC, 2, 0.02f)),
        bias(random_vec(OC, 3)),
        out(N * OC),
        dout(random_vec(N * OC, 4)),
        dx(N * IC, 0.0f),
        dw(OC * IC, 0.0f),
        db(OC, 0.0f) {}
  double flops() const { return 2.0 * N * IC * OC; }
};

void BM_LinearForward(benchmark::State& state) {
  LinearData d(state);
  for (auto _ : state)
    tb::ops::linear_forward(d.out.data(), d.x.data(), d.w.data(), d.bias.data(), d.N, d.IC, d.OC);
  set_gflops(state, d.flops());
}
BENCHMARK(BM_LinearForward)->Apply(linear_shapes);

void BM_LinearBackwardDx(benchmark::State& state) {
  LinearData d(state);
  for (auto _ : state)
    tb::ops::linear_backward(d.dx.data(), nullptr, nullptr, d.dout.data(), d.x.data(), d.w.data(),
                             d.N, d.IC, d.OC);
  set_gflops(state, d.flops());
}
BENCHMARK(BM_LinearBackwardDx)->Apply(linear_shapes);

void BM_LinearBackwardDw(benchmark::State& state) {
  LinearData d(state);
  for (auto _ : state)
    tb::ops::linear_backward(nullptr, d.dw.data(), nullptr, d.dout.data(), d.x.data(), d.w.data(),
                             d.N, d.IC, d.OC);
  set_gflops(state, d.flops());
}
BENCHMARK(BM_LinearBackwardDw)->Apply(linear_shapes);

void BM_LinearBackwardDbias(benchmark::State& state) {
  LinearData d(state);
  for (auto _ : state)
    tb::ops::linear_backward(nullptr, nullptr, d.db.data(), d.dout.data(), d.x.data(), d.w.data(),
                             d.N, d.IC, d.OC);
  set_bytes(state, 4.0 * d.N * d.OC);
}
BENCHMARK(BM_LinearBackwardDbias)
    ->Args({512, 768, 3072})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// ---- attention --------------------------------------------------------------------------

// Args: B, T, NH, NKV, hs, P. q/k/v read from one fused QKV buffer, as the model does.
struct AttentionData {
  AttentionShape s;
  std::vector<float> qkv, pk, pv, out, att, dout, dqkv, dpk, dpv, scratch;
  explicit AttentionData(const benchmark::State& st) {
    s = {st.range(0), st.range(1), st.range(2), st.range(3), st.range(4), st.range(5)};
    s.q_ld = s.kv_ld = (s.NH + 2 * s.NKV) * s.hs;
    const int64_t L = s.P + s.T, np = s.NKV * s.P * s.hs;
    qkv = random_vec(s.B * s.T * s.q_ld, 1);
    pk = random_vec(np, 2);
    pv = random_vec(np, 3);
    out.resize(s.B * s.T * s.NH * s.hs);
    att.resize(s.B * s.NH * s.T * L);
    scratch.resize(att.size());
    dout = random_vec(static_cast<int64_t>(out.size()), 4);
    dqkv.assign(qkv.size(), 0.0f);
    dpk.assign(pk.size(), 0.0f);
    dpv.assign(pv.size(), 0.0f);
  }
  const float* q() const { return qkv.data(); }
  const float* k() const { return qkv.data() + s.NH * s.hs; }
  const float* v() const { return qkv.data() + (s.NH + s.NKV) * s.hs; }
  // Two products (scores, att·V), each B·NH·T·(P+T)·hs multiply-adds.
  double flops() const { return 4.0 * s.B * s.NH * s.T * (s.P + s.T) * s.hs; }
  void forward() {
    tb::ops::attention_forward(out.data(), att.data(), q(), k(), v(), s.P ? pk.data() : nullptr,
                               s.P ? pv.data() : nullptr, s);
  }
};

void attention_shapes(benchmark::internal::Benchmark* b) {
  b->Args({4, 128, 12, 12, 64, 0})->Args({4, 256, 12, 12, 64, 0});
  b->Args({4, 256, 12, 4, 64, 0})->Args({4, 256, 12, 12, 64, 16});  // GQA 3; prefix P = 16
  b->ArgNames({"B", "T", "NH", "NKV", "hs", "P"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void BM_AttentionForward(benchmark::State& state) {
  AttentionData d(state);
  for (auto _ : state) d.forward();
  set_gflops(state, d.flops());
}
BENCHMARK(BM_AttentionForward)->Apply(attention_shapes);

void BM_AttentionBackward(benchmark::State& state) {
  AttentionData d(state);
  d.forward();
  const int64_t qw = d.s.NH * d.s.hs, kw = d.s.NKV * d.s.hs;
  for (auto _ : state)
    tb::ops::attention_backward(d.dqkv.data(), d.dqkv.data() + qw, d.dqkv.data() + qw + kw,
                                d.s.P ? d.dpk.data() : nullptr, d.s.P ? d.dpv.data() : nullptr,
                                d.scratch.data(), d.dout.data(), d.att.data(), d.q(), d.k(), d.v(),
                                d.s.P ? d.pk.data() : nullptr, d.s.P ? d.pv.data() : nullptr, d.s);
  set_gflops(state, 2.0 * d.flops());  // four products
}
BENCHMARK(BM_AttentionBackward)->Apply(attention_shapes);

// ---- memory-bound ops -------------------------------------------------------------------

// Args: N, C.
void BM_LayerNormForward(benchmark::State& state) {
  const int64_t N = state.range(0), C = state.range(1);
  auto x = random_vec(N * C, 1), w = random_vec(C, 2), b = random_vec(C, 3);
  std::vector<float> out(N * C), mean(N), rstd(N);
  for (auto _ : state)
    tb::ops::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                               N, C, 1e-5f);
  set_bytes(state, 8.0 * N * C);
}
BENCHMARK(BM_LayerNormForward)->Args({512, 768})->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_LayerNormBackward(benchmark::State& state) {
  const int64_t N = state.range(0), C = state.range(1);
  auto x = random_vec(N * C, 1), w = random_vec(C, 2), b = random_vec(C, 3),
       dy = random_vec(N * C, 4);
  std::vector<float> out(N * C), mean(N), rstd(N), dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  tb::ops::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N,
                             C, 1e-5f);
  for (auto _ : state)
    tb::ops::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(),
                                mean.data(), rstd.data(), N, C);
  set_bytes(state, 16.0 * N * C);  // read x, dy, dx; write dx
}
BENCHMARK(BM_LayerNormBackward)->Args({512, 768})->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_RmsNormForward(benchmark::State& state) {
  const int64_t N = state.range(0), C = state.range(1);
  auto x = random_vec(N * C, 1), w = random_vec(C, 2);
  std::vector<float> out(N * C), rstd(N);
  for (auto _ : state)
    tb::ops::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
  set_bytes(state, 8.0 * N * C);
}
BENCHMARK(BM_RmsNormForward)->Args({512, 768})->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_RmsNormBackward(benchmark::State& state) {
  const int64_t N = state.range(0), C = state.range(1);
  auto x = random_vec(N * C, 1), w = random_vec(C, 2), dy = random_vec(N * C, 4);
  std::vector<float> out(N * C), rstd(N), dx(N * C, 0.0f), dw(C, 0.0f);
  tb::ops::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
  for (auto _ : state)
    tb::ops::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N,
                              C);
  set_bytes(state, 16.0 * N * C);
}
BENCHMARK(BM_RmsNormBackward)->Args({512, 768})->Unit(benchmark::kMicrosecond)->UseRealTime();

// Arg: n (N·4C of the MLP).
void BM_GeluForward(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto x = random_vec(n, 1);
  std::vector<float> y(n);
  for (auto _ : state) tb::ops::gelu_forward(y.data(), x.data(), n);
  set_bytes(state, 8.0 * n);
}
BENCHMARK(BM_GeluForward)->Arg(512 * 3072)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_GeluBackward(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto x = random_vec(n, 1), dy = random_vec(n, 2);
  std::vector<float> dx(n, 0.0f);
  for (auto _ : state) tb::ops::gelu_backward(dx.data(), dy.data(), x.data(), n);
  set_bytes(state, 16.0 * n);
}
BENCHMARK(BM_GeluBackward)->Arg(512 * 3072)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_SwiGluForward(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto g = random_vec(n, 1), u = random_vec(n, 2);
  std::vector<float> y(n);
  for (auto _ : state) tb::ops::swiglu_forward(y.data(), g.data(), u.data(), n);
  set_bytes(state, 12.0 * n);
}
BENCHMARK(BM_SwiGluForward)->Arg(512 * 3072)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_SwiGluBackward(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto g = random_vec(n, 1), u = random_vec(n, 2), dy = random_vec(n, 3);
  std::vector<float> dg(n, 0.0f), du(n, 0.0f);
  for (auto _ : state)
    tb::ops::swiglu_backward(dg.data(), du.data(), dy.data(), g.data(), u.data(), n);
  set_bytes(state, 28.0 * n);
}
BENCHMARK(BM_SwiGluBackward)->Arg(512 * 3072)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Args: B, T, NH, hs. In place on q of a fused QKV buffer, as the Llama block runs it.
void BM_RopeForward(benchmark::State& state) {
  const int64_t B = state.range(0), T = state.range(1), NH = state.range(2), hs = state.range(3);
  const int64_t ld = 3 * NH * hs;
  auto qkv = random_vec(B * T * ld, 1);
  for (auto _ : state) tb::ops::rope_forward(qkv.data(), qkv.data(), B, T, NH, hs, ld, 10000.0f);
  set_bytes(state, 8.0 * B * T * NH * hs);
}
BENCHMARK(BM_RopeForward)->Args({4, 128, 12, 64})->Unit(benchmark::kMicrosecond)->UseRealTime();

// Args: N, V (GPT-2 vocabulary).
void BM_CrossEntropy(benchmark::State& state) {
  const int64_t N = state.range(0), V = state.range(1);
  auto logits = random_vec(N * V, 1, 3.0f);
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; i++) targets[i] = static_cast<int32_t>((i * 7919) % V);
  std::vector<float> losses(N), dl(N, 1.0f / N), dlogits(N * V, 0.0f);
  for (auto _ : state) {
    tb::ops::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
    tb::ops::cross_entropy_backward(dlogits.data(), dl.data(), logits.data(), targets.data(), N, V);
  }
  set_bytes(state, 16.0 * N * V);  // forward reads logits; backward reads them and updates dlogits
}
BENCHMARK(BM_CrossEntropy)->Args({128, 50257})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
