// The index method's vector store: chunks, their metadata and their embedding vectors in one
// SQLite file, plus nearest-neighbour search over the vectors — exact (brute force, the
// baseline) and approximate (hnswlib HNSW graph, saved next to the database).
//
// The database records what it was built from in a meta table (the key: corpus hash, model
// hash, chunking options ...). A run whose key matches reuses it; a different key rebuilds
// it in one transaction. A file that is not a tunebench store — not SQLite, damaged, or
// someone else's SQLite database — is an InputError naming it and is never written to:
// it is validated through a read-only connection before anything is opened for writing.
//
// Vectors are L2-normalised, so cosine similarity is the inner product and both searches
// rank by it (hnswlib's inner-product space returns 1 − dot as its distance).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

struct sqlite3;

namespace hnswlib {
template <typename T> class HierarchicalNSW;
class InnerProductSpace;
}  // namespace hnswlib

namespace tb::methods {

struct ChunkRecord {
  std::string doc_id;
  std::string title;
  int64_t start_token = 0;  // offset of the chunk in its document's tokens
  int64_t num_tokens = 0;
  std::string text;
};

// The meta key a store was built for; compared as a whole.
using StoreKey = std::map<std::string, std::string>;

class VectorStore {
 public:
  // Opens the store at `path`, creating an empty one when no file exists there.
  explicit VectorStore(const std::filesystem::path& path);
  ~VectorStore();
  VectorStore(const VectorStore&) = delete;
  VectorStore& operator=(const VectorStore&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The key of the stored contents; empty before the first build.
  StoreKey key() const;
  bool matches(const StoreKey& key) const { return !key.empty() && this->key() == key; }

  // Replaces all chunks and vectors (N,D) and the key, atomically (one transaction).
  void rebuild(const StoreKey& key, const std::vector<ChunkRecord>& chunks, const float* vectors /*(N,D)*/,
               int64_t D);

  int64_t size() const;  // number of chunks
  int64_t dim() const;   // D; 0 before the first build
  std::vector<ChunkRecord> chunks() const;  // row i is chunk id i
  std::vector<float> vectors() const;       // (N,D), row i = chunk i

  // Free-form meta values besides the key (the HNSW file's checksum).
  std::string extra(const std::string& name) const;  // "" when unset
  void set_extra(const std::string& name, const std::string& value);

 private:
  void exec(const char* sql, const char* what);
  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
};

struct Hit {
  int64_t id = 0;
  float score = 0.0f;  // inner product (cosine for normalised vectors)
};

// Brute-force top-k by inner product; ties go to the lower id. Best first.
std::vector<Hit> exact_top_k(const float* keys /*(N,D)*/, int64_t N, int64_t D, const float* query /*(D)*/,
                             int64_t k);

// HNSW graph over (N,D) vectors, ids 0..N-1.
class HnswIndex {
 public:
  struct Params {
    int64_t M = 16;
    int64_t ef_construction = 200;
    int64_t ef_search = 64;
    uint64_t seed = 100;
  };
  // Builds the graph (deterministic for one seed and insertion order).
  HnswIndex(const float* vectors /*(N,D)*/, int64_t N, int64_t D, const Params& p);
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  // The index saved next to `store` (store path + ".hnsw") when its checksum, parameters and
  // size match what the store recorded; otherwise built from the store's vectors and saved
  // there (`rebuilt` says which happened).
  static std::unique_ptr<HnswIndex> load_or_build(VectorStore& store, const std::vector<float>& vectors,
                                                  const Params& p, bool& rebuilt);

  void save(const std::filesystem::path& file) const;
  std::vector<Hit> search(const float* query /*(D)*/, int64_t k) const;  // best first
  int64_t size() const { return N_; }
  int64_t memory_bytes() const;  // graph + stored vectors

 private:
  HnswIndex(int64_t N, int64_t D);
  int64_t N_, D_;
  int64_t ef_ = 64;
  std::unique_ptr<hnswlib::InnerProductSpace> space_;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph_;
};

}  // namespace tb::methods
