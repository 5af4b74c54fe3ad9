// Shared basics of the whole project: the typed errors every layer throws and the one
// invariant-check macro. `main` maps InputError (bad files, bad flags, bad config) to
// exit code 2 and everything else to 1, so every message here must name the file,
// line, tensor or field it is about.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace tb {

// Internal invariant broken: a bug in tunebench, never the user's input.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The user's input is wrong: a file, a flag, a config field. CLI exit code 2.
struct InputError : Error {
  using Error::Error;
};

// A file whose bytes do not follow its format (safetensors, JSON, CSV, ...).
struct FormatError : InputError {
  using InputError::InputError;
};

// A checkpoint or config that is well-formed but does not fit the model:
// missing/unexpected/mis-shaped tensors, bad config fields.
struct ModelError : InputError {
  using InputError::InputError;
};

namespace detail {
[[noreturn]] inline void check_failed(const char* expr, const char* file, int line,
                                      const std::string& msg) {
  std::ostringstream os;
  os << file << ":" << line << ": check failed: " << expr;
  if (!msg.empty()) os << ": " << msg;
  throw Error(os.str());
}
}  // namespace detail

}  // namespace tb

// Invariant check that reports file and line; `msg` is streamed only on failure.
#define TB_CHECK(cond, ...)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::ostringstream tb_check_os_;                                                  \
      tb_check_os_ << "" __VA_ARGS__;                                                   \
      ::tb::detail::check_failed(#cond, __FILE__, __LINE__, tb_check_os_.str());        \
    }                                                                                   \
  } while (0)
