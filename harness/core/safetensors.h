// safetensors read (mmap) and write. Format: 8-byte little-endian header length N, N bytes of
// JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data section; offsets are relative to its start.
//
// The reader validates everything before handing out a byte: a checkpoint comes from
// outside, and a bad one must end in a tb::FormatError whose message starts with the file
// path and names the tensor and the defect, never in a crash or an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "harness/core/dtype.h"

namespace tb {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte range in the data section, [begin, end)
  std::uint64_t end = 0;

  std::int64_t numel() const;  // product of shape; 1 for a scalar (empty shape)
};

// Largest header accepted: the limit of the reference implementation (100 MB).
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

// A validated, read-only, memory-mapped safetensors file. Move-only; the mapping lives as
// long as the object, so spans from bytes() are valid until it is destroyed.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  // Every tensor, in data-section order (ascending begin offset, then name).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // Throws tb::ModelError naming the file and tensor when absent.
  const TensorInfo& at(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's raw little-endian bytes inside the mapping (no alignment guarantee).
  std::span<const std::byte> bytes(const TensorInfo& info) const;

  // Converts an F32, F16, BF16 or F64 tensor to fp32 into `out`, which must hold exactly
  // numel() values. Other dtypes and a size mismatch throw tb::FormatError naming the tensor.
  void read_f32(const TensorInfo& info, std::span<float> out) const;
  void read_f32(const std::string& name, std::span<float> out) const;
  std::vector<float> read_f32(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  void unmap() noexcept;

  std::filesystem::path path_;
  const std::byte* map_ = nullptr;  // the whole file
  std::size_t map_size_ = 0;
  std::size_t data_start_ = 0;  // 8 + N
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> by_name_;  // name -> index in tensors_
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: fp32 values stored as `dtype` (F32, F16 or BF16).
struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data;  // (numel) values, row-major; may be null when numel is 0
  DType dtype = DType::F32;
};

// Writes a safetensors file the way the reference implementation lays it out: tensors sorted
// by dtype (descending enum order) then name, packed back to back, header JSON compact with
// __metadata__ first, padded with spaces to a multiple of 8 bytes. Written to
// `path.tmp.<pid>` and renamed over `path`, so readers never see a half-written file.
// Duplicate or reserved names, negative dims and unsupported dtypes are tb::Error (caller
// bugs); I/O failures are tb::InputError naming the path.
void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace tb
