#include "cache_service/core/sequences/parked_calls.h"

#include <pthread.h>

#include <utility>

#include "cache_service/core/sequences/transfer_busy.h"

namespace kvwarden {
namespace {

// How often parked calls are checked for cancellation and deadlines.
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);

absl::Status ShuttingDown() { return absl::UnavailableError("kvwardend is shutting down"); }

}  // namespace

ParkedCalls::ParkedCalls(size_t max_parked) : max_parked_(max_parked) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvw-parked");
    Loop();
  });
}

ParkedCalls::~ParkedCalls() { Shutdown(); }

void ParkedCalls::Run(Call call) {
  absl::Status s = call.attempt();
  if (!IsTransferBusy(s)) {
    call.finish(std::move(s));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      s = ShuttingDown();
    } else if (parked_.size() + in_sweep_ < max_parked_ &&
               by_tenant_[call.tenant] < per_tenant_) {
      ++by_tenant_[call.tenant];
      parked_.push_back(std::move(call));
      // The transfer may have ended between the attempt and now: try once more.
      woken_ = true;
      return;
    }
  }
  call.finish(std::move(s));
}

void ParkedCalls::SetTenantShare(size_t per_tenant) {
  absl::MutexLock lock(&mu_);
  per_tenant_ = per_tenant;
}

void ParkedCalls::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

void ParkedCalls::Shutdown() {
  std::vector<Call> calls;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    calls = std::move(parked_);
    parked_.clear();
    by_tenant_.clear();
  }
  for (Call& c : calls) c.finish(ShuttingDown());
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

size_t ParkedCalls::parked() const {
  absl::MutexLock lock(&mu_);
  return parked_.size() + in_sweep_;
}

void ParkedCalls::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return woken_ || stopping_; };
    if (parked_.empty()) {
      // Nothing to poll: sleep until a call is parked or shutdown.
      mu_.Await(absl::Condition(&ready));
    } else {
      mu_.AwaitWithTimeout(absl::Condition(&ready), kPollInterval);
    }
    if (stopping_) break;
    const bool retry = woken_;
    woken_ = false;
    if (parked_.empty()) continue;
    std::vector<Call> calls = std::move(parked_);
    parked_.clear();
    in_sweep_ = calls.size();
    mu_.Unlock();
    std::vector<Call> still = Sweep(std::move(calls), retry);
    mu_.Lock();
    in_sweep_ = 0;
    if (stopping_) {
      by_tenant_.clear();
      mu_.Unlock();
      for (Call& c : still) c.finish(ShuttingDown());
      mu_.Lock();
      break;
    }
    for (Call& c : still) parked_.push_back(std::move(c));
  }
}

std::vector<ParkedCalls::Call> ParkedCalls::Sweep(std::vector<Call> calls, bool retry) {
  std::vector<Call> still;
  const absl::Time now = absl::Now();
  // Uncounted before it finishes: whoever its finish wakes sees parked() without it.
  auto finish = [this](Call& c, absl::Status s) {
    {
      absl::MutexLock lock(&mu_);
      --in_sweep_;
      if (auto it = by_tenant_.find(c.tenant); it != by_tenant_.end() && --it->second == 0) {
        by_tenant_.erase(it);
      }
    }
    c.finish(std::move(s));
  };
  for (Call& c : calls) {
    if (c.cancelled && c.cancelled()) {
      finish(c, absl::CancelledError("the caller cancelled the call while it waited for a transfer lease"));
      continue;
    }
    if (now >= c.deadline) {
      finish(c, absl::DeadlineExceededError("deadline passed while waiting for a transfer lease to end"));
      continue;
    }
    if (retry) {
      absl::Status s = c.attempt();
      if (!IsTransferBusy(s)) {
        finish(c, std::move(s));
        continue;
      }
    }
    still.push_back(std::move(c));
  }
  return still;
}

}  // namespace kvwarden
