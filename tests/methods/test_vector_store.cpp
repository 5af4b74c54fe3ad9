// The index method's vector store: exact search against an independent brute force, HNSW
// recall against exact search, the SQLite store across close/reopen, refusal (without a
// write) of damaged and foreign files, key-based invalidation, and the HNSW file's reuse and
// rebuild.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "harness/base/errors.h"
#include "methods/vector_store.h"

namespace fs = std::filesystem;
using tb::methods::ChunkRecord;
using tb::methods::HnswIndex;
using tb::methods::StoreKey;
using tb::methods::VectorStore;

namespace {

std::vector<float> random_unit_vectors(int64_t N, int64_t D, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(N * D));
  for (int64_t i = 0; i < N; ++i) {
    double norm = 0.0;
    for (int64_t j = 0; j < D; ++j) {
      v[i * D + j] = d(g);
      norm += v[i * D + j] * v[i * D + j];
    }
    for (int64_t j = 0; j < D; ++j) v[i * D + j] /= static_cast<float>(std::sqrt(norm));
  }
  return v;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct TempDir {
  fs::path dir;
  TempDir() {
    dir = fs::temp_directory_path() / ("tb_vector_store_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::vector<ChunkRecord> some_chunks(int64_t n) {
  std::vector<ChunkRecord> c;
  for (int64_t i = 0; i < n; ++i)
    c.push_back({"doc" + std::to_string(i / 3), "title " + std::to_string(i / 3), (i % 3) * 8, 8,
                 "chunk text " + std::to_string(i) + " with 'quotes', a \"dq\" and ünïcode"});
  return c;
}

const StoreKey kKey = {{"corpus_sha256", "abc"}, {"model_sha256", "m1"}, {"chunk_tokens", "8"}};

}  // namespace

TEST(VectorStore, ExactSearchEqualsBruteForce) {
  const int64_t N = 700, D = 24;
  const auto keys = random_unit_vectors(N, D, 1);
  const auto queries = random_unit_vectors(20, D, 2);
  for (int64_t q = 0; q < 20; ++q) {
    const float* qv = queries.data() + q * D;
    // Independent reference: every score in double, a full sort.
    std::vector<std::pair<double, int64_t>> all;
    for (int64_t i = 0; i < N; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < D; ++j) s += static_cast<double>(keys[i * D + j]) * qv[j];
      all.emplace_back(-s, i);
    }
    std::sort(all.begin(), all.end());
    const auto hits = tb::methods::exact_top_k(keys.data(), N, D, qv, 10);
    ASSERT_EQ(hits.size(), 10u);
    for (size_t r = 0; r < hits.size(); ++r) {
      EXPECT_EQ(hits[r].id, all[r].second) << "query " << q << " rank " << r;
      EXPECT_NEAR(hits[r].score, -all[r].first, 1e-5);
    }
  }
  EXPECT_EQ(tb::methods::exact_top_k(keys.data(), N, D, queries.data(), N + 5).size(), static_cast<size_t>(N));
}

TEST(VectorStore, HnswRecallAt10AgainstExact) {
  const int64_t N = 10000, D = 32, Q = 100, K = 10;
  const auto keys = random_unit_vectors(N, D, 3);
  const auto queries = random_unit_vectors(Q, D, 4);
  HnswIndex::Params p;
  p.M = 16;
  p.ef_construction = 100;
  p.ef_search = 100;
  const HnswIndex index(keys.data(), N, D, p);
  int64_t found = 0;
  for (int64_t q = 0; q < Q; ++q) {
    const auto exact = tb::methods::exact_top_k(keys.data(), N, D, queries.data() + q * D, K);
    const auto approx = index.search(queries.data() + q * D, K);
    ASSERT_EQ(approx.size(), static_cast<size_t>(K));
    for (size_t r = 1; r < approx.size(); ++r) EXPECT_GE(approx[r - 1].score, approx[r].score);
    std::set<int64_t> truth;
    for (const auto& h : exact) truth.insert(h.id);
    for (const auto& h : approx) found += truth.count(h.id);
  }
  const double recall = static_cast<double>(found) / static_cast<double>(Q * K);
  EXPECT_GE(recall, 0.95) << "HNSW recall@10 " << recall;
}

TEST(VectorStore, SurvivesCloseAndReopen) {
  TempDir t;
  const fs::path db = t.dir / "sub" / "store.sqlite";
  const auto chunks = some_chunks(7);
  const auto vecs = random_unit_vectors(7, 5, 5);
  {
    VectorStore s(db);
    EXPECT_TRUE(s.key().empty());
    EXPECT_EQ(s.size(), 0);
    EXPECT_FALSE(s.matches(kKey));
    s.rebuild(kKey, chunks, vecs.data(), 5);
    s.set_extra("note", "kept");
  }
  VectorStore s(db);
  EXPECT_EQ(s.key(), kKey);
  EXPECT_TRUE(s.matches(kKey));
  EXPECT_EQ(s.size(), 7);
  EXPECT_EQ(s.dim(), 5);
  EXPECT_EQ(s.extra("note"), "kept");
  const auto back = s.chunks();
  ASSERT_EQ(back.size(), chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(back[i].doc_id, chunks[i].doc_id);
    EXPECT_EQ(back[i].title, chunks[i].title);
    EXPECT_EQ(back[i].start_token, chunks[i].start_token);
    EXPECT_EQ(back[i].num_tokens, chunks[i].num_tokens);
    EXPECT_EQ(back[i].text, chunks[i].text);
  }
  EXPECT_EQ(s.vectors(), vecs);  // bit for bit
}

TEST(VectorStore, ChangedKeyInvalidatesAndRebuildReplacesEverything) {
  TempDir t;
  const fs::path db = t.dir / "store.sqlite";
  VectorStore s(db);
  s.rebuild(kKey, some_chunks(9), random_unit_vectors(9, 4, 6).data(), 4);
  s.set_extra("hnsw.sha256", "x");
  StoreKey other_model = kKey;
  other_model["model_sha256"] = "m2";
  StoreKey other_corpus = kKey;
  other_corpus["corpus_sha256"] = "def";
  EXPECT_FALSE(s.matches(other_model));
  EXPECT_FALSE(s.matches(other_corpus));
  StoreKey extra_field = kKey;
  extra_field["overlap_tokens"] = "2";
  EXPECT_FALSE(s.matches(extra_field));
  const auto v2 = random_unit_vectors(3, 6, 7);
  s.rebuild(other_model, some_chunks(3), v2.data(), 6);
  EXPECT_TRUE(s.matches(other_model));
  EXPECT_FALSE(s.matches(kKey));
  EXPECT_EQ(s.size(), 3);
  EXPECT_EQ(s.dim(), 6);
  EXPECT_EQ(s.vectors(), v2);
  EXPECT_EQ(s.extra("hnsw.sha256"), "");  // derived data of the old contents is forgotten
}

TEST(VectorStore, DamagedFileIsAnErrorNamingItAndIsNotWritten) {
  TempDir t;
  const fs::path db = t.dir / "index-x.sqlite";
  std::string junk(5000, '\0');
  std::mt19937 g(9);
  for (auto& c : junk) c = static_cast<char>(g());
  { std::ofstream(db, std::ios::binary) << junk; }
  try {
    VectorStore s(db);
    FAIL() << "opened a damaged file";
  } catch (const tb::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(db.string()), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_bytes(db), junk);
  EXPECT_FALSE(fs::exists(db.string() + "-journal"));

  // A real store with a damaged page in the middle is refused too.
  const fs::path good = t.dir / "good.sqlite";
  {
    VectorStore s(good);
    s.rebuild(kKey, some_chunks(400), random_unit_vectors(400, 64, 8).data(), 64);
  }
  std::string bytes = read_bytes(good);
  ASSERT_GT(bytes.size(), 3 * 4096u);
  for (size_t i = 2 * 4096; i < 2 * 4096 + 600; ++i) bytes[i] = static_cast<char>(0xA5);
  { std::ofstream(good, std::ios::binary | std::ios::trunc) << bytes; }
  EXPECT_THROW(VectorStore{good}, tb::InputError);
  EXPECT_EQ(read_bytes(good), bytes);
}

TEST(VectorStore, ForeignSqliteDatabaseIsAnErrorAndIsNotWritten) {
  TempDir t;
  const fs::path db = t.dir / "someone-elses.sqlite";
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.string().c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, "CREATE TABLE people(name TEXT); INSERT INTO people VALUES('ada');", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(h);
  const std::string before = read_bytes(db);
  try {
    VectorStore s(db);
    FAIL() << "opened a foreign database";
  } catch (const tb::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(db.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a tunebench vector store"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_bytes(db), before);

  // A tb_meta table of another format is foreign as well; an empty file is SQLite's empty
  // database, which has no tb_meta either.
  const fs::path other = t.dir / "other.sqlite";
  ASSERT_EQ(sqlite3_open(other.string().c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, "CREATE TABLE tb_meta(name TEXT PRIMARY KEY, value TEXT); INSERT INTO tb_meta VALUES('format','x');",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(h);
  const std::string other_before = read_bytes(other);
  EXPECT_THROW(VectorStore{other}, tb::InputError);
  EXPECT_EQ(read_bytes(other), other_before);
  const fs::path empty = t.dir / "empty.sqlite";
  { std::ofstream(empty, std::ios::binary); }
  EXPECT_THROW(VectorStore{empty}, tb::InputError);
  EXPECT_EQ(fs::file_size(empty), 0u);
}

TEST(VectorStore, HnswFileIsReusedWhenItsChecksumMatchesAndRebuiltOtherwise) {
  TempDir t;
  const fs::path db = t.dir / "store.sqlite";
  const int64_t N = 300, D = 16;
  const auto vecs = random_unit_vectors(N, D, 10);
  VectorStore s(db);
  s.rebuild(kKey, some_chunks(N), vecs.data(), D);
  HnswIndex::Params p;
  bool rebuilt = false;
  const auto a = HnswIndex::load_or_build(s, vecs, p, rebuilt);
  EXPECT_TRUE(rebuilt);
  ASSERT_TRUE(fs::exists(db.string() + ".hnsw"));
  const auto b = HnswIndex::load_or_build(s, vecs, p, rebuilt);
  EXPECT_FALSE(rebuilt);
  EXPECT_EQ(b->size(), N);
  const auto q = random_unit_vectors(1, D, 11);
  const auto ha = a->search(q.data(), 5), hb = b->search(q.data(), 5);
  ASSERT_EQ(ha.size(), hb.size());
  for (size_t i = 0; i < ha.size(); ++i) EXPECT_EQ(ha[i].id, hb[i].id);

  // A graph file that is not the recorded one is never trusted: it is rebuilt.
  { std::ofstream(db.string() + ".hnsw", std::ios::binary | std::ios::trunc) << "garbage"; }
  const auto c = HnswIndex::load_or_build(s, vecs, p, rebuilt);
  EXPECT_TRUE(rebuilt);
  EXPECT_EQ(c->search(q.data(), 5).front().id, ha.front().id);
  // Other graph parameters rebuild as well.
  p.M = 8;
  HnswIndex::load_or_build(s, vecs, p, rebuilt);
  EXPECT_TRUE(rebuilt);
}
