// SQLite chunk/vector store and exact + HNSW search; see vector_store.h.
#include "methods/vector_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "harness/base/hash.h"
#include "harness/base/errors.h"

namespace tb::methods {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFormat = "tunebench-vector-store";
constexpr const char* kFormatVersion = "1";

std::string describe(const fs::path& p) { return "vector store " + p.string(); }

// One prepared statement, finalised on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql, const fs::path& path) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) {
      const std::string msg = sqlite3_errmsg(db);
      sqlite3_finalize(s_);
      throw InputError(describe(path) + ": " + msg);
    }
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  sqlite3_stmt* get() const { return s_; }
  // SQLITE_ROW or SQLITE_DONE; anything else throws naming the store.
  int step(const fs::path& path) {
    const int rc = sqlite3_step(s_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) throw InputError(describe(path) + ": " + sqlite3_errmsg(db_));
    return rc;
  }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s_, col)))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

// Checks, through a read-only connection, that an existing file is a tunebench store in
// good health. Nothing is written, so a foreign or damaged file keeps its bytes.
void validate_existing(const fs::path& path) {
  if (!fs::is_regular_file(path)) throw InputError(describe(path) + ": exists and is not a regular file");
  sqlite3* ro = nullptr;
  const int rc = sqlite3_open_v2(path.string().c_str(), &ro, SQLITE_OPEN_READONLY, nullptr);
  auto close = [&] { sqlite3_close(ro); };
  if (rc != SQLITE_OK) {
    const std::string msg = ro ? sqlite3_errmsg(ro) : "cannot open";
    close();
    throw InputError(describe(path) + ": cannot open it: " + msg);
  }
  try {
    sqlite3_stmt* probe = nullptr;
    const int prc = sqlite3_prepare_v2(ro, "SELECT value FROM tb_meta WHERE name = 'format'", -1, &probe, nullptr);
    if (prc != SQLITE_OK) {
      const int code = sqlite3_errcode(ro);
      const std::string msg = sqlite3_errmsg(ro);
      sqlite3_finalize(probe);
      if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
        throw InputError(describe(path) + ": not a SQLite database or damaged (" + msg +
                         "); it was left untouched — remove it or choose another --index.db");
      throw InputError(describe(path) + ": a SQLite database that is not a tunebench vector store (" + msg +
                       "); it was left untouched — remove it or choose another --index.db");
    }
    std::string format;
    const int src = sqlite3_step(probe);
    if (src == SQLITE_ROW) format = reinterpret_cast<const char*>(sqlite3_column_text(probe, 0));
    const std::string step_msg = sqlite3_errmsg(ro);
    sqlite3_finalize(probe);
    if (src != SQLITE_ROW && src != SQLITE_DONE)
      throw InputError(describe(path) + ": damaged (" + step_msg + "); it was left untouched");
    if (format != kFormat)
      throw InputError(describe(path) + ": tb_meta names format '" + format + "', not '" + kFormat +
                       "'; it was left untouched — remove it or choose another --index.db");
    Stmt version(ro, "SELECT value FROM tb_meta WHERE name = 'format_version'", path);
    if (version.step(path) != SQLITE_ROW || version.text(0) != kFormatVersion)
      throw InputError(describe(path) + ": unsupported store version (expected " + std::string(kFormatVersion) +
                       "); it was left untouched");
    Stmt columns(ro, "SELECT id, doc_id, title, start_token, num_tokens, text, vector FROM chunks LIMIT 0", path);
    Stmt check(ro, "PRAGMA quick_check", path);
    if (check.step(path) != SQLITE_ROW || check.text(0) != "ok")
      throw InputError(describe(path) + ": damaged (integrity check: " + check.text(0) + "); it was left untouched");
  } catch (...) {
    close();
    throw;
  }
  close();
}

}  // namespace

// ---- VectorStore -----------------------------------------------------------------------

VectorStore::VectorStore(const fs::path& path) : path_(path) {
  const bool existed = fs::exists(path);
  if (existed) {
    validate_existing(path);
  } else if (path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) throw InputError(describe(path) + ": cannot create its directory: " + ec.message());
  }
  const int flags = SQLITE_OPEN_READWRITE | (existed ? 0 : SQLITE_OPEN_CREATE);
  if (sqlite3_open_v2(path.string().c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "cannot open";
    sqlite3_close(db_);
    db_ = nullptr;
    throw InputError(describe(path) + ": cannot open it for writing: " + msg);
  }
  // Parallel shards may open the same store; writers wait for each other instead of failing.
  sqlite3_busy_timeout(db_, 120000);
  if (!existed) {
    try {
      exec("BEGIN IMMEDIATE", "begin");
      exec("CREATE TABLE IF NOT EXISTS tb_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)", "create tb_meta");
      exec("CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, title TEXT NOT NULL, "
           "start_token INTEGER NOT NULL, num_tokens INTEGER NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL)",
           "create chunks");
      Stmt ins(db_, "INSERT OR IGNORE INTO tb_meta(name, value) VALUES (?, ?)", path_);
      const std::pair<const char*, const char*> rows[] = {{"format", kFormat}, {"format_version", kFormatVersion}};
      for (const auto& [n, v] : rows) {
        bind_text(ins.get(), 1, n);
        bind_text(ins.get(), 2, v);
        ins.step(path_);
        sqlite3_reset(ins.get());
      }
      exec("COMMIT", "commit");
    } catch (...) {
      // The file this constructor created holds no store (SQLite rolled the schema back, e.g.
      // on a full disk): remove it, or the next run would refuse it as a foreign database.
      sqlite3_close(db_);
      db_ = nullptr;
      std::error_code ec;
      fs::remove(path, ec);
      fs::remove(path.string() + "-journal", ec);
      throw;
    }
  }
}

VectorStore::~VectorStore() { sqlite3_close(db_); }

void VectorStore::exec(const char* sql, const char* what) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw InputError(describe(path_) + ": " + what + ": " + msg);
  }
}

StoreKey VectorStore::key() const {
  StoreKey k;
  Stmt s(db_, "SELECT name, value FROM tb_meta WHERE name LIKE 'key.%'", path_);
  while (s.step(path_) == SQLITE_ROW) k[s.text(0).substr(4)] = s.text(1);
  return k;
}

std::string VectorStore::extra(const std::string& name) const {
  Stmt s(db_, "SELECT value FROM tb_meta WHERE name = ?", path_);
  bind_text(s.get(), 1, "extra." + name);
  return s.step(path_) == SQLITE_ROW ? s.text(0) : std::string();
}

void VectorStore::set_extra(const std::string& name, const std::string& value) {
  Stmt s(db_, "INSERT OR REPLACE INTO tb_meta(name, value) VALUES (?, ?)", path_);
  bind_text(s.get(), 1, "extra." + name);
  bind_text(s.get(), 2, value);
  s.step(path_);
}

void VectorStore::rebuild(const StoreKey& key, const std::vector<ChunkRecord>& chunks, const float* vectors,
                          int64_t D) {
  TB_CHECK(D > 0, << "dimension " << D);
  TB_CHECK(!key.empty(), << "an empty store key");
  exec("BEGIN IMMEDIATE", "begin rebuild");
  try {
    exec("DELETE FROM chunks", "clear chunks");
    exec("DELETE FROM tb_meta WHERE name LIKE 'key.%' OR name LIKE 'extra.%' OR name = 'dim'", "clear meta");
    {
      Stmt ins(db_, "INSERT INTO tb_meta(name, value) VALUES (?, ?)", path_);
      auto put = [&](const std::string& n, const std::string& v) {
        bind_text(ins.get(), 1, n);
        bind_text(ins.get(), 2, v);
        ins.step(path_);
        sqlite3_reset(ins.get());
      };
      for (const auto& [n, v] : key) put("key." + n, v);
      put("dim", std::to_string(D));
    }
    Stmt ins(db_,
             "INSERT INTO chunks(id, doc_id, title, start_token, num_tokens, text, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
             path_);
    for (size_t i = 0; i < chunks.size(); ++i) {
      const auto& c = chunks[i];
      sqlite3_bind_int64(ins.get(), 1, static_cast<sqlite3_int64>(i));
      bind_text(ins.get(), 2, c.doc_id);
      bind_text(ins.get(), 3, c.title);
      sqlite3_bind_int64(ins.get(), 4, c.start_token);
      sqlite3_bind_int64(ins.get(), 5, c.num_tokens);
      bind_text(ins.get(), 6, c.text);
      sqlite3_bind_blob(ins.get(), 7, vectors + static_cast<int64_t>(i) * D, static_cast<int>(D * sizeof(float)),
                        SQLITE_TRANSIENT);
      ins.step(path_);
      sqlite3_reset(ins.get());
    }
    exec("COMMIT", "commit rebuild");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  // A rebuild over an older, larger store leaves free pages; give them back so the size on
  // disk is the size of what is stored.
  exec("VACUUM", "vacuum");
}

int64_t VectorStore::size() const {
  Stmt s(db_, "SELECT COUNT(*) FROM chunks", path_);
  s.step(path_);
  return sqlite3_column_int64(s.get(), 0);
}

int64_t VectorStore::dim() const {
  Stmt s(db_, "SELECT value FROM tb_meta WHERE name = 'dim'", path_);
  if (s.step(path_) != SQLITE_ROW) return 0;
  try {
    return std::stoll(s.text(0));
  } catch (const std::exception&) {
    throw InputError(describe(path_) + ": tb_meta dim is not a number: '" + s.text(0) + "'");
  }
}

std::vector<ChunkRecord> VectorStore::chunks() const {
  std::vector<ChunkRecord> out;
  Stmt s(db_, "SELECT id, doc_id, title, start_token, num_tokens, text FROM chunks ORDER BY id", path_);
  while (s.step(path_) == SQLITE_ROW) {
    if (sqlite3_column_int64(s.get(), 0) != static_cast<int64_t>(out.size()))
      throw InputError(describe(path_) + ": chunk ids are not 0..N-1 (found id " +
                       std::to_string(sqlite3_column_int64(s.get(), 0)) + " at row " + std::to_string(out.size()) + ")");
    ChunkRecord c;
    c.doc_id = s.text(1);
    c.title = s.text(2);
    c.start_token = sqlite3_column_int64(s.get(), 3);
    c.num_tokens = sqlite3_column_int64(s.get(), 4);
    c.text = s.text(5);
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<float> VectorStore::vectors() const {
  const int64_t D = dim();
  std::vector<float> out;
  Stmt s(db_, "SELECT id, vector FROM chunks ORDER BY id", path_);
  while (s.step(path_) == SQLITE_ROW) {
    const int64_t id = sqlite3_column_int64(s.get(), 0);
    const int bytes = sqlite3_column_bytes(s.get(), 1);
    if (bytes != static_cast<int>(D * sizeof(float)))
      throw InputError(describe(path_) + ": vector of chunk " + std::to_string(id) + " has " + std::to_string(bytes) +
                       " bytes, expected " + std::to_string(D * sizeof(float)));
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(D));
    std::memcpy(out.data() + at, sqlite3_column_blob(s.get(), 1), static_cast<size_t>(bytes));
  }
  return out;
}

// ---- search ----------------------------------------------------------------------------

std::vector<Hit> exact_top_k(const float* keys, int64_t N, int64_t D, const float* query, int64_t k) {
  std::vector<Hit> all(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const float* row = keys + i * D;
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) dot += row[d] * query[d];
    all[static_cast<size_t>(i)] = {i, dot};
  }
  const auto better = [](const Hit& a, const Hit& b) { return a.score != b.score ? a.score > b.score : a.id < b.id; };
  const size_t kk = static_cast<size_t>(std::clamp<int64_t>(k, 0, N));
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(kk), all.end(), better);
  all.resize(kk);
  return all;
}

HnswIndex::HnswIndex(int64_t N, int64_t D)
    : N_(N), D_(D), space_(std::make_unique<hnswlib::InnerProductSpace>(static_cast<size_t>(D))) {}

HnswIndex::HnswIndex(const float* vectors, int64_t N, int64_t D, const Params& p) : HnswIndex(N, D) {
  TB_CHECK(N >= 0 && D > 0, << "N " << N << " D " << D);
  graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(space_.get(), static_cast<size_t>(std::max<int64_t>(N, 1)),
                                                             static_cast<size_t>(p.M),
                                                             static_cast<size_t>(p.ef_construction),
                                                             static_cast<size_t>(p.seed));
  for (int64_t i = 0; i < N; ++i) graph_->addPoint(vectors + i * D, static_cast<hnswlib::labeltype>(i));
  ef_ = p.ef_search;
  graph_->setEf(static_cast<size_t>(ef_));
}

HnswIndex::~HnswIndex() = default;

void HnswIndex::save(const fs::path& file) const {
  // Write beside and rename, so a killed run never leaves a half-written graph under the
  // name; the pid keeps parallel shards from writing the same temporary file.
  const fs::path tmp = file.string() + ".tmp." + std::to_string(::getpid());
  graph_->saveIndex(tmp.string());
  // hnswlib's saveIndex does not check its stream: on a full disk it leaves a short file
  // and returns. Its layout is known (13 header fields, level 0, then each element's link
  // list with its length), so a file of another size is a failed write, never renamed in.
  const auto& g = *graph_;
  std::uintmax_t expected = sizeof g.offsetLevel0_ + sizeof g.max_elements_ + sizeof g.cur_element_count +
                            sizeof g.size_data_per_element_ + sizeof g.label_offset_ + sizeof g.offsetData_ +
                            sizeof g.maxlevel_ + sizeof g.enterpoint_node_ + sizeof g.maxM_ + sizeof g.maxM0_ +
                            sizeof g.M_ + sizeof g.mult_ + sizeof g.ef_construction_ +
                            g.cur_element_count * g.size_data_per_element_;
  for (size_t i = 0; i < g.cur_element_count; ++i)
    expected += sizeof(unsigned int) +
                (g.element_levels_[i] > 0 ? g.size_links_per_element_ * static_cast<size_t>(g.element_levels_[i]) : 0);
  std::error_code ec;
  const auto size = fs::file_size(tmp, ec);
  const std::uintmax_t written = ec ? 0 : size;
  if (written != expected) {
    fs::remove(tmp, ec);
    throw InputError("HNSW index " + file.string() + ": cannot write it: " + std::to_string(written) + " of " +
                     std::to_string(expected) + " bytes written (disk full?)");
  }
  fs::rename(tmp, file, ec);
  if (ec) throw InputError("HNSW index " + file.string() + ": cannot write it: " + ec.message());
}

std::vector<Hit> HnswIndex::search(const float* query, int64_t k) const {
  std::vector<Hit> out;
  if (N_ == 0 || k <= 0) return out;
  auto heap = graph_->searchKnn(query, static_cast<size_t>(std::min(k, N_)));
  while (!heap.empty()) {
    out.push_back({static_cast<int64_t>(heap.top().second), 1.0f - heap.top().first});
    heap.pop();
  }
  std::sort(out.begin(), out.end(),
            [](const Hit& a, const Hit& b) { return a.score != b.score ? a.score > b.score : a.id < b.id; });
  return out;
}

int64_t HnswIndex::memory_bytes() const {
  int64_t links = 0;
  for (int64_t i = 0; i < N_; ++i) links += graph_->element_levels_[static_cast<size_t>(i)];
  return static_cast<int64_t>(graph_->max_elements_ * graph_->size_data_per_element_) +
         links * static_cast<int64_t>(graph_->size_links_per_element_);
}

std::unique_ptr<HnswIndex> HnswIndex::load_or_build(VectorStore& store, const std::vector<float>& vectors,
                                                    const Params& p, bool& rebuilt) {
  const int64_t D = store.dim();
  const int64_t N = D > 0 ? static_cast<int64_t>(vectors.size()) / D : 0;
  TB_CHECK(D > 0 && N * D == static_cast<int64_t>(vectors.size()), << "store dim " << D << ", " << vectors.size() << " floats");
  const fs::path file = store.path().string() + ".hnsw";
  const std::string params = "M=" + std::to_string(p.M) + ",ef_construction=" + std::to_string(p.ef_construction) +
                             ",seed=" + std::to_string(p.seed) + ",n=" + std::to_string(N) + ",d=" + std::to_string(D);
  // The graph file is trusted only when its bytes are the ones this store recorded:
  // hnswlib's loader believes the sizes in a file's header.
  if (store.extra("hnsw.params") == params && fs::is_regular_file(file) &&
      tb::sha256_file(file) == store.extra("hnsw.sha256")) {
    auto idx = std::unique_ptr<HnswIndex>(new HnswIndex(N, D));
    try {
      idx->graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(idx->space_.get(), file.string(), false,
                                                                      static_cast<size_t>(std::max<int64_t>(N, 1)));
    } catch (const std::exception& e) {
      throw InputError("HNSW index " + file.string() + ": cannot load it: " + e.what());
    }
    TB_CHECK(static_cast<int64_t>(idx->graph_->cur_element_count) == N,
             << file.string() << " holds " << idx->graph_->cur_element_count << " vectors, the store " << N);
    idx->ef_ = p.ef_search;
    idx->graph_->setEf(static_cast<size_t>(p.ef_search));
    rebuilt = false;
    return idx;
  }
  auto idx = std::make_unique<HnswIndex>(vectors.data(), N, D, p);
  idx->save(file);
  store.set_extra("hnsw.params", params);
  store.set_extra("hnsw.sha256", tb::sha256_file(file));
  rebuilt = true;
  return idx;
}

}  // namespace tb::methods
