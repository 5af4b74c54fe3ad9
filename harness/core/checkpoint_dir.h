// Access to a Hugging Face checkpoint on disk, below any model logic: a directory holding
// config.json and either model.safetensors or a sharded set described by
// model.safetensors.index.json ({"weight_map": {tensor: shard file}}), or a bare .safetensors
// file. Tensors are looked up by name across shards. The model layer maps config fields and
// tensor names onto the architecture; this layer only guarantees that what it hands out is
// consistent: every shard the index names exists and holds exactly the tensors mapped to it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "harness/core/safetensors.h"

namespace tb {

inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kWeightsFile = "model.safetensors";
inline constexpr const char* kWeightsIndexFile = "model.safetensors.index.json";

class CheckpointDir {
 public:
  enum class Layout { File, Directory, Sharded };

  // `path` is a checkpoint directory, a .safetensors file, or a model.safetensors.index.json.
  // A directory with both model.safetensors and an index uses model.safetensors, as
  // transformers does. config.json is optional here; config() throws if it is absent.
  static CheckpointDir open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  Layout layout() const { return layout_; }
  // The index file of a sharded checkpoint; empty otherwise.
  const std::filesystem::path& index_path() const { return index_path_; }
  // The weight files: one, or the shards ordered by file name.
  const std::vector<SafetensorsFile>& files() const { return files_; }

  // Every tensor name, file by file, each file in data order.
  const std::vector<std::string>& tensor_names() const { return names_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // Throw tb::ModelError naming the checkpoint and tensor when absent.
  const TensorInfo& at(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  void read_f32(const std::string& name, std::span<float> out) const;
  std::vector<float> read_f32(const std::string& name) const;

  bool has_config() const { return config_.has_value(); }
  const std::filesystem::path& config_path() const { return config_path_; }
  // Parsed config.json; tb::ModelError when the checkpoint has none.
  const nlohmann::json& config() const;

 private:
  CheckpointDir() = default;
  void index_file(std::size_t file_index);
  void open_sharded(const std::filesystem::path& index);

  std::filesystem::path path_;
  Layout layout_ = Layout::File;
  std::filesystem::path index_path_;
  std::filesystem::path config_path_;
  std::optional<nlohmann::json> config_;
  std::vector<SafetensorsFile> files_;
  std::vector<std::string> names_;
  std::map<std::string, std::size_t> where_;  // tensor name -> index in files_
};

}  // namespace tb
