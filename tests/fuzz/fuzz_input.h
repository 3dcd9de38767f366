#pragma once

// Splits a fuzzer's bytes into records: [u8 tag][u16 little-endian length][payload].
// A truncated tail is one last record with whatever bytes remain.

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvwarden::fuzz {

class Records {
 public:
  Records(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

  // False when the input is used up.
  bool Next(uint8_t* tag, std::string* payload) {
    if (p_ >= end_) return false;
    *tag = *p_++;
    size_t len = 0;
    if (end_ - p_ >= 2) {
      len = size_t{p_[0]} | size_t{p_[1]} << 8;
      p_ += 2;
    }
    len = std::min<size_t>(len, static_cast<size_t>(end_ - p_));
    payload->assign(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return true;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// Writes one record (for seed corpora).
inline std::string Record(uint8_t tag, const std::string& payload) {
  std::string out(1, static_cast<char>(tag));
  out.push_back(static_cast<char>(payload.size() & 0xff));
  out.push_back(static_cast<char>(payload.size() >> 8));
  return out + payload;
}

}  // namespace kvwarden::fuzz
