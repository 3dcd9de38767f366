#include "cache_service/core/memory/page_pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwarden {

absl::StatusOr<std::unique_ptr<PagePool>> PagePool::Create(PagePoolOptions options) {
  if (options.chunk_pages == 0 || options.num_chunks == 0) {
    return absl::InvalidArgumentError("pool needs at least one chunk of at least one page");
  }
  if (options.device == nullptr) options.device = CpuPoolDevice();
  if (!options.chunk_factory) {
    const std::string pool_name = options.name;
    std::shared_ptr<PoolDevice> device = options.device;
    options.chunk_factory = [pool_name, device](size_t bytes, size_t index) {
      return device->NewChunk(absl::StrCat("kvwarden:", pool_name, ":", index), bytes);
    };
  }
  std::unique_ptr<PagePool> pool(new PagePool(std::move(options)));
  absl::MutexLock lock(&pool->mu_);
  pool->chunks_.resize(pool->options_.num_chunks);
  pool->pages_.resize(pool->capacity_pages());
  for (uint32_t c = 0; c < pool->options_.num_chunks; ++c) {
    Chunk& chunk = pool->chunks_[c];
    if (pool->options_.preallocate) {
      if (absl::Status s = pool->MakeChunkLocked(c); !s.ok()) return s;
    }
    chunk.free_slots.reserve(pool->options_.chunk_pages);
    // Hand out low indices first: easier to read in dumps.
    for (uint32_t i = pool->options_.chunk_pages; i > 0; --i) chunk.free_slots.push_back(i - 1);
  }
  for (uint32_t c = pool->options_.num_chunks; c > 0; --c) pool->unowned_chunks_.push_back(c - 1);
  pool->free_pages_ = pool->capacity_pages();
  return pool;
}

PagePool::PagePool(PagePoolOptions options)
    : options_(std::move(options)), page_bytes_(options_.layout.page_bytes()) {}

absl::Status PagePool::MakeChunkLocked(uint32_t c) {
  auto memory = options_.chunk_factory(chunk_bytes(), c);
  if (!memory.ok()) {
    return absl::Status(memory.status().code(),
                        absl::StrCat("pool '", name(), "' chunk ", c, ": ", memory.status().message()));
  }
  chunks_[c].memory = *std::move(memory);
  return absl::OkStatus();
}

void PagePool::RemoveOpen(TenantChunks& t, std::vector<Chunk>& chunks, uint32_t c) {
  const int32_t at = chunks[c].open_index;
  const uint32_t last = t.open_chunks.back();
  t.open_chunks[at] = last;
  chunks[last].open_index = at;
  t.open_chunks.pop_back();
  chunks[c].open_index = -1;
}

uint64_t PagePool::FreePagesLocked() const { return free_pages_; }

uint64_t PagePool::ClaimableChunksLocked(TenantId tenant) const {
  if (bound_chunks_ == 0) return unowned_chunks_.size();
  uint64_t n = 0;
  for (uint32_t c : unowned_chunks_) n += chunks_[c].ClaimableBy(tenant);
  return n;
}

absl::StatusOr<uint32_t> PagePool::ClaimChunkLocked(TenantId tenant) {
  // The most recently returned chunk this tenant may claim (usually the last one).
  size_t at = unowned_chunks_.size();
  while (at > 0 && !chunks_[unowned_chunks_[at - 1]].ClaimableBy(tenant)) --at;
  if (at == 0) {
    // Only the caller's own numbers: pool-wide free pages would show other tenants' usage.
    return absl::ResourceExhaustedError(absl::StrFormat(
        "pool '%s' is full: no free chunk of %u pages for this tenant", name(), options_.chunk_pages));
  }
  const uint32_t c = unowned_chunks_[at - 1];
  Chunk& chunk = chunks_[c];
  if (chunk.memory == nullptr) {
    // First use: fresh memory, nobody's bytes. Made under the pool lock, once per chunk
    // for the pool's lifetime.
    if (absl::Status s = MakeChunkLocked(c); !s.ok()) return s;
  } else if (chunk.last_owner != kNoTenant && chunk.last_owner != tenant) {
    // Never hand one tenant's bytes (or a handle to them) to another.
    if (absl::Status s = chunk.memory->Renew(); !s.ok()) return s;
    ++chunk.generation;
  }
  unowned_chunks_.erase(unowned_chunks_.begin() + static_cast<ptrdiff_t>(at - 1));
  chunk.owner = tenant;
  chunk.last_owner = tenant;
  TenantChunks& t = tenants_[tenant];
  chunk.open_index = static_cast<int32_t>(t.open_chunks.size());
  t.open_chunks.push_back(c);
  ++t.chunks;
  t.free_pages += options_.chunk_pages;
  return c;
}

absl::Status PagePool::Allocate(TenantId tenant, uint32_t n, std::vector<PageId>* out) {
  if (n == 0) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  // Check first so a refusal changes nothing.
  uint64_t available = ClaimableChunksLocked(tenant) * options_.chunk_pages;
  if (auto it = tenants_.find(tenant); it != tenants_.end()) available += it->second.free_pages;
  if (available < n) {
    // Only the caller's own numbers (see ClaimChunkLocked).
    const auto own = tenants_.find(tenant);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "pool '%s' is full: %u pages asked, none left for this tenant beyond the %d pages it holds here",
        name(), n, own == tenants_.end() ? 0 : own->second.pages));
  }
  const size_t first = out->size();
  out->reserve(first + n);
  for (uint32_t i = 0; i < n; ++i) {
    TenantChunks* t = &tenants_[tenant];
    uint32_t c;
    if (t->open_chunks.empty()) {
      absl::StatusOr<uint32_t> claimed = ClaimChunkLocked(tenant);
      if (!claimed.ok()) {  // a chunk that could not be made or renewed: undo this call's pages
        FreedPages undone;
        for (size_t j = first; j < out->size(); ++j) {
          pages_[(*out)[j]].refs = 0;
          FreePageLocked((*out)[j], &undone);
        }
        out->resize(first);
        return claimed.status();
      }
      c = *claimed;
      t = &tenants_[tenant];
    } else {
      c = t->open_chunks.back();
    }
    Chunk& chunk = chunks_[c];
    const uint32_t slot = chunk.free_slots.back();
    chunk.free_slots.pop_back();
    if (chunk.free_slots.empty()) RemoveOpen(*t, chunks_, c);
    const PageId page = c * options_.chunk_pages + slot;
    pages_[page].refs = 1;
    --free_pages_;
    ++t->pages;
    --t->free_pages;
    out->push_back(page);
  }
  return absl::OkStatus();
}

void PagePool::FreePageLocked(PageId page, FreedPages* freed) {
  const uint32_t c = page / options_.chunk_pages;
  Chunk& chunk = chunks_[c];
  const TenantId owner = chunk.owner;
  TenantChunks& t = tenants_[owner];
  chunk.free_slots.push_back(page % options_.chunk_pages);
  ++free_pages_;
  --t.pages;
  ++t.free_pages;
  if (freed->empty() || freed->back().first != owner) freed->emplace_back(owner, 0);
  ++freed->back().second;
  if (chunk.free_slots.size() == options_.chunk_pages) {
    // Empty chunk: back to the pool, renewed lazily when another tenant claims it.
    if (chunk.open_index >= 0) RemoveOpen(t, chunks_, c);
    chunk.owner = kNoTenant;
    --t.chunks;
    t.free_pages -= options_.chunk_pages;
    unowned_chunks_.push_back(c);
    // The tenant's (now empty) entry stays: erasing and re-inserting it would put a hash
    // map update on every alloc/free cycle of a tenant with one chunk.
  } else if (chunk.open_index < 0) {
    chunk.open_index = static_cast<int32_t>(t.open_chunks.size());
    t.open_chunks.push_back(c);
  }
}

void PagePool::ReportFreed(const FreedPages& freed) const {
  if (!options_.on_pages_freed) return;
  for (const auto& [tenant, n] : freed) options_.on_pages_freed(tenant, n, page_bytes_);
}

void PagePool::Ref(absl::Span<const PageId> pages) {
  absl::MutexLock lock(&mu_);
  for (PageId p : pages) ++pages_[p].refs;
}

uint64_t PagePool::Unref(absl::Span<const PageId> pages) {
  FreedPages freed;
  uint64_t n = 0;
  {
    absl::MutexLock lock(&mu_);
    for (PageId p : pages) {
      PageMeta& m = pages_[p];
      if (--m.refs == 0 && m.pins == 0) {
        FreePageLocked(p, &freed);
        ++n;
      }
    }
  }
  ReportFreed(freed);
  return n;
}

void PagePool::Pin(absl::Span<const PageId> pages) {
  absl::MutexLock lock(&mu_);
  for (PageId p : pages) ++pages_[p].pins;
}

void PagePool::Unpin(absl::Span<const PageId> pages) {
  FreedPages freed;
  {
    absl::MutexLock lock(&mu_);
    for (PageId p : pages) {
      PageMeta& m = pages_[p];
      if (--m.pins == 0 && m.refs == 0) FreePageLocked(p, &freed);
    }
  }
  ReportFreed(freed);
}

uint64_t PagePool::used_pages() const {
  absl::MutexLock lock(&mu_);
  return capacity_pages() - FreePagesLocked();
}

uint32_t PagePool::CountShared(absl::Span<const PageId> pages) const {
  absl::MutexLock lock(&mu_);
  uint32_t n = 0;
  for (PageId p : pages) n += pages_[p].refs > 1;
  return n;
}

uint32_t PagePool::RefCount(PageId page) const {
  absl::MutexLock lock(&mu_);
  return pages_[page].refs;
}

TenantId PagePool::OwnerOf(PageId page) const {
  absl::MutexLock lock(&mu_);
  return chunks_[page / options_.chunk_pages].owner;
}

absl::StatusOr<std::vector<PagePool::ChunkShare>> PagePool::ShareTenantChunks(
    TenantId tenant, bool read_only, const absl::flat_hash_map<uint32_t, uint64_t>& known) {
  std::vector<ChunkShare> out;
  // Under the lock: Renew (at a claim) swaps a chunk's fd.
  absl::MutexLock lock(&mu_);
  for (uint32_t c = 0; c < chunks_.size(); ++c) {
    Chunk& chunk = chunks_[c];
    if (chunk.owner != tenant) continue;
    if (auto it = known.find(c); it != known.end() && it->second == chunk.generation) continue;
    ChunkShare share{c, chunk.generation, -1, chunk.memory->ipc_handle()};
    if (chunk.memory->fd() >= 0) {
      // Read-only: reopened through /proc, a new open file of its own access mode (a dup
      // would carry the daemon's read-write mode). Read-write: a dup, since memfd chunks
      // are mode 0400 so that no read-only holder can reopen them for writing.
      const std::string path = absl::StrCat("/proc/self/fd/", chunk.memory->fd());
      share.fd = read_only ? open(path.c_str(), O_RDONLY | O_CLOEXEC)
                           : fcntl(chunk.memory->fd(), F_DUPFD_CLOEXEC, 0);
      if (share.fd < 0) {
        const int err = errno;
        for (ChunkShare& s : out) close(s.fd);
        return absl::InternalError(absl::StrCat(read_only ? "reopen " : "dup ", path, ": ",
                                                std::strerror(err)));
      }
    }
    if (!share.ipc_handle.empty() && !chunk.memory->RenewRevokesSharing() &&
        chunk.bound_to != tenant) {
      chunk.bound_to = tenant;  // owned by `tenant` now, so bound to nobody else before
      ++bound_chunks_;
    }
    out.push_back(std::move(share));
  }
  return out;
}

std::pair<uint64_t, TenantId> PagePool::ChunkState(uint32_t chunk) const {
  absl::MutexLock lock(&mu_);
  return {chunks_[chunk].generation, chunks_[chunk].owner};
}

PagePoolStats PagePool::Stats() const {
  absl::MutexLock lock(&mu_);
  PagePoolStats s;
  s.capacity_pages = capacity_pages();
  s.used_pages = capacity_pages() - FreePagesLocked();
  for (const PageMeta& m : pages_) {
    if (m.refs > 1) ++s.shared_pages;
    if (m.pins > 0) ++s.pinned_pages;
    if (m.pins > 0 && m.refs == 0) ++s.orphan_pinned_pages;
  }
  s.chunks_total = options_.num_chunks;
  s.chunks_unowned = static_cast<uint32_t>(unowned_chunks_.size());
  s.chunks_bound = bound_chunks_;
  for (const auto& [tenant, t] : tenants_) {
    if (t.chunks > 0) s.tenants.push_back({tenant, t.chunks, t.pages});
  }
  std::sort(s.tenants.begin(), s.tenants.end(),
            [](const PoolTenantStats& a, const PoolTenantStats& b) { return a.tenant < b.tenant; });
  return s;
}

absl::Status PagePool::CheckInvariants() const {
  absl::MutexLock lock(&mu_);
  const uint32_t cp = options_.chunk_pages;
  std::vector<bool> is_free(pages_.size(), false);
  absl::flat_hash_map<TenantId, TenantChunks> recount;
  uint32_t unowned = 0;
  for (uint32_t c = 0; c < chunks_.size(); ++c) {
    const Chunk& chunk = chunks_[c];
    for (uint32_t slot : chunk.free_slots) {
      if (slot >= cp) return absl::InternalError(absl::StrCat("chunk ", c, ": bad free slot"));
      const PageId p = c * cp + slot;
      if (is_free[p]) return absl::InternalError(absl::StrCat("page ", p, " freed twice"));
      is_free[p] = true;
    }
    if (chunk.owner == kNoTenant) {
      ++unowned;
      if (chunk.free_slots.size() != cp) {
        return absl::InternalError(absl::StrCat("unowned chunk ", c, " has pages in use"));
      }
      continue;
    }
    TenantChunks& t = recount[chunk.owner];
    ++t.chunks;
    t.pages += cp - chunk.free_slots.size();
    t.free_pages += chunk.free_slots.size();
    const bool open = !chunk.free_slots.empty();
    if (open != (chunk.open_index >= 0)) {
      return absl::InternalError(absl::StrCat("chunk ", c, " open-list membership wrong"));
    }
  }
  if (unowned != unowned_chunks_.size()) {
    return absl::InternalError("unowned chunk list out of step");
  }
  uint32_t bound = 0;
  for (const Chunk& c : chunks_) {
    if (c.bound_to == kNoTenant) continue;
    ++bound;
    if (c.owner != kNoTenant && c.owner != c.bound_to) {
      return absl::InternalError(
          absl::StrCat("a chunk bound to tenant ", c.bound_to, " is owned by ", c.owner));
    }
  }
  if (bound != bound_chunks_) return absl::InternalError("bound chunk count out of step");
  uint64_t free_recount = 0;
  for (const Chunk& c : chunks_) free_recount += c.free_slots.size();
  if (free_recount != free_pages_) {
    return absl::InternalError(absl::StrFormat("free page count %d, free lists hold %d", free_pages_, free_recount));
  }
  for (PageId p = 0; p < pages_.size(); ++p) {
    const bool in_use = pages_[p].refs > 0 || pages_[p].pins > 0;
    if (in_use == is_free[p]) {
      return absl::InternalError(absl::StrFormat("page %u: refs=%u pins=%u but %s", p,
                                                 pages_[p].refs, pages_[p].pins,
                                                 is_free[p] ? "on a free list" : "not free"));
    }
  }
  for (const auto& [tenant, t] : recount) {
    auto it = tenants_.find(tenant);
    if (it == tenants_.end()) return absl::InternalError("tenant chunk table out of step");
  }
  for (const auto& [tenant, t] : tenants_) {
    if (t.chunks == 0 && t.pages == 0 && t.open_chunks.empty()) continue;
    auto it = recount.find(tenant);
    if (it == recount.end() || it->second.chunks != t.chunks || it->second.pages != t.pages ||
        it->second.free_pages != t.free_pages) {
      return absl::InternalError(absl::StrCat("tenant ", tenant, " page count out of step"));
    }
    for (uint32_t c : t.open_chunks) {
      if (chunks_[c].owner != tenant) {
        return absl::InternalError(absl::StrCat("open chunk ", c, " not owned by ", tenant));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvwarden
