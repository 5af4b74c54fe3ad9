// Byte-level BPE tokenizer (GPT-2 / Hugging Face `tokenizers` semantics): loads GPT-2
// encoder.json|vocab.json + vocab.bpe|merges.txt and Hugging Face tokenizer.json, encodes
// and decodes exactly (decode(encode(b)) == b for every byte string, invalid UTF-8
// included), and trains a new vocabulary on a corpus the way HF's BpeTrainer does.
//
// The pipeline of encode(): added tokens are cut out of the raw text first (leftmost,
// then longest), each remaining segment goes through the pre-tokeniser steps (GPT-2 regex
// split, optional digit split, optional prefix space), and each piece is BPE-merged by
// merge rank. Anything in a tokenizer.json that this pipeline cannot reproduce exactly
// (a normalizer, a different split regex, a WordPiece model, ...) is a FormatError at load
// time rather than a silently different tokenisation.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tb {

// Whether encode() turns occurrences of special added tokens (e.g. "<|endoftext|>") in
// the text into their ids, or encodes them as ordinary text. Non-special added tokens are
// always matched, as in Hugging Face tokenizers.
enum class SpecialTokens { parse, as_text };

class Tokenizer {
 public:
  // An entry of tokenizer.json's `added_tokens`: matched in the raw text before
  // pre-tokenisation. lstrip/rstrip make the match swallow adjacent whitespace.
  struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
  };

  // One step of the pre-tokeniser. byte_level = HF ByteLevel (prefix space and/or the
  // GPT-2 regex split); digits = HF Digits (isolate numbers, one by one or as runs);
  // split_gpt2 = HF Split with exactly the GPT-2 pattern, behaviour Isolated.
  struct PreStep {
    enum class Kind { byte_level, digits, split_gpt2 };
    Kind kind = Kind::byte_level;
    bool add_prefix_space = false;  // byte_level
    bool use_regex = true;          // byte_level
    bool individual_digits = false; // digits
  };

  // Loads from a model directory: tokenizer.json, else vocab.json + merges.txt, else
  // encoder.json + vocab.bpe. A tokenizer_config.json next to them, if present, names
  // bos/eos/pad. InputError naming the directory when none of these is there.
  static Tokenizer from_dir(const std::string& dir);
  // Hugging Face tokenizer.json (model.type BPE, byte-level).
  static Tokenizer from_tokenizer_json(const std::string& path);
  // GPT-2 files: a JSON object token -> id, and a merges file "a b" per line (an optional
  // first "#version" line is skipped).
  static Tokenizer from_vocab_merges(const std::string& vocab_path, const std::string& merges_path);

  // Trains byte-level BPE on `texts`: 256 byte symbols, the GPT-2 pre-tokenisation, then
  // the most frequent adjacent pair is merged until the vocabulary holds `vocab_size`
  // entries (special tokens first, then the 256 bytes, then merges) or no pair is left.
  // Ties go to the smallest (left id, right id), so the result is deterministic.
  static Tokenizer train(const std::vector<std::string>& texts, int vocab_size,
                         const std::vector<std::string>& special_tokens);

  // Writes a Hugging Face tokenizer.json that from_tokenizer_json() reloads identically.
  void save(const std::string& path) const;

  // Never adds bos/eos itself (callers prepend bos_id() etc.). decode(encode(b)) == b for
  // every byte string b, unless an lstrip/rstrip added token swallowed whitespace.
  // Thread-safe: const calls may run concurrently.
  std::vector<int32_t> encode(std::string_view text,
                              SpecialTokens special = SpecialTokens::parse) const;
  // Concatenated bytes of the tokens; InputError on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;

  // Token strings are in vocabulary form: byte-mapped (" the" is "Ġthe") for model
  // tokens, the literal content for added tokens.
  std::optional<int32_t> id_of(std::string_view token) const;
  std::string token_of(int32_t id) const;  // InputError when id is not in the vocabulary
  int32_t vocab_size() const { return static_cast<int32_t>(id_bytes_.size()); }
  int num_merges() const { return static_cast<int>(merges_.size()); }

  const std::vector<AddedToken>& added_tokens() const { return added_; }
  const std::vector<PreStep>& pre_steps() const { return pre_steps_; }
  std::optional<int32_t> bos_id() const { return bos_; }
  std::optional<int32_t> eos_id() const { return eos_; }
  std::optional<int32_t> pad_id() const { return pad_; }

 private:
  // Memo of pre-token -> ids shared by const encode() calls (thread-safe), bounded by
  // clearing it when full. A copy starts empty: the cache is not part of a tokenizer's value.
  class BpeCache {
   public:
    BpeCache() = default;
    BpeCache(const BpeCache&) {}
    BpeCache& operator=(const BpeCache&);
    bool find(std::string_view piece, std::vector<int32_t>& out) const;
    void insert(std::string_view piece, const std::vector<int32_t>& ids);

   private:
    mutable std::mutex mu_;
    std::unordered_map<std::string, std::vector<int32_t>> map_;
  };

  struct Merge {
    int32_t rank;
    int32_t merged;
  };

  static constexpr uint8_t kModelToken = 1, kAddedToken = 2;  // id_kind_ bits
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

  void ensure_id(int32_t id);
  void add_model_token(int32_t id, std::string bytes, const std::string& where);
  void add_added_token(AddedToken t, const std::string& where);
  void add_merge(int32_t left, int32_t right, const std::string& where);
  int32_t merge_part(const std::string& token, const std::string& where) const;
  void finish(const std::string& where);  // byte table, added-token index, bos/eos/pad by name
  std::string vocab_key(int32_t id) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;

  std::vector<std::string> id_bytes_;  // id -> raw bytes ("" for an unused id)
  std::vector<uint8_t> id_kind_;       // kModelToken | kAddedToken, 0 for an unused id
  std::unordered_map<std::string, int32_t> model_ids_;  // raw bytes -> id (model vocab)
  std::array<int32_t, 256> byte_id_{};
  std::vector<std::pair<int32_t, int32_t>> merges_;     // in rank order
  std::unordered_map<uint64_t, Merge> merge_of_;        // (left << 32 | right) -> merge
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int32_t> added_ids_;      // content -> id
  std::array<std::vector<int32_t>, 256> added_by_first_;    // first byte -> added_ index, longest first
  std::vector<PreStep> pre_steps_;
  bool ignore_merges_ = false;
  std::optional<int32_t> bos_, eos_, pad_;
  mutable BpeCache cache_;
};

}  // namespace tb
