#pragma once

// Policy parameters' defaults, read from the [(kvwarden.v1.field_default)] option of
// their field in proto/kvwarden/v1/policy.proto: the one place a default is written (the
// Python client reads the same option).

#include <cstdint>

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace kvwarden {

// `field` of `message` (a uint32 field), or its default when it is zero or, for an
// `optional` field, unset. A field without the option is a programming error: the
// process aborts naming it (policy_config_test walks every call).
uint32_t UintOrDefault(const google::protobuf::Message& message, const char* field);
// The same for a float field.
float FloatOrDefault(const google::protobuf::Message& message, const char* field);

}  // namespace kvwarden
