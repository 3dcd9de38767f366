// Linked into every fuzzer: process set-up before the first input.

#include "google/protobuf/stubs/logging.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs a line per string field with invalid UTF-8; fuzz inputs are full of them.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}
