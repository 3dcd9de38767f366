#pragma once

// One named thread that runs jobs in order, for the cluster's work that waits on another
// server (etcd, another daemon) so that no gRPC thread does. Bounded: Post refuses past
// kMaxPending waiting jobs. Thread-safe.

#include <pthread.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace kvwarden {

// One named thread serving jobs in order. A job gets `cancelled` when the queue shuts
// down before it ran.
class SerialWorker {
 public:
  static constexpr size_t kMaxPending = 64;
  explicit SerialWorker(const char* name)
      : thread_([this, name] {
          pthread_setname_np(pthread_self(), name);
          Run();
        }) {}
  // Jobs still waiting run with `cancelled` set; the one running finishes first.
  ~SerialWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // False (the job dropped, not run) when kMaxPending jobs wait already.
  bool Post(std::function<void(bool cancelled)> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (jobs_.size() >= kMaxPending) return false;
      if (!stop_) {
        jobs_.push_back(std::move(job));
        job = nullptr;
      }
    }
    if (job) {
      job(true);
    } else {
      cv_.notify_one();
    }
    return true;
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      std::function<void(bool)> job = std::move(jobs_.front());
      jobs_.pop_front();
      const bool cancelled = stop_;
      lock.unlock();
      job(cancelled);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void(bool)>> jobs_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest exists
};

}  // namespace kvwarden
