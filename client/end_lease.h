#pragma once
// Ending a transfer lease from the data plane's side (DataPlane and AttachedPool).

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kvwarden/client.h"

namespace kvwarden {
namespace client {

// EndTransfer, with the daemon's NOT_FOUND (the lease already ended: expired, or its
// worker lease lapsed) turned into ABORTED: what moved after that may not be the
// lease's epoch.
inline absl::Status EndLease(Client& client, uint64_t transfer_id) {
  absl::Status s = client.EndTransfer(transfer_id);
  if (absl::IsNotFound(s)) {
    return absl::AbortedError(absl::StrFormat(
        "transfer lease %d ended (expired or its worker lease lapsed) before the transfer "
        "finished; the pages may have changed meanwhile",
        transfer_id));
  }
  return s;
}

}  // namespace client
}  // namespace kvwarden
