// Byte-level BPE: loading (GPT-2 files, HF tokenizer.json), the hand-written GPT-2
// pre-tokeniser, rank-ordered merging, training and saving. See tokenizer.h for the
// contract; the comments here explain where and why we follow GPT-2's encoder.py or HF.
#include "harness/core/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_set>

#include "harness/base/errors.h"
#include "harness/core/unicode_tables.h"

namespace tb {

namespace {

using json = nlohmann::json;

// The GPT-2 pre-tokenisation pattern; a HF Split step is honoured only with exactly this.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The BPE cache holds at most this many pieces, each at most kCachePieceBytes long (long
// pieces are rare and would make the memory bound meaningless).
constexpr size_t kCacheEntries = 1 << 16;
constexpr size_t kCachePieceBytes = 256;

// ---------------------------------------------------------------------------------------
// GPT-2's bytes_to_unicode(): every byte gets a printable code point so that vocabulary
// files are text. Printable Latin-1 bytes map to themselves, the other 68 to U+0100...

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 512> to_byte{};  // code point -> byte, -1 if not in the alphabet
  ByteMap() {
    to_byte.fill(-1);
    bool printable[256] = {};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      to_cp[b] = printable[b] ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// ---------------------------------------------------------------------------------------
// UTF-8 decoding into "units": a valid code point, or a single invalid byte. Invalid bytes
// are their own non-letter, non-number, non-space unit so that any byte string can be
// pre-tokenised and therefore round-trips.

enum Cls : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };
constexpr uint32_t kInvalid = 0xFFFFFFFFu;

struct Unit {
  uint32_t cp;  // kInvalid for an invalid byte
  uint8_t len;  // bytes
  uint8_t cls;
};

bool in_ranges(const unicode::CodeRange* begin, const unicode::CodeRange* end, uint32_t cp) {
  const auto* it = std::upper_bound(begin, end, cp,
                                    [](uint32_t c, const unicode::CodeRange& r) { return c < r.lo; });
  return it != begin && cp <= (it - 1)->hi;
}

Cls classify_slow(uint32_t cp) {
  using namespace unicode;
  if (in_ranges(std::begin(kLetterRanges), std::end(kLetterRanges), cp)) return kLetter;
  if (in_ranges(std::begin(kNumberRanges), std::end(kNumberRanges), cp)) return kNumber;
  if (in_ranges(std::begin(kWhitespaceRanges), std::end(kWhitespaceRanges), cp)) return kSpace;
  return kOther;
}

struct AsciiClasses {
  std::array<uint8_t, 128> cls{};
  AsciiClasses() {
    for (uint32_t c = 0; c < 128; ++c) cls[c] = classify_slow(c);
  }
};

inline Cls classify(uint32_t cp) {
  static const AsciiClasses ascii;
  if (cp < 128) return static_cast<Cls>(ascii.cls[cp]);
  if (cp == kInvalid) return kOther;
  return classify_slow(cp);
}

inline bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Decodes the unit starting at p (n >= 1 bytes available), strictly: no overlongs, no
// surrogates, nothing above U+10FFFF.
inline Unit next_unit(const unsigned char* p, size_t n) {
  const unsigned char b = p[0];
  if (b < 0x80) return {b, 1, static_cast<uint8_t>(classify(b))};
  uint32_t cp = kInvalid;
  uint8_t len = 1;
  if (b >= 0xC2 && b <= 0xDF) {
    if (n >= 2 && is_cont(p[1])) {
      cp = ((b & 0x1Fu) << 6) | (p[1] & 0x3Fu);
      len = 2;
    }
  } else if (b >= 0xE0 && b <= 0xEF) {
    const unsigned char lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    if (n >= 3 && p[1] >= lo && p[1] <= hi && is_cont(p[2])) {
      cp = ((b & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
      len = 3;
    }
  } else if (b >= 0xF0 && b <= 0xF4) {
    const unsigned char lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    if (n >= 4 && p[1] >= lo && p[1] <= hi && is_cont(p[2]) && is_cont(p[3])) {
      cp = ((b & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
      len = 4;
    }
  }
  if (cp == kInvalid) return {kInvalid, 1, kOther};
  return {cp, len, static_cast<uint8_t>(classify(cp))};
}

inline Unit unit_at(std::string_view s, size_t i) {
  return next_unit(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i);
}

// Length of the whitespace unit that ends exactly at `pos` (not starting before `lower`),
// or 0 if there is none.
size_t whitespace_before(std::string_view s, size_t pos, size_t lower) {
  for (size_t l = 1; l <= 4 && l <= pos - lower; ++l) {
    const Unit u = unit_at(s, pos - l);
    if (u.len == l && u.cls == kSpace && u.cp != kInvalid) return l;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// Pre-tokenisation steps. Each maps a piece to sub-pieces; pieces are views into the text
// or into `owned` (a deque, so that views into it stay valid as it grows).

// GPT-2's pattern, alternative by alternative. The letter/number/other alternatives are
// mutually exclusive by class, so the only backtracking the regex does is in
// `\s+(?!\S)`, which gives back the last whitespace of a run followed by a non-space.
void split_gpt2(std::string_view s, std::vector<std::string_view>& out) {
  thread_local std::vector<Unit> u;
  u.clear();
  for (size_t i = 0; i < s.size();) {
    u.push_back(unit_at(s, i));
    i += u.back().len;
  }
  const size_t n = u.size();
  size_t i = 0, off = 0;
  auto emit = [&](size_t j) {
    size_t len = 0;
    for (size_t k = i; k < j; ++k) len += u[k].len;
    out.push_back(s.substr(off, len));
    off += len;
    i = j;
  };
  while (i < n) {
    const uint32_t c0 = u[i].cp;
    if (c0 == '\'' && i + 1 < n) {
      const uint32_t c1 = u[i + 1].cp;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        emit(i + 2);
        continue;
      }
      if (i + 2 < n) {
        const uint32_t c2 = u[i + 2].cp;
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(i + 3);
          continue;
        }
      }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    size_t j = i;
    if (c0 == ' ' && i + 1 < n && u[i + 1].cls != kSpace) j = i + 1;
    const uint8_t cls = u[j].cls;
    if (cls != kSpace) {
      size_t k = j + 1;
      while (k < n && u[k].cls == cls) ++k;
      emit(k);
      continue;
    }
    // `\s+(?!\S)|\s+`
    size_t k = i + 1;
    while (k < n && u[k].cls == kSpace) ++k;
    if (k == n || k - i == 1) {
      emit(k);
    } else {
      emit(k - 1);
    }
  }
}

// HF Digits: numbers (\p{N}, Rust's char::is_numeric) isolated, singly or as runs.
void split_digits(std::string_view s, bool individual, std::vector<std::string_view>& out) {
  size_t start = 0, i = 0;
  bool in_num = false;
  while (i < s.size()) {
    const Unit u = unit_at(s, i);
    const bool num = u.cls == kNumber;
    if (i > start && (num != in_num || (num && individual))) {
      out.push_back(s.substr(start, i - start));
      start = i;
    }
    in_num = num;
    i += u.len;
  }
  if (i > start) out.push_back(s.substr(start, i - start));
}

// ---------------------------------------------------------------------------------------
// Files and JSON.

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw InputError("cannot read " + path);
  return ss.str();
}

json parse_json(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(path + ": invalid JSON: " + e.what());
  }
}

[[noreturn]] void format_error(const std::string& where, const std::string& msg) {
  throw FormatError(where + ": " + msg);
}

const json* field(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool bool_field(const json& obj, const char* name, bool dflt, const std::string& where) {
  const json* f = field(obj, name);
  if (!f) return dflt;
  if (!f->is_boolean()) format_error(where, std::string("field '") + name + "' must be a boolean");
  return f->get<bool>();
}

std::string string_field(const json& obj, const char* name, const std::string& where) {
  const json* f = field(obj, name);
  if (!f || !f->is_string())
    format_error(where, std::string("missing or non-string field '") + name + "'");
  return f->get<std::string>();
}

// Real vocabularies stay far below this; the cap keeps a corrupt id from allocating GBs.
constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

int32_t id_value(const json& v, const std::string& where) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTokenId)
    format_error(where, "token id must be an integer in [0, " + std::to_string(kMaxTokenId) +
                            "], got " + v.dump());
  return static_cast<int32_t>(v.get<int64_t>());
}

// Vocabulary form -> raw bytes; false if a character is outside the byte alphabet.
bool unmap_token(std::string_view token, std::string& out) {
  const ByteMap& m = byte_map();
  out.clear();
  for (size_t i = 0; i < token.size();) {
    const Unit u = unit_at(token, i);
    if (u.cp == kInvalid || u.cp >= m.to_byte.size() || m.to_byte[u.cp] < 0) return false;
    out += static_cast<char>(m.to_byte[u.cp]);
    i += u.len;
  }
  return true;
}

std::string map_bytes(std::string_view bytes) {
  const ByteMap& m = byte_map();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(out, m.to_cp[b]);
  return out;
}

// For messages: quoted and escaped; invalid UTF-8 (a corrupt merges line) is replaced.
std::string json_quoted(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Cache.

Tokenizer::BpeCache& Tokenizer::BpeCache::operator=(const BpeCache&) {
  std::lock_guard<std::mutex> lock(mu_);
  map_.clear();
  return *this;
}

bool Tokenizer::BpeCache::find(std::string_view piece, std::vector<int32_t>& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(std::string(piece));
  if (it == map_.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void Tokenizer::BpeCache::insert(std::string_view piece, const std::vector<int32_t>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  if (map_.size() >= kCacheEntries) map_.clear();
  map_.emplace(std::string(piece), ids);
}

// ---------------------------------------------------------------------------------------
// Building a tokenizer.

void Tokenizer::ensure_id(int32_t id) {
  if (static_cast<size_t>(id) >= id_bytes_.size()) {
    id_bytes_.resize(static_cast<size_t>(id) + 1);
    id_kind_.resize(static_cast<size_t>(id) + 1, 0);
  }
}

void Tokenizer::add_model_token(int32_t id, std::string bytes, const std::string& where) {
  ensure_id(id);
  if (id_kind_[id] & kModelToken)
    format_error(where, "token id " + std::to_string(id) + " is used twice");
  if (!model_ids_.emplace(bytes, id).second)
    format_error(where, "token " + json_quoted(map_bytes(bytes)) + " appears twice");
  if ((id_kind_[id] & kAddedToken) && id_bytes_[id] != bytes)
    format_error(where, "token id " + std::to_string(id) + " is both the added token " +
                            json_quoted(id_bytes_[id]) + " and the model token " +
                            json_quoted(map_bytes(bytes)));
  id_bytes_[id] = std::move(bytes);
  id_kind_[id] |= kModelToken;
}

void Tokenizer::add_added_token(AddedToken t, const std::string& where) {
  if (t.content.empty()) format_error(where, "added token with empty content");
  ensure_id(t.id);
  if ((id_kind_[t.id] & kModelToken) && id_bytes_[t.id] != t.content)
    format_error(where, "added token " + json_quoted(t.content) + " has id " + std::to_string(t.id) +
                            ", which is the model token " + json_quoted(map_bytes(id_bytes_[t.id])));
  if (!added_ids_.emplace(t.content, t.id).second)
    format_error(where, "added token " + json_quoted(t.content) + " appears twice");
  id_bytes_[t.id] = t.content;
  id_kind_[t.id] |= kAddedToken;
  added_.push_back(std::move(t));
}

void Tokenizer::add_merge(int32_t left, int32_t right, const std::string& where) {
  const std::string merged = id_bytes_[left] + id_bytes_[right];
  auto it = model_ids_.find(merged);
  if (it == model_ids_.end())
    format_error(where, "merge " + json_quoted(map_bytes(id_bytes_[left])) + " " +
                            json_quoted(map_bytes(id_bytes_[right])) + " makes " +
                            json_quoted(map_bytes(merged)) + ", which is not in the vocabulary");
  // A repeated pair takes its last rank, as in encoder.py's dict(zip(merges, ranks)).
  merge_of_[pair_key(left, right)] = Merge{static_cast<int32_t>(merges_.size()), it->second};
  merges_.emplace_back(left, right);
}

int32_t Tokenizer::merge_part(const std::string& token, const std::string& where) const {
  std::string bytes;
  if (unmap_token(token, bytes)) {
    auto it = model_ids_.find(bytes);
    if (it != model_ids_.end()) return it->second;
  }
  auto it = added_ids_.find(token);
  if (it != added_ids_.end() && (id_kind_[it->second] & kModelToken)) return it->second;
  format_error(where, "merge part " + json_quoted(token) + " is not in the vocabulary");
}

void Tokenizer::finish(const std::string& where) {
  for (int b = 0; b < 256; ++b) {
    auto it = model_ids_.find(std::string(1, static_cast<char>(b)));
    if (it == model_ids_.end()) {
      std::ostringstream os;
      os << "the vocabulary has no token for byte 0x" << std::hex << std::setw(2)
         << std::setfill('0') << b << " (" << json_quoted(map_bytes(std::string(1, char(b))))
         << "); only complete byte-level vocabularies are supported";
      format_error(where, os.str());
    }
    byte_id_[b] = it->second;
  }
  for (auto& v : added_by_first_) v.clear();
  for (size_t i = 0; i < added_.size(); ++i)
    added_by_first_[static_cast<unsigned char>(added_[i].content[0])].push_back(static_cast<int32_t>(i));
  for (auto& v : added_by_first_)
    std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) {
      return added_[a].content.size() > added_[b].content.size();
    });
  // Conventional names, most specific first; tokenizer_config.json overrides them.
  auto first_of = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* n : names)
      if (auto id = id_of(n)) return id;
    return std::nullopt;
  };
  bos_ = first_of({"<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>"});
  eos_ = first_of({"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"});
  pad_ = first_of({"<pad>", "<|pad|>", "[PAD]", "<|padding|>"});
  cache_ = BpeCache();
}

// ---------------------------------------------------------------------------------------
// Loading.

Tokenizer Tokenizer::from_vocab_merges(const std::string& vocab_path,
                                       const std::string& merges_path) {
  Tokenizer t;
  const json vocab = parse_json(vocab_path);
  if (!vocab.is_object()) format_error(vocab_path, "expected a JSON object token -> id");
  std::string bytes;
  for (const auto& [token, v] : vocab.items()) {
    const std::string where = vocab_path + ": token " + json_quoted(token);
    if (!unmap_token(token, bytes))
      format_error(where, "has a character outside GPT-2's byte-level alphabet");
    t.add_model_token(id_value(v, where), bytes, vocab_path);
  }
  // GPT-2's end-of-text marker is a special token (as in HF's GPT2Tokenizer): matched in
  // the raw text before pre-tokenisation unless encode() is told to treat it as text.
  if (auto it = vocab.find("<|endoftext|>"); it != vocab.end())
    t.add_added_token({id_value(*it, vocab_path), "<|endoftext|>", true, false, false}, vocab_path);

  const std::string text = read_file(merges_path);
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::istringstream ls(line);
    std::string a, b, extra;
    const std::string where = merges_path + ":" + std::to_string(line_no);
    if (!(ls >> a >> b) || (ls >> extra)) format_error(where, "expected two tokens separated by a space");
    t.add_merge(t.merge_part(a, where), t.merge_part(b, where), where);
  }
  t.pre_steps_ = {PreStep{PreStep::Kind::byte_level, false, true, false}};
  t.finish(vocab_path);
  return t;
}

namespace {

// HF pre_tokenizer JSON -> steps; anything we cannot reproduce exactly is an error.
void parse_pre_tokenizer(const json& pt, const std::string& where,
                         std::vector<Tokenizer::PreStep>& steps) {
  using Kind = Tokenizer::PreStep::Kind;
  if (!pt.is_object()) format_error(where, "must be an object");
  const std::string type = string_field(pt, "type", where);
  if (type == "Sequence") {
    const json* list = field(pt, "pretokenizers");
    if (!list || !list->is_array()) format_error(where, "Sequence without a 'pretokenizers' array");
    for (size_t i = 0; i < list->size(); ++i)
      parse_pre_tokenizer((*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]", steps);
  } else if (type == "ByteLevel") {
    Tokenizer::PreStep s;
    s.kind = Kind::byte_level;
    s.add_prefix_space = bool_field(pt, "add_prefix_space", true, where);
    s.use_regex = bool_field(pt, "use_regex", true, where);
    steps.push_back(s);
  } else if (type == "Digits") {
    Tokenizer::PreStep s;
    s.kind = Kind::digits;
    s.individual_digits = bool_field(pt, "individual_digits", false, where);
    steps.push_back(s);
  } else if (type == "Split") {
    const json* pat = field(pt, "pattern");
    const json* re = pat && pat->is_object() ? field(*pat, "Regex") : nullptr;
    if (!re || !re->is_string() || re->get<std::string>() != kGpt2Pattern)
      format_error(where + ".pattern",
                   "only the GPT-2 regex is supported for a Split pre-tokenizer, got " +
                       (pat ? pat->dump() : std::string("nothing")));
    const json* behavior = field(pt, "behavior");
    if (!behavior || *behavior != "Isolated")
      format_error(where + ".behavior", "only 'Isolated' is supported");
    if (bool_field(pt, "invert", false, where))
      format_error(where + ".invert", "inverted Split is not supported");
    Tokenizer::PreStep s;
    s.kind = Kind::split_gpt2;
    steps.push_back(s);
  } else {
    format_error(where + ".type", "pre-tokenizer '" + type + "' is not supported (byte-level BPE only)");
  }
}

void check_type_in(const json& top, const char* name, std::initializer_list<const char*> allowed,
                   const std::string& path) {
  const json* f = field(top, name);
  if (!f) return;
  const std::string where = path + ": " + name;
  const std::string type = f->is_object() ? string_field(*f, "type", where) : f->dump();
  for (const char* a : allowed)
    if (type == a) return;
  format_error(where + ".type", "'" + type + "' is not supported by the byte-level BPE tokenizer");
}

}  // namespace

Tokenizer Tokenizer::from_tokenizer_json(const std::string& path) {
  const json top = parse_json(path);
  if (!top.is_object()) format_error(path, "expected a JSON object");
  Tokenizer t;

  // The text must reach the model unchanged and decode must be the byte-level inverse.
  if (const json* norm = field(top, "normalizer"))
    format_error(path + ": normalizer", "normalizers are not supported, got " +
                                            (norm->is_object() && norm->contains("type")
                                                 ? norm->at("type").dump()
                                                 : norm->dump()));
  check_type_in(top, "decoder", {"ByteLevel"}, path);
  // encode() never inserts special tokens (callers add bos/eos explicitly), so a
  // post-processor's template does not change what encode() returns.
  check_type_in(top, "post_processor", {"ByteLevel", "TemplateProcessing"}, path);

  const json* model = field(top, "model");
  if (!model || !model->is_object()) format_error(path, "missing object 'model'");
  const std::string mwhere = path + ": model";
  if (const json* type = field(*model, "type"); type && *type != "BPE")
    format_error(mwhere + ".type", "only BPE models are supported, got " + type->dump());
  if (const json* d = field(*model, "dropout"); d && !(d->is_number() && d->get<double>() == 0.0))
    format_error(mwhere + ".dropout", "BPE dropout is not supported, got " + d->dump());
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const json* f = field(*model, affix); f && *f != "")
      format_error(mwhere + "." + affix, "is not supported in a byte-level BPE, got " + f->dump());
  t.ignore_merges_ = bool_field(*model, "ignore_merges", false, mwhere);

  if (const json* added = field(top, "added_tokens")) {
    if (!added->is_array()) format_error(path + ": added_tokens", "must be an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string where = path + ": added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object()) format_error(where, "must be an object");
      const json* id = field(a, "id");
      if (!id) format_error(where, "missing field 'id'");
      if (bool_field(a, "single_word", false, where))
        format_error(where + ".single_word", "single_word added tokens are not supported");
      AddedToken tok{id_value(*id, where), string_field(a, "content", where),
                     bool_field(a, "special", false, where), bool_field(a, "lstrip", false, where),
                     bool_field(a, "rstrip", false, where)};
      t.add_added_token(std::move(tok), where);
    }
  }

  const json* vocab = field(*model, "vocab");
  if (!vocab || !vocab->is_object()) format_error(mwhere, "missing object 'vocab'");
  std::string bytes;
  for (const auto& [token, v] : vocab->items()) {
    const std::string where = mwhere + ".vocab[" + json_quoted(token) + "]";
    const int32_t id = id_value(v, where);
    // An added token listed in the vocabulary is spelled as its literal content.
    if (auto it = t.added_ids_.find(token); it != t.added_ids_.end() && it->second == id) {
      t.add_model_token(id, token, where);
      continue;
    }
    if (!unmap_token(token, bytes))
      format_error(where, "has a character outside the byte-level alphabet");
    t.add_model_token(id, bytes, where);
  }

  const json* merges = field(*model, "merges");
  if (!merges || !merges->is_array()) format_error(mwhere, "missing array 'merges'");
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& m = (*merges)[i];
    const std::string where = mwhere + ".merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
        format_error(where, "expected \"left right\", got " + json_quoted(s));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      format_error(where, "expected a string \"left right\" or a pair of strings, got " + m.dump());
    }
    t.add_merge(t.merge_part(a, where), t.merge_part(b, where), where);
  }

  const json* pt = field(top, "pre_tokenizer");
  if (!pt) format_error(path + ": pre_tokenizer", "missing; a byte-level BPE needs a ByteLevel pre-tokenizer");
  parse_pre_tokenizer(*pt, path + ": pre_tokenizer", t.pre_steps_);
  const auto n_byte_level = std::count_if(t.pre_steps_.begin(), t.pre_steps_.end(), [](const PreStep& s) {
    return s.kind == PreStep::Kind::byte_level;
  });
  if (n_byte_level != 1)
    format_error(path + ": pre_tokenizer", "needs exactly one ByteLevel step, found " +
                                               std::to_string(n_byte_level));
  t.finish(path);
  return t;
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  auto exists = [](const std::string& p) { return std::ifstream(p).good(); };
  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  Tokenizer t;
  if (exists(base + "tokenizer.json")) {
    t = from_tokenizer_json(base + "tokenizer.json");
  } else if (exists(base + "vocab.json") && exists(base + "merges.txt")) {
    t = from_vocab_merges(base + "vocab.json", base + "merges.txt");
  } else if (exists(base + "encoder.json") && exists(base + "vocab.bpe")) {
    t = from_vocab_merges(base + "encoder.json", base + "vocab.bpe");
  } else {
    throw InputError(dir + ": no tokenizer found (expected tokenizer.json, vocab.json + "
                           "merges.txt, or encoder.json + vocab.bpe)");
  }
  // tokenizer_config.json is where HF records which tokens are bos/eos/pad.
  const std::string config_path = base + "tokenizer_config.json";
  if (exists(config_path)) {
    const json config = parse_json(config_path);
    if (!config.is_object()) format_error(config_path, "expected a JSON object");
    for (auto [name, slot] : {std::pair{"bos_token", &t.bos_}, std::pair{"eos_token", &t.eos_},
                              std::pair{"pad_token", &t.pad_}}) {
      auto it = config.find(name);
      if (it == config.end()) continue;
      const std::string where = config_path + ": " + name;
      if (it->is_null()) {
        *slot = std::nullopt;
        continue;
      }
      const json* content = it->is_object() ? field(*it, "content") : &*it;
      if (!content || !content->is_string()) format_error(where, "expected a string or {\"content\": ...}");
      const auto id = t.id_of(content->get<std::string>());
      if (!id) format_error(where, "token " + content->dump() + " is not in the vocabulary");
      *slot = id;
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------------
// Encoding.

void Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (ignore_merges_) {
    if (auto it = model_ids_.find(std::string(piece)); it != model_ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kCachePieceBytes;
  if (cacheable && cache_.find(piece, out)) return;

  // encoder.py merges, each round, every occurrence of the lowest-ranked pair, left to
  // right. A heap ordered by (rank, position) gives the same order; pairs created in a
  // round enter the heap only after the round, as in encoder.py.
  const int n = static_cast<int>(piece.size());
  std::vector<int32_t> sym(n), prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    sym[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Cand {
    int32_t rank, pos, left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    auto it = merge_of_.find(pair_key(sym[i], sym[next[i]]));
    if (it != merge_of_.end()) heap.push({it->second.rank, i, sym[i], sym[next[i]]});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<int> touched;
  while (!heap.empty()) {
    const int32_t rank = heap.top().rank;
    touched.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      const Cand c = heap.top();
      heap.pop();
      const int j = next[c.pos];
      // Stale: the symbol was merged into its left neighbour or either side changed.
      if (sym[c.pos] != c.left || j < 0 || sym[j] != c.right || prev[c.pos] == -2) continue;
      sym[c.pos] = merge_of_.at(pair_key(c.left, c.right)).merged;
      next[c.pos] = next[j];
      if (next[j] >= 0) prev[next[j]] = c.pos;
      prev[j] = -2;  // dead
      touched.push_back(c.pos);
    }
    for (int p : touched) {
      if (prev[p] == -2) continue;
      push(prev[p]);
      push(p);
    }
  }
  const size_t start = out.size();
  for (int i = 0; i >= 0; i = next[i]) out.push_back(sym[i]);
  if (cacheable)
    cache_.insert(piece, std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
}

void Tokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<std::string_view> cur{text}, nxt;
  std::deque<std::string> owned;
  for (const PreStep& step : pre_steps_) {
    nxt.clear();
    for (std::string_view p : cur) {
      switch (step.kind) {
        case PreStep::Kind::byte_level:
          // HF ByteLevel: prefix space per piece, then (optionally) the GPT-2 split.
          if (step.add_prefix_space && (p.empty() || p[0] != ' ')) {
            std::string& prefixed = owned.emplace_back(1, ' ');
            prefixed.append(p);
            p = prefixed;
          }
          if (step.use_regex) {
            split_gpt2(p, nxt);
          } else {
            nxt.push_back(p);
          }
          break;
        case PreStep::Kind::digits:
          split_digits(p, step.individual_digits, nxt);
          break;
        case PreStep::Kind::split_gpt2:
          split_gpt2(p, nxt);
          break;
      }
    }
    std::swap(cur, nxt);
  }
  for (std::string_view p : cur)
    if (!p.empty()) bpe(p, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, SpecialTokens special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (added_.empty()) {
    encode_segment(text, out);
    return out;
  }
  // Added tokens first: the leftmost match wins, the longest among those starting there.
  size_t seg = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (int32_t k : added_by_first_[static_cast<unsigned char>(text[i])]) {
      const AddedToken& a = added_[k];
      if (special == SpecialTokens::as_text && a.special) continue;
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t s = i, e = i + hit->content.size();
    if (hit->lstrip)
      while (size_t l = whitespace_before(text, s, seg)) s -= l;
    if (hit->rstrip)
      while (e < text.size()) {
        const Unit u = unit_at(text, e);
        if (u.cls != kSpace) break;
        e += u.len;
      }
    encode_segment(text.substr(seg, s - seg), out);
    out.push_back(hit->id);
    seg = i = e;
  }
  encode_segment(text.substr(seg), out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || id_kind_[id] == 0)
      throw InputError("token id " + std::to_string(id) + " is not in the vocabulary (size " +
                       std::to_string(vocab_size()) + ")");
    out += id_bytes_[id];
  }
  return out;
}

std::optional<int32_t> Tokenizer::id_of(std::string_view token) const {
  if (auto it = added_ids_.find(std::string(token)); it != added_ids_.end()) return it->second;
  std::string bytes;
  if (!unmap_token(token, bytes)) return std::nullopt;
  if (auto it = model_ids_.find(bytes); it != model_ids_.end()) return it->second;
  return std::nullopt;
}

std::string Tokenizer::token_of(int32_t id) const {
  if (id < 0 || id >= vocab_size() || id_kind_[id] == 0)
    throw InputError("token id " + std::to_string(id) + " is not in the vocabulary (size " +
                     std::to_string(vocab_size()) + ")");
  return (id_kind_[id] & kAddedToken) ? id_bytes_[id] : map_bytes(id_bytes_[id]);
}

// ---------------------------------------------------------------------------------------
// Training: HF BpeTrainer's algorithm. Words are counted once; pair counts and the words
// each pair occurs in are kept up to date incrementally, and a lazy max-heap (stale
// entries are re-pushed with their current count when popped) picks the next merge.

Tokenizer Tokenizer::train(const std::vector<std::string>& texts, int vocab_size,
                           const std::vector<std::string>& special_tokens) {
  const int n_special = static_cast<int>(special_tokens.size());
  if (vocab_size < 256 + n_special)
    throw InputError("tokenizer training: vocab_size " + std::to_string(vocab_size) +
                     " is smaller than 256 bytes + " + std::to_string(n_special) + " special tokens");
  Tokenizer t;
  const std::string where = "tokenizer training";
  for (int i = 0; i < n_special; ++i) {
    if (special_tokens[i].empty()) throw InputError(where + ": empty special token");
    for (size_t k = 0; k < special_tokens[i].size(); k += unit_at(special_tokens[i], k).len)
      if (unit_at(special_tokens[i], k).cp == kInvalid)
        throw InputError(where + ": special token #" + std::to_string(i) + " is not valid UTF-8");
    AddedToken a{i, special_tokens[i], true, false, false};
    if (t.added_ids_.count(a.content)) throw InputError(where + ": special token " + json_quoted(a.content) + " given twice");
    t.add_model_token(i, a.content, where);
    t.add_added_token(std::move(a), where);
  }
  // The 256 byte symbols in order of their printable code points, as HF's trainer does.
  std::vector<int> bytes_order(256);
  for (int b = 0; b < 256; ++b) bytes_order[b] = b;
  std::sort(bytes_order.begin(), bytes_order.end(),
            [](int a, int b) { return byte_map().to_cp[a] < byte_map().to_cp[b]; });
  for (int k = 0; k < 256; ++k) {
    std::string one(1, static_cast<char>(bytes_order[k]));
    if (t.model_ids_.count(one))
      throw InputError(where + ": special token " + json_quoted(one) + " is a single byte");
    t.add_model_token(n_special + k, std::move(one), where);
  }
  t.pre_steps_ = {PreStep{PreStep::Kind::byte_level, false, true, false}};
  t.finish(where);

  // Count words: special tokens are cut out of the corpus, the rest pre-tokenised.
  std::unordered_map<std::string_view, int64_t> word_count;
  std::vector<std::string_view> pieces;
  for (const std::string& text : texts) {
    const std::string_view tv(text);
    size_t seg = 0, i = 0;
    auto flush = [&](size_t end) {
      pieces.clear();
      if (end > seg) split_gpt2(tv.substr(seg, end - seg), pieces);
      for (std::string_view p : pieces) ++word_count[p];
    };
    while (i < tv.size()) {
      size_t len = 0;
      for (int32_t k : t.added_by_first_[static_cast<unsigned char>(tv[i])])
        if (tv.compare(i, t.added_[k].content.size(), t.added_[k].content) == 0) {
          len = t.added_[k].content.size();
          break;
        }
      if (len == 0) {
        ++i;
        continue;
      }
      flush(i);
      seg = i = i + len;
    }
    flush(tv.size());
  }
  // Word order does not matter: the heap's order (count, then pair) is total.
  std::vector<std::pair<std::string_view, int64_t>> sorted(word_count.begin(), word_count.end());
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> counts(sorted.size());
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> pair_words;
  for (size_t w = 0; w < sorted.size(); ++w) {
    counts[w] = sorted[w].second;
    for (unsigned char c : sorted[w].first) words[w].push_back(t.byte_id_[c]);
    for (size_t k = 0; k + 1 < words[w].size(); ++k) {
      const uint64_t p = pair_key(words[w][k], words[w][k + 1]);
      pair_count[p] += counts[w];
      auto& list = pair_words[p];
      if (list.empty() || list.back() != w) list.push_back(static_cast<uint32_t>(w));
    }
  }
  sorted.clear();

  struct Entry {
    int64_t count;
    uint64_t pair;
    // Max-heap: highest count first, then the smallest (left id, right id).
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [p, c] : pair_count)
    if (c > 0) heap.push({c, p});

  std::vector<uint64_t> new_pairs;
  std::vector<int32_t> merged_word;
  while (t.vocab_size() < vocab_size && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.pair);
    const int64_t actual = pc == pair_count.end() ? 0 : pc->second;
    if (actual != top.count) {
      if (actual > 0) heap.push({actual, top.pair});
      continue;
    }
    if (top.count < 1) break;
    const int32_t a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    const std::string merged = t.id_bytes_[a] + t.id_bytes_[b];
    int32_t id;
    if (auto it = t.model_ids_.find(merged); it != t.model_ids_.end()) {
      id = it->second;
    } else {
      id = t.vocab_size();
      t.add_model_token(id, merged, where);
    }
    t.merges_.emplace_back(a, b);
    t.merge_of_[top.pair] = Merge{static_cast<int32_t>(t.merges_.size() - 1), id};

    std::vector<uint32_t> affected = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    new_pairs.clear();
    for (uint32_t w : affected) {
      std::vector<int32_t>& word = words[w];
      bool has = false;
      for (size_t k = 0; k + 1 < word.size() && !has; ++k) has = word[k] == a && word[k + 1] == b;
      if (!has) continue;
      const int64_t c = counts[w];
      for (size_t k = 0; k + 1 < word.size(); ++k) {
        auto it = pair_count.find(pair_key(word[k], word[k + 1]));
        if ((it->second -= c) == 0) pair_count.erase(it);
      }
      merged_word.clear();
      for (size_t k = 0; k < word.size(); ++k) {
        if (k + 1 < word.size() && word[k] == a && word[k + 1] == b) {
          merged_word.push_back(id);
          ++k;
        } else {
          merged_word.push_back(word[k]);
        }
      }
      word.swap(merged_word);
      for (size_t k = 0; k + 1 < word.size(); ++k) {
        const uint64_t p = pair_key(word[k], word[k + 1]);
        pair_count[p] += c;
        if (word[k] == id || word[k + 1] == id) {
          auto& list = pair_words[p];
          if (list.empty() || list.back() != w) list.push_back(w);
          new_pairs.push_back(p);
        }
      }
    }
    std::sort(new_pairs.begin(), new_pairs.end());
    new_pairs.erase(std::unique(new_pairs.begin(), new_pairs.end()), new_pairs.end());
    for (uint64_t p : new_pairs) heap.push({pair_count[p], p});
  }
  t.cache_ = BpeCache();
  return t;
}

// ---------------------------------------------------------------------------------------
// Saving.

std::string Tokenizer::vocab_key(int32_t id) const {
  return (id_kind_[id] & kAddedToken) ? id_bytes_[id] : map_bytes(id_bytes_[id]);
}

void Tokenizer::save(const std::string& path) const {
  using ojson = nlohmann::ordered_json;
  ojson top;
  top["version"] = "1.0";
  top["truncation"] = nullptr;
  top["padding"] = nullptr;
  ojson added = ojson::array();
  for (const AddedToken& a : added_)
    added.push_back({{"id", a.id}, {"content", a.content}, {"single_word", false},
                     {"lstrip", a.lstrip}, {"rstrip", a.rstrip}, {"normalized", false},
                     {"special", a.special}});
  top["added_tokens"] = added;
  top["normalizer"] = nullptr;
  ojson steps = ojson::array();
  for (const PreStep& s : pre_steps_) {
    switch (s.kind) {
      case PreStep::Kind::byte_level:
        steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", s.add_prefix_space},
                         {"trim_offsets", true}, {"use_regex", s.use_regex}});
        break;
      case PreStep::Kind::digits:
        steps.push_back({{"type", "Digits"}, {"individual_digits", s.individual_digits}});
        break;
      case PreStep::Kind::split_gpt2:
        steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", std::string(kGpt2Pattern)}}},
                         {"behavior", "Isolated"}, {"invert", false}});
        break;
    }
  }
  top["pre_tokenizer"] = steps.size() == 1 ? steps[0]
                                           : ojson{{"type", "Sequence"}, {"pretokenizers", steps}};
  top["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true},
                           {"trim_offsets", false}, {"use_regex", true}};
  top["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                    {"use_regex", true}};
  ojson vocab = ojson::object();
  for (int32_t id = 0; id < vocab_size(); ++id)
    if (id_kind_[id] & kModelToken) vocab[vocab_key(id)] = id;
  // "left right" strings are readable by every tokenizers version; pairs are needed only
  // when a token itself contains a space (an added token's literal content).
  bool spaced = false;
  for (const auto& [l, r] : merges_)
    spaced = spaced || vocab_key(l).find(' ') != std::string::npos ||
             vocab_key(r).find(' ') != std::string::npos;
  ojson merges = ojson::array();
  for (const auto& [l, r] : merges_) {
    if (spaced) {
      merges.push_back(ojson::array({vocab_key(l), vocab_key(r)}));
    } else {
      merges.push_back(vocab_key(l) + " " + vocab_key(r));
    }
  }
  top["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", ignore_merges_},
                  {"vocab", vocab}, {"merges", merges}};
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw InputError("cannot write " + tmp);
    f << top.dump(2) << "\n";
    if (!f) throw InputError("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw InputError("cannot write " + path);
}

}  // namespace tb
