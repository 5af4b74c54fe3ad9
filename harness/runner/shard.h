// Shard assignment of the run matrix (`tunebench run --shard I/N`, and the job arrays of
// `tunebench slurm submit`): balanced by each run's expected cost, not by name.
//
// The cost of a run is an estimate in token-passes through the model, from what the runner
// knows before anything runs: the method's declared options (epochs, max-length, k) and the
// sizes of the task's splits after --limit (and its document collection). Runs of the same
// method and task cost the same whatever the seed. It only orders work; nothing reports it.
//
// Assignment is longest-processing-time-first: runs by cost, highest first (ties: lower
// matrix index first), each to the shard with the least cost so far (ties: the lower shard).
// It depends on the matrix only, never on which records exist, so every shard of every
// (re)submission computes the same assignment. Every run is in exactly one shard, and the
// most loaded shard exceeds the least loaded by at most the costliest run (the last run
// added to the most loaded shard went to the then least loaded one). With equal costs it
// is round-robin by matrix index: run k goes to shard k % N.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "methods/method.h"

namespace tb::runner {

// What a run's cost is estimated from: the sizes of its task's splits after --limit.
struct CostInputs {
  int64_t train = 0, dev = 0, test = 0, documents = 0;
};

// The estimated cost (>= 1) of one run of `info` with its resolved `options`:
//   a method without options (the reference rows) reads the examples once: train+dev+test;
//   a method with `epochs` trains by backpropagation: 3·epochs·train·L (forward + backward)
//     plus (epochs·dev + test)·L of evaluation, L = max-length (128 when not declared);
//   a method with `k` (demonstrations or retrieved chunks; a list sums) scores each test
//     and dev example in a prompt of 1+k examples: Σ_k (dev+test)·(1+k)·L, plus documents·L
//     to embed a document collection;
//   any other method reads every example once through the model: (train+dev+test)·L.
// An option value that does not parse counts as its default; run_matrix reports bad values.
int64_t estimate_run_cost(const methods::MethodInfo& info, const std::map<std::string, std::string>& options,
                          const CostInputs& n);

// The shard (0 ≤ s < shard_count) of each run, longest-processing-time-first (see above);
// costs[i] is the cost of the run with matrix index i. shard_count ≥ 1.
std::vector<int64_t> assign_shards(const std::vector<int64_t>& costs, int64_t shard_count);

}  // namespace tb::runner
