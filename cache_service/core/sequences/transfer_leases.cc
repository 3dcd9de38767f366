#include "cache_service/core/sequences/transfer_leases.h"

#include <sys/random.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cache_service/util/random_id.h"

namespace kvwarden {

void AppendPageRun(const PagePool& pool, PageId page, std::vector<PageRun>& runs) {
  const uint32_t chunk = pool.ChunkOf(page);
  const uint64_t offset = pool.OffsetInChunk(page);
  if (!runs.empty() && runs.back().chunk == chunk &&
      runs.back().offset + uint64_t{runs.back().pages} * pool.page_bytes() == offset) {
    ++runs.back().pages;
  } else {
    runs.push_back({chunk, offset, 1});
  }
}

absl::StatusOr<net::DataSecret> NewDataSecret() {
  // getrandom() of 16 bytes never returns short once the entropy pool is initialized.
  net::DataSecret secret;
  if (getrandom(secret.data(), secret.size(), 0) != static_cast<ssize_t>(secret.size())) {
    return absl::InternalError("getrandom failed: no transfer secret");
  }
  return secret;
}

namespace {

// Moves the record at `it` out of `records`, uncounting it from its tenant.
template <typename Records, typename Counts>
typename Records::mapped_type RemoveAt(Records& records, Counts& per_tenant,
                                       typename Records::iterator it) {
  typename Records::mapped_type r = std::move(it->second);
  records.erase(it);
  if (--per_tenant[r.info.tenant] == 0) per_tenant.erase(r.info.tenant);
  return r;
}

}  // namespace

uint32_t TransferLeases::CountOf(TenantId tenant) const {
  auto it = per_tenant_.find(tenant);
  return it == per_tenant_.end() ? 0 : it->second;
}

TransferId TransferLeases::NewId() const {
  TransferId id;
  do {
    id = RandomId();
  } while (records_.contains(id));
  return id;
}

void TransferLeases::Add(Record record) {
  ++per_tenant_[record.info.tenant];
  const TransferId id = record.info.id;
  records_.emplace(id, std::move(record));
}

absl::StatusOr<TransferLeases::Record> TransferLeases::Take(TransferId id, const Caller& caller) {
  auto it = records_.find(id);
  if (it == records_.end() || !caller.CanSee(it->second.info.tenant)) {
    return absl::NotFoundError(absl::StrCat("transfer ", id, " not found"));
  }
  return RemoveAt(records_, per_tenant_, it);
}

std::vector<TransferLeases::Record> TransferLeases::TakeWhere(
    const std::function<bool(const Record&)>& pred) {
  std::vector<Record> taken;
  for (auto it = records_.begin(); it != records_.end();) {
    if (pred(it->second)) {
      taken.push_back(RemoveAt(records_, per_tenant_, it++));
    } else {
      ++it;
    }
  }
  return taken;
}

absl::StatusOr<const TransferLeases::Record*> TransferLeases::Find(
    TransferId id, const net::DataSecret& secret) const {
  auto it = records_.find(id);
  if (it == records_.end() || !net::SecretsEqual(it->second.secret, secret)) {
    return absl::NotFoundError(absl::StrCat("transfer ", id, " not found (or a wrong secret)"));
  }
  return &it->second;
}

std::vector<TransferInfo> TransferLeases::List(std::optional<TenantId> tenant) const {
  std::vector<TransferInfo> out;
  for (const auto& [id, r] : records_) {
    if (!tenant || r.info.tenant == *tenant) out.push_back(r.info);
  }
  std::sort(out.begin(), out.end(),
            [](const TransferInfo& a, const TransferInfo& b) { return a.id < b.id; });
  return out;
}

}  // namespace kvwarden
