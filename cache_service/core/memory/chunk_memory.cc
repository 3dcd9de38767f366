#include "cache_service/core/memory/chunk_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvwarden {
namespace {

absl::Status ErrnoStatus(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::StatusOr<int> NewSealedMemfd(const std::string& name, size_t bytes) {
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return ErrnoStatus("memfd_create");
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    absl::Status s = ErrnoStatus("ftruncate");
    close(fd);
    return s;
  }
  // The size never changes after this: workers may rely on it when they map the fd.
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  // Owner read-only: a read-only fd handed to a decode worker cannot be reopened
  // read-write through /proc/self/fd (the daemon's own fd and the read-write fds it
  // hands out are open already; they do not reopen). Root ignores modes.
  fchmod(fd, 0400);
  return fd;
}

class MemfdChunk final : public ChunkMemory {
 public:
  MemfdChunk(std::string name, int fd, uint8_t* data, size_t size)
      : name_(std::move(name)), fd_(fd), data_(data), size_(size) {}
  ~MemfdChunk() override {
    munmap(data_, size_);
    close(fd_);
  }
  MemfdChunk(const MemfdChunk&) = delete;
  MemfdChunk& operator=(const MemfdChunk&) = delete;

  uint8_t* data() const override { return data_; }
  size_t size() const override { return size_; }
  int fd() const override { return fd_; }

  absl::Status Renew() override {
    // A fresh memfd mapped over the same addresses: workers that were handed the old fd
    // keep their own (previous owner's) bytes and never see the next owner's.
    absl::StatusOr<int> fresh = NewSealedMemfd(name_, size_);
    if (!fresh.ok()) return fresh.status();
    void* p = mmap(data_, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, *fresh, 0);
    if (p == MAP_FAILED) {
      absl::Status s = ErrnoStatus("mmap(MAP_FIXED)");
      close(*fresh);
      return s;
    }
    close(fd_);
    fd_ = *fresh;
    return absl::OkStatus();
  }

 private:
  const std::string name_;
  int fd_;
  uint8_t* data_;
  size_t size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChunkMemory>> CreateMemfdChunk(const std::string& name,
                                                              size_t bytes) {
  absl::StatusOr<int> made = NewSealedMemfd(name, bytes);
  if (!made.ok()) return made.status();
  const int fd = *made;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    absl::Status s = ErrnoStatus("mmap");
    close(fd);
    return s;
  }
  return std::make_unique<MemfdChunk>(name, fd, static_cast<uint8_t*>(p), bytes);
}

}  // namespace kvwarden
