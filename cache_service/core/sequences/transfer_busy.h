#pragma once

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "cache_service/core/ids.h"

namespace kvwarden {

// The table never waits for a transfer lease (another client's) to end: an operation
// that would have to answers this status and changes nothing. The RPC layer parks the
// call (ParkedCalls) and tries again when a transfer ends; an unparked caller sees a
// retryable UNAVAILABLE.
inline constexpr char kTransferBusyPayload[] = "type.kvwarden.dev/transfer-busy";

inline absl::Status TransferBusyError(SequenceId id) {
  absl::Status s = absl::UnavailableError(
      absl::StrCat("sequence ", id, ": a transfer lease holds its pages; retry once it ends"));
  s.SetPayload(kTransferBusyPayload, absl::Cord());
  return s;
}

// A sequence being migrated takes no writes until the migration ends: its pages' bytes
// are what the target checks against their checksums.
inline absl::Status MigratingError(SequenceId id) {
  return absl::FailedPreconditionError(
      absl::StrCat("sequence ", id,
                   " is migrating to another node; it takes no writes until the migration ends"));
}

inline bool IsTransferBusy(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable &&
         s.GetPayload(kTransferBusyPayload).has_value();
}

}  // namespace kvwarden
