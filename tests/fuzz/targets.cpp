// The fuzz targets (see targets.h): each writes the input where its parser reads from and
// calls the parser's public API, then uses what it returned as a caller would.
#include "tests/fuzz/targets.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string_view>

#include "datasets/loaders.h"
#include "harness/base/errors.h"
#include "harness/base/strict_json.h"
#include "harness/core/model.h"
#include "harness/core/safetensors.h"
#include "harness/core/tokenizer.h"
#include "harness/runner/profile_json.h"
#include "harness/runner/record.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/compare.h"
#include "tasks/task.h"

namespace tb::fuzz {
namespace {

namespace fs = std::filesystem;

// One scratch directory per process (libFuzzer's workers are processes).
const fs::path& scratch() {
  static const fs::path dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tb-fuzz-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("cannot create a scratch directory under " + tmpl);
    return fs::path(tmpl);
  }();
  return dir;
}

fs::path write(const std::string& name, const uint8_t* data, std::size_t size) {
  const fs::path p = scratch() / name;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + p.string());
  if (size && std::fwrite(data, 1, size, f) != size) {
    std::fclose(f);
    throw std::runtime_error("short write to " + p.string());
  }
  std::fclose(f);
  return p;
}

// The input split at its first NUL byte: two files from one input.
std::pair<std::string_view, std::string_view> split(const uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const auto nul = s.find('\0');
  if (nul == std::string_view::npos) return {s, {}};
  return {s.substr(0, nul), s.substr(nul + 1)};
}

void safetensors(const uint8_t* data, std::size_t size) {
  const auto f = SafetensorsFile::open(write("model.safetensors", data, size));
  for (const auto& t : f.tensors()) {
    (void)f.bytes(t);
    if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16 || t.dtype == DType::F64)
      if (t.numel() <= (1 << 20)) (void)f.read_f32(t.name);
  }
}

void hf_config(const uint8_t* data, std::size_t size) {
  const auto p = write("config.json", data, size);
  const auto cfg = ModelConfig::from_hf_json(read_json_file(p), p.string());
  (void)cfg.to_hf_json();
  (void)count_params(cfg);
}

void use_tokenizer(const Tokenizer& tok) {
  const std::string text = "Hello, world! It's 2026 — naïve café\n\t  x";
  const auto ids = tok.encode(text);
  if (tok.decode(ids) != text) throw Error("tokenizer: decode(encode(text)) != text");
}

void tokenizer_json(const uint8_t* data, std::size_t size) {
  use_tokenizer(Tokenizer::from_tokenizer_json(write("tokenizer.json", data, size).string()));
}

void vocab_merges(const uint8_t* data, std::size_t size) {
  const auto [vocab, merges] = split(data, size);
  const auto v = write("vocab.json", reinterpret_cast<const uint8_t*>(vocab.data()), vocab.size());
  const auto m = write("merges.txt", reinterpret_cast<const uint8_t*>(merges.data()), merges.size());
  use_tokenizer(Tokenizer::from_vocab_merges(v.string(), m.string()));
}

void task_spec(const uint8_t* data, std::size_t size) {
  (void)tasks::parse_task_spec(write("fuzz-task.ini", data, size));
}

void suite(const uint8_t* data, std::size_t size) {
  (void)runner::read_suite(write("suite.ini", data, size), methods::registry());
}

void table(const char* file, data::FileFormat format, const uint8_t* data, std::size_t size) {
  const auto t = data::load_table(write(file, data, size), format,
                                      {{"text", true}, {"label", true}, {"group", false}});
  for (const auto& row : t.rows) (void)t.where(row);
}
void table_csv(const uint8_t* data, std::size_t size) { table("data.csv", data::FileFormat::csv, data, size); }
void table_tsv(const uint8_t* data, std::size_t size) { table("data.tsv", data::FileFormat::tsv, data, size); }
void table_jsonl(const uint8_t* data, std::size_t size) { table("data.jsonl", data::FileFormat::jsonl, data, size); }

// A record is read from a file whose name must match its run_info; the name is taken from
// the input when it has one, so validation past the name check is reached.
void record(const uint8_t* data, std::size_t size) {
  std::string name = "m__t__seed0.json";
  try {
    const auto j = nlohmann::json::parse(data, data + size);
    const auto& ri = j.at("run_info");
    const auto n = runner::record_filename(ri.at("method").get<std::string>(), ri.at("task").get<std::string>(),
                                           ri.at("seed").get<uint64_t>());
    if (runner::is_record_filename(n) && n.find('/') == std::string::npos) name = n;
  } catch (const nlohmann::json::exception&) {
  }
  const auto r = runner::read_record(write(name, data, size));
  (void)r.metric_value(r.primary_metric);
  (void)r.metric_stderr(r.primary_metric);
  const std::vector<runner::Record> one{r};
  (void)runner::summary_csv(one);
  (void)runner::summary_markdown(one);
  (void)runner::summary_table(one);
}

void profile_json(const uint8_t* data, std::size_t size) {
  const auto p = write("profile.json", data, size);
  runner::validate_profile_json(read_json_file(p), p.string());
}

void tolerance(const uint8_t* data, std::size_t size) {
  (void)reports::Tolerance::read(write("tolerance.json", data, size));
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> t = {
      {"safetensors", "safetensors header and layout (SafetensorsFile::open, read_f32)", safetensors},
      {"hf_config", "Hugging Face config.json (ModelConfig::from_hf_json)", hf_config},
      {"tokenizer_json", "tokenizer.json (Tokenizer::from_tokenizer_json, encode/decode)", tokenizer_json},
      {"vocab_merges", "GPT-2 vocab.json + merges.txt, split at the first NUL (Tokenizer::from_vocab_merges)",
       vocab_merges},
      {"task_spec", "task INI spec (tasks::parse_task_spec)", task_spec},
      {"suite", "suite INI (runner::read_suite)", suite},
      {"table_csv", "CSV task data (data::load_table)", table_csv},
      {"table_tsv", "TSV task data (data::load_table)", table_tsv},
      {"table_jsonl", "JSONL task data (data::load_table)", table_jsonl},
      {"record", "result records as report/compare read them (runner::read_record, summaries)", record},
      {"profile_json", "profile JSON (runner::validate_profile_json)", profile_json},
      {"tolerance", "compare's tolerance file (reports::Tolerance::read)", tolerance},
  };
  return t;
}

const Target* find_target(const std::string& name) {
  for (const auto& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

void run_one(const Target& t, const uint8_t* data, std::size_t size) {
  try {
    t.run(data, size);
  } catch (const InputError&) {
    // the parser's clean refusal: one line naming the file, exit 2
  }
}

}  // namespace tb::fuzz
