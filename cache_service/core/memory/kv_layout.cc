#include "cache_service/core/memory/kv_layout.h"

#include "absl/strings/str_format.h"

namespace kvwarden {

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kFp16: return "fp16";
    case DType::kBf16: return "bf16";
    case DType::kFp32: return "fp32";
  }
  return "?";
}

std::string KvLayout::ToString() const {
  return absl::StrFormat("%u layers x %u kv heads x %u dim %s, %u tokens/page", num_layers,
                         num_kv_heads, head_dim, DTypeName(dtype), page_tokens);
}

}  // namespace kvwarden
