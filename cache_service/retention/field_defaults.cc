#include "cache_service/retention/field_defaults.h"

#include <cstdio>
#include <cstdlib>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "kvwarden/v1/options.pb.h"

namespace kvwarden {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

[[noreturn]] void Missing(const Message& message, const char* field, const char* what) {
  std::fprintf(stderr, "kvwarden: %s.%s %s\n", message.GetDescriptor()->full_name().c_str(), field,
               what);
  std::abort();
}

const FieldDescriptor& Field(const Message& message, const char* field,
                             FieldDescriptor::CppType type) {
  const FieldDescriptor* fd = message.GetDescriptor()->FindFieldByName(field);
  if (fd == nullptr) Missing(message, field, "is no field");
  if (fd->cpp_type() != type || fd->is_repeated()) Missing(message, field, "has another type");
  if (!fd->options().HasExtension(v1::field_default))
    Missing(message, field, "has no [(field_default)]");
  return *fd;
}

// Zero, or unset where presence is tracked (`optional`): the default applies.
bool TakesDefault(const Message& message, const FieldDescriptor& fd, bool zero) {
  if (fd.has_presence()) return !message.GetReflection()->HasField(message, &fd);
  return zero;
}

}  // namespace

uint32_t UintOrDefault(const Message& message, const char* field) {
  const FieldDescriptor& fd = Field(message, field, FieldDescriptor::CPPTYPE_UINT32);
  const uint32_t value = message.GetReflection()->GetUInt32(message, &fd);
  if (!TakesDefault(message, fd, value == 0)) return value;
  return static_cast<uint32_t>(fd.options().GetExtension(v1::field_default));
}

float FloatOrDefault(const Message& message, const char* field) {
  const FieldDescriptor& fd = Field(message, field, FieldDescriptor::CPPTYPE_FLOAT);
  const float value = message.GetReflection()->GetFloat(message, &fd);
  if (!TakesDefault(message, fd, value == 0)) return value;
  return static_cast<float>(fd.options().GetExtension(v1::field_default));
}

}  // namespace kvwarden
