#pragma once

// A checked, versioned byte record: a 4-byte tag naming what it holds, a version, the
// fields (little-endian, fixed width) and a CRC-32C of everything before it. What a
// daemon writes out to read back later (a policy's per-sequence state that moves to
// another daemon or outlives a restart): a reader accepts only a whole record of the
// tag and version it expects, so a torn, corrupt or foreign one is refused, never read.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvwarden {

uint32_t Crc32c(absl::string_view bytes, uint32_t crc = 0);

class RecordWriter {
 public:
  // `tag` is 4 characters.
  RecordWriter(absl::string_view tag, uint32_t version);
  void U32(uint32_t v);
  void U64(uint64_t v);
  void U32s(const std::vector<uint32_t>& v);  // its length (u64), then the values
  // The record, checksum appended; the writer is spent.
  std::string Finish() &&;

 private:
  std::string out_;
};

// Reads fields in the order they were written. Every read past the end fails, and the
// first failure sticks: check Done() (or any read's result) before using the values.
class RecordReader {
 public:
  // DATA_LOSS unless `bytes` is one whole record of `tag` and `version` whose checksum
  // holds (what: the record's subject, for the message).
  static absl::StatusOr<RecordReader> Open(absl::string_view bytes, absl::string_view tag, uint32_t version,
                                           absl::string_view what);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  // At most `max` values (a length beyond what is left fails without allocating).
  bool U32s(std::vector<uint32_t>* v, uint64_t max);
  // OK when every read succeeded and the fields were all read; DATA_LOSS otherwise.
  absl::Status Done() const;

 private:
  RecordReader(absl::string_view fields, std::string what) : rest_(fields), what_(std::move(what)) {}
  bool Take(size_t n, const char** p);

  absl::string_view rest_;
  std::string what_;
  bool failed_ = false;
};

}  // namespace kvwarden
