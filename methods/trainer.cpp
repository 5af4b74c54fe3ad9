// The classification trainer (see trainer.h). Sequences are right-padded; the classification
// head reads the pooled final-norm output; the lm objective turns each candidate answer
// into a continuation scored by summed token log-probabilities. Every random choice
// (shuffles, head init) derives from the run's seed, so a rerun is bit-identical.
#include "methods/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "harness/base/errors.h"
#include "harness/core/generate.h"
#include "harness/core/ops.h"
#include "harness/core/safetensors.h"
#include "methods/lm_scoring.h"

namespace tb::methods {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Numerically stable log-softmax-based cross-entropy over K scores; writes dscores.
double softmax_ce(const double* s, int64_t K, int label, double* ds) {
  double mx = *std::max_element(s, s + K), sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += std::exp(s[k] - mx);
  for (int64_t k = 0; k < K; ++k) ds[k] = std::exp(s[k] - mx) / sum - (k == label ? 1.0 : 0.0);
  return -(s[label] - mx - std::log(sum));
}

}  // namespace

std::vector<OptionSpec> training_option_specs(const TrainDefaults& d) {
  return {
      {"lr", std::to_string(d.lr), "peak learning rate (AdamW)"},
      {"epochs", std::to_string(d.epochs), "maximum number of epochs over the train split"},
      {"batch", std::to_string(d.batch), "examples per step"},
      {"warmup", "0.06", "linear warm-up, as a fraction of all steps"},
      {"schedule", "cosine", "learning-rate decay after warm-up: cosine | linear | constant"},
      {"weight-decay", std::to_string(d.weight_decay), "decoupled weight decay on matrices"},
      {"clip", "1.0", "global gradient-norm clip (0 = off)"},
      {"max-length", "128", "tokens per example; longer inputs are truncated"},
      {"patience", "2", "stop after this many epochs without a better dev score"},
      {"objective", d.objective, "head: linear classifier on the pooled last hidden state; lm: score label verbalisers by log-likelihood"},
      {"pool", "last", "pooling of the final hidden state for the head: last | mean"},
  };
}

TrainConfig TrainConfig::from(const Options& o) {
  TrainConfig c;
  c.lr = o.number("lr");
  c.epochs = o.integer("epochs");
  c.batch = o.integer("batch");
  c.warmup = o.number("warmup");
  const auto sched = o.str("schedule");
  if (sched == "cosine") c.schedule = Schedule::cosine;
  else if (sched == "linear") c.schedule = Schedule::linear;
  else if (sched == "constant") c.schedule = Schedule::constant;
  else throw InputError("--" + o.method() + ".schedule must be cosine, linear or constant, got '" + sched + "'");
  c.weight_decay = o.number("weight-decay");
  c.clip = o.number("clip");
  c.max_length = o.integer("max-length");
  c.patience = o.integer("patience");
  c.objective = o.str("objective");
  if (c.objective != "head" && c.objective != "lm")
    throw InputError("--" + o.method() + ".objective must be head or lm, got '" + c.objective + "'");
  const auto pool = o.str("pool");
  if (pool == "last") c.pool = Pool::last;
  else if (pool == "mean") c.pool = Pool::mean;
  else throw InputError("--" + o.method() + ".pool must be last or mean, got '" + pool + "'");
  auto positive = [&](double v, const char* name) {
    if (!(v > 0)) throw InputError("--" + o.method() + "." + name + " must be positive");
  };
  positive(c.lr, "lr");
  positive(static_cast<double>(c.epochs), "epochs");
  positive(static_cast<double>(c.batch), "batch");
  positive(static_cast<double>(c.max_length), "max-length");
  if (c.warmup < 0 || c.warmup >= 1) throw InputError("--" + o.method() + ".warmup must be in [0, 1)");
  return c;
}

// ---- ClassifierHead --------------------------------------------------------------------

ClassifierHead::ClassifierHead(int64_t C, int64_t K, uint64_t seed) : C_(C), K_(K) {
  store_.declare("head.weight", {K, C}, true);
  store_.declare("head.bias", {K}, false);
  store_.allocate();
  std::mt19937_64 g(seed ^ 0x4eadull);
  std::normal_distribution<float> d(0.0f, 0.02f);
  Param& w = store_.get("head.weight");
  for (int64_t i = 0; i < w.numel(); ++i) w.data[i] = d(g);
  store_.set_all_trainable(true);
  store_.allocate_grads();
}

void ClassifierHead::forward(float* logits, const float* pooled, int64_t B) const {
  ops::linear_forward(logits, pooled, store_.get("head.weight").data, store_.get("head.bias").data, B, C_, K_);
}

void ClassifierHead::backward(float* dpooled, const float* dlogits, const float* pooled, int64_t B) {
  Param& w = store_.get("head.weight");
  Param& b = store_.get("head.bias");
  ops::linear_backward(dpooled, w.grad, b.grad, dlogits, pooled, w.data, B, C_, K_);
}

// ---- helpers ---------------------------------------------------------------------------

void check_virtual_positions(int64_t P, const ModelConfig& mc, const std::string& flag) {
  if (P < 1 || P >= mc.max_positions)
    throw InputError(flag + " must be in 1.." + std::to_string(mc.max_positions - 1) + " (the model's context is " +
                     std::to_string(mc.max_positions) + "), got " + std::to_string(P));
}

int64_t count_trainable(const std::vector<const ParamStore*>& stores) {
  int64_t n = 0;
  for (const auto* s : stores) n += s->num_trainable();
  return n;
}

int64_t save_trainable(const std::filesystem::path& dir, const std::vector<const ParamStore*>& stores) {
  std::vector<TensorToWrite> tensors;
  for (const auto* s : stores)
    for (const auto& p : s->params())
      if (p.trainable) tensors.push_back({p.name, p.shape, p.data, DType::F32});
  if (tensors.empty()) return 0;
  std::filesystem::create_directories(dir);
  const auto path = dir / "adaptation.safetensors";
  write_safetensors(path, tensors, {{"format", "tunebench"}});
  return static_cast<int64_t>(std::filesystem::file_size(path));
}

// ---- ClassificationTrainer -------------------------------------------------------------

ClassificationTrainer::ClassificationTrainer(RunContext& ctx, const TrainConfig& cfg, Adaptation adaptation)
    : ctx_(ctx), cfg_(cfg), adaptation_(std::move(adaptation)) {
  const auto type = ctx.task.output_type();
  if (type == tasks::OutputType::classify) {
    num_classes_ = static_cast<int64_t>(ctx.task.label_names().size());
  } else if (type == tasks::OutputType::multiple_choice) {
    num_classes_ = 1;  // one score per (question, choice) sequence
  } else {
    throw InputError("task " + ctx.task.name() + " has an output type the classification trainer cannot train");
  }
  if (cfg_.objective == "head")
    head_ = std::make_unique<ClassifierHead>(ctx.model.config().hidden, num_classes_, ctx.seed);
}

ClassificationTrainer::~ClassificationTrainer() = default;

int64_t ClassificationTrainer::head_params() const { return head_ ? head_->store().num_trainable() : 0; }

std::vector<ParamStore*> ClassificationTrainer::all_stores() {
  std::vector<ParamStore*> s = adaptation_.stores;
  if (head_) s.push_back(&head_->store());
  s.push_back(&ctx_.model.params());
  return s;
}

namespace {

// Candidate answers of an example for the lm objective: verbalisers, or choices.
std::vector<std::string> candidates(const tasks::Task& task, const tasks::Example& ex) {
  if (task.output_type() == tasks::OutputType::multiple_choice) return ex.choices;
  std::vector<std::string> v = task.verbalisers();
  if (v.empty()) v = task.label_names();
  return v;
}

std::vector<int32_t> encode_capped(const Tokenizer& tok, const std::string& text, int64_t max_len, bool keep_end) {
  auto ids = tok.encode(text, SpecialTokens::as_text);
  if (ids.empty()) {
    if (auto e = tok.eos_id()) ids.push_back(*e);
    else ids.push_back(0);
  }
  if (static_cast<int64_t>(ids.size()) > max_len) {
    if (keep_end) ids.erase(ids.begin(), ids.end() - max_len);
    else ids.resize(static_cast<size_t>(max_len));
  }
  return ids;
}

}  // namespace

std::vector<std::vector<double>> ClassificationTrainer::class_scores(const std::vector<tasks::Example>& examples,
                                                                    Phase& cost) {
  std::vector<std::vector<double>> out(examples.size());
  const auto& task = ctx_.task;
  const bool mc = task.output_type() == tasks::OutputType::multiple_choice;
  const int64_t ctx_room = ctx_.model.config().max_positions -
                           (adaptation_.hooks ? adaptation_.hooks->num_virtual_tokens() + adaptation_.hooks->prefix_length() : 0);
  const int64_t max_len = std::min(cfg_.max_length, ctx_room);
  if (cfg_.objective == "lm") {
    // One unit: score() batches the requests itself.
    UnitCost unit;
    const auto t0 = std::chrono::steady_clock::now();
    const double f0 = ctx_.model.flop_count();
    std::vector<ScoreRequest> reqs;
    std::vector<std::pair<size_t, size_t>> owner;
    for (size_t i = 0; i < examples.size(); ++i) {
      const auto prompt = encode_prompt_capped(ctx_.model, ctx_.tokenizer, task.render(examples[i]), max_len);
      for (const auto& c : candidates(task, examples[i])) {
        auto cont = ctx_.tokenizer.encode(" " + c, SpecialTokens::as_text);
        reqs.push_back({prompt, cont});
        owner.emplace_back(i, out[i].size());
        out[i].push_back(0.0);
        unit.tokens += static_cast<int64_t>(prompt.size() + cont.size());
      }
    }
    const auto scores = score(ctx_.model, reqs, adaptation_.hooks, cfg_.batch);
    for (size_t r = 0; r < reqs.size(); ++r) out[owner[r].first][owner[r].second] = scores[r].sum;
    unit.seconds = seconds_since(t0);
    unit.flops = ctx_.model.flop_count() - f0;
    cost.add_unit(unit);
  } else {
    // One sequence per example (per choice for multiple choice), in batches.
    std::vector<std::vector<int32_t>> seqs;
    std::vector<std::pair<size_t, size_t>> owner;
    for (size_t i = 0; i < examples.size(); ++i) {
      if (mc) {
        for (const auto& c : examples[i].choices) {
          seqs.push_back(encode_capped(ctx_.tokenizer, examples[i].text + "\n" + c, max_len, true));
          owner.emplace_back(i, out[i].size());
          out[i].push_back(0.0);
        }
      } else {
        seqs.push_back(encode_capped(ctx_.tokenizer, examples[i].text, max_len, false));
        owner.emplace_back(i, 0);
        out[i].assign(static_cast<size_t>(num_classes_), 0.0);
      }
    }
    const int64_t C = ctx_.model.config().hidden, K = num_classes_;
    for (size_t s = 0; s < seqs.size(); s += static_cast<size_t>(cfg_.batch)) {
      // One unit per batch.
      UnitCost unit;
      const auto t0 = std::chrono::steady_clock::now();
      const double f0 = ctx_.model.flop_count();
      const size_t e = std::min(seqs.size(), s + static_cast<size_t>(cfg_.batch));
      const int64_t B = static_cast<int64_t>(e - s);
      int64_t T = 1;
      for (size_t i = s; i < e; ++i) T = std::max<int64_t>(T, static_cast<int64_t>(seqs[i].size()));
      std::vector<int32_t> toks(B * T, 0), lens(B);
      for (int64_t b = 0; b < B; ++b) {
        std::copy(seqs[s + b].begin(), seqs[s + b].end(), toks.begin() + b * T);
        lens[b] = static_cast<int32_t>(seqs[s + b].size());
        unit.tokens += lens[b];
      }
      ctx_.model.forward(toks.data(), B, T, adaptation_.hooks, false);
      std::vector<float> pooled(B * C), logits(B * K);
      ctx_.model.pool(pooled.data(), static_cast<int>(ctx_.model.config().n_layer), cfg_.pool, lens.data());
      head_->forward(logits.data(), pooled.data(), B);
      for (int64_t b = 0; b < B; ++b) {
        const auto [i, slot] = owner[s + b];
        if (mc) out[i][slot] = logits[b * K];
        else for (int64_t k = 0; k < K; ++k) out[i][k] = logits[b * K + k];
      }
      unit.seconds = seconds_since(t0);
      unit.flops = ctx_.model.flop_count() - f0;
      cost.add_unit(unit);
    }
  }
  return out;
}

double ClassificationTrainer::accuracy(const std::vector<tasks::Example>& examples) {
  if (examples.empty()) return NAN;
  const auto scores = class_scores(examples, dev_cost_);
  int64_t correct = 0;
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& s = scores[i];
    const int pred = static_cast<int>(std::max_element(s.begin(), s.end()) - s.begin());
    correct += pred == examples[i].label;
  }
  return static_cast<double>(correct) / static_cast<double>(examples.size());
}

double ClassificationTrainer::train_epoch(int64_t epoch, TrainLoop& loop) {
  auto& model = ctx_.model;
  const auto& task = ctx_.task;
  const auto& train = ctx_.train;
  const bool mc = task.output_type() == tasks::OutputType::multiple_choice;
  const int64_t C = model.config().hidden, L = model.config().n_layer;
  const int64_t ctx_room = model.config().max_positions -
                           (adaptation_.hooks ? adaptation_.hooks->num_virtual_tokens() + adaptation_.hooks->prefix_length() : 0);
  const int64_t max_len = std::min(cfg_.max_length, ctx_room);
  const bool body = adaptation_.hooks != nullptr || model.params().num_trainable() > 0;

  std::vector<size_t> order(train.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 g(ctx_.seed * 1000003ull + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), g);

  double loss_sum = 0;
  int64_t loss_n = 0;
  for (size_t s = 0; s < order.size(); s += static_cast<size_t>(cfg_.batch)) {
    const size_t e = std::min(order.size(), s + static_cast<size_t>(cfg_.batch));
    double batch_loss = 0;
    const bool ok = loop.step([&]() -> StepResult {
      // Build the sequences of this batch and, per example, the rows that belong to it.
      std::vector<std::vector<int32_t>> seqs;
      std::vector<int64_t> prompt_len;            // lm objective: tokens before the candidate
      std::vector<std::pair<int64_t, int64_t>> rows;  // per example: [first row, row count)
      std::vector<int> labels;
      for (size_t i = s; i < e; ++i) {
        const auto& ex = train[order[i]];
        const int64_t first = static_cast<int64_t>(seqs.size());
        if (cfg_.objective == "lm") {
          const auto prompt = encode_prompt_capped(ctx_.model, ctx_.tokenizer, task.render(ex), max_len);
          for (const auto& c : candidates(task, ex)) {
            auto seq = prompt;
            auto cont = ctx_.tokenizer.encode(" " + c, SpecialTokens::as_text);
            seq.insert(seq.end(), cont.begin(), cont.end());
            int64_t pl = static_cast<int64_t>(prompt.size());
            if (static_cast<int64_t>(seq.size()) > ctx_room) {
              const int64_t cut = static_cast<int64_t>(seq.size()) - ctx_room;
              drop_prompt_front(ctx_.model, seq, cut);
              pl -= cut;
            }
            seqs.push_back(std::move(seq));
            prompt_len.push_back(std::max<int64_t>(pl, 1));
          }
        } else if (mc) {
          for (const auto& c : ex.choices) seqs.push_back(encode_capped(ctx_.tokenizer, ex.text + "\n" + c, max_len, true));
        } else {
          seqs.push_back(encode_capped(ctx_.tokenizer, ex.text, max_len, false));
        }
        rows.emplace_back(first, static_cast<int64_t>(seqs.size()) - first);
        labels.push_back(ex.label);
      }
      const int64_t B = static_cast<int64_t>(seqs.size());
      int64_t T = 1;
      for (const auto& q : seqs) T = std::max<int64_t>(T, static_cast<int64_t>(q.size()));
      std::vector<int32_t> toks(B * T, 0), lens(B);
      int64_t tokens = 0;
      for (int64_t b = 0; b < B; ++b) {
        std::copy(seqs[b].begin(), seqs[b].end(), toks.begin() + b * T);
        lens[b] = static_cast<int32_t>(seqs[b].size());
        tokens += lens[b];
      }
      model.forward(toks.data(), B, T, adaptation_.hooks, /*training=*/body);

      const int64_t nex = static_cast<int64_t>(rows.size());
      if (cfg_.objective == "lm") {
        // Candidate score = sum of its tokens' log-probs; CE over each example's candidates.
        std::vector<int32_t> targets(B * T, -100);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = prompt_len[b] - 1; t + 1 < lens[b]; ++t) targets[b * T + t] = seqs[b][t + 1];
        std::vector<float> losses(B * T);
        model.lm_losses(targets.data(), losses.data());
        std::vector<float> dl(B * T, 0.0f);
        for (int64_t x = 0; x < nex; ++x) {
          const auto [first, n] = rows[x];
          std::vector<double> sc(n), ds(n);
          for (int64_t k = 0; k < n; ++k) {
            double sum = 0;
            for (int64_t t = 0; t < T; ++t) sum -= losses[(first + k) * T + t];
            sc[k] = sum;
          }
          batch_loss += softmax_ce(sc.data(), n, labels[x], ds.data());
          // d score_k / d loss_t = -1, so each position's loss gets -ds_k / nex.
          for (int64_t k = 0; k < n; ++k)
            for (int64_t t = 0; t < T; ++t)
              if (targets[(first + k) * T + t] != -100) dl[(first + k) * T + t] = static_cast<float>(-ds[k] / nex);
        }
        model.backward_lm_rows(dl.data(), adaptation_.hooks);
      } else {
        const int64_t K = num_classes_;
        std::vector<float> pooled(B * C), logits(B * K), dlogits(B * K, 0.0f);
        model.pool(pooled.data(), static_cast<int>(L), cfg_.pool, lens.data());
        head_->forward(logits.data(), pooled.data(), B);
        for (int64_t x = 0; x < nex; ++x) {
          const auto [first, n] = rows[x];
          std::vector<double> sc, ds;
          if (mc) {
            for (int64_t k = 0; k < n; ++k) sc.push_back(logits[(first + k) * K]);
          } else {
            for (int64_t k = 0; k < K; ++k) sc.push_back(logits[first * K + k]);
          }
          ds.resize(sc.size());
          batch_loss += softmax_ce(sc.data(), static_cast<int64_t>(sc.size()), labels[x], ds.data());
          for (size_t k = 0; k < sc.size(); ++k) {
            if (mc) dlogits[(first + static_cast<int64_t>(k)) * K] = static_cast<float>(ds[k] / nex);
            else dlogits[first * K + static_cast<int64_t>(k)] = static_cast<float>(ds[k] / nex);
          }
        }
        std::vector<float> dpooled(body ? B * C : 0, 0.0f);
        head_->backward(body ? dpooled.data() : nullptr, dlogits.data(), pooled.data(), B);
        if (body) {
          std::vector<float> dfinal(B * model.seq_len() * C, 0.0f);
          model.pool_backward(dfinal.data(), cfg_.pool, lens.data(), dpooled.data());
          model.backward(dfinal.data(), adaptation_.hooks);
        }
      }
      batch_loss /= static_cast<double>(nex);
      ctx_.meter.memory["activations"] = std::max(ctx_.meter.memory["activations"], model.activation_bytes());
      return {batch_loss, tokens};
    });
    if (!ok) return batch_loss;
    loss_sum += batch_loss;
    ++loss_n;
  }
  return loss_n ? loss_sum / static_cast<double>(loss_n) : 0.0;
}

void ClassificationTrainer::fit() {
  auto& meter = ctx_.meter;
  if (ctx_.train.empty()) throw InputError("task " + ctx_.task.name() + " has no train split to train on");
  const int64_t steps_per_epoch = (static_cast<int64_t>(ctx_.train.size()) + cfg_.batch - 1) / cfg_.batch;
  const int64_t total = steps_per_epoch * cfg_.epochs;
  TrainLoopConfig lcfg;
  lcfg.adamw.lr = static_cast<float>(cfg_.lr);
  lcfg.adamw.weight_decay = static_cast<float>(cfg_.weight_decay);
  lcfg.adamw.clip_norm = static_cast<float>(cfg_.clip);
  lcfg.schedule = cfg_.schedule;
  lcfg.warmup_steps = static_cast<int64_t>(cfg_.warmup * static_cast<double>(total));
  lcfg.total_steps = total;
  lcfg.patience = std::max<int64_t>(1, cfg_.patience);  // 0 stops at the first epoch without improvement, as 1 does
  auto stores = all_stores();
  TrainLoop loop(stores, lcfg, &ctx_.model);
  meter_training(meter, loop, "train");

  int64_t weights = 0, grads = 0;
  for (auto* s : stores) {
    weights += s->value_bytes() + s->bf16_bytes();  // bf16 matmul copies in mixed precision
    grads += s->grad_bytes();
  }
  meter.memory["weights"] = weights;
  meter.memory["gradients"] = grads;
  meter.memory["optimizer_state"] = loop.optimizer().state_bytes();

  nlohmann::json epochs = nlohmann::json::array();
  for (int64_t ep = 0; ep < cfg_.epochs; ++ep) {
    const double loss = train_epoch(ep, loop);
    ++meter.epochs;
    if (loop.diverged()) break;
    const double dev = ctx_.dev.empty() ? NAN : accuracy(ctx_.dev);
    epochs.push_back({{"epoch", ep}, {"train_loss", loss}, {"dev_accuracy", std::isnan(dev) ? nlohmann::json() : nlohmann::json(dev)}});
    if (loop.evaluate(std::isnan(dev) ? static_cast<double>(ep) : dev, !std::isnan(dev))) break;
  }
  loop.restore_best();
  record_training(meter, loop);
  meter.details["epochs"] = epochs;
  meter.details["best_epoch"] = loop.best_evaluation();
  meter.details["objective"] = cfg_.objective;
  meter.details["dev_eval"] = {{"tokens", dev_cost_.tokens}, {"seconds", dev_cost_.seconds}, {"flops", dev_cost_.flops}};
  auto& dev_phase = meter.phase("dev_eval");
  for (const auto& u : dev_cost_.units) dev_phase.add_unit(u);
}

std::vector<Prediction> ClassificationTrainer::predict(const std::vector<tasks::Example>& examples) {
  const auto scores = class_scores(examples, ctx_.meter.phase("test_eval"));
  std::vector<Prediction> out(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    out[i].scores = scores[i];
    out[i].label = scores[i].empty() ? -1 : static_cast<int>(std::max_element(scores[i].begin(), scores[i].end()) - scores[i].begin());
  }
  return out;
}

}  // namespace tb::methods
