#include "cache_service/core/tenancy/tenant_ledger.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "cache_service/util/log.h"

namespace kvwarden {

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return absl::StrFormat("%d B", bytes);
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

namespace {

// The quota rule, one place for Charge and CouldCharge (0 = not limited by that unit).
bool OverPages(const TenantSpec& spec, const TenantUsage& u, uint64_t pages) {
  return spec.quota_pages > 0 && u.pages + pages > spec.quota_pages;
}
bool OverBytes(const TenantSpec& spec, const TenantUsage& u, uint64_t bytes) {
  return spec.quota_bytes > 0 && u.bytes + bytes > spec.quota_bytes;
}

}  // namespace

absl::Status TenantLimitReached(const TenantSpec& spec, const char* limit, uint32_t value,
                                const char* what) {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "tenant '%s' is at its limit %s = %u %s; release some first", spec.name, limit, value, what));
}

const char* TenantSourceName(TenantSource s) {
  return s == TenantSource::kCluster ? "cluster" : "config";
}

TenantLedger::TenantLedger(std::vector<TenantSpec> tenants)
    : specs_(std::move(tenants)), usage_(specs_.size()) {
  for (TenantId i = 0; i < usage_.size(); ++i) usage_[i].id = i;
}

std::optional<TenantId> TenantLedger::Find(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  for (TenantId i = 0; i < specs_.size(); ++i) {
    if (specs_[i].name == name && !specs_[i].removed) return i;
  }
  return std::nullopt;
}

TenantSpec TenantLedger::spec(TenantId id) const {
  absl::MutexLock lock(&mu_);
  return specs_[id];
}

std::string TenantLedger::name(TenantId id) const {
  absl::MutexLock lock(&mu_);
  return specs_[id].name;
}

uint32_t TenantLedger::weight(TenantId id) const {
  absl::MutexLock lock(&mu_);
  return specs_[id].weight;
}

TenantLimits TenantLedger::limits(TenantId id) const {
  absl::MutexLock lock(&mu_);
  return specs_[id].limits;
}

size_t TenantLedger::size() const {
  absl::MutexLock lock(&mu_);
  return specs_.size();
}

absl::StatusOr<TenantId> TenantLedger::Upsert(TenantSpec spec) {
  spec.source = TenantSource::kCluster;
  spec.removed = false;
  absl::MutexLock lock(&mu_);
  for (TenantId i = 0; i < specs_.size(); ++i) {
    if (specs_[i].name != spec.name) continue;
    if (specs_[i].source == TenantSource::kConfig) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "tenant '%s' is defined in this node's config, which wins over etcd", spec.name));
    }
    specs_[i] = std::move(spec);
    return i;
  }
  if (specs_.size() >= kMaxTenants) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("a daemon serves at most %d tenants over its life", kMaxTenants));
  }
  const TenantId id = static_cast<TenantId>(specs_.size());
  specs_.push_back(std::move(spec));
  usage_.emplace_back();
  usage_.back().id = id;
  return id;
}

void TenantLedger::MarkRemoved(TenantId id) {
  absl::MutexLock lock(&mu_);
  if (specs_[id].source == TenantSource::kCluster) specs_[id].removed = true;
}

absl::Status TenantLedger::Charge(TenantId id, uint64_t pages, uint64_t page_bytes) {
  const uint64_t bytes = pages * page_bytes;
  absl::MutexLock lock(&mu_);
  const TenantSpec& spec = specs_[id];
  TenantUsage& u = usage_[id];
  const bool over_pages = OverPages(spec, u, pages);
  const bool over_bytes = OverBytes(spec, u, bytes);
  if (over_pages || over_bytes) {
    ++u.quota_refusals;
    std::string quota =
        over_pages ? absl::StrFormat("%d pages", spec.quota_pages) : HumanBytes(spec.quota_bytes);
    // A tenant can repeat this at will: one line per tenant per 10 s, with the count held back.
    static LogThrottle* throttle = new LogThrottle(absl::Seconds(10));
    if (uint64_t held = 0; LogEnabled(LogLevel::kInfo) && throttle->Allow(id, &held)) {
      LogEvent(LogLevel::kInfo, "quota_refused")
          .Field("tenant", spec.name)
          .Field("asked_pages", pages)
          .Field("held_pages", u.pages)
          .Field("quota", quota)
          .Field("refusals_total", u.quota_refusals)
          .Field("not_logged_since_last", held);
    }
    return absl::ResourceExhaustedError(absl::StrFormat(
        "tenant '%s' quota exceeded: asked %d more pages (%s), holds %d pages (%s) of its "
        "quota of %s",
        spec.name, pages, HumanBytes(bytes), u.pages, HumanBytes(u.bytes), quota));
  }
  u.pages += pages;
  u.bytes += bytes;
  u.peak_pages = std::max(u.peak_pages, u.pages);
  return absl::OkStatus();
}

void TenantLedger::Refund(TenantId id, uint64_t pages, uint64_t page_bytes) {
  absl::MutexLock lock(&mu_);
  TenantUsage& u = usage_[id];
  u.pages -= pages;
  u.bytes -= pages * page_bytes;
}

bool TenantLedger::CouldCharge(TenantId id, uint64_t pages, uint64_t page_bytes) const {
  absl::MutexLock lock(&mu_);
  const TenantSpec& spec = specs_[id];
  const TenantUsage& u = usage_[id];
  return !OverPages(spec, u, pages) && !OverBytes(spec, u, pages * page_bytes);
}

absl::Status TenantLedger::OpenStream(TenantId id) {
  absl::MutexLock lock(&mu_);
  const TenantSpec& spec = specs_[id];
  TenantUsage& u = usage_[id];
  if (u.open_streams >= spec.limits.max_open_streams) {
    ++u.limit_refusals;
    return TenantLimitReached(spec, "max_open_streams", spec.limits.max_open_streams,
                              "open streams");
  }
  ++u.open_streams;
  return absl::OkStatus();
}

void TenantLedger::CloseStream(TenantId id) {
  absl::MutexLock lock(&mu_);
  --usage_[id].open_streams;
}

void TenantLedger::CountLimitRefusal(TenantId id) {
  absl::MutexLock lock(&mu_);
  ++usage_[id].limit_refusals;
}

TenantUsage TenantLedger::Usage(TenantId id) const {
  absl::MutexLock lock(&mu_);
  return usage_[id];
}

std::vector<TenantUsage> TenantLedger::AllUsage() const {
  absl::MutexLock lock(&mu_);
  return usage_;
}

}  // namespace kvwarden
