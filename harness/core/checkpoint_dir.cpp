// Opening Hugging Face checkpoint directories and validating shard indexes; see
// checkpoint_dir.h. Index errors start with the index file's path and name the tensor and
// shard, so a user can fix the file by hand.
#include "harness/core/checkpoint_dir.h"

#include <string_view>

#include "harness/base/errors.h"
#include "harness/base/strict_json.h"

namespace tb {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void index_error(const fs::path& index, const std::string& message) {
  throw FormatError(index.string() + ": " + message);
}

// Shard names are relative paths inside the checkpoint directory; an index must not reach
// outside it.
bool is_safe_relative(const fs::path& p) {
  if (p.empty() || p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

CheckpointDir CheckpointDir::open(const fs::path& path) {
  CheckpointDir c;
  c.path_ = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory");

  if (!fs::is_directory(path, ec)) {
    c.layout_ = Layout::File;
    c.files_.push_back(SafetensorsFile::open(path));
    c.index_file(0);
    return c;
  }

  c.config_path_ = path / kConfigFile;
  if (fs::exists(c.config_path_, ec)) {
    c.config_ = read_json_file(c.config_path_);
    if (!c.config_->is_object())
      throw FormatError(c.config_path_.string() + ": expected a JSON object, found " +
                        std::string(c.config_->type_name()));
  }
  if (fs::exists(path / kWeightsFile, ec)) {
    c.layout_ = Layout::Directory;
    c.files_.push_back(SafetensorsFile::open(path / kWeightsFile));
    c.index_file(0);
  } else if (fs::exists(path / kWeightsIndexFile, ec)) {
    c.layout_ = Layout::Sharded;
    c.open_sharded(path / kWeightsIndexFile);
  } else {
    throw InputError(path.string() + ": checkpoint directory has neither " + kWeightsFile +
                     " nor " + kWeightsIndexFile);
  }
  return c;
}

void CheckpointDir::open_sharded(const fs::path& index) {
  index_path_ = index;
  const nlohmann::json j = read_json_file(index);
  if (!j.is_object())
    index_error(index, std::string("expected a JSON object, found ") + j.type_name());
  const auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) index_error(index, "missing object 'weight_map'");

  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> its tensors
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string())
      index_error(index, "weight_map entry for tensor '" + printable(name) + "' is " +
                             shard.type_name() + ", expected a shard file name");
    const std::string& file = shard.get_ref<const std::string&>();
    if (!is_safe_relative(file))
      index_error(index, "tensor '" + printable(name) + "' is mapped to '" + printable(file) +
                             "', which is not a file name inside the checkpoint directory");
    by_shard[file].push_back(name);
  }

  const fs::path dir = index.parent_path();
  for (const auto& [shard, names] : by_shard) {
    const fs::path shard_path = dir / shard;
    std::error_code ec;
    if (!fs::is_regular_file(shard_path, ec))
      index_error(index, "shard '" + printable(shard) + "' (mapped for tensor '" +
                             printable(names.front()) +
                             "') does not exist: " + shard_path.string());
    files_.push_back(SafetensorsFile::open(shard_path));
    const SafetensorsFile& file = files_.back();
    for (const auto& name : names)
      if (!file.find(name))
        index_error(index, "tensor '" + printable(name) + "' is mapped to shard '" +
                               printable(shard) + "', which does not contain it");
    for (const auto& t : file.tensors()) {
      const auto mapped = wm->find(t.name);
      if (mapped == wm->end() || mapped->get_ref<const std::string&>() != shard)
        index_error(index, "shard '" + printable(shard) + "' holds tensor '" + printable(t.name) +
                               "', which weight_map does not map to it");
    }
    index_file(files_.size() - 1);
  }
}

void CheckpointDir::index_file(std::size_t file_index) {
  for (const auto& t : files_[file_index].tensors()) {
    names_.push_back(t.name);
    where_.emplace(t.name, file_index);
  }
}

const SafetensorsFile& CheckpointDir::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end())
    throw ModelError(path_.string() + ": no tensor '" + printable(name) + "' in checkpoint");
  return files_[it->second];
}

const TensorInfo& CheckpointDir::at(const std::string& name) const {
  return file_of(name).at(name);
}

void CheckpointDir::read_f32(const std::string& name, std::span<float> out) const {
  const SafetensorsFile& file = file_of(name);
  file.read_f32(file.at(name), out);
}

std::vector<float> CheckpointDir::read_f32(const std::string& name) const {
  return file_of(name).read_f32(name);
}

const nlohmann::json& CheckpointDir::config() const {
  if (!config_) throw ModelError(path_.string() + ": checkpoint has no " + kConfigFile);
  return *config_;
}

}  // namespace tb
