#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache_service/core/memory/page_pool.h"

namespace kvwarden {

// The daemon's pools by name. Filled once at start, then read-only (thread-safe).
class PoolSet {
 public:
  void Add(std::unique_ptr<PagePool> pool) {
    raw_.push_back(pool.get());
    pools_.push_back(std::move(pool));
  }
  absl::StatusOr<PagePool*> Find(const std::string& name) const {
    for (PagePool* p : raw_) {
      if (p->name() == name) return p;
    }
    return absl::NotFoundError(absl::StrCat("pool '", name, "' not found"));
  }
  const std::vector<PagePool*>& all() const { return raw_; }

 private:
  std::vector<std::unique_ptr<PagePool>> pools_;
  std::vector<PagePool*> raw_;
};

}  // namespace kvwarden
