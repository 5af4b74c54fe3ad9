// The project's hashes: SHA-256 to fingerprint bytes and files (data sources in a build
// manifest, the model and the configuration in a run record, a method's saved state), and
// 64-bit FNV-1a to assign examples to train/dev/test buckets and to derive seeds. FNV-1a is
// used for splits because it is tiny, fast and fully specified, so the split of a text never
// depends on the platform, the compiler or the order examples arrive in.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace tb {

// Lower-case hex SHA-256 of a byte string.
std::string sha256_hex(std::string_view bytes);

// Lower-case hex SHA-256 of a file's contents; InputError naming the file if unreadable.
std::string sha256_file(const std::filesystem::path& path);

// 64-bit FNV-1a (offset basis 14695981039346656037, prime 1099511628211).
std::uint64_t fnv1a64(std::string_view bytes);

// Bucket in [0, 100) of a text: fnv1a64(salt + "\x1f" + text) % 100. The salt lets one
// dataset split differently from another that happens to share a text.
int split_bucket(std::string_view salt, std::string_view text);

}  // namespace tb
