#pragma once

// kvwctl's JSON: a proto message with its field names, every field present, and 64-bit
// integers as JSON numbers (protobuf's own JSON mapping writes them as strings, which
// scripts then have to convert). Enums print by name, bytes as base64.

#include <string>
#include <string_view>

#include "google/protobuf/message.h"

namespace kvwarden::kvwctl {

// `pretty`: indented over several lines; else one line (for streams of objects).
std::string ToJson(const google::protobuf::Message& m, bool pretty);
// `s` as a JSON string, quotes included.
std::string JsonString(std::string_view s);

}  // namespace kvwarden::kvwctl
