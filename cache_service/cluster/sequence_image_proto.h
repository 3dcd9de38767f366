#pragma once

// SequenceImage <-> kvwarden.v1.SequenceImage (peer.proto). The wire form names the
// tenant, not its per-node id; reading one checks only its form (CheckImage in
// SequenceTable::Adopt checks it against the pool).

#include "absl/status/statusor.h"
#include "cache_service/core/sequences/sequence_image.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "kvwarden/v1/peer.pb.h"

namespace kvwarden {

absl::Status ImageToProto(const SequenceImage& in, const TenantLedger& ledger,
                          v1::SequenceImage* out);
absl::StatusOr<SequenceImage> ImageFromProto(const v1::SequenceImage& in);

}  // namespace kvwarden
