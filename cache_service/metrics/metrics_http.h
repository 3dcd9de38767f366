#pragma once

// The /metrics HTTP listener: one thread, "kvw-metrics", serves every connection with
// epoll and non-blocking sockets, so a client that sends half a request (or reads its
// answer slowly) holds only its own connection and never a scrape. prometheus-cpp's
// Exposer (civetweb, a thread per request) let 50 half-sent requests block scrapes.
//
// HTTP/1.1 as scrapers speak it: a GET (or HEAD) of /metrics, answered with the text
// exposition format and "Connection: close"; other paths 404, other methods 405, a
// request line past 8 KiB or headers not done within 5 s: closed. At most 64 connections;
// a new one closes the oldest. Trust: anyone who reaches the port reads the metrics
// (pool, tenant and method names, no tokens); bind it to loopback or a scrape network.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/fd/unique_fd.h"

namespace kvwarden {

class MetricsHttp {
 public:
  struct Options {
    std::string listen;  // HOST:PORT; port 0 picks one
    uint32_t max_connections = 64;
    absl::Duration request_deadline = absl::Seconds(5);
  };
  // `render` makes the body of one scrape; it runs on the listener's thread.
  static absl::StatusOr<std::unique_ptr<MetricsHttp>> Start(const Options& options,
                                                            std::function<std::string()> render);
  ~MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  uint16_t port() const { return port_; }

 private:
  class Loop;
  MetricsHttp() = default;
  UniqueFd listener_, wake_;
  uint16_t port_ = 0;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace kvwarden
