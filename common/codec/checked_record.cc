#include "common/codec/checked_record.h"

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvwarden {
namespace {

// Castagnoli polynomial, reflected.
constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

constexpr size_t kHeader = 8;   // tag, version
constexpr size_t kTrailer = 4;  // crc

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}

uint32_t Crc32cTable(const uint8_t* p, size_t n, uint32_t crc) {
  for (size_t i = 0; i < n; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// SSE4.2's crc32 instruction computes this very polynomial, 8 bytes at a time: pages
// checked on a migration go at memory speed, not the table's ~0.5 GB/s.
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
  }
  return Crc32cTable(p, n, static_cast<uint32_t>(c));
}
#endif

}  // namespace

uint32_t Crc32c(absl::string_view bytes, uint32_t crc) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) return ~Crc32cSse42(p, bytes.size(), ~crc);
#endif
  return ~Crc32cTable(p, bytes.size(), ~crc);
}

RecordWriter::RecordWriter(absl::string_view tag, uint32_t version) {
  out_.append(tag.data(), std::min<size_t>(tag.size(), 4));
  out_.resize(4, ' ');
  PutLe(&out_, version, 4);
}

void RecordWriter::U32(uint32_t v) { PutLe(&out_, v, 4); }
void RecordWriter::U64(uint64_t v) { PutLe(&out_, v, 8); }
void RecordWriter::U32s(const std::vector<uint32_t>& v) {
  U64(v.size());
  out_.reserve(out_.size() + v.size() * 4 + kTrailer);
  for (uint32_t x : v) U32(x);
}

std::string RecordWriter::Finish() && {
  PutLe(&out_, Crc32c(out_), 4);
  return std::move(out_);
}

absl::StatusOr<RecordReader> RecordReader::Open(absl::string_view bytes, absl::string_view tag,
                                                uint32_t version, absl::string_view what) {
  if (bytes.size() < kHeader + kTrailer) {
    return absl::DataLossError(
        absl::StrCat(what, ": ", bytes.size(), " bytes are not a whole record"));
  }
  const uint32_t stored = static_cast<uint32_t>(GetLe(bytes.data() + bytes.size() - kTrailer, 4));
  if (Crc32c(bytes.substr(0, bytes.size() - kTrailer)) != stored) {
    return absl::DataLossError(absl::StrCat(what, ": checksum mismatch (torn or corrupt)"));
  }
  if (bytes.substr(0, 4) != tag.substr(0, 4)) {
    return absl::DataLossError(absl::StrCat(what, ": not a '", tag, "' record"));
  }
  const uint32_t v = static_cast<uint32_t>(GetLe(bytes.data() + 4, 4));
  if (v != version) {
    return absl::DataLossError(
        absl::StrCat(what, ": version ", v, ", this build reads version ", version));
  }
  return RecordReader(bytes.substr(kHeader, bytes.size() - kHeader - kTrailer), std::string(what));
}

bool RecordReader::Take(size_t n, const char** p) {
  if (failed_ || rest_.size() < n) {
    failed_ = true;
    return false;
  }
  *p = rest_.data();
  rest_.remove_prefix(n);
  return true;
}

bool RecordReader::U32(uint32_t* v) {
  const char* p = nullptr;
  if (!Take(4, &p)) return false;
  *v = static_cast<uint32_t>(GetLe(p, 4));
  return true;
}

bool RecordReader::U64(uint64_t* v) {
  const char* p = nullptr;
  if (!Take(8, &p)) return false;
  *v = GetLe(p, 8);
  return true;
}

bool RecordReader::U32s(std::vector<uint32_t>* v, uint64_t max) {
  uint64_t n = 0;
  if (!U64(&n)) return false;
  if (n > max || n > rest_.size() / 4) {
    failed_ = true;
    return false;
  }
  v->resize(n);
  for (uint64_t i = 0; i < n; ++i) U32(&(*v)[i]);
  return !failed_;
}

absl::Status RecordReader::Done() const {
  if (failed_)
    return absl::DataLossError(absl::StrCat(what_, ": fields do not match the record's shape"));
  if (!rest_.empty()) {
    return absl::DataLossError(
        absl::StrCat(what_, ": ", rest_.size(), " bytes past the last field"));
  }
  return absl::OkStatus();
}

}  // namespace kvwarden
