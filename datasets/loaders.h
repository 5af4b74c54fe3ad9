// Loaders for user and built data files: CSV/TSV (fast-cpp-csv-parser) and JSONL, each read
// against declared columns. Every defect is a tb::FormatError whose message starts with
// "<file>:<line>:" — unterminated quote, missing column (in the header or in a row), bad
// UTF-8, malformed JSON — so a user can go straight to the offending line.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tb::data {

enum class FileFormat { csv, tsv, jsonl };

// "csv" | "tsv" | "jsonl"; an empty name is inferred from the extension
// (.csv, .tsv/.tab, .jsonl/.json). InputError naming `what` otherwise.
FileFormat parse_file_format(const std::string& name, const std::filesystem::path& path,
                             const std::string& what);

struct Column {
  std::string name;
  bool required = true;
};

struct Row {
  std::size_t line = 0;                // 1-based line number in the file
  std::vector<nlohmann::json> values;  // in declared column order; null = optional and absent
};

struct Table {
  std::filesystem::path path;
  std::vector<Column> columns;
  std::vector<Row> rows;

  // "<path>:<line>" of a row, for error messages of later stages (e.g. unknown label).
  std::string where(const Row& row) const;
};

// At most this many declared columns for CSV/TSV (fast-cpp-csv-parser fixes the column
// count at compile time; extra file columns are ignored).
inline constexpr std::size_t kMaxCsvColumns = 8;

// CSV/TSV: the first line is a header naming the columns. Cells come back as JSON strings.
// CSV follows RFC 4180 quoting within one line ("" escapes a quote; a quoted cell may not
// span lines); TSV cells are taken literally (no quoting), as in SST-2/GLUE files.
// JSONL: one JSON object per line; blank lines are skipped; cells keep their JSON type.
Table load_table(const std::filesystem::path& path, FileFormat format,
                 const std::vector<Column>& columns);

// Writes records as JSONL atomically (tb::write_file_atomic: temp file in the same directory,
// fsync, rename), creating the directory first, so a concurrent reader sees the old file or
// the new one, never half of one.
void write_jsonl_atomic(const std::filesystem::path& path, const std::vector<nlohmann::json>& records);

}  // namespace tb::data
