#pragma once

// The daemon-served data path's wire format (kvwardend's data port; see
// cache_service/dataplane/tcp_data_server.h). Over a network the daemon never lets a
// peer address its memory: a worker names a transfer grant (id + the secret that came
// with it over gRPC), a layer of the grant and a page range, and the daemon checks them
// and copies the pages itself.
//
// A connection carries requests in order; every request gets one response, in order.
//   request:  RequestHeader, then payload_bytes of pages for a write
//   response: ResponseHeader, message_bytes of UTF-8 error text, then payload_bytes of
//             pages for a read that succeeded
// A write's payload is always sent whole; a refused write's payload is read and dropped
// (the connection stays usable). A read that fails after its header promised bytes
// closes the connection. Little-endian, fixed sizes; no field is trusted.

#include <array>
#include <cstdint>
#include <cstring>

namespace kvwarden::net {

inline constexpr uint32_t kDataRequestMagic = 0x4457564b;   // "KVWD"
inline constexpr uint32_t kDataResponseMagic = 0x5257564b;  // "KVWR"
inline constexpr uint16_t kDataVersion = 1;
inline constexpr size_t kDataSecretBytes = 16;
using DataSecret = std::array<uint8_t, kDataSecretBytes>;

enum class DataOp : uint16_t { kRead = 1, kWrite = 2 };

#pragma pack(push, 1)
struct DataRequestHeader {
  uint32_t magic = kDataRequestMagic;
  uint16_t version = kDataVersion;
  uint16_t op = 0;           // DataOp
  uint64_t transfer_id = 0;  // BeginTransfer's transfer_id
  DataSecret secret{};       // BeginTransfer's data_secret
  uint32_t layer_index = 0;  // 0-based within the grant's layers
  uint32_t first_page = 0;   // 0-based within the grant's pages of that layer
  uint32_t page_count = 0;
  uint32_t reserved = 0;
  uint64_t payload_bytes = 0;  // writes: page_count * page_bytes; reads: 0
};
struct DataResponseHeader {
  uint32_t magic = kDataResponseMagic;
  uint32_t code = 0;           // absl::StatusCode / gRPC code; 0 = OK
  uint32_t message_bytes = 0;  // at most kMaxDataMessageBytes
  uint32_t reserved = 0;
  uint64_t payload_bytes = 0;  // reads that succeeded: page_count * page_bytes
};
#pragma pack(pop)
static_assert(sizeof(DataRequestHeader) == 56);
static_assert(sizeof(DataResponseHeader) == 24);

inline constexpr uint32_t kMaxDataMessageBytes = 1024;

// Constant-time comparison: a wrong secret must not tell how much of it was right.
inline bool SecretsEqual(const DataSecret& a, const DataSecret& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < kDataSecretBytes; ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

}  // namespace kvwarden::net
