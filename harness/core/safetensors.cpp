// safetensors reader (validated mmap) and atomic writer; see safetensors.h for the format
// and the error contract. Validation follows the reference implementation, plus duplicate
// names (harness/base/strict_json.h) and unknown fields in an entry; unlike the reference it
// accepts gaps between tensors in the data section, which cannot make a read wrong.
#include "harness/core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "harness/base/errors.h"
#include "harness/base/strict_json.h"

namespace tb {

namespace {

using nlohmann::json;

// Throws FormatError "<path>: <message>".
[[noreturn]] void format_error(const std::filesystem::path& path, const std::string& message) {
  throw FormatError(path.string() + ": " + message);
}

std::string tensor_label(const std::string& name) { return "tensor '" + printable(name) + "'"; }

std::string json_type(const json& j) {
  if (j.is_number_unsigned() || j.is_number_integer()) return "integer " + j.dump();
  if (j.is_number_float()) return "number " + j.dump();
  return std::string(j.type_name());
}

// Non-negative integer that fits in 63 bits (nlohmann stores larger literals as floats).
bool as_count(const json& j, std::uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<std::uint64_t>();
    return out <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  }
  if (j.is_number_integer()) {
    const std::int64_t v = j.get<std::int64_t>();
    if (v < 0) return false;
    out = static_cast<std::uint64_t>(v);
    return true;
  }
  return false;
}

TensorInfo parse_entry(const std::filesystem::path& path, const std::string& name,
                       const json& entry, std::uint64_t data_size) {
  const std::string who = tensor_label(name);
  if (!entry.is_object())
    format_error(path, who + ": entry is " + json_type(entry) + ", expected an object");
  for (const auto& [key, value] : entry.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      format_error(path, who + ": unexpected field '" + printable(key) + "'");

  TensorInfo info;
  info.name = name;

  const auto dt = entry.find("dtype");
  if (dt == entry.end()) format_error(path, who + ": missing field 'dtype'");
  if (!dt->is_string())
    format_error(path, who + ": dtype is " + json_type(*dt) + ", expected a string");
  const auto parsed_dtype = dtype_from_name(dt->get<std::string>());
  if (!parsed_dtype) format_error(path, who + ": unknown dtype " + dt->dump());
  info.dtype = *parsed_dtype;

  const auto shape = entry.find("shape");
  if (shape == entry.end()) format_error(path, who + ": missing field 'shape'");
  if (!shape->is_array())
    format_error(path, who + ": shape is " + json_type(*shape) + ", expected an array");
  std::uint64_t numel = 1;
  for (const auto& d : *shape) {
    std::uint64_t dim = 0;
    if (!as_count(d, dim))
      format_error(path, who + ": shape " + shape->dump() + " has " + json_type(d) +
                             ", expected a non-negative integer");
    if (__builtin_mul_overflow(numel, dim, &numel) ||
        numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      format_error(path, who + ": shape " + shape->dump() + " overflows the element count");
    info.shape.push_back(static_cast<std::int64_t>(dim));
  }

  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end()) format_error(path, who + ": missing field 'data_offsets'");
  if (!offsets->is_array() || offsets->size() != 2 || !as_count((*offsets)[0], info.begin) ||
      !as_count((*offsets)[1], info.end))
    format_error(path, who + ": data_offsets " + offsets->dump() +
                           " is not a pair [begin, end] of non-negative integers");
  if (info.begin > info.end)
    format_error(path, who + ": data_offsets " + offsets->dump() + " has begin > end");
  if (info.end > data_size)
    format_error(path, who + ": data_offsets " + offsets->dump() +
                           " end beyond the data section of " + std::to_string(data_size) +
                           " bytes (out of range or file truncated)");

  std::uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dtype_size(info.dtype)), &nbytes) ||
      nbytes != info.end - info.begin)
    format_error(path, who + ": shape " + shape->dump() + " of " +
                           std::string(dtype_name(info.dtype)) + " needs " + std::to_string(numel) +
                           " x " + std::to_string(dtype_size(info.dtype)) +
                           " bytes but data_offsets " + offsets->dump() + " span " +
                           std::to_string(info.end - info.begin) + " (shape/byte size mismatch)");
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::filesystem::path& path,
                                                  const json& meta) {
  if (!meta.is_object())
    format_error(path,
                 "__metadata__ is " + json_type(meta) + ", expected an object of string to string");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string())
      format_error(path, "__metadata__ field '" + printable(key) + "' is " + json_type(value) +
                             ", expected a string");
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

// Non-empty byte ranges must be disjoint; zero-size tensors occupy nothing and may sit anywhere.
void check_overlaps(const std::filesystem::path& path, const std::vector<TensorInfo>& sorted) {
  const TensorInfo* last = nullptr;
  for (const auto& t : sorted) {
    if (t.begin == t.end) continue;
    if (last && t.begin < last->end)
      format_error(path, tensor_label(t.name) + ": data_offsets [" + std::to_string(t.begin) + "," +
                             std::to_string(t.end) + "] overlap " + tensor_label(last->name) +
                             " [" + std::to_string(last->begin) + "," + std::to_string(last->end) +
                             "]");
    if (!last || t.end > last->end) last = &t;
  }
}

}  // namespace

std::int64_t TensorInfo::numel() const {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path.string() + ": not a regular file");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    format_error(path, "file is " + std::to_string(size) +
                           " bytes, shorter than the 8-byte header length (truncated)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED)
    throw InputError(path.string() + ": cannot mmap: " + std::strerror(map_errno));
  f.map_ = static_cast<const std::byte*>(map);
  f.map_size_ = size;

  std::uint64_t header_len = 0;
  std::memcpy(&header_len, f.map_, 8);
  if (header_len > kMaxSafetensorsHeader)
    format_error(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                           std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (header_len > size - 8)
    format_error(path, "header length " + std::to_string(header_len) +
                           " exceeds the file size of " + std::to_string(size) +
                           " bytes (truncated header)");
  f.data_start_ = 8 + header_len;
  const std::uint64_t data_size = size - f.data_start_;

  const json header = parse_json_strict(
      path, std::string_view(reinterpret_cast<const char*>(f.map_) + 8, header_len), "header");
  if (!header.is_object())
    format_error(path, "header is " + json_type(header) + ", expected a JSON object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__")
      f.metadata_ = parse_metadata(path, value);
    else
      f.tensors_.push_back(parse_entry(path, key, value, data_size));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  check_overlaps(path, f.tensors_);
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.by_name_.emplace(f.tensors_[i].name, i);
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    data_start_ = other.data_start_;
    tensors_ = std::move(other.tensors_);
    by_name_ = std::move(other.by_name_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

void SafetensorsFile::unmap() noexcept {
  if (map_) ::munmap(const_cast<std::byte*>(map_), map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) throw ModelError(path_.string() + ": no " + tensor_label(name));
  return *info;
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& info) const {
  TB_CHECK(info.end <= map_size_ - data_start_ && info.begin <= info.end,
           "tensor info '" << info.name << "' does not belong to " << path_.string());
  return {map_ + data_start_ + info.begin, static_cast<std::size_t>(info.end - info.begin)};
}

void SafetensorsFile::read_f32(const TensorInfo& info, std::span<float> out) const {
  const auto n = static_cast<std::size_t>(info.numel());
  if (out.size() != n)
    format_error(path_, tensor_label(info.name) + " has " + std::to_string(n) +
                            " elements but the destination holds " + std::to_string(out.size()));
  const std::byte* src = bytes(info).data();
  switch (info.dtype) {
    case DType::F32:
      if (n) std::memcpy(out.data(), src, n * sizeof(float));
      break;
    case DType::F16:
      f16_to_f32(src, out.data(), n);
      break;
    case DType::BF16:
      bf16_to_f32(src, out.data(), n);
      break;
    case DType::F64:
      for (std::size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      format_error(path_, tensor_label(info.name) + " has dtype " +
                              std::string(dtype_name(info.dtype)) +
                              ", which cannot be read as floating point (F32, F16, BF16, F64)");
  }
}

void SafetensorsFile::read_f32(const std::string& name, std::span<float> out) const {
  read_f32(at(name), out);
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& info = at(name);
  std::vector<float> out(static_cast<std::size_t>(info.numel()));
  read_f32(info, out);
  return out;
}

void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  struct Item {
    const TensorToWrite* t;
    std::uint64_t numel;
  };
  std::vector<Item> order;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    TB_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16,
             "tensor '" << t.name << "': cannot write dtype " << dtype_name(t.dtype));
    TB_CHECK(t.name != "__metadata__", "tensor name __metadata__ is reserved");
    TB_CHECK(names.insert(t.name).second, "duplicate tensor name '" << t.name << "'");
    std::uint64_t numel = 1;
    for (const auto d : t.shape) {
      TB_CHECK(d >= 0, "tensor '" << t.name << "' has a negative dim");
      TB_CHECK(!__builtin_mul_overflow(numel, static_cast<std::uint64_t>(d), &numel) &&
                   numel <= std::numeric_limits<std::uint64_t>::max() / 8,
               "tensor '" << t.name << "' is too large");
    }
    TB_CHECK(t.data || numel == 0, "tensor '" << t.name << "' has no data");
    order.push_back({&t, numel});
  }
  std::sort(order.begin(), order.end(), [](const Item& a, const Item& b) {
    if (a.t->dtype != b.t->dtype) return a.t->dtype > b.t->dtype;
    return a.t->name < b.t->name;
  });

  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + json(metadata).dump();
  std::uint64_t offset = 0;
  for (const auto& [t, numel] : order) {
    const std::uint64_t nbytes = numel * dtype_size(t->dtype);
    if (header.size() > 1) header += ",";
    header += json(t->name).dump() + ":{\"dtype\":\"" + std::string(dtype_name(t->dtype)) +
              "\",\"shape\":" + json(t->shape).dump() + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  auto fail = [&](const std::string& what) {
    const std::string reason = std::strerror(errno);
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw InputError(path.string() + ": cannot " + what + ": " + reason);
  };
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(tmp.c_str(), "wb"), &std::fclose);
  if (!file) fail("create " + tmp.string());
  auto put = [&](const void* p, std::size_t n) {
    if (n && std::fwrite(p, 1, n, file.get()) != n) fail("write");
  };
  const std::uint64_t header_len = header.size();
  put(&header_len, 8);
  put(header.data(), header.size());

  constexpr std::size_t kChunk = 1 << 16;  // elements converted per write
  std::vector<std::byte> buf(kChunk * 2);
  for (const auto& [t, numel] : order) {
    const auto n = static_cast<std::size_t>(numel);
    if (t->dtype == DType::F32) {
      put(t->data, n * sizeof(float));
      continue;
    }
    for (std::size_t i = 0; i < n; i += kChunk) {
      const std::size_t m = std::min(kChunk, n - i);
      if (t->dtype == DType::F16)
        f32_to_f16(t->data + i, buf.data(), m);
      else
        f32_to_bf16(t->data + i, buf.data(), m);
      put(buf.data(), m * 2);
    }
  }
  if (std::fflush(file.get()) != 0 || ::fsync(::fileno(file.get())) != 0) fail("write");
  if (std::fclose(file.release()) != 0) fail("close");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename " + tmp.string() + " to it");
}

}  // namespace tb
