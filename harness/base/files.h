// File helpers shared by every layer that writes results.
#pragma once

#include <filesystem>
#include <string>

namespace tb {

// Writes bytes to `file` atomically: a hidden temp file in the same directory, fsync, rename,
// fsync of the directory. A crash leaves either the old state or the complete file.
// InputError naming the file when it cannot be written.
void write_file_atomic(const std::filesystem::path& file, const std::string& bytes);

}  // namespace tb
