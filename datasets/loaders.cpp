// CSV/TSV and JSONL loading against declared columns; see loaders.h for the contract.
#include "datasets/loaders.h"

// fast-cpp-csv-parser is header-only and not warning-clean at -Wall -Wextra. Without
// CSV_IO_NO_THREAD it starts a thread for every block it reads ahead; task files are small,
// and a thread per file made a load's time depend on the scheduler (found by fuzzing: a
// 17-byte file took over a second on a loaded machine).
#define CSV_IO_NO_THREAD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wparentheses"
#pragma GCC diagnostic ignored "-Wstringop-truncation"
#include <csv.h>
#pragma GCC diagnostic pop

#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>

#include "datasets/text.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"

namespace tb::data {
namespace {

[[noreturn]] void fail_at(const std::filesystem::path& path, std::size_t line, const std::string& msg) {
  throw FormatError(path.string() + ":" + std::to_string(line) + ": " + msg);
}

// The line fast-cpp-csv-parser attached to its error, else the last line we know of.
std::size_t at_line(const io::error::with_file_line& e, std::size_t fallback) {
  return e.file_line > 0 ? static_cast<std::size_t>(e.file_line) : fallback;
}

template <class Quote>
Table load_delimited(const std::filesystem::path& path, const std::vector<Column>& columns) {
  TB_CHECK(columns.size() <= kMaxCsvColumns, "too many declared columns: " << columns.size());
  if (!std::filesystem::is_regular_file(path))
    throw InputError(path.string() + ": no such file");
  std::string names[kMaxCsvColumns];
  for (std::size_t i = 0; i < kMaxCsvColumns; ++i)
    names[i] = i < columns.size() ? columns[i].name : "\x1f(unused " + std::to_string(i) + ")";

  Table t{path, columns, {}};
  std::size_t line = 1;
  try {
    io::CSVReader<kMaxCsvColumns, io::trim_chars<' '>, Quote, io::throw_on_overflow,
                  io::empty_line_comment>
        in(path.string());
    in.read_header(io::ignore_extra_column | io::ignore_missing_column, names[0], names[1],
                   names[2], names[3], names[4], names[5], names[6], names[7]);
    line = in.get_file_line();
    for (const Column& c : columns)
      if (c.required && !in.has_column(c.name))
        fail_at(path, line, "missing column '" + c.name + "' in the header");
    std::string cell[kMaxCsvColumns];
    while (true) {
      for (auto& c : cell) c.clear();
      bool more = in.read_row(cell[0], cell[1], cell[2], cell[3], cell[4], cell[5], cell[6],
                              cell[7]);
      line = in.get_file_line();
      if (!more) break;
      Row r;
      r.line = line;
      for (std::size_t i = 0; i < columns.size(); ++i) {
        if (!in.has_column(columns[i].name)) {
          r.values.emplace_back(nullptr);
          continue;
        }
        if (find_invalid_utf8(cell[i]))
          fail_at(path, line, "invalid UTF-8 in column '" + columns[i].name + "'");
        r.values.emplace_back(cell[i]);
      }
      t.rows.push_back(std::move(r));
    }
  } catch (const io::error::escaped_string_not_closed& e) {
    fail_at(path, at_line(e, line), "unterminated quote (a quoted cell must close on the same line)");
  } catch (const io::error::too_few_columns& e) {
    fail_at(path, at_line(e, line), "missing column: the row has fewer cells than the header");
  } catch (const io::error::too_many_columns& e) {
    fail_at(path, at_line(e, line), "the row has more cells than the header");
  } catch (const io::error::line_length_limit_exceeded& e) {
    fail_at(path, at_line(e, line), "line longer than 16 MiB");
  } catch (const io::error::header_missing&) {
    fail_at(path, 1, "empty file: no header line");
  } catch (const io::error::duplicated_column_in_header& e) {
    fail_at(path, 1, std::string("duplicated column in the header: ") + e.column_name);
  } catch (const io::error::can_not_open_file&) {
    throw InputError(path.string() + ": cannot open for reading");
  } catch (const io::error::base& e) {
    fail_at(path, line, e.what());
  }
  return t;
}

Table load_jsonl(const std::filesystem::path& path, const std::vector<Column>& columns) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open for reading");
  Table t{path, columns, {}};
  std::string text;
  std::size_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (normalize_space(text).empty()) continue;
    if (auto bad = find_invalid_utf8(text))
      fail_at(path, line, "invalid UTF-8 at byte " + std::to_string(*bad + 1));
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 5e999999
      fail_at(path, line, std::string("malformed JSON: ") + e.what());
    }
    if (!obj.is_object()) fail_at(path, line, "expected a JSON object");
    Row r;
    r.line = line;
    for (const Column& c : columns) {
      auto it = obj.find(c.name);
      if (it == obj.end() || it->is_null()) {
        if (c.required) fail_at(path, line, "missing column '" + c.name + "'");
        r.values.emplace_back(nullptr);
      } else {
        r.values.push_back(*it);
      }
    }
    t.rows.push_back(std::move(r));
  }
  if (in.bad()) throw InputError(path.string() + ": read error");
  return t;
}

}  // namespace

std::string Table::where(const Row& row) const {
  return path.string() + ":" + std::to_string(row.line);
}

FileFormat parse_file_format(const std::string& name, const std::filesystem::path& path,
                             const std::string& what) {
  std::string n = name;
  if (n.empty()) {
    std::string ext = path.extension().string();
    if (ext == ".csv") n = "csv";
    else if (ext == ".tsv" || ext == ".tab") n = "tsv";
    else if (ext == ".jsonl" || ext == ".json") n = "jsonl";
    else throw InputError(what + ": cannot infer the format of '" + path.string() +
                          "' from its extension; set format = csv|tsv|jsonl");
  }
  if (n == "csv") return FileFormat::csv;
  if (n == "tsv") return FileFormat::tsv;
  if (n == "jsonl") return FileFormat::jsonl;
  throw InputError(what + ": unknown format '" + n + "' (expected csv, tsv or jsonl)");
}

Table load_table(const std::filesystem::path& path, FileFormat format,
                 const std::vector<Column>& columns) {
  switch (format) {
    case FileFormat::csv: return load_delimited<io::double_quote_escape<',', '"'>>(path, columns);
    case FileFormat::tsv: return load_delimited<io::no_quote_escape<'\t'>>(path, columns);
    case FileFormat::jsonl: return load_jsonl(path, columns);
  }
  TB_CHECK(false, "unhandled file format");
}

void write_jsonl_atomic(const std::filesystem::path& path, const std::vector<nlohmann::json>& records) {
  std::string text;
  for (const auto& r : records) {
    text += r.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    text += '\n';
  }
  std::filesystem::create_directories(path.parent_path());
  tb::write_file_atomic(path, text);
}

}  // namespace tb::data
