// LD_PRELOAD shim for the disk-full tests: the directory TB_FAULT_ENOSPC_PATH becomes a disk
// of TB_FAULT_ENOSPC_BYTES bytes (default 0): a write to a file under it fails with ENOSPC
// when the regular files under it (all processes' files: the sizes are read from the
// directory, so forked run children share the quota) would exceed that size. Other files
// (stdout, the terminal, files elsewhere) are untouched. Covers write, pwrite, pwrite64 and writev, the
// calls libstdc++, the runner's atomic writes and SQLite use. Built as libtb_enospc.so; only
// tests load it.
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>

namespace {

const char* prefix() {
  static const char* p = getenv("TB_FAULT_ENOSPC_PATH");
  return p;
}

bool under_prefix(int fd) {
  const char* pre = prefix();
  if (!pre || !*pre) return false;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  return strncmp(path, pre, strlen(pre)) == 0;
}

thread_local int64_t t_used = 0;
int add_size(const char*, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_F) t_used += st->st_size;
  return 0;
}

// Whether writing `bytes` more to `fd` would overfill the directory's quota.
bool must_fail(int fd, size_t bytes) {
  if (!under_prefix(fd)) return false;
  static const int64_t quota = [] {
    const char* s = getenv("TB_FAULT_ENOSPC_BYTES");
    return s ? static_cast<int64_t>(strtoll(s, nullptr, 10)) : int64_t{0};
  }();
  t_used = 0;
  nftw(prefix(), add_size, 16, FTW_PHYS);
  return t_used + static_cast<int64_t>(bytes) > quota;
}

template <class F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

ssize_t write(int fd, const void* buf, size_t count) {
  static auto next = real<ssize_t (*)(int, const void*, size_t)>("write");
  if (must_fail(fd, count)) {
    errno = ENOSPC;
    return -1;
  }
  return next(fd, buf, count);
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  static auto next = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  if (must_fail(fd, count)) {
    errno = ENOSPC;
    return -1;
  }
  return next(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  static auto next = real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  if (must_fail(fd, count)) {
    errno = ENOSPC;
    return -1;
  }
  return next(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  static auto next = real<ssize_t (*)(int, const struct iovec*, int)>("writev");
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  if (must_fail(fd, total)) {
    errno = ENOSPC;
    return -1;
  }
  return next(fd, iov, iovcnt);
}

}  // extern "C"
