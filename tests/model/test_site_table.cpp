// Tests of the model's site table (model.h: SiteSlice, Model::site, layer_of, the tensors
// outside the layers, sites_from_name) on both committed golden families, and of the
// observer hook in cached decoding, which runs the same block as the full forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "harness/base/errors.h"
#include "harness/core/model_io.h"

namespace {

using tb::Family;
using tb::Site;

const std::string kDir = std::string(TB_SOURCE_DIR) + "/tests/goldens/";

TEST(SiteTable, SitesPointAtTheLinearAndTheirRows) {
  for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
    auto m = tb::load_model(kDir + name);
    const auto& c = m->config();
    const bool fused = c.family == Family::gpt2;
    const int64_t C = c.hidden, qd = c.n_head * c.head_dim, kvd = c.n_kv_head * c.head_dim;
    EXPECT_EQ(m->block_config().fused_qkv, fused) << name;
    EXPECT_EQ(tb::has_site(c, Site::qkv), fused) << name;
    EXPECT_EQ(tb::has_site(c, Site::gate), !fused) << name;
    for (int l = 0; l < c.n_layer; ++l) {
      int64_t offset = 0;
      for (Site s : {Site::q, Site::k, Site::v}) {
        const tb::SiteRef r = m->site(l, s);
        ASSERT_NE(r.weight, nullptr) << name;
        EXPECT_EQ(r.weight->shape, (std::vector<int64_t>{r.slice.total_rows, C})) << name;
        EXPECT_EQ(r.slice.row_offset, fused ? offset : 0) << name << " " << tb::site_name(s);
        EXPECT_EQ(r.slice.rows, s == Site::q ? qd : kvd) << name;
        EXPECT_EQ(r.slice.hook_site, fused ? Site::qkv : s) << name;
        EXPECT_EQ(r.weight == m->site(l, Site::q).weight, fused || s == Site::q) << name;
        EXPECT_EQ(m->layer_of(*r.weight), l) << name;
        if (r.bias) {
          EXPECT_EQ(m->layer_of(*r.bias), l) << name;
        }
        offset += r.slice.rows;
      }
      EXPECT_EQ(m->site(l, Site::down).slice.in_features, c.intermediate) << name;
      EXPECT_EQ(m->site(l, Site::o).weight->name.rfind(tb::layer_prefix(c, l), 0), 0u) << name;
      EXPECT_EQ(m->site(l, Site::o).weight->name, tb::site_module(c, l, Site::o) + ".weight") << name;
    }
    // Every base parameter is in exactly one layer or outside them all.
    int64_t in_layers = 0;
    for (int l = 0; l < c.n_layer; ++l)
      for (tb::Param* p : m->layer_params(l)) {
        EXPECT_EQ(m->layer_of(*p), l) << p->name;
        in_layers += p->numel();
      }
    int64_t outside = m->token_embedding().numel();
    if (m->position_embedding()) outside += m->position_embedding()->numel();
    for (tb::Param* p : m->final_norm_params()) {
      EXPECT_EQ(m->layer_of(*p), -1) << p->name;
      outside += p->numel();
    }
    if (&m->lm_head() != &m->token_embedding()) outside += m->lm_head().numel();
    EXPECT_EQ(in_layers + outside, m->params().num_params()) << name;
    EXPECT_EQ(m->layer_of(m->token_embedding()), -1) << name;
    EXPECT_EQ(m->lm_head().shape, (std::vector<int64_t>{c.vocab_size, C})) << name;
  }
}

TEST(SiteTable, NamesSelectSitesOfTheFamily) {
  auto g = tb::load_model(kDir + "gpt2-tiny");
  auto l = tb::load_model(kDir + "llama-tiny");
  const std::vector<Site> qkv = {Site::q, Site::k, Site::v};
  EXPECT_EQ(tb::sites_from_name(g->config(), "qkv", "x"), qkv);
  EXPECT_EQ(tb::sites_from_name(g->config(), "c_attn", "x"), qkv);
  EXPECT_EQ(tb::sites_from_name(l->config(), "down", "x"), std::vector<Site>{Site::down});
  EXPECT_THROW(tb::sites_from_name(l->config(), "qkv", "x"), tb::InputError);
  EXPECT_THROW(tb::sites_from_name(g->config(), "gate", "x"), tb::InputError);
  EXPECT_THROW(tb::sites_from_name(g->config(), "qq", "x"), tb::InputError);
}

// Records every observed hidden state, flattened per layer in call order.
class Recorder : public tb::Hooks {
 public:
  bool observes(int) const override { return true; }
  void observe(int layer, const float* h, int64_t B, int64_t T, int64_t C) override {
    if (static_cast<int>(seen.size()) <= layer) seen.resize(layer + 1);
    seen[layer].insert(seen[layer].end(), h, h + B * T * C);
  }
  std::vector<std::vector<float>> seen;
};

TEST(SiteTable, CachedDecodingCallsTheObserverLikeTheFullForward) {
  for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
    auto m = tb::load_model(kDir + name);
    const std::vector<int32_t> seq = {5, 17, 96, 3, 40};
    const int64_t T = static_cast<int64_t>(seq.size()), V = m->config().vocab_size;
    Recorder full;
    m->forward(seq.data(), 1, T, &full);
    // Cached: the first three tokens at once, then one at a time.
    Recorder cached;
    tb::KVCache cache(m->config(), 1, T);
    std::vector<float> logits(3 * V);
    m->forward_cached(seq.data(), 1, 3, cache, logits.data(), false, &cached);
    for (int64_t t = 3; t < T; ++t) m->forward_cached(seq.data() + t, 1, 1, cache, logits.data(), true, &cached);
    ASSERT_EQ(full.seen.size(), static_cast<size_t>(m->config().n_layer + 1)) << name;
    ASSERT_EQ(cached.seen.size(), full.seen.size()) << name;
    for (size_t l = 0; l < full.seen.size(); ++l) {
      ASSERT_EQ(cached.seen[l].size(), full.seen[l].size()) << name << " layer " << l;
      float diff = 0.0f;
      for (size_t i = 0; i < full.seen[l].size(); ++i) diff = std::max(diff, std::fabs(cached.seen[l][i] - full.seen[l][i]));
      EXPECT_LT(diff, 1e-4f) << name << " layer " << l;
    }
  }
}

}  // namespace
