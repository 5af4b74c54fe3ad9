// In-context learning (`icl`): k labelled train examples (demonstrations) before the test
// prompt, answers scored by the log-likelihood of each verbaliser or choice. Exposed here:
// the demonstration selectors, so tests can check them on hand-made data.
//
// Every selector returns indices into the demonstration pool in prompt order, farthest from
// the query first: the most similar (knn) or first drawn (random, balanced) demonstration
// sits right before the query, and a prompt with k < K demonstrations uses the last k of a
// K-selection (so the k's of one run are nested, and truncation drops from the front).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "methods/method.h"

namespace tb::methods {

enum class Selection { random, balanced, knn };
Selection parse_selection(const std::string& s, const std::string& option);  // InputError otherwise

// The k rows of pool (N,D) with the largest inner product with query (D) (cosine for
// L2-normalised rows); ties go to the lower index.
std::vector<int64_t> select_knn(const float* pool /*(N,D)*/, int64_t N, int64_t D, const float* query /*(D)*/,
                                int64_t k);
// k distinct indices of 0..N-1 drawn uniformly (deterministic in seed).
std::vector<int64_t> select_random(int64_t N, int64_t k, uint64_t seed);
// k indices taking the classes in turn (class order and members drawn by seed), so every
// suffix of the result holds each class at most once more than any other.
std::vector<int64_t> select_balanced(const std::vector<int>& labels, int64_t k, uint64_t seed);

MethodInfo icl_method_info();

}  // namespace tb::methods
