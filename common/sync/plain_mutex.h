#pragma once

// A mutex for per-operation locks on data paths: std::mutex with Abseil's thread-safety
// annotations. Debian builds Abseil without NDEBUG, so every absl::Mutex lock also runs
// its deadlock detector (~30 ns a lock+unlock here, about 4% of a 64 KiB shared-memory
// get). kvwardend turns the detector off process-wide; a client library must not change
// its host's settings, so its hot locks use this instead. No condition variables.

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace kvwarden {

class ABSL_LOCKABLE PlainMutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { m_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { m_.unlock(); }

 private:
  std::mutex m_;
};

class ABSL_SCOPED_LOCKABLE PlainMutexLock {
 public:
  explicit PlainMutexLock(PlainMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~PlainMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  PlainMutexLock(const PlainMutexLock&) = delete;
  PlainMutexLock& operator=(const PlainMutexLock&) = delete;

 private:
  PlainMutex* const mu_;
};

}  // namespace kvwarden
