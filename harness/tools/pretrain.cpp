// Pretraining of the default base model: corpus → BPE → token stream → AdamW training with
// resumable checkpoints → held-out perplexity and a model card. Batches are drawn from the
// token stream at offsets that depend only on (seed, step), so a resumed run sees exactly
// the batches an uninterrupted one would.
#include "harness/tools/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "datasets/builders.h"
#include "harness/base/hash.h"
#include "datasets/sources.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/core/model_io.h"
#include "harness/core/train_loop.h"
#include "harness/core/safetensors.h"
#include "harness/core/tokenizer.h"
#include "harness/runner/machine.h"
#include "tasks/registry.h"
#include "tb_version.h"

namespace tb::tools {

namespace fs = std::filesystem;

namespace {

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void add_stat(std::vector<std::pair<std::string, int64_t>>& v, const std::string& k, int64_t n) {
  for (auto& [name, count] : v)
    if (name == k) {
      count += n;
      return;
    }
  v.emplace_back(k, n);
}

// Checked (write, fsync, rename) so a full disk fails naming the file instead of leaving a
// truncated file for --resume to read.
void write_text_atomic(const fs::path& path, const std::string& text) { write_file_atomic(path, text); }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string hms(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", static_cast<long>(s / 3600), static_cast<long>(s / 60 % 60),
                static_cast<long>(s % 60));
  return buf;
}

struct TrainState {
  int64_t step = 0;
  int64_t total_steps = 0;
  double train_seconds = 0.0;
  double train_flops = 0.0;  // the model's own count of the steps' matmuls (Model::flop_count)
  std::vector<std::pair<int64_t, double>> curve;  // (step, mean loss since last point)
};

nlohmann::json state_json(const TrainState& s, const PretrainOptions& o) {
  nlohmann::json j;
  j["step"] = s.step;
  j["total_steps"] = s.total_steps;
  j["train_seconds"] = s.train_seconds;
  j["train_flops"] = s.train_flops;
  j["seed"] = o.seed;
  j["curve"] = nlohmann::json::array();
  for (auto& [st, l] : s.curve) j["curve"].push_back({st, l});
  return j;
}

// Checkpoint = model weights + optimizer moments + state.json, swapped in atomically.
// A kill between save_checkpoint's two renames leaves no ckpt but a complete ckpt.old (the
// checkpoint before); put it back so --resume continues from it instead of starting over.
void recover_checkpoint(const fs::path& out) {
  const fs::path cur = out / "ckpt", old = out / "ckpt.old";
  if (!fs::exists(cur) && fs::exists(old / "state.json")) fs::rename(old, cur);
}

void save_checkpoint(const fs::path& out, const Model& model, AdamW& opt, const TrainState& st,
                     const PretrainOptions& o) {
  const fs::path next = out / "ckpt.next", cur = out / "ckpt", old = out / "ckpt.old";
  fs::remove_all(next);
  fs::create_directories(next);
  try {
    save_model(model, next);
    std::vector<TensorToWrite> moments = {
        {"adamw.m", {opt.state_count()}, opt.first_moments(), DType::F32},
        {"adamw.v", {opt.state_count()}, opt.second_moments(), DType::F32}};
    write_safetensors(next / "optimizer.safetensors", moments);
    write_text_atomic(next / "state.json", state_json(st, o).dump(1));
  } catch (...) {
    // A failed write (a full disk) leaves the last good checkpoint as it was and no half
    // of the next one.
    std::error_code ec;
    fs::remove_all(next, ec);
    throw;
  }
  // ckpt -> ckpt.old, ckpt.next -> ckpt: a kill between the two renames leaves ckpt.old,
  // which recover_checkpoint() puts back.
  fs::remove_all(old);
  if (fs::exists(cur)) fs::rename(cur, old);
  fs::rename(next, cur);
  fs::remove_all(old);
}

std::string svg_curve(const std::vector<std::pair<int64_t, double>>& curve, int64_t tokens_per_step) {
  const double W = 640, H = 320, L = 60, R = 20, T = 20, B = 45;
  double xmax = 1, ymin = 1e9, ymax = -1e9;
  for (auto& [s, l] : curve) {
    xmax = std::max(xmax, double(s * tokens_per_step));
    ymin = std::min(ymin, l);
    ymax = std::max(ymax, l);
  }
  if (curve.empty()) ymin = 0, ymax = 1;
  if (ymax - ymin < 1e-6) ymax = ymin + 1;
  auto X = [&](double x) { return L + (W - L - R) * x / xmax; };
  auto Y = [&](double y) { return T + (H - T - B) * (1 - (y - ymin) / (ymax - ymin)); };
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  os << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = ymin + (ymax - ymin) * i / 4;
    os << "<text x=\"" << L - 6 << "\" y=\"" << Y(y) + 4 << "\" text-anchor=\"end\">" << fmt("%.2f", y) << "</text>\n";
    const double x = xmax * i / 4;
    os << "<text x=\"" << X(x) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << fmt("%.2gM", x / 1e6)
       << "</text>\n";
  }
  os << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 8 << "\" text-anchor=\"middle\">tokens seen</text>\n";
  os << "<text x=\"14\" y=\"" << (T + H - B) / 2 << "\" transform=\"rotate(-90 14 " << (T + H - B) / 2
     << ")\" text-anchor=\"middle\">train loss (nats/token)</text>\n<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
  for (auto& [s, l] : curve) os << fmt("%.1f", X(double(s * tokens_per_step))) << "," << fmt("%.1f", Y(l)) << " ";
  os << "\"/>\n</svg>\n";
  return os.str();
}

}  // namespace

std::vector<CorpusDoc> build_pretrain_corpus(CorpusStats* stats) {
  std::vector<CorpusDoc> docs;
  CorpusStats local;
  CorpusStats& st = stats ? *stats : local;
  auto keep = [&](const std::string& source, std::string text) {
    if (text.empty()) return;
    add_stat(st.docs_by_source, source, 1);
    add_stat(st.bytes_by_source, source, static_cast<int64_t>(text.size()));
    docs.push_back({source, std::move(text)});
  };
  auto drop = [&](const std::string& source) { add_stat(st.dropped_by_source, source, 1); };
  data::SourceLog log;

  // KJV: one document per chapter; held-out chapters and eval verses removed.
  const auto verses = data::read_kjv(&log);
  std::string chapter;
  for (size_t i = 0; i < verses.size(); ++i) {
    const auto& v = verses[i];
    if (data::kjv_chapter_heldout(v.book, v.chapter)) {
      drop("kjv");
    } else if (tasks::is_eval_or_heldout(v.text)) {
      drop("kjv");
    } else {
      if (!chapter.empty()) chapter += ' ';
      chapter += v.text;
    }
    const bool last = i + 1 == verses.size() || verses[i + 1].chapter != v.chapter || verses[i + 1].book != v.book;
    if (last) {
      keep("kjv", std::move(chapter));
      chapter.clear();
    }
  }
  for (const auto& cat : data::fortune_categories())
    for (auto& f : data::read_fortunes(cat, &log)) {
      if (tasks::is_eval_or_heldout(f)) drop("fortunes");
      else keep("fortunes", std::move(f));
    }
  for (const char* name : {"gcide", "foldoc", "jargon"})
    for (auto& e : data::read_dict(name, &log)) {
      if (tasks::is_eval_or_heldout(e.text)) drop(name);
      else keep(name, std::move(e.text));
    }
  for (const auto& s : data::read_wordnet(&log)) {
    if (tasks::is_eval_or_heldout(s.definition)) {
      drop("wordnet");
      continue;
    }
    std::string words;
    for (const auto& w : s.words) {
      if (!words.empty()) words += ", ";
      for (char c : w) words += c == '_' ? ' ' : c;
    }
    std::string text = words + ": " + s.definition;
    for (const auto& ex : s.examples) text += "; \"" + ex + "\"";
    keep("wordnet", std::move(text));
  }
  return docs;
}

void pretrain(const PretrainOptions& o) {
  if (o.out.empty()) throw InputError("pretrain: missing --out DIR");
  if (o.tokens <= 0 && o.minutes <= 0) throw InputError("pretrain: give --tokens N or --minutes M");
  if (o.arch != "llama" && o.arch != "gpt2") throw InputError("pretrain: --arch must be llama or gpt2");
  if (o.seq > o.context) throw InputError("pretrain: --seq must not exceed --context");
  fs::create_directories(o.out);
  const fs::path ckpt = o.out / "ckpt";
  if (o.resume) recover_checkpoint(o.out);
  const bool resuming = o.resume && fs::exists(ckpt / "state.json");
  auto say = [&](const std::string& s) {
    if (!o.quiet) std::cerr << s << std::flush;
  };

  // ---- corpus and tokenizer (cached in the output directory) ----
  const fs::path tok_path = o.out / "tokenizer.json", stream_path = o.out / "corpus.tokens",
                 corpus_json = o.out / "corpus.json";
  std::vector<uint16_t> stream;
  nlohmann::json corpus_info;
  if (resuming && fs::exists(stream_path) && fs::exists(tok_path) && fs::exists(corpus_json)) {
    std::ifstream in(stream_path, std::ios::binary);
    stream.resize(fs::file_size(stream_path) / 2);
    in.read(reinterpret_cast<char*>(stream.data()), static_cast<std::streamsize>(stream.size() * 2));
    std::ifstream cj(corpus_json);
    corpus_info = nlohmann::json::parse(cj);
    say("pretrain: resumed corpus of " + std::to_string(stream.size()) + " tokens\n");
  } else {
    say("pretrain: building corpus (eval items and held-out units removed) ...\n");
    CorpusStats stats;
    auto docs = build_pretrain_corpus(&stats);
    // Deterministic shuffle so the stream mixes sources.
    std::vector<uint64_t> keys(docs.size());
    for (size_t i = 0; i < docs.size(); ++i) keys[i] = mix(o.seed ^ tb::fnv1a64(docs[i].text) ^ (i * 0x9E37ull));
    std::vector<size_t> order(docs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b] || (keys[a] == keys[b] && a < b); });
    // BPE on the first ~6 MB of the shuffled corpus.
    std::vector<std::string> sample;
    size_t bytes = 0;
    for (size_t i : order) {
      if (bytes > 6'000'000) break;
      sample.push_back(docs[i].text);
      bytes += docs[i].text.size();
    }
    say("pretrain: training a " + std::to_string(o.vocab) + "-token BPE on " + std::to_string(bytes) + " bytes ...\n");
    const auto tok = Tokenizer::train(sample, o.vocab, {"<|endoftext|>"});
    tok.save(tok_path.string());
    const int32_t eos = *tok.id_of("<|endoftext|>");
    if (tok.vocab_size() > 65535) throw InputError("pretrain: --vocab must be below 65536");
    say("pretrain: encoding " + std::to_string(docs.size()) + " documents ...\n");
    int64_t total_bytes = 0;
    for (size_t i : order) {
      for (int32_t id : tok.encode(docs[i].text, SpecialTokens::as_text)) stream.push_back(static_cast<uint16_t>(id));
      stream.push_back(static_cast<uint16_t>(eos));
      total_bytes += static_cast<int64_t>(docs[i].text.size());
    }
    write_file_atomic(stream_path, std::string(reinterpret_cast<const char*>(stream.data()), stream.size() * 2));
    corpus_info = {{"documents", docs.size()}, {"bytes", total_bytes}, {"tokens", stream.size()},
                   {"docs_by_source", stats.docs_by_source}, {"bytes_by_source", stats.bytes_by_source},
                   {"dropped_by_source", stats.dropped_by_source}};
    write_text_atomic(corpus_json, corpus_info.dump(1));
  }
  const auto tok = Tokenizer::from_tokenizer_json(tok_path.string());
  const int64_t n_tokens = static_cast<int64_t>(stream.size());
  if (n_tokens < o.seq + 2) throw InputError("pretrain: corpus too small");

  // ---- model ----
  ModelConfig cfg;
  cfg.family = o.arch == "gpt2" ? Family::gpt2 : Family::llama;
  cfg.model_type = o.arch;
  cfg.vocab_size = tok.vocab_size();
  cfg.hidden = o.dim;
  cfg.n_layer = o.layers;
  cfg.n_head = o.heads;
  cfg.n_kv_head = cfg.family == Family::gpt2 ? o.heads : o.kv_heads;
  if (o.heads <= 0 || o.dim % o.heads != 0) throw InputError("pretrain: --dim must be divisible by --heads");
  cfg.head_dim = o.dim / o.heads;
  cfg.intermediate = o.ffn > 0 ? o.ffn : (cfg.family == Family::gpt2 ? 4 * o.dim : ((8 * o.dim / 3 + 63) / 64) * 64);
  cfg.max_positions = o.context;
  cfg.norm_eps = cfg.family == Family::gpt2 ? 1e-5f : 1e-6f;
  cfg.tied_embeddings = true;
  cfg.eos_token_id = *tok.id_of("<|endoftext|>");
  cfg.bos_token_id = cfg.eos_token_id;
  cfg.validate("pretrain options");

  std::unique_ptr<Model> model;
  TrainState st;
  if (resuming) {
    model = load_model(ckpt);
    std::ifstream in(ckpt / "state.json");
    auto j = nlohmann::json::parse(in);
    st.step = j["step"];
    st.total_steps = j["total_steps"];
    st.train_seconds = j["train_seconds"];
    st.train_flops = j.value("train_flops", 0.0);  // absent in checkpoints made before it was counted
    for (auto& p : j["curve"]) st.curve.emplace_back(p[0].get<int64_t>(), p[1].get<double>());
    say("pretrain: resuming at step " + std::to_string(st.step) + " of " + std::to_string(st.total_steps) + "\n");
  } else {
    model = std::make_unique<Model>(cfg);
    model->init_random(o.seed);
  }
  auto& params = model->params();
  params.set_all_trainable(true);
  params.allocate_grads();
  TrainLoopConfig lcfg;
  lcfg.adamw.lr = o.lr;
  lcfg.adamw.beta1 = 0.9f;
  lcfg.adamw.beta2 = 0.95f;
  lcfg.adamw.weight_decay = o.weight_decay;
  lcfg.adamw.clip_norm = o.clip;
  lcfg.schedule = Schedule::cosine;
  lcfg.warmup_steps = o.warmup;
  lcfg.total_steps = st.total_steps;
  lcfg.min_lr_ratio = o.min_lr_ratio;
  lcfg.record_curve = false;  // the curve holds window means (TrainState::curve)
  TrainLoop loop({&params}, lcfg, model.get());
  AdamW& opt = loop.optimizer();
  if (resuming) {
    const auto f = SafetensorsFile::open(ckpt / "optimizer.safetensors");
    f.read_f32("adamw.m", std::span<float>(opt.first_moments(), static_cast<size_t>(opt.state_count())));
    f.read_f32("adamw.v", std::span<float>(opt.second_moments(), static_cast<size_t>(opt.state_count())));
    loop.set_steps(st.step);
  }

  const int64_t B = o.batch, T = o.seq, tps = B * T;
  std::vector<int32_t> x(B * T), y(B * T);
  auto fill_batch = [&](int64_t step) {
    for (int64_t b = 0; b < B; ++b) {
      const uint64_t off = mix(o.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) * 1315423911ull + b) %
                           static_cast<uint64_t>(n_tokens - T - 1);
      for (int64_t t = 0; t < T; ++t) {
        x[b * T + t] = stream[off + t];
        y[b * T + t] = stream[off + t + 1];
      }
    }
  };
  auto clock = [] { return std::chrono::steady_clock::now(); };
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };

  // One step of the training loop at step `step` (the loop's own count, kept equal to it).
  auto run_step = [&](int64_t step) -> float {
    TB_CHECK(loop.steps() == step, "pretrain: step " << step << " out of order (loop at " << loop.steps() << ")");
    float loss = 0.0f;
    const bool ok = loop.step([&]() -> StepResult {
      fill_batch(step);
      model->forward(x.data(), B, T, nullptr, true);
      loss = model->lm_loss(y.data());
      if (std::isfinite(loss)) model->backward_lm();
      return {loss, tps};
    });
    if (!ok)
      throw Error(std::isfinite(loss) ? "pretrain: " + loop.message()
                                      : "pretrain: loss is " + std::to_string(loss) + " at step " + std::to_string(step));
    return loss;
  };

  if (st.total_steps == 0) {
    if (o.tokens > 0) {
      st.total_steps = (o.tokens + tps - 1) / tps;
      loop.set_total_steps(st.total_steps);
    } else {
      // Time the first steps (they are real training steps, kept) to size the run.
      st.total_steps = 1 << 30;
      loop.set_total_steps(st.total_steps);
      const auto t0 = clock();
      double sum = 0;
      const int64_t probe = 3;
      for (int64_t s = 0; s < probe; ++s) sum += run_step(s);
      const double per_step = secs(t0, clock()) / probe;
      st.step = probe;
      st.train_seconds += per_step * probe;
      st.train_flops += loop.total().flops;
      st.total_steps = std::max<int64_t>(probe + 1, static_cast<int64_t>(o.minutes * 60.0 / per_step));
      loop.set_total_steps(st.total_steps);
      st.curve.emplace_back(probe, sum / probe);
      say("pretrain: " + fmt("%.2f", per_step) + " s/step -> " + std::to_string(st.total_steps) + " steps\n");
    }
  }

  double window = 0;
  int64_t window_n = 0;
  auto last_ckpt = clock();
  const int64_t log_every = std::max<int64_t>(1, st.total_steps / 200);
  while (st.step < st.total_steps) {
    window += run_step(st.step);
    ++window_n;
    ++st.step;
    st.train_seconds += loop.units().back().seconds;
    st.train_flops += loop.units().back().flops;
    if (st.step % log_every == 0 || st.step == st.total_steps) {
      st.curve.emplace_back(st.step, window / window_n);
      const double tok_s = double(st.step) * tps / std::max(1e-9, st.train_seconds);
      const double eta = double(st.total_steps - st.step) * tps / std::max(1.0, tok_s);
      say("\rpretrain: step " + std::to_string(st.step) + "/" + std::to_string(st.total_steps) + "  loss " +
          fmt("%.4f", window / window_n) + "  " + fmt("%.0f", tok_s) + " tok/s  ETA " + hms(eta) + "   ");
      window = 0;
      window_n = 0;
    }
    if (secs(last_ckpt, clock()) > o.checkpoint_minutes * 60.0 || st.step == st.total_steps) {
      save_checkpoint(o.out, *model, opt, st, o);
      last_ckpt = clock();
    }
  }
  say("\n");

  // ---- held-out evaluation: heldout-lm, next to a unigram baseline ----
  auto registry = tasks::Registry::standard();
  auto heldout = registry.load("heldout-lm");
  std::vector<double> counts(cfg.vocab_size, 1.0);  // add-one smoothed unigram
  for (uint16_t t : stream) counts[t] += 1.0;
  double total = 0;
  for (double c : counts) total += c;
  double nll = 0, uni = 0;
  int64_t scored = 0;
  const int32_t eos = cfg.eos_token_id;
  for (const auto& ex : heldout->split("test")) {
    if (scored >= o.eval_tokens) break;
    auto ids = tok.encode(ex.text, SpecialTokens::as_text);
    ids.insert(ids.begin(), eos);  // documents start after a separator, as in training
    for (size_t start = 0; start + 1 < ids.size(); start += static_cast<size_t>(o.context)) {
      const size_t len = std::min(ids.size() - start, static_cast<size_t>(o.context) + 1);
      if (len < 2) break;
      std::vector<int32_t> in(ids.begin() + start, ids.begin() + start + len - 1);
      std::vector<int32_t> tg(ids.begin() + start + 1, ids.begin() + start + len);
      model->forward(in.data(), 1, static_cast<int64_t>(in.size()));
      int64_t n = 0;
      const float l = model->lm_loss(tg.data(), &n);
      nll += double(l) * n;
      for (int32_t t : tg) uni -= std::log(counts[t] / total);
      scored += n;
    }
  }
  const double ppl = std::exp(nll / std::max<int64_t>(1, scored));
  const double uni_ppl = std::exp(uni / std::max<int64_t>(1, scored));
  say("pretrain: held-out perplexity " + fmt("%.2f", ppl) + " (unigram " + fmt("%.2f", uni_ppl) + ") over " +
      std::to_string(scored) + " tokens\n");

  // ---- outputs ----
  save_model(*model, o.out);
  std::string csv = "step,tokens,loss\n";
  for (auto& [s, l] : st.curve) csv += std::to_string(s) + "," + std::to_string(s * tps) + "," + fmt("%.5f", l) + "\n";
  write_text_atomic(o.out / "loss_curve.csv", csv);
  write_text_atomic(o.out / "loss_curve.svg", svg_curve(st.curve, tps));

  std::ostringstream card;
  card << "# tunebench default base model\n\n"
       << "Made by `tunebench pretrain` (tunebench " << TB_VERSION << ", " << TB_GIT_SHA << "). "
       << "A small " << o.arch << "-style decoder pretrained on the text packages installed on the build machine, "
       << "so every method in the suite has a real base model to adapt without downloading weights.\n\n"
       << "## Architecture\n\n| field | value |\n|---|---|\n"
       << "| family | " << o.arch << " (" << (cfg.family == Family::llama ? "RoPE, RMSNorm, SwiGLU, GQA" : "learned positions, LayerNorm, GELU") << ") |\n"
       << "| layers × hidden | " << cfg.n_layer << " × " << cfg.hidden << " |\n"
       << "| heads (kv heads) × head dim | " << cfg.n_head << " (" << cfg.n_kv_head << ") × " << cfg.head_dim << " |\n"
       << "| MLP width | " << cfg.intermediate << " |\n| vocabulary | " << cfg.vocab_size << " (byte-level BPE, `tokenizer.json`) |\n"
       << "| context | " << cfg.max_positions << " |\n| tied embeddings | yes |\n"
       << "| parameters | " << params.num_params() << " |\n\n"
       << "## Recipe\n\n```\ntunebench pretrain --out " << o.out.string() << " "
       << (o.tokens > 0 ? "--tokens " + std::to_string(o.tokens) : "--minutes " + fmt("%g", o.minutes))
       << " --seed " << o.seed << " --vocab " << o.vocab << " --arch " << o.arch << " --layers " << o.layers
       << " --dim " << o.dim << " --heads " << o.heads << " --kv-heads " << o.kv_heads << " --context " << o.context
       << " --batch " << o.batch << " --seq " << o.seq << " --lr " << o.lr << "\n```\n\n"
       << "AdamW (β = 0.9, 0.95; weight decay " << o.weight_decay << " on matrices), peak lr " << o.lr << ", "
       << o.warmup << " warm-up steps then cosine decay to " << o.min_lr_ratio << "×, gradient clipping at " << o.clip
       << ", batches of " << B << " × " << T << " tokens drawn at seeded random offsets of the token stream.\n\n"
       << "| | |\n|---|---|\n| steps | " << st.step << " |\n| tokens seen | " << st.step * tps << " |\n"
       << "| training time | " << hms(st.train_seconds) << " (" << fmt("%.0f", st.step * tps / std::max(1e-9, st.train_seconds))
       << " tokens/s) |\n| training FLOPs (the model's count of its matmuls) | " << fmt("%.4g", st.train_flops) << " ("
       << fmt("%.3g", st.train_flops / std::max(1e-9, st.train_seconds) / 1e9) << " GFLOP/s) |\n| machine | " << runner::machine_info().summary() << " |\n\n"
       << "## Corpus\n\n" << corpus_info["documents"].get<int64_t>() << " documents, " << corpus_info["bytes"].get<int64_t>()
       << " bytes, " << corpus_info["tokens"].get<int64_t>()
       << " tokens. Every dev/test item of the task suite and every `heldout-lm` unit was removed (exact match after "
          "whitespace and case normalisation).\n\n| source | documents | bytes | units dropped |\n|---|---|---|---|\n";
  std::map<std::string, int64_t> dropped;
  for (auto& p : corpus_info["dropped_by_source"]) dropped[p[0].get<std::string>()] = p[1].get<int64_t>();
  for (size_t i = 0; i < corpus_info["docs_by_source"].size(); ++i) {
    const auto name = corpus_info["docs_by_source"][i][0].get<std::string>();
    card << "| " << name << " | " << corpus_info["docs_by_source"][i][1].get<int64_t>() << " | "
         << corpus_info["bytes_by_source"][i][1].get<int64_t>() << " | " << dropped[name] << " |\n";
  }
  card << "\n## Loss curve\n\n![loss curve](loss_curve.svg)\n\n(`loss_curve.csv` holds every point.)\n\n| tokens | train loss |\n|---|---|\n";
  const size_t stride = std::max<size_t>(1, st.curve.size() / 10);
  for (size_t i = 0; i < st.curve.size(); i += stride)
    card << "| " << st.curve[i].first * tps << " | " << fmt("%.3f", st.curve[i].second) << " |\n";
  if (!st.curve.empty() && (st.curve.size() - 1) % stride != 0)
    card << "| " << st.curve.back().first * tps << " | " << fmt("%.3f", st.curve.back().second) << " |\n";
  card << "\n## Held-out perplexity\n\nOn the `heldout-lm` task's test split (" << scored << " tokens):\n\n"
       << "| model | perplexity |\n|---|---|\n| this model | " << fmt("%.2f", ppl) << " |\n"
       << "| unigram baseline (add-one, fitted on the training stream) | " << fmt("%.2f", uni_ppl) << " |\n";
  write_text_atomic(o.out / "MODEL_CARD.md", card.str());
}

}  // namespace tb::tools
