// LLM indexing (`index`): retrieval-augmented answering over the task's document collection.
//
// prepare: documents are cut into windows of --index.chunk tokens overlapping by
// --index.overlap; each chunk is embedded (the --index.pool pooling of the hidden state of
// --index.layer, L2-normalised; with --index.center the chunks' mean vector, kept in the
// store, is subtracted from chunks and questions and the result re-normalised) and
// chunks + metadata + vectors go into one SQLite file (methods/vector_store.h), by default
// <cache_dir>/index-<task>.sqlite (index-<task>-limit<N>.sqlite under --limit N, whose
// collection is the runner's subset, harness/runner/runner.h take_documents). Its meta key —
// corpus sha256, model sha256, tokenizer fingerprint, chunking, pooling, layer and centring —
// decides reuse: the same key reuses the file, another key rebuilds it. The HNSW graph is saved next to it (<db>.hnsw) and rebuilt from the
// stored vectors whenever it is missing or not the one the store recorded.
//
// predict: each question (the example text) is embedded and searched (--index.search exact
// or hnsw); the ranked document ids (best chunk per document, --index.depth chunks deep) are
// the prediction's ranking (recall@k and MRR against Example::gold_docs, computed by the
// runner), and the top --index.k chunks go into the prompt before the question, the best one
// nearest to it (the truncation policy drops the lowest-ranked chunk first). Answers are
// scored by choice log-likelihood. The same questions are also answered closed-book (no
// chunks), so details hold closed- and open-book accuracy side by side (closed-book accuracy
// is also the record metric closed_book_accuracy, next to the open-book accuracy), plus the index's
// build time, size on disk, search latency p50/p99 (and exact search's, the baseline) and
// the recall of HNSW against exact search.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "harness/base/hash.h"
#include "harness/base/errors.h"
#include "methods/lm_scoring.h"
#include "methods/method.h"
#include "methods/vector_store.h"
#include "tasks/metrics.h"
#include "tasks/reference.h"

namespace tb::methods {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank > 0 ? rank - 1 : 0)];
}

std::string corpus_sha256(const std::vector<tasks::Document>& docs) {
  std::string all;
  for (const auto& d : docs) all += d.id + '\x1f' + d.title + '\x1f' + d.text + '\x1e';
  return tb::sha256_hex(all);
}

// The weights' hash when the runner gave none (tests): sha256 over every parameter's bytes.
std::string weights_sha256(const Model& model) {
  std::string per_param;
  for (const auto& p : model.params().params())
    per_param += p.name + ":" +
                 tb::sha256_hex(std::string_view(reinterpret_cast<const char*>(p.data),
                                                   static_cast<size_t>(p.numel()) * sizeof(float))) + "\n";
  return tb::sha256_hex(per_param);
}

// Chunk boundaries depend on the vocabulary, so it is part of the key.
std::string tokenizer_fingerprint(const Tokenizer& tok) {
  std::string all = std::to_string(tok.vocab_size()) + "/" + std::to_string(tok.num_merges()) + "\n";
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    try {
      all += tok.token_of(id);
    } catch (const InputError&) {
      all += "\x1f<unused>";
    }
    all += '\n';
  }
  return tb::sha256_hex(all).substr(0, 16);
}

// Rows of `v` (each `centre.size()` wide): minus the centre, then L2-normalised.
void subtract_and_normalise(std::vector<float>& v, const std::vector<float>& centre) {
  const size_t C = centre.size();
  for (size_t r = 0; r + C <= v.size(); r += C) {
    double norm = 0.0;
    for (size_t c = 0; c < C; ++c) {
      v[r + c] -= centre[c];
      norm += static_cast<double>(v[r + c]) * v[r + c];
    }
    const float inv = norm > 0.0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
    for (size_t c = 0; c < C; ++c) v[r + c] *= inv;
  }
}

// The centre vector as text in the store's meta table (%.9g round-trips a float).
std::string format_floats(const std::vector<float>& v) {
  std::string out;
  char buf[32];
  for (float x : v) {
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(x));
    out += (out.empty() ? "" : " ") + std::string(buf);
  }
  return out;
}

std::vector<float> parse_floats(const std::string& text) {
  std::vector<float> out;
  std::istringstream in(text);
  for (float x; in >> x;) out.push_back(x);
  return out;
}

std::string block_text(const ChunkRecord& c) { return c.title.empty() ? c.text : c.title + ": " + c.text; }

struct Latency {
  std::vector<double> us;
  nlohmann::json json() {
    std::sort(us.begin(), us.end());
    double sum = 0.0;
    for (double v : us) sum += v;
    return {{"p50_us", percentile(us, 50)}, {"p99_us", percentile(us, 99)},
            {"mean_us", us.empty() ? 0.0 : sum / static_cast<double>(us.size())}, {"queries", us.size()}};
  }
};

class Index final : public Method {
 public:
  void prepare(RunContext& ctx) override {
    const auto& o = ctx.options;
    k_ = o.integer("k");
    chunk_ = o.integer("chunk");
    overlap_ = o.integer("overlap");
    depth_ = o.integer("depth");
    batch_ = o.integer("batch");
    closed_book_ = o.flag("closed-book");
    center_ = o.flag("center");
    const std::string search = o.str("search");
    pool_ = parse_pool(o.str("pool"), "option --index.pool");
    if (search != "exact" && search != "hnsw")
      throw InputError("option --index.search: expected exact or hnsw, got '" + search + "'");
    use_hnsw_ = search == "hnsw";
    const int64_t maxT = ctx.model.config().max_positions;
    const int64_t L = ctx.model.config().n_layer;
    const int64_t layer = o.integer("layer");
    if (layer < -(L + 1) || layer > L)
      throw InputError("option --index.layer must be in [" + std::to_string(-(L + 1)) + ", " + std::to_string(L) +
                       "] (0 = token embeddings, " + std::to_string(L) + " = after the final norm; negative counts from the end)");
    layer_ = static_cast<int>(layer < 0 ? L + 1 + layer : layer);
    if (k_ < 0) throw InputError("option --index.k must be >= 0");
    if (chunk_ < 1 || chunk_ > maxT)
      throw InputError("option --index.chunk must be in [1, " + std::to_string(maxT) + "] (the context window)");
    if (overlap_ < 0 || overlap_ >= chunk_) throw InputError("option --index.overlap must be in [0, chunk)");
    if (depth_ < std::max<int64_t>(k_, 1)) throw InputError("option --index.depth must be >= max(k, 1)");
    if (batch_ < 1) throw InputError("option --index.batch must be >= 1");
    hnsw_.M = o.integer("hnsw-m");
    hnsw_.ef_construction = o.integer("ef-construction");
    hnsw_.ef_search = o.integer("ef");
    if (hnsw_.M < 2 || hnsw_.ef_construction < 1 || hnsw_.ef_search < 1)
      throw InputError("options --index.hnsw-m (>= 2), --index.ef-construction and --index.ef (>= 1) are out of range");

    const auto& docs = ctx.task.documents();
    if (docs.empty()) throw InputError("index: task " + ctx.task.name() + " has no document collection");
    const std::string db_option = o.has("db") ? o.str("db") : "";
    // A --limit run indexes a subset of the collection (the runner's take_documents): its own
    // file, so limited and full runs sharing a cache do not rebuild each other's store.
    const std::string db_name =
        "index-" + ctx.task.name() + (ctx.limit > 0 ? "-limit" + std::to_string(ctx.limit) : "") + ".sqlite";
    const fs::path db = db_option.empty() ? ctx.cache_dir / db_name : fs::path(db_option);

    const StoreKey key = {
        {"corpus_sha256", corpus_sha256(docs)},
        {"model_sha256", ctx.model_hash.empty() ? weights_sha256(ctx.model) : ctx.model_hash},
        {"tokenizer", tokenizer_fingerprint(ctx.tokenizer)},
        {"chunk_tokens", std::to_string(chunk_)},
        {"overlap_tokens", std::to_string(overlap_)},
        {"pool", pool_ == Pool::mean ? "mean" : "last"},
        {"layer", std::to_string(layer_)},
        {"center", center_ ? "true" : "false"},
        {"embedding", "pooled hidden state of `layer` (L = after the final norm), L2-normalised; with `center` the "
                      "chunks' mean is subtracted and the result L2-normalised again"},
    };
    auto& d = ctx.meter.details;
    store_ = std::make_unique<VectorStore>(db);
    double build_seconds = 0.0;
    const bool rebuild = !store_->matches(key);
    if (rebuild) {
      const auto t0 = Clock::now();
      build(ctx, docs, key);
      build_seconds = seconds_since(t0);
      store_->set_extra("build_seconds", std::to_string(build_seconds));
    }
    chunks_ = store_->chunks();
    vectors_ = store_->vectors();
    dim_ = store_->dim();
    TB_CHECK(dim_ == ctx.model.config().hidden, << db.string() << " holds " << dim_ << "-d vectors, the model "
                                                 << ctx.model.config().hidden);
    if (center_) {
      center_vec_ = parse_floats(store_->extra("center"));
      if (static_cast<int64_t>(center_vec_.size()) != dim_)
        throw InputError(db.string() + ": the stored centre vector has " + std::to_string(center_vec_.size()) +
                         " values, not " + std::to_string(dim_) + " (a damaged store: delete it to rebuild)");
    }

    double hnsw_seconds = 0.0;
    bool hnsw_rebuilt = false;
    int64_t hnsw_bytes = 0;
    if (use_hnsw_) {
      const auto t0 = Clock::now();
      hnsw_index_ = HnswIndex::load_or_build(*store_, vectors_, hnsw_, hnsw_rebuilt);
      hnsw_seconds = seconds_since(t0);
      hnsw_bytes = static_cast<int64_t>(fs::file_size(db.string() + ".hnsw"));
    }
    int64_t text_bytes = 0;
    for (const auto& c : chunks_) text_bytes += static_cast<int64_t>(c.text.size() + c.doc_id.size() + c.title.size());
    ctx.meter.memory["index"] = static_cast<int64_t>(vectors_.size() * sizeof(float)) + text_bytes +
                                (hnsw_index_ ? hnsw_index_->memory_bytes() : 0);

    std::set<std::string> chunked_docs;
    for (const auto& c : chunks_) chunked_docs.insert(c.doc_id);
    d["db"] = db.string();
    d["index_rebuilt"] = rebuild;
    d["index_build_seconds"] = build_seconds;
    const std::string stored_build = store_->extra("build_seconds");
    d["index_build_seconds_when_built"] = stored_build.empty() ? 0.0 : std::stod(stored_build);
    d["documents"] = docs.size();
    d["documents_chunked"] = chunked_docs.size();
    d["chunks"] = chunks_.size();
    d["chunk_tokens"] = chunk_;
    d["overlap_tokens"] = overlap_;
    d["layer"] = layer_;
    d["center"] = center_;
    d["dim"] = dim_;
    d["db_bytes"] = static_cast<int64_t>(fs::file_size(db));
    d["search"] = use_hnsw_ ? "hnsw" : "exact";
    if (use_hnsw_) {
      d["hnsw_bytes"] = hnsw_bytes;
      d["hnsw_rebuilt"] = hnsw_rebuilt;
      d["hnsw_seconds"] = hnsw_seconds;
      d["hnsw"] = {{"M", hnsw_.M}, {"ef_construction", hnsw_.ef_construction}, {"ef", hnsw_.ef_search}};
    }
  }

  std::vector<Prediction> predict(RunContext& ctx, const std::vector<tasks::Example>& examples) override {
    TB_CHECK(store_, << "index: predict before prepare");
    const auto& task = ctx.task;
    const AnswerSet answers = task_answers(task);
    LmCost cost;
    const auto t_predict = Clock::now();
    const auto t_embed = Clock::now();
    std::vector<std::string> questions;
    for (const auto& ex : examples) questions.push_back(ex.text);
    auto q = embed_texts(ctx.model, ctx.tokenizer, questions, pool_, chunk_, batch_, cost, layer_);
    if (center_) subtract_and_normalise(q, center_vec_);
    const double embed_seconds = seconds_since(t_embed);

    Latency exact_lat, hnsw_lat;
    int64_t agree = 0, compared = 0;
    PromptSet open, closed;
    std::vector<Prediction> preds(examples.size());
    for (size_t i = 0; i < examples.size(); ++i) {
      const float* qi = q.data() + static_cast<int64_t>(i) * dim_;
      auto t0 = Clock::now();
      const auto exact = exact_top_k(vectors_.data(), static_cast<int64_t>(chunks_.size()), dim_, qi, depth_);
      exact_lat.us.push_back(seconds_since(t0) * 1e6);
      std::vector<Hit> hits = exact;
      if (hnsw_index_) {
        t0 = Clock::now();
        hits = hnsw_index_->search(qi, depth_);
        hnsw_lat.us.push_back(seconds_since(t0) * 1e6);
        std::set<int64_t> truth;
        for (const auto& h : exact) truth.insert(h.id);
        for (const auto& h : hits) agree += truth.count(h.id);
        compared += static_cast<int64_t>(exact.size());
      }
      std::set<std::string> seen;
      for (const auto& h : hits) {
        const auto& id = chunks_[static_cast<size_t>(h.id)].doc_id;
        if (seen.insert(id).second) preds[i].ranking.push_back(id);
      }
      // Best chunk last, next to the question.
      std::vector<std::string> blocks;
      const size_t take = std::min(hits.size(), static_cast<size_t>(k_));
      for (size_t j = take; j-- > 0;) blocks.push_back(block_text(chunks_[static_cast<size_t>(hits[j].id)]));
      open.add(ctx.model, ctx.tokenizer, task, examples[i], task.prompt_template(), answers, blocks);
      if (closed_book_) closed.add(ctx.model, ctx.tokenizer, task, examples[i], task.prompt_template(), answers);
    }

    const auto ll = score_candidates(ctx.model, open.contexts, open.candidates, batch_, cost);
    std::vector<int> open_pred, closed_pred;
    for (size_t i = 0; i < examples.size(); ++i) {
      preds[i].scores = log_normalise(ll[i]);
      preds[i].label = argmax(preds[i].scores);
      open_pred.push_back(preds[i].label);
    }
    // The closed-book pass is a comparison, not the reported prediction: metered apart.
    LmCost closed_cost;
    double closed_seconds = 0.0;
    if (closed_book_) {
      const auto t_closed = Clock::now();
      const auto cl = score_candidates(ctx.model, closed.contexts, closed.candidates, batch_, closed_cost);
      for (const auto& s : cl) closed_pred.push_back(argmax(s));
      closed_seconds = seconds_since(t_closed);
      ctx.meter.details["closed_book_eval"] = {
          {"tokens", closed_cost.tokens}, {"seconds", closed_seconds}, {"flops", closed_cost.flops}};
    }
    cost.charge(ctx.meter, /*prepare=*/false);
    ctx.meter.phase("test_eval").seconds += seconds_since(t_predict) - closed_seconds;

    auto& d = ctx.meter.details;
    d["k"] = k_;
    d["depth"] = depth_;
    d["query_embed_seconds"] = embed_seconds;
    d["exact_search_latency"] = exact_lat.json();
    if (hnsw_index_) {
      d["hnsw_search_latency"] = hnsw_lat.json();
      d["hnsw_recall_vs_exact"] = compared ? static_cast<double>(agree) / static_cast<double>(compared) : 1.0;
    }
    d["open_book"] = open.counts();
    if (closed_book_) d["closed_book"] = closed.counts();
    bool labelled = !examples.empty();
    for (const auto& ex : examples) labelled = labelled && ex.label >= 0;
    if (labelled) {
      auto put = [&](nlohmann::json& into, const std::vector<int>& pred) {
        for (const auto& m : tasks::evaluate_predictions(task, examples, pred).overall) into[m.name] = m.value;
      };
      put(d["open_book"], open_pred);
      if (closed_book_) {
        put(d["closed_book"], closed_pred);
        // Closed- next to open-book in the record's metrics (the report's other-metrics
        // table): the accuracy of the same questions answered without retrieval.
        tasks::EvalData cd;
        for (size_t i = 0; i < examples.size(); ++i) {
          cd.gold.push_back(examples[i].label);
          cd.pred.push_back(closed_pred[i]);
        }
        auto m = tasks::compute_metric("accuracy", cd);
        m.name = "closed_book_accuracy";
        ctx.meter.metrics.push_back(m);
      }
      tasks::EvalData rd;
      for (size_t i = 0; i < examples.size(); ++i) {
        rd.ranked.push_back(preds[i].ranking);
        rd.relevant.push_back(examples[i].gold_docs);
      }
      d["open_book"]["recall@" + std::to_string(std::max<int64_t>(k_, 1))] =
          tasks::metric_value("recall@" + std::to_string(std::max<int64_t>(k_, 1)), rd);
      d["open_book"]["mrr"] = tasks::metric_value("mrr", rd);
    }
    return preds;
  }

  int64_t trainable_params() const override { return 0; }
  int64_t save_adaptation(const std::filesystem::path&) const override { return 0; }

 private:
  void build(RunContext& ctx, const std::vector<tasks::Document>& docs, const StoreKey& key) {
    std::vector<ChunkRecord> chunks;
    std::vector<std::vector<int32_t>> windows;
    const int64_t stride = chunk_ - overlap_;
    for (const auto& doc : docs) {
      const auto ids = ctx.tokenizer.encode(doc.text);
      const int64_t n = static_cast<int64_t>(ids.size());
      for (int64_t start = 0; start < n; start += stride) {
        const int64_t end = std::min(n, start + chunk_);
        std::vector<int32_t> w(ids.begin() + start, ids.begin() + end);
        chunks.push_back({doc.id, doc.title, start, end - start, ctx.tokenizer.decode(w)});
        windows.push_back(std::move(w));
        if (end == n) break;
      }
    }
    if (chunks.empty()) throw InputError("index: the documents of task " + ctx.task.name() + " are all empty");
    // Embed in slices so the progress line moves during a long build.
    const int64_t C = ctx.model.config().hidden;
    std::vector<float> vectors;
    vectors.reserve(windows.size() * static_cast<size_t>(C));
    LmCost cost;
    const size_t slice = static_cast<size_t>(batch_) * 16;
    for (size_t s = 0; s < windows.size(); s += slice) {
      if (ctx.meter.progress) ctx.meter.progress("index", static_cast<int64_t>(s), static_cast<int64_t>(windows.size()), NAN);
      const std::vector<std::vector<int32_t>> part(windows.begin() + static_cast<std::ptrdiff_t>(s),
                                                   windows.begin() + static_cast<std::ptrdiff_t>(std::min(windows.size(), s + slice)));
      const auto v = embed_sequences(ctx.model, part, pool_, batch_, cost, layer_);
      vectors.insert(vectors.end(), v.begin(), v.end());
    }
    cost.charge(ctx.meter, /*prepare=*/true);
    std::vector<float> centre;
    if (center_) {
      centre.assign(static_cast<size_t>(C), 0.0f);
      const size_t n = chunks.size();
      for (size_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < C; ++c) centre[static_cast<size_t>(c)] += vectors[i * static_cast<size_t>(C) + static_cast<size_t>(c)] / static_cast<float>(n);
      subtract_and_normalise(vectors, centre);
    }
    store_->rebuild(key, chunks, vectors.data(), C);
    if (center_) store_->set_extra("center", format_floats(centre));
  }

  int64_t k_ = 4, chunk_ = 24, overlap_ = 6, depth_ = 20, batch_ = 16;
  int layer_ = 0;
  bool closed_book_ = true, center_ = false;
  std::vector<float> center_vec_;
  bool use_hnsw_ = true;
  Pool pool_ = Pool::mean;
  HnswIndex::Params hnsw_;
  std::unique_ptr<VectorStore> store_;
  std::vector<ChunkRecord> chunks_;
  std::vector<float> vectors_;  // (N, dim_)
  int64_t dim_ = 0;
  std::unique_ptr<HnswIndex> hnsw_index_;
};

}  // namespace

MethodInfo index_method_info() {
  MethodInfo info;
  info.name = "index";
  info.summary = "LLM indexing: chunk + embed documents into SQLite (+ HNSW), retrieve top-k chunks into the prompt";
  info.options = {
      {"k", "4", "chunks placed in the prompt before the question (0 = closed book)"},
      {"chunk", "24", "chunk length in tokens (retrieval measured best at 16-24 on wordnet-define-open dev; see README)"},
      {"overlap", "6", "tokens shared by consecutive chunks of a document"},
      {"search", "hnsw", "nearest-neighbour search: exact (brute force) | hnsw (hnswlib)"},
      {"depth", "20", "chunks retrieved for the document ranking (recall@k, MRR)"},
      {"pool", "mean", "pooling of the hidden states for embeddings: mean | last"},
      {"layer", "2", "hidden state embedded: 0 = token embeddings .. L = after the final norm; negative counts from the end "
                     "(-1 = L); 2 measured best on models/default (6 blocks) on wordnet-define-open dev"},
      {"center", "true", "subtract the chunks' mean embedding (stored with the index) from chunks and questions, then re-normalise"},
      {"db", "", "the SQLite store (default <cache>/index-<task>.sqlite, index-<task>-limit<N>.sqlite under --limit N; the HNSW graph sits next to it as .hnsw)"},
      {"hnsw-m", "16", "HNSW graph degree M"},
      {"ef-construction", "200", "HNSW ef at build time"},
      {"ef", "64", "HNSW ef at query time"},
      {"closed-book", "true", "also answer without retrieval: details.closed_book and the metric closed_book_accuracy (one more scoring pass)"},
      {"batch", "16", "sequences per forward"},
  };
  info.make = [] { return std::make_unique<Index>(); };
  info.supports = {tasks::OutputType::retrieval};
  return info;
}

}  // namespace tb::methods
