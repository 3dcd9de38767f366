#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace kvwarden {

// One chunk of a pool's memory. A chunk belongs to one tenant at a time, so sharing
// it (memfd, CUDA IPC handle, UCX remote key) exposes only that tenant's bytes.
// Not thread-safe; the owning PagePool serialises Renew against page use.
class ChunkMemory {
 public:
  virtual ~ChunkMemory() = default;
  virtual uint8_t* data() const = 0;
  virtual size_t size() const = 0;
  // Before the chunk goes to another tenant: the next owner reads zeros and nothing
  // handed out for the previous owner (an fd, a mapping, a remote key) reaches the new
  // bytes. data() may change (the chunk is empty then).
  virtual absl::Status Renew() = 0;
  // A file descriptor mapping the chunk (memfd), or -1. Changes on Renew.
  virtual int fd() const { return -1; }
  // A CUDA IPC handle (cudaIpcMemHandle_t bytes) for a device chunk, or empty.
  virtual std::string ipc_handle() const { return {}; }
  // False when what was shared of this chunk (its ipc_handle) keeps reaching its memory
  // after Renew: a legacy CUDA IPC handle is a bearer token that cannot be revoked, and
  // freeing memory a peer still maps is undefined. The pool then never gives such a
  // chunk, once shared, to another tenant (PagePool::ShareTenantChunks).
  virtual bool RenewRevokesSharing() const { return true; }
  // A UCX remote key packed by the allocator (memory UCX allocated), or null.
  virtual const std::string* packed_rkey() const { return nullptr; }
};

using ChunkFactory =
    std::function<absl::StatusOr<std::unique_ptr<ChunkMemory>>(size_t bytes, size_t index)>;

// Host memory from memfd_create + mmap(MAP_SHARED): shareable with same-host workers by
// passing the fd. Pages are touched lazily, so an idle pool costs no RAM.
absl::StatusOr<std::unique_ptr<ChunkMemory>> CreateMemfdChunk(const std::string& name,
                                                              size_t bytes);

}  // namespace kvwarden
