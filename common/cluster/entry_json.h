#pragma once

// The cluster's etcd entries (NodeInfo, HandleInfo, FleetTenant) are protos written as
// JSON: one reader for every place that reads them, one writer for those that write
// with the proto's field names.

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace kvwarden {

// Parses `json` into `out`, ignoring fields it does not know (an entry written by a
// newer daemon or kvwctl); false when it is not JSON of that message.
bool ParseEntry(absl::string_view json, google::protobuf::Message* out);
// `m` as JSON with the proto's field names (printing a proto cannot fail).
std::string EntryJson(const google::protobuf::Message& m);

}  // namespace kvwarden
