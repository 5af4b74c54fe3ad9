// The index method end to end on a small retrieval task (documents + questions written as a
// user task): the store is built once and reused, a changed model or corpus rebuilds it, a
// damaged --index.db is refused untouched, exact and HNSW search give the same rankings on a
// small corpus, chunks cover every document with the stated overlap, and the record's
// details hold closed- and open-book answers side by side with the index's costs.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "harness/base/errors.h"
#include "harness/core/model.h"
#include "harness/core/tokenizer.h"
#include "methods/method.h"
#include "methods/vector_store.h"
#include "tasks/registry.h"

namespace fs = std::filesystem;
namespace m = tb::methods;

namespace tb::methods {
MethodInfo index_method_info();
}

using namespace tb;
using namespace tb::methods;

namespace {

const std::vector<std::pair<std::string, std::string>> kWords = {
    {"apple", "a round fruit with red or green skin that grows on trees"},
    {"river", "a large natural stream of water flowing to the sea"},
    {"hammer", "a tool with a heavy head used for driving nails"},
    {"violin", "a string instrument played with a bow under the chin"},
    {"desert", "a dry barren region with little rain and few plants"},
    {"candle", "a stick of wax with a wick that gives light when burning"},
    {"bridge", "a structure carrying a road or path across a river"},
    {"falcon", "a fast bird of prey with long pointed wings"},
    {"ladder", "a set of rungs between two uprights used for climbing"},
    {"glacier", "a slow moving mass of ice formed from packed snow"},
    {"pepper", "a hot spicy seasoning made from dried berries"},
    {"anchor", "a heavy object dropped from a ship to keep it in place"},
};

struct RetrievalFixture {
  fs::path dir;
  std::unique_ptr<tasks::Registry> registry;
  std::shared_ptr<const tasks::Task> task;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Model> model;
  Meter meter;
  std::vector<tasks::Example> train, dev, test;

  explicit RetrievalFixture(const std::string& doc_suffix = "") {
    dir = fs::temp_directory_path() / ("tb_index_fixture_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(dir);
    write_task(doc_suffix);
    std::vector<std::string> texts;
    for (const auto& [w, d] : kWords) texts.push_back(w + ": " + d + ". " + d);
    tok = std::make_unique<Tokenizer>(Tokenizer::train(texts, 400, {"<|endoftext|>"}));
    ModelConfig c;
    c.family = Family::llama;
    c.model_type = "llama";
    c.vocab_size = tok->vocab_size();
    c.hidden = 32;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = 2;
    c.head_dim = 8;
    c.intermediate = 64;
    c.max_positions = 96;
    model = std::make_unique<Model>(c);
    model->init_random(5, 0.1f);
  }
  ~RetrievalFixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  void write_task(const std::string& doc_suffix) {
    std::ofstream docs(dir / "docs.jsonl");
    for (const auto& [w, d] : kWords)
      docs << nlohmann::json{{"id", "doc:" + w}, {"title", w}, {"text", w + " (n.) " + d + "." + doc_suffix}}.dump() << "\n";
    docs.close();
    std::ofstream q(dir / "q.jsonl");
    for (size_t i = 0; i < kWords.size(); ++i) {
      const auto& [w, d] = kWords[i];
      const std::vector<std::string> choices = {w, kWords[(i + 1) % kWords.size()].first,
                                                kWords[(i + 5) % kWords.size()].first};
      q << nlohmann::json{{"id", "q" + std::to_string(i)}, {"text", d}, {"choices", choices}, {"answer", w},
                          {"gold_doc", "doc:" + w}, {"split", i < 4 ? "train" : (i < 6 ? "dev" : "test")}}
               .dump()
        << "\n";
    }
    q.close();
    std::ofstream ini(dir / "tiny-open.ini");
    ini << "name = tiny-open\nversion = 1\ndescription = tiny open-book definitions\noutput_type = retrieval\n\n"
        << "[data]\nsource = q.jsonl\nid_field = id\nlabel_field = answer\nchoices_field = choices\n"
        << "gold_docs_field = gold_doc\ndocuments = docs.jsonl\n\n"
        << "[prompt]\ntemplate = Definition: {text}\\n{choices}\\nAnswer:\n\n"
        << "[metrics]\nnames = accuracy, recall@1, mrr\n";
    ini.close();
    registry = std::make_unique<tasks::Registry>(tasks::Registry::from_dir(dir));
    task = registry->load("tiny-open");
    train = task->split("train");
    dev = task->split("dev");
    test = task->split("test");
  }

  RunContext context(std::map<std::string, std::string> overrides, const std::string& model_hash,
                     const fs::path& cache) {
    const auto info = index_method_info();
    std::map<std::string, std::string> values;
    for (const auto& o : info.options) values[o.name] = o.default_value;
    values["chunk"] = "12";
    values["overlap"] = "4";
    values["k"] = "2";
    values["depth"] = "8";
    for (auto& [k, v] : overrides) values[k] = v;
    meter = Meter{};
    return RunContext{*model, *tok, *task, 0, Options("index", values), meter, 0, cache, model_hash, train, dev};
  }

  // prepare + predict; returns the details.
  nlohmann::json run(std::map<std::string, std::string> overrides, const std::string& model_hash,
                     const fs::path& cache, std::vector<Prediction>* preds = nullptr) {
    auto ctx = context(std::move(overrides), model_hash, cache);
    auto method = index_method_info().make();
    method->prepare(ctx);
    auto p = method->predict(ctx, test);
    EXPECT_EQ(p.size(), test.size());
    EXPECT_EQ(method->trainable_params(), 0);
    EXPECT_EQ(method->save_adaptation(dir), 0);
    if (preds) *preds = std::move(p);
    return meter.details;
  }
};

}  // namespace

TEST(Index, BuildsOnceReusesAndRebuildsOnAChangedModel) {
  RetrievalFixture f;
  const fs::path cache = f.dir / "cache";
  std::vector<Prediction> first, second;
  auto d = f.run({}, "model-a", cache, &first);
  EXPECT_TRUE(d["index_rebuilt"].get<bool>());
  EXPECT_TRUE(d["hnsw_rebuilt"].get<bool>());
  EXPECT_TRUE(fs::exists(cache / "index-tiny-open.sqlite"));
  EXPECT_TRUE(fs::exists(cache / "index-tiny-open.sqlite.hnsw"));
  EXPECT_EQ(d["documents"], kWords.size());
  EXPECT_EQ(d["documents_chunked"], kWords.size());
  EXPECT_GT(d["chunks"].get<int64_t>(), static_cast<int64_t>(kWords.size()));  // long documents span chunks
  EXPECT_GT(d["db_bytes"].get<int64_t>(), 0);
  EXPECT_GT(f.meter.memory["index"], 0);
  EXPECT_GT(f.meter.phase("train").tokens, 0);  // the build is prepare-phase work

  d = f.run({}, "model-a", cache, &second);
  EXPECT_FALSE(d["index_rebuilt"].get<bool>());
  EXPECT_FALSE(d["hnsw_rebuilt"].get<bool>());
  EXPECT_EQ(f.meter.phase("train").tokens, 0);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].ranking, second[i].ranking);
    EXPECT_EQ(first[i].label, second[i].label);
  }

  // New weights under a new hash: the stored vectors are stale, so the store is rebuilt.
  f.model->init_random(99, 0.1f);
  d = f.run({}, "model-b", cache);
  EXPECT_TRUE(d["index_rebuilt"].get<bool>());
  EXPECT_TRUE(d["hnsw_rebuilt"].get<bool>());
  // Other chunking options rebuild as well.
  d = f.run({{"overlap", "2"}}, "model-b", cache);
  EXPECT_TRUE(d["index_rebuilt"].get<bool>());
}

TEST(Index, ChangedCorpusRebuildsTheStore) {
  const fs::path shared = fs::temp_directory_path() / ("tb_index_shared_" + std::to_string(::getpid()));
  fs::remove_all(shared);
  {
    RetrievalFixture a;
    EXPECT_TRUE(a.run({}, "same-model", shared)["index_rebuilt"].get<bool>());
    EXPECT_FALSE(a.run({}, "same-model", shared)["index_rebuilt"].get<bool>());
  }
  {
    RetrievalFixture b(" See also the dictionary.");  // same task name, other documents
    const auto d = b.run({}, "same-model", shared);
    EXPECT_TRUE(d["index_rebuilt"].get<bool>());
  }
  fs::remove_all(shared);
}

TEST(Index, DamagedDatabaseIsRefusedAndLeftUntouched) {
  RetrievalFixture f;
  const fs::path db = f.dir / "mine.sqlite";
  const std::string junk = "this is not a database, it is a shopping list: eggs, milk, bread\n";
  { std::ofstream(db, std::ios::binary) << junk; }
  auto ctx = f.context({{"db", db.string()}}, "model-a", f.dir / "cache");
  auto method = m::index_method_info().make();
  try {
    method->prepare(ctx);
    FAIL() << "prepared over a damaged database";
  } catch (const tb::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(db.string()), std::string::npos) << e.what();
  }
  std::ifstream in(db, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), junk);
}

TEST(Index, ExactAndHnswRankTheSameOnASmallCorpusAndDetailsAreComplete) {
  RetrievalFixture f;
  const fs::path cache = f.dir / "cache";
  std::vector<Prediction> exact, hnsw;
  const auto de = f.run({{"search", "exact"}}, "m", cache, &exact);
  EXPECT_FALSE(de.contains("hnsw_search_latency"));
  const auto dh = f.run({{"search", "hnsw"}}, "m", cache, &hnsw);
  EXPECT_FALSE(dh["index_rebuilt"].get<bool>());  // the search method is not part of the key
  EXPECT_DOUBLE_EQ(dh["hnsw_recall_vs_exact"].get<double>(), 1.0);
  for (size_t i = 0; i < exact.size(); ++i) {
    EXPECT_EQ(exact[i].ranking, hnsw[i].ranking) << i;
    EXPECT_FALSE(exact[i].ranking.empty());
    EXPECT_EQ(std::set<std::string>(exact[i].ranking.begin(), exact[i].ranking.end()).size(), exact[i].ranking.size());
    EXPECT_EQ(exact[i].scores.size(), f.test[i].choices.size());
  }
  for (const char* side : {"closed_book", "open_book"}) {
    ASSERT_TRUE(dh.contains(side)) << side;
    EXPECT_TRUE(dh[side].contains("accuracy")) << side;
  }
  EXPECT_EQ(dh["closed_book"]["mean_blocks"].get<double>(), 0.0);
  EXPECT_GT(dh["open_book"]["mean_blocks"].get<double>(), 0.0);
  EXPECT_TRUE(dh["open_book"].contains("recall@2"));
  EXPECT_TRUE(dh["open_book"].contains("mrr"));
  for (const char* lat : {"exact_search_latency", "hnsw_search_latency"}) {
    EXPECT_GE(dh[lat]["p99_us"].get<double>(), dh[lat]["p50_us"].get<double>()) << lat;
    EXPECT_EQ(dh[lat]["queries"], f.test.size());
  }
  EXPECT_GT(dh["hnsw_bytes"].get<int64_t>(), 0);
}

TEST(Index, ChunksCoverEveryDocumentWithTheStatedOverlap) {
  RetrievalFixture f;
  const fs::path cache = f.dir / "cache";
  f.run({}, "m", cache);
  m::VectorStore store(cache / "index-tiny-open.sqlite");
  const auto chunks = store.chunks();
  std::map<std::string, std::vector<m::ChunkRecord>> by_doc;
  for (const auto& c : chunks) by_doc[c.doc_id].push_back(c);
  ASSERT_EQ(by_doc.size(), kWords.size());
  for (const auto& doc : f.task->documents()) {
    const auto ids = f.tok->encode(doc.text);
    const auto& cs = by_doc.at(doc.id);
    int64_t expect_start = 0;
    for (size_t j = 0; j < cs.size(); ++j) {
      EXPECT_EQ(cs[j].start_token, expect_start) << doc.id;
      EXPECT_LE(cs[j].num_tokens, 12);
      const std::vector<int32_t> w(ids.begin() + cs[j].start_token, ids.begin() + cs[j].start_token + cs[j].num_tokens);
      EXPECT_EQ(cs[j].text, f.tok->decode(w));
      expect_start += 12 - 4;
    }
    EXPECT_EQ(cs.back().start_token + cs.back().num_tokens, static_cast<int64_t>(ids.size())) << doc.id;
  }
  EXPECT_EQ(store.dim(), f.model->config().hidden);
}

TEST(Index, LayerAndCentringArePartOfTheKeyAndCentredVectorsAreUnitLength) {
  RetrievalFixture f;
  const fs::path cache = f.dir / "cache";
  std::vector<Prediction> final_layer, first_layer, centred;
  auto d = f.run({{"layer", "-1"}}, "m", cache, &final_layer);
  EXPECT_EQ(d["layer"], f.model->config().n_layer);  // -1 = after the final norm
  d = f.run({{"layer", "1"}}, "m", cache, &first_layer);
  EXPECT_TRUE(d["index_rebuilt"].get<bool>());
  EXPECT_EQ(d["layer"], 1);
  bool differs = false;
  for (size_t i = 0; i < final_layer.size(); ++i) differs = differs || final_layer[i].ranking != first_layer[i].ranking;
  EXPECT_TRUE(differs) << "layer 1 and the final layer ranked every question alike";
  EXPECT_FALSE(f.run({{"layer", "-2"}}, "m", cache)["index_rebuilt"].get<bool>());  // -2 = layer 1 of 2

  d = f.run({{"center", "true"}, {"search", "exact"}}, "m", cache, &centred);
  EXPECT_TRUE(d["index_rebuilt"].get<bool>());
  EXPECT_TRUE(d["center"].get<bool>());
  m::VectorStore store(cache / "index-tiny-open.sqlite");
  const auto v = store.vectors();
  const int64_t C = store.dim();
  const size_t n = v.size() / static_cast<size_t>(C);
  // Stored vectors: unit length, and centred (their mean is far smaller than before).
  std::vector<double> mean(static_cast<size_t>(C), 0.0);
  for (size_t i = 0; i < n; ++i) {
    double norm = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double x = v[i * static_cast<size_t>(C) + static_cast<size_t>(c)];
      norm += x * x;
      mean[static_cast<size_t>(c)] += x / static_cast<double>(n);
    }
    EXPECT_NEAR(norm, 1.0, 1e-4) << i;
  }
  double mean_norm = 0.0;
  for (double x : mean) mean_norm += x * x;
  EXPECT_LT(std::sqrt(mean_norm), 0.5);
  const std::string centre = store.extra("center");
  EXPECT_EQ(std::count(centre.begin(), centre.end(), ' ') + 1, C);
  for (const auto& p : centred) EXPECT_FALSE(p.ranking.empty());

  for (const std::string bad : {"3", "-4"}) {
    auto ctx = f.context({{"layer", bad}}, "m", cache);
    auto method = m::index_method_info().make();
    EXPECT_THROW(method->prepare(ctx), tb::InputError) << bad;
  }
}

TEST(Index, ClosedBookAccuracyIsARecordMetricEqualToTheDetails) {
  RetrievalFixture f;
  const auto d = f.run({}, "m", f.dir / "cache");
  ASSERT_EQ(f.meter.metrics.size(), 1u);
  EXPECT_EQ(f.meter.metrics[0].name, "closed_book_accuracy");
  EXPECT_DOUBLE_EQ(f.meter.metrics[0].value, d["closed_book"]["accuracy"].get<double>());
  EXPECT_TRUE(f.meter.metrics[0].higher_is_better);
  f.run({{"closed-book", "false"}}, "m", f.dir / "cache");
  EXPECT_TRUE(f.meter.metrics.empty());
}

// The record's eval figures are the reported (open-book) prediction's: the closed-book
// comparison pass is metered apart, as details.closed_book_eval.
TEST(Index, ClosedBookPassIsNotChargedToTheEvalFigures) {
  RetrievalFixture f;
  f.run({}, "m", f.dir / "cache");
  const int64_t tokens_with = f.meter.phase("test_eval").tokens;
  const double flops_with = f.meter.phase("test_eval").flops;
  ASSERT_TRUE(f.meter.details.contains("closed_book_eval"));
  EXPECT_GT(f.meter.details["closed_book_eval"]["tokens"].get<int64_t>(), 0);
  EXPECT_GT(f.meter.details["closed_book_eval"]["flops"].get<double>(), 0.0);
  f.run({{"closed-book", "false"}}, "m", f.dir / "cache");
  EXPECT_FALSE(f.meter.details.contains("closed_book_eval"));
  EXPECT_EQ(f.meter.phase("test_eval").tokens, tokens_with);
  EXPECT_DOUBLE_EQ(f.meter.phase("test_eval").flops, flops_with);
  EXPECT_GT(f.meter.phase("test_eval").flops, 0.0);
}
