#pragma once

// What a sequence carries to another daemon, beside its pages' bytes: everything the
// target needs to adopt it as it was (layout, policy, positions per head, epoch, the
// policy's state) and a checksum of every page, which the target checks before it
// accepts. The bytes themselves move under the source's migration transfer lease.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cache_service/core/ids.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/transfer_leases.h"

namespace kvwarden {

struct HeadImage {
  uint32_t live = 0;
  std::vector<uint32_t> positions;  // ascending; empty when slot i holds position i
  uint32_t evicted = 0;
};

struct SequenceImage {
  SequenceId id = 0;  // on the source
  TenantId tenant = kNoTenant;
  std::string pool;
  KvLayout layout;
  std::string policy_wire;  // RetentionPolicy::wire (empty: full)
  uint32_t max_tokens = 0;
  uint32_t num_tokens = 0;
  uint64_t epoch = 0;
  std::vector<HeadImage> heads;       // [layer * num_kv_heads + head]
  std::string retention_state;        // RetentionState::Encode(); empty without one
  std::vector<uint32_t> layer_pages;  // each layer's page table length
  std::vector<uint32_t> page_crc32c;  // [layer][page], layer after layer
};

// A migration under way on the source: the image and the transfer lease that pins its
// pages for the target to read on the TCP data path.
struct MigrationStart {
  SequenceImage image;
  TransferId transfer = 0;
  net::DataSecret secret{};
  absl::Time expires;
};

}  // namespace kvwarden
