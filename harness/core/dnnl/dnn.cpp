// oneDNN 2.x implementation of dnn.h: one engine and stream, and a cache of primitives
// keyed by op, shapes, strides, data types and attributes. The cache is what keeps
// primitive creation off the hot path: a training step repeats the same few hundred
// shapes, so after the first step every call is a lookup plus an execute.
#include "harness/core/dnnl/dnn.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <cmath>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "harness/base/errors.h"

static_assert(DNNL_VERSION_MAJOR == 2, "tunebench is written against the oneDNN 2.x API");

namespace tb::dnn {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Runtime& rt() {
  static Runtime r;
  return r;
}

// One cache for all primitive kinds: the key names the op, so kinds never collide.
struct Entry {
  dnnl::primitive prim;
  // Descriptors the execute step needs (e.g. stat/data descs); kept with the primitive.
  std::vector<memory::desc> mds;
};

struct PrimitiveCache {
  std::mutex mu;
  std::unordered_map<std::string, Entry> map;
  CacheStats stats;
};

PrimitiveCache& cache() {
  static PrimitiveCache c;
  return c;
}

// Looks a primitive up, building it with `make` on a miss.
template <class Make>
const Entry& lookup(const std::string& key, Make&& make) {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.map.find(key);
  if (it != c.map.end()) {
    ++c.stats.hits;
    return it->second;
  }
  ++c.stats.misses;
  Entry e = make();
  auto [pos, inserted] = c.map.emplace(key, std::move(e));
  c.stats.size = static_cast<int64_t>(c.map.size());
  return pos->second;
}

dt to_dt(DType d) { return d == DType::bf16 ? dt::bf16 : dt::f32; }

dnnl::algorithm to_alg(Eltwise e) {
  switch (e) {
    case Eltwise::gelu_tanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Eltwise::silu: return dnnl::algorithm::eltwise_swish;
    case Eltwise::relu: return dnnl::algorithm::eltwise_relu;
    case Eltwise::none: break;
  }
  throw Error("dnn: no oneDNN algorithm for Eltwise::none");
}

// alpha of the oneDNN eltwise algorithm: swish(x) = x*sigmoid(alpha*x) with alpha = 1.
float alg_alpha(Eltwise e) { return e == Eltwise::silu ? 1.0f : 0.0f; }

void append_view(std::ostringstream& os, const View& v) {
  os << '[';
  for (auto d : v.dims) os << d << ',';
  os << '/';
  for (auto s : v.strides) os << s << ',';
  os << (v.dtype == DType::bf16 ? "bf16" : "f32") << ']';
}

memory::desc md_of(const View& v) {
  return memory::desc(memory::dims(v.dims.begin(), v.dims.end()), to_dt(v.dtype),
                      memory::dims(v.strides.begin(), v.strides.end()));
}

memory mem(const memory::desc& md, const void* p) {
  return memory(md, rt().engine, const_cast<void*>(p));
}

memory::desc plain(std::initializer_list<int64_t> dims) {
  memory::dims d(dims);
  return memory::desc(d, dt::f32, d.size() == 1 ? tag::a : tag::ab);
}

}  // namespace

View View::dense(std::vector<int64_t> dims, DType d) {
  View v;
  v.dims = std::move(dims);
  v.strides.assign(v.dims.size(), 1);
  for (int i = static_cast<int>(v.dims.size()) - 2; i >= 0; --i)
    v.strides[i] = v.strides[i + 1] * v.dims[i + 1];
  v.dtype = d;
  return v;
}

View View::matrix(int64_t rows, int64_t cols, bool transposed, DType d) {
  View v;
  v.dims = {rows, cols};
  v.strides = transposed ? std::vector<int64_t>{1, rows} : std::vector<int64_t>{cols, 1};
  v.dtype = d;
  return v;
}

void matmul(float* c, const View& cv, const void* a, const View& av, const void* b,
            const View& bv, const float* bias, const MatmulAttr& attr) {
  const size_t nd = cv.dims.size();
  TB_CHECK(nd >= 2 && av.dims.size() == nd && bv.dims.size() == nd,
           "matmul views must have the same rank >= 2");
  TB_CHECK(av.strides.size() == nd && bv.strides.size() == nd && cv.strides.size() == nd,
           "matmul view strides must match dims");
  TB_CHECK(av.dims[nd - 1] == bv.dims[nd - 2] && av.dims[nd - 2] == cv.dims[nd - 2] &&
               bv.dims[nd - 1] == cv.dims[nd - 1],
           "matmul shapes do not agree");
  TB_CHECK(cv.dtype == DType::f32, "matmul output is f32");
  std::ostringstream key;
  key << "mm";
  append_view(key, av);
  append_view(key, bv);
  append_view(key, cv);
  key << (bias ? 'b' : '-') << attr.alpha << ':' << attr.beta << ':' << static_cast<int>(attr.post);
  const Entry& e = lookup(key.str(), [&] {
    memory::desc bias_md;
    if (bias) {
      memory::dims bd(nd, 1);
      bd[nd - 1] = cv.dims[nd - 1];
      bias_md = memory::desc(bd, dt::f32, View::dense(std::vector<int64_t>(bd.begin(), bd.end())).strides);
    }
    // alpha as an output scale keeps oneDNN on its optimised kernels; an eltwise_linear
    // post-op followed by a sum post-op sends the primitive to the reference kernel.
    dnnl::post_ops po;
    if (attr.post != Eltwise::none) po.append_eltwise(1.0f, to_alg(attr.post), alg_alpha(attr.post), 0.0f);
    if (attr.beta != 0.0f) po.append_sum(attr.beta);
    dnnl::primitive_attr pattr;
    if (attr.alpha != 1.0f) pattr.set_output_scales(0, {attr.alpha});
    pattr.set_post_ops(po);
    auto desc = dnnl::matmul::desc(md_of(av), md_of(bv), bias_md, md_of(cv));
    auto pd = dnnl::matmul::primitive_desc(desc, pattr, rt().engine);
    return Entry{dnnl::matmul(pd), {md_of(av), md_of(bv), bias_md, md_of(cv)}};
  });
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, mem(e.mds[0], a)},
                                          {DNNL_ARG_WEIGHTS, mem(e.mds[1], b)},
                                          {DNNL_ARG_DST, mem(e.mds[3], c)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, mem(e.mds[2], bias));
  e.prim.execute(rt().stream, args);
  rt().stream.wait();
}

void gemm(float* c, const float* a, const float* b, const float* bias, int64_t M, int64_t N,
          int64_t K, bool trans_a, bool trans_b, const MatmulAttr& attr) {
  matmul(c, View::matrix(M, N, false), a, View::matrix(M, K, trans_a), b,
         View::matrix(K, N, trans_b), bias, attr);
}

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* gamma,
                       const float* beta, int64_t N, int64_t C, float eps) {
  std::ostringstream key;
  key << "lnf" << N << ',' << C << ',' << eps;
  const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  const Entry& e = lookup(key.str(), [&] {
    auto data = plain({N, C});
    auto stat = plain({N});
    auto desc = dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_training,
                                                        data, stat, eps, flags);
    auto pd = dnnl::layer_normalization_forward::primitive_desc(desc, rt().engine);
    return Entry{dnnl::layer_normalization_forward(pd), {data, stat, plain({C})}};
  });
  // oneDNN reports variance; callers keep rstd, which is what the backward formula uses.
  thread_local std::vector<float> mean_buf, var;
  mean_buf.resize(N);
  var.resize(N);
  float* m = mean ? mean : mean_buf.data();
  e.prim.execute(rt().stream, {{DNNL_ARG_SRC, mem(e.mds[0], x)},
                               {DNNL_ARG_DST, mem(e.mds[0], y)},
                               {DNNL_ARG_MEAN, mem(e.mds[1], m)},
                               {DNNL_ARG_VARIANCE, mem(e.mds[1], var.data())},
                               {DNNL_ARG_SCALE, mem(e.mds[2], gamma)},
                               {DNNL_ARG_SHIFT, mem(e.mds[2], beta)}});
  rt().stream.wait();
  if (rstd)
    for (int64_t i = 0; i < N; ++i) rstd[i] = 1.0f / std::sqrt(var[i] + eps);
}

void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* mean, const float* rstd, const float* gamma, int64_t N,
                        int64_t C, float eps) {
  std::ostringstream key;
  key << "lnb" << N << ',' << C << ',' << eps;
  const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  const Entry& e = lookup(key.str(), [&] {
    auto data = plain({N, C});
    auto stat = plain({N});
    auto fdesc = dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_training,
                                                         data, stat, eps, flags);
    auto fpd = dnnl::layer_normalization_forward::primitive_desc(fdesc, rt().engine);
    auto bdesc = dnnl::layer_normalization_backward::desc(dnnl::prop_kind::backward, data, data,
                                                          stat, eps, flags);
    auto bpd = dnnl::layer_normalization_backward::primitive_desc(bdesc, rt().engine, fpd);
    return Entry{dnnl::layer_normalization_backward(bpd), {data, stat, plain({C})}};
  });
  // Recover the variance from rstd in double: var + eps = 1/rstd², exact to float rounding.
  // oneDNN requires a shift argument with use_shift even though backward never reads it.
  thread_local std::vector<float> var, dg_buf, db_buf, shift_buf;
  var.resize(N);
  shift_buf.resize(C);
  dg_buf.resize(C);
  db_buf.resize(C);
  for (int64_t i = 0; i < N; ++i) {
    const double r = rstd[i];
    var[i] = static_cast<float>(1.0 / (r * r) - static_cast<double>(eps));
  }
  e.prim.execute(rt().stream, {{DNNL_ARG_SRC, mem(e.mds[0], x)},
                               {DNNL_ARG_MEAN, mem(e.mds[1], mean)},
                               {DNNL_ARG_VARIANCE, mem(e.mds[1], var.data())},
                               {DNNL_ARG_DIFF_DST, mem(e.mds[0], dy)},
                               {DNNL_ARG_SCALE, mem(e.mds[2], gamma)},
                               {DNNL_ARG_SHIFT, mem(e.mds[2], shift_buf.data())},
                               {DNNL_ARG_DIFF_SRC, mem(e.mds[0], dx)},
                               {DNNL_ARG_DIFF_SCALE, mem(e.mds[2], dgamma ? dgamma : dg_buf.data())},
                               {DNNL_ARG_DIFF_SHIFT, mem(e.mds[2], dbeta ? dbeta : db_buf.data())}});
  rt().stream.wait();
}

void softmax_forward(float* y, const float* x, int64_t N, int64_t C) {
  std::ostringstream key;
  key << "smf" << N << ',' << C;
  const Entry& e = lookup(key.str(), [&] {
    auto data = plain({N, C});
    auto desc = dnnl::softmax_forward::desc(dnnl::prop_kind::forward_training, data, 1);
    auto pd = dnnl::softmax_forward::primitive_desc(desc, rt().engine);
    return Entry{dnnl::softmax_forward(pd), {data}};
  });
  e.prim.execute(rt().stream, {{DNNL_ARG_SRC, mem(e.mds[0], x)}, {DNNL_ARG_DST, mem(e.mds[0], y)}});
  rt().stream.wait();
}

void softmax_backward(float* dx, const float* dy, const float* y, int64_t N, int64_t C) {
  std::ostringstream key;
  key << "smb" << N << ',' << C;
  const Entry& e = lookup(key.str(), [&] {
    auto data = plain({N, C});
    auto fdesc = dnnl::softmax_forward::desc(dnnl::prop_kind::forward_training, data, 1);
    auto fpd = dnnl::softmax_forward::primitive_desc(fdesc, rt().engine);
    auto bdesc = dnnl::softmax_backward::desc(data, data, 1);
    auto bpd = dnnl::softmax_backward::primitive_desc(bdesc, rt().engine, fpd);
    return Entry{dnnl::softmax_backward(bpd), {data}};
  });
  e.prim.execute(rt().stream, {{DNNL_ARG_DST, mem(e.mds[0], y)},
                               {DNNL_ARG_DIFF_DST, mem(e.mds[0], dy)},
                               {DNNL_ARG_DIFF_SRC, mem(e.mds[0], dx)}});
  rt().stream.wait();
}

void eltwise_forward(Eltwise kind, float* y, const float* x, int64_t n) {
  std::ostringstream key;
  key << "ewf" << static_cast<int>(kind) << ',' << n;
  const Entry& e = lookup(key.str(), [&] {
    auto data = plain({n});
    auto desc = dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, to_alg(kind),
                                            data, alg_alpha(kind), 0.0f);
    auto pd = dnnl::eltwise_forward::primitive_desc(desc, rt().engine);
    return Entry{dnnl::eltwise_forward(pd), {data}};
  });
  e.prim.execute(rt().stream, {{DNNL_ARG_SRC, mem(e.mds[0], x)}, {DNNL_ARG_DST, mem(e.mds[0], y)}});
  rt().stream.wait();
}

void eltwise_backward(Eltwise kind, float* dx, const float* dy, const float* x, int64_t n) {
  std::ostringstream key;
  key << "ewb" << static_cast<int>(kind) << ',' << n;
  const Entry& e = lookup(key.str(), [&] {
    auto data = plain({n});
    auto fdesc = dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, to_alg(kind),
                                             data, alg_alpha(kind), 0.0f);
    auto fpd = dnnl::eltwise_forward::primitive_desc(fdesc, rt().engine);
    auto bdesc = dnnl::eltwise_backward::desc(to_alg(kind), data, data, alg_alpha(kind), 0.0f);
    auto bpd = dnnl::eltwise_backward::primitive_desc(bdesc, rt().engine, fpd);
    return Entry{dnnl::eltwise_backward(bpd), {data}};
  });
  e.prim.execute(rt().stream, {{DNNL_ARG_SRC, mem(e.mds[0], x)},
                               {DNNL_ARG_DIFF_DST, mem(e.mds[0], dy)},
                               {DNNL_ARG_DIFF_SRC, mem(e.mds[0], dx)}});
  rt().stream.wait();
}

void to_bf16(void* dst, const float* src, int64_t n) {
  std::ostringstream key;
  key << "bf16" << n;
  const Entry& e = lookup(key.str(), [&] {
    auto s = plain({n});
    auto d = memory::desc({n}, dt::bf16, tag::a);
    auto pd = dnnl::reorder::primitive_desc(rt().engine, s, rt().engine, d);
    return Entry{dnnl::reorder(pd), {s, d}};
  });
  e.prim.execute(rt().stream, {{DNNL_ARG_FROM, mem(e.mds[0], src)}, {DNNL_ARG_TO, mem(e.mds[1], dst)}});
  rt().stream.wait();
}

Info info() {
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream ver;
  ver << v->major << '.' << v->minor << '.' << v->patch;
  const auto isa = dnnl::get_effective_cpu_isa();
  std::string name;
  bool bf16 = false;
  switch (isa) {
    case dnnl::cpu_isa::sse41: name = "sse41"; break;
    case dnnl::cpu_isa::avx: name = "avx"; break;
    case dnnl::cpu_isa::avx2: name = "avx2"; break;
    case dnnl::cpu_isa::avx2_vnni: name = "avx2_vnni"; break;
    case dnnl::cpu_isa::avx512_mic: name = "avx512_mic"; break;
    case dnnl::cpu_isa::avx512_mic_4ops: name = "avx512_mic_4ops"; break;
    case dnnl::cpu_isa::avx512_core: name = "avx512_core"; break;
    case dnnl::cpu_isa::avx512_core_vnni: name = "avx512_core_vnni"; break;
    case dnnl::cpu_isa::avx512_core_bf16: name = "avx512_core_bf16"; bf16 = true; break;
    case dnnl::cpu_isa::avx512_core_amx: name = "avx512_core_amx"; bf16 = true; break;
    default: name = "isa_" + std::to_string(static_cast<int>(isa)); break;
  }
  return Info{ver.str(), name, bf16};
}

CacheStats cache_stats() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void clear_cache() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.map.clear();
  c.stats = CacheStats{};
}

}  // namespace tb::dnn
