// `tunebench inspect PATH [--json]`: what is inside a checkpoint — every tensor's name, dtype,
// shape (and shard, for sharded checkpoints), the total parameter count, file metadata and
// config.json. Opening the checkpoint validates it fully, so this is also the command to run
// on a file that a model refuses to load: a malformed file ends in one line naming the defect.
#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "harness/cli/commands.h"
#include "harness/core/checkpoint_dir.h"
#include "harness/base/errors.h"

namespace tb::cli {

namespace {

namespace po = boost::program_options;

const char* layout_name(CheckpointDir::Layout layout) {
  switch (layout) {
    case CheckpointDir::Layout::File:
      return "file";
    case CheckpointDir::Layout::Directory:
      return "directory";
    case CheckpointDir::Layout::Sharded:
      return "sharded";
  }
  return "unknown";
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::int64_t parameter_count(const CheckpointDir& ckpt) {
  std::int64_t total = 0;
  for (const auto& f : ckpt.files())
    for (const auto& t : f.tensors()) total += t.numel();
  return total;
}

void print_json(const CheckpointDir& ckpt) {
  nlohmann::json out;
  out["path"] = ckpt.path().string();
  out["layout"] = layout_name(ckpt.layout());
  if (!ckpt.index_path().empty()) out["index"] = ckpt.index_path().string();
  if (ckpt.has_config()) out["config"] = ckpt.config();
  out["files"] = nlohmann::json::array();
  out["tensors"] = nlohmann::json::array();
  for (const auto& f : ckpt.files()) {
    out["files"].push_back(
        {{"path", f.path().string()}, {"tensors", f.tensors().size()}, {"metadata", f.metadata()}});
    for (const auto& t : f.tensors())
      out["tensors"].push_back({{"name", t.name},
                                {"dtype", dtype_name(t.dtype)},
                                {"shape", t.shape},
                                {"numel", t.numel()},
                                {"file", f.path().filename().string()}});
  }
  out["parameters"] = parameter_count(ckpt);
  std::cout << out.dump(2) << "\n";
}

void print_text(const CheckpointDir& ckpt) {
  const bool sharded = ckpt.layout() == CheckpointDir::Layout::Sharded;
  std::cout << "checkpoint: " << ckpt.path().string() << " (" << layout_name(ckpt.layout());
  if (sharded)
    std::cout << ", " << ckpt.files().size() << " shards, index " << ckpt.index_path().string();
  std::cout << ")\n";
  if (ckpt.has_config())
    std::cout << ckpt.config_path().string() << ":\n" << ckpt.config().dump(2) << "\n";

  for (const auto& f : ckpt.files()) {
    std::cout << "file " << f.path().string() << ": " << f.tensors().size() << " tensors";
    if (f.metadata().empty()) std::cout << ", no metadata";
    std::cout << "\n";
    for (const auto& [key, value] : f.metadata())
      std::cout << "  metadata " << key << " = " << value << "\n";
  }

  std::size_t name_w = 4, shape_w = 5;
  for (const auto& f : ckpt.files())
    for (const auto& t : f.tensors()) {
      name_w = std::max(name_w, t.name.size());
      shape_w = std::max(shape_w, shape_string(t.shape).size());
    }
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(w, s.size()), ' ');
    return s;
  };
  std::cout << pad("name", name_w) << "  " << pad("dtype", 5) << "  "
            << (sharded ? pad("shape", shape_w) + "  shard" : "shape") << "\n";
  for (const auto& f : ckpt.files())
    for (const auto& t : f.tensors()) {
      std::cout << pad(t.name, name_w) << "  " << pad(std::string(dtype_name(t.dtype)), 5) << "  "
                << (sharded
                        ? pad(shape_string(t.shape), shape_w) + "  " + f.path().filename().string()
                        : shape_string(t.shape))
                << "\n";
    }
  std::cout << "tensors: " << ckpt.tensor_names().size() << "\n"
            << "parameters: " << parameter_count(ckpt) << "\n";
}

}  // namespace

int cmd_inspect(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("json", "print one JSON object instead of text")
      ("path", po::value<std::string>(), "checkpoint directory or .safetensors file");
  // clang-format on
  po::positional_options_description positional;
  positional.add("path", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(positional).run(), vm);
  if (vm.count("help")) {
    std::cout
        << "usage: tunebench inspect PATH [--json]\n\n"
        << "Print the tensors (name, dtype, shape; shard for sharded checkpoints), the total\n"
        << "parameter count, file metadata and config.json of a checkpoint. PATH is a Hugging\n"
        << "Face checkpoint directory (config.json + model.safetensors, or a sharded\n"
        << "model.safetensors.index.json) or a .safetensors file.\n\n"
        << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("path")) throw InputError("missing PATH (usage: tunebench inspect PATH [--json])");

  const CheckpointDir ckpt = CheckpointDir::open(vm["path"].as<std::string>());
  if (vm.count("json"))
    print_json(ckpt);
  else
    print_text(ckpt);
  return 0;
}

}  // namespace tb::cli
