#include "common/cluster/entry_json.h"

#include "google/protobuf/util/json_util.h"

namespace kvwarden {

bool ParseEntry(absl::string_view json, google::protobuf::Message* out) {
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;
  return google::protobuf::util::JsonStringToMessage(std::string(json), out, parse).ok();
}

std::string EntryJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(m, &json, print);
  return json;
}

}  // namespace kvwarden
