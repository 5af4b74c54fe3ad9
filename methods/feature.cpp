// `feature` — feature-based classification: the frozen model turns each example into a
// pooled hidden state of a chosen layer, computed once and cached on disk (keyed by model
// hash, task, version, layer, pooling and the examples), and a multinomial logistic
// regression with an L2 penalty is fitted on train, the penalty chosen on dev.
//
// Metering: extracting the train features is training (train_tokens, train_seconds,
// train_flops, with the regression's time), the dev features are details.dev_eval and the
// test features the eval figures. A split read from the cache costs nothing in this run: the
// meter then says cache_hit, and cached_cost.<split> holds what computing it cost when the
// cache was made (kept next to the features), never a near-zero time passed off as measured.
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>

#include "harness/base/hash.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/core/train_loop.h"
#include "methods/trainer.h"

namespace tb::methods {

namespace {

struct Features {
  int64_t n = 0, C = 0;
  std::vector<float> x;  // (n, C)
};

class FeatureMethod final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    if (ctx.train.empty()) throw InputError("task " + ctx.task.name() + " has no train split for the feature classifier");
    const auto& mc = ctx.model.config();
    layer_ = ctx.options.integer("layer");
    if (layer_ < 0) layer_ = mc.n_layer + 1 + layer_;
    if (layer_ < 0 || layer_ > mc.n_layer)
      throw InputError("--feature.layer must be in -" + std::to_string(mc.n_layer + 1) + ".." + std::to_string(mc.n_layer));
    const auto pool = ctx.options.str("pool");
    if (pool != "mean" && pool != "last") throw InputError("--feature.pool must be mean or last, got '" + pool + "'");
    pool_ = pool == "mean" ? Pool::mean : Pool::last;
    max_len_ = ctx.options.integer("max-length");
    if (max_len_ <= 0) throw InputError("--feature.max-length must be positive");
    // Like the trainer's inputs, never longer than the model's context.
    max_len_ = std::min<int64_t>(max_len_, mc.max_positions);
    K_ = static_cast<int64_t>(ctx.task.label_names().size());

    const auto train = features(ctx, ctx.train, "train");
    const auto dev = features(ctx, ctx.dev, "dev");
    C_ = train.C;
    // Standardise with train statistics.
    mean_.assign(C_, 0.0f);
    stdev_.assign(C_, 0.0f);
    for (int64_t i = 0; i < train.n; ++i)
      for (int64_t c = 0; c < C_; ++c) mean_[c] += train.x[i * C_ + c] / static_cast<float>(train.n);
    for (int64_t i = 0; i < train.n; ++i)
      for (int64_t c = 0; c < C_; ++c) {
        const float d = train.x[i * C_ + c] - mean_[c];
        stdev_[c] += d * d / static_cast<float>(train.n);
      }
    for (auto& s : stdev_) s = std::sqrt(s) + 1e-6f;
    std::vector<int> ytrain, ydev;
    for (const auto& e : ctx.train) ytrain.push_back(e.label);
    for (const auto& e : ctx.dev) ydev.push_back(e.label);

    // L2 strength: given, or the best dev accuracy over a grid.
    std::vector<double> grid;
    const auto l2 = ctx.options.str("l2");
    if (l2 == "auto") grid = {1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    else grid = {ctx.options.number("l2")};
    const int64_t iters = ctx.options.integer("iterations");
    double best = -1;
    nlohmann::json tried = nlohmann::json::array();
    const auto t0 = std::chrono::steady_clock::now();
    for (double lambda : grid) {
      std::vector<float> W, b;
      std::string diverged;
      fit(train, ytrain, lambda, iters, W, b, diverged);
      if (!diverged.empty()) {
        ctx.meter.status = "diverged";
        ctx.meter.status_message = diverged;
        return;
      }
      const double acc = dev.n ? accuracy(dev, ydev, W, b) : accuracy(train, ytrain, W, b);
      tried.push_back({{"l2", lambda}, {dev.n ? "dev_accuracy" : "train_accuracy", acc}});
      if (acc > best) {
        best = acc;
        W_ = W;
        b_ = b;
        lambda_ = lambda;
      }
    }
    ctx.meter.phase("train").seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx.meter.steps = iters * static_cast<int64_t>(grid.size());
    ctx.meter.details["l2_grid"] = tried;
    ctx.meter.details["l2"] = lambda_;
    ctx.meter.details["layer"] = layer_;
    ctx.meter.details["pool"] = pool;
    ctx.meter.memory["weights"] = ctx.model.params().value_bytes() + ctx.model.params().bf16_bytes() + (K_ * C_ + K_) * 4;
    ctx.meter.memory["gradients"] = (K_ * C_ + K_) * 4;
    ctx.meter.memory["optimizer_state"] = 2 * (K_ * C_ + K_) * 4;
    ctx.meter.memory["activations"] = std::max(ctx.meter.memory["activations"], ctx.model.activation_bytes());
    ctx.meter.memory["feature_cache"] = (train.n + dev.n) * C_ * 4;
  }

  std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    const auto f = features(ctx, examples, "test");
    std::vector<Prediction> out(examples.size());
    for (int64_t i = 0; i < f.n; ++i) {
      out[i].scores = logits(f.x.data() + i * C_);
      out[i].label = static_cast<int>(std::max_element(out[i].scores.begin(), out[i].scores.end()) - out[i].scores.begin());
    }
    return out;
  }

  int64_t trainable_params() const override { return K_ * C_ + K_; }

  int64_t save_adaptation(const std::filesystem::path& dir) const override {
    ParamStore s;
    s.declare("classifier.weight", {K_, C_}, true);
    s.declare("classifier.bias", {K_}, false);
    s.declare("standardise.mean", {C_}, false);
    s.declare("standardise.std", {C_}, false);
    s.allocate();
    std::copy(W_.begin(), W_.end(), s.get("classifier.weight").data);
    std::copy(b_.begin(), b_.end(), s.get("classifier.bias").data);
    std::copy(mean_.begin(), mean_.end(), s.get("standardise.mean").data);
    std::copy(stdev_.begin(), stdev_.end(), s.get("standardise.std").data);
    s.set_all_trainable(true);
    return save_trainable(dir, {&s});
  }

 private:
  // Pooled features of `examples`, from the on-disk cache when present.
  Features features(RunContext& ctx, const std::vector<tasks::Example>& examples, const char* split) {
    Features f;
    f.n = static_cast<int64_t>(examples.size());
    f.C = ctx.model.config().hidden;
    std::string ids;
    for (const auto& e : examples) ids += e.id + '\n' + e.text + '\n';
    const std::string key = tb::sha256_hex(ctx.model_hash + "|" + ctx.task.name() + "|" +
                                             std::to_string(ctx.task.version()) + "|" + std::to_string(layer_) + "|" +
                                             (pool_ == Pool::mean ? "mean" : "last") + "|" + std::to_string(max_len_) +
                                             "|" + tb::sha256_hex(ids));
    const auto path = ctx.cache_dir / "features" / (key + ".f32");
    const auto cost_path = ctx.cache_dir / "features" / (key + ".cost.json");
    f.x.resize(static_cast<size_t>(f.n * f.C));
    if (std::filesystem::exists(path) && std::filesystem::exists(cost_path) &&
        std::filesystem::file_size(path) == static_cast<uintmax_t>(f.x.size() * sizeof(float))) {
      std::ifstream in(path, std::ios::binary);
      in.read(reinterpret_cast<char*>(f.x.data()), static_cast<std::streamsize>(f.x.size() * sizeof(float)));
      std::ifstream cin(cost_path);
      const auto cost = nlohmann::json::parse(cin, nullptr, /*allow_exceptions=*/false);
      const bool cost_ok = cost.is_object() && cost.contains("tokens") && cost["tokens"].is_number_integer() &&
                           cost.contains("seconds") && cost["seconds"].is_number() && cost.contains("flops") &&
                           cost["flops"].is_number();
      if (in && cost_ok) {
        ctx.meter.details[std::string("cache_hit_") + split] = true;
        ctx.meter.cache_hit = true;
        if (!ctx.meter.cached_cost.is_object()) ctx.meter.cached_cost = nlohmann::json::object();
        ctx.meter.cached_cost[split] = cost;
        return f;
      }
    }
    PassCost cost;
    const auto t0 = std::chrono::steady_clock::now();
    const double flops0 = ctx.model.flop_count();
    const int64_t batch = ctx.options.integer("batch");
    for (int64_t s = 0; s < f.n; s += batch) {
      const int64_t B = std::min(batch, f.n - s);
      std::vector<std::vector<int32_t>> seqs;
      int64_t T = 1;
      for (int64_t b = 0; b < B; ++b) {
        auto ids2 = ctx.tokenizer.encode(examples[s + b].text, SpecialTokens::as_text);
        if (ids2.empty()) ids2.push_back(ctx.tokenizer.eos_id().value_or(0));
        if (static_cast<int64_t>(ids2.size()) > max_len_) ids2.resize(max_len_);
        T = std::max<int64_t>(T, static_cast<int64_t>(ids2.size()));
        seqs.push_back(std::move(ids2));
      }
      std::vector<int32_t> toks(B * T, 0), lens(B);
      for (int64_t b = 0; b < B; ++b) {
        std::copy(seqs[b].begin(), seqs[b].end(), toks.begin() + b * T);
        lens[b] = static_cast<int32_t>(seqs[b].size());
        cost.tokens += lens[b];
      }
      ctx.model.forward(toks.data(), B, T, nullptr, false);
      ctx.model.pool(f.x.data() + s * f.C, static_cast<int>(layer_), pool_, lens.data());
      ctx.meter.memory["activations"] = std::max(ctx.meter.memory["activations"], ctx.model.activation_bytes());
    }
    cost.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cost.flops = ctx.model.flop_count() - flops0;
    charge(ctx, split, cost);
    std::filesystem::create_directories(path.parent_path());
    // Checked atomic writes: a full disk fails the run naming the file, never leaves a
    // truncated cache that a later run would read as features.
    write_file_atomic(path, std::string(reinterpret_cast<const char*>(f.x.data()), f.x.size() * sizeof(float)));
    write_file_atomic(cost_path, cost.to_json().dump() + "\n");
    ctx.meter.details[std::string("cache_hit_") + split] = false;
    return f;
  }

  // Train features are training, dev features the dev evaluation, test features the eval.
  static void charge(RunContext& ctx, const std::string& split, const PassCost& cost) {
    auto& m = ctx.meter;
    if (split == "train") {
      m.phase("train").tokens += cost.tokens;
      m.phase("train").seconds += cost.seconds;
      m.phase("train").flops += cost.flops;
    } else if (split == "test") {
      m.phase("test_eval").tokens += cost.tokens;
      m.phase("test_eval").seconds += cost.seconds;
      m.phase("test_eval").flops += cost.flops;
    } else {
      m.details["dev_eval"] = cost.to_json();
      m.phase("dev_eval").tokens += cost.tokens;
      m.phase("dev_eval").seconds += cost.seconds;
      m.phase("dev_eval").flops += cost.flops;
    }
  }

  std::vector<double> logits(const float* x) const { return logits_with(x, W_, b_); }

  std::vector<double> logits_with(const float* x, const std::vector<float>& W, const std::vector<float>& b) const {
    std::vector<double> z(K_);
    for (int64_t k = 0; k < K_; ++k) {
      double s = b[k];
      for (int64_t c = 0; c < C_; ++c) s += double(W[k * C_ + c]) * (x[c] - mean_[c]) / stdev_[c];
      z[k] = s;
    }
    return z;
  }

  double accuracy(const Features& f, const std::vector<int>& y, const std::vector<float>& W,
                  const std::vector<float>& b) const {
    int64_t ok = 0;
    for (int64_t i = 0; i < f.n; ++i) {
      const auto z = logits_with(f.x.data() + i * C_, W, b);
      ok += (std::max_element(z.begin(), z.end()) - z.begin()) == y[i];
    }
    return f.n ? double(ok) / double(f.n) : 0.0;
  }

  // Full-batch multinomial logistic regression on standardised features:
  // minimise mean CE + lambda/2 ||W||² with Adam (deterministic; converges in a few hundred steps).
  // A non-finite loss stops the fit and sets `status` to the training loop's message.
  void fit(const Features& f, const std::vector<int>& y, double lambda, int64_t iters, std::vector<float>& W,
           std::vector<float>& b, std::string& status) {
    ParamStore s;
    s.declare("w", {K_, C_}, true);
    s.declare("b", {K_}, false);
    s.allocate();
    s.set_all_trainable(true);
    s.allocate_grads();
    TrainLoopConfig cfg;
    cfg.adamw.lr = 0.05f;
    cfg.record_curve = false;
    cfg.what = "feature classifier";
    TrainLoop loop({&s}, cfg);
    std::vector<float> xs(f.x.size());
    for (int64_t i = 0; i < f.n; ++i)
      for (int64_t c = 0; c < C_; ++c) xs[i * C_ + c] = (f.x[i * C_ + c] - mean_[c]) / stdev_[c];
    float* w = s.get("w").data;
    float* bb = s.get("b").data;
    std::vector<double> z(K_);
    for (int64_t it = 0; it < iters; ++it) {
      const bool ok = loop.step([&]() -> StepResult {
        float* gw = s.get("w").grad;
        float* gb = s.get("b").grad;
        double loss = 0.0;
        for (int64_t i = 0; i < f.n; ++i) {
          const float* x = xs.data() + i * C_;
          double mx = -1e300;
          for (int64_t k = 0; k < K_; ++k) {
            double a = bb[k];
            for (int64_t c = 0; c < C_; ++c) a += double(w[k * C_ + c]) * x[c];
            z[k] = a;
            mx = std::max(mx, a);
          }
          double sum = 0;
          for (int64_t k = 0; k < K_; ++k) sum += std::exp(z[k] - mx);
          loss += (std::log(sum) - (z[y[i]] - mx)) / double(f.n);
          for (int64_t k = 0; k < K_; ++k) {
            const double g = (std::exp(z[k] - mx) / sum - (k == y[i] ? 1.0 : 0.0)) / double(f.n);
            gb[k] += static_cast<float>(g);
            for (int64_t c = 0; c < C_; ++c) gw[k * C_ + c] += static_cast<float>(g * x[c]);
          }
        }
        for (int64_t j = 0; j < K_ * C_; ++j) gw[j] += static_cast<float>(lambda) * w[j];
        return {loss, 0};
      });
      if (!ok) {
        status = loop.message();
        break;
      }
    }
    W.assign(w, w + K_ * C_);
    b.assign(bb, bb + K_);
  }

  int64_t layer_ = 0, max_len_ = 128, K_ = 0, C_ = 0;
  Pool pool_ = Pool::mean;
  double lambda_ = 0;
  std::vector<float> W_, b_, mean_, stdev_;
};

}  // namespace

MethodInfo feature_method_info() {
  return {"feature",
          "feature-based: frozen model -> pooled hidden state (cached) -> L2 logistic regression",
          {{"layer", "-1", "hidden state to pool: 0 = embeddings, L = final-norm output, negative counts from the end"},
           {"pool", "mean", "mean | last (over the real tokens)"},
           {"l2", "auto", "L2 penalty; auto = best dev accuracy over 1e-4 .. 1"},
           {"iterations", "300", "full-batch Adam steps per fit"},
           {"max-length", "128", "tokens per example"},
           {"batch", "32", "examples per forward pass when extracting features"}},
          [] { return std::make_unique<FeatureMethod>(); },
          {tasks::OutputType::classify},
          {},
          true};
}

}  // namespace tb::methods
