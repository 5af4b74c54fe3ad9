// `tunebench pretrain`: makes the default base model from the text packages installed on
// the machine (KJV, fortunes, GCIDE, FOLDOC, Jargon, WordNet glosses). The corpus drops every
// dev/test item of the task suite and every heldout-lm unit (tasks::is_eval_or_heldout), a
// byte-level BPE is trained on it, and a small Llama-style model is trained with AdamW,
// warm-up + cosine schedule and gradient clipping. Deterministic in the seed; periodic
// checkpoints make a killed run resumable (--resume) with identical results.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/core/model.h"

namespace tb::tools {

struct PretrainOptions {
  std::filesystem::path out;
  int64_t tokens = 0;          // tokens to train on (deterministic budget); 0 = use minutes
  double minutes = 0.0;        // wall-clock budget, turned into a step count after warm-up
  bool resume = false;
  uint64_t seed = 0;
  int vocab = 4096;
  std::string arch = "llama";
  int64_t layers = 6, dim = 256, heads = 8, kv_heads = 4, ffn = 0, context = 256;
  int64_t batch = 16, seq = 256;
  float lr = 2e-3f, min_lr_ratio = 0.1f, weight_decay = 0.1f, clip = 1.0f;
  int64_t warmup = 50;
  double checkpoint_minutes = 2.0;
  int64_t eval_tokens = 65536;  // held-out tokens scored for the model card
  bool quiet = false;
};

// One document of the corpus with its source, for the model card's composition table.
struct CorpusDoc {
  std::string source;
  std::string text;
};

struct CorpusStats {
  std::vector<std::pair<std::string, int64_t>> docs_by_source, bytes_by_source, dropped_by_source;
};

// The pretraining corpus, in a fixed order, with eval items and held-out units removed.
std::vector<CorpusDoc> build_pretrain_corpus(CorpusStats* stats);

// Runs (or resumes) pretraining and writes the model directory: config.json,
// model.safetensors, tokenizer.json, MODEL_CARD.md, loss_curve.csv, loss_curve.svg.
void pretrain(const PretrainOptions& opt);

}  // namespace tb::tools
