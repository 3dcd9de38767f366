#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/page_view.h"

namespace kvwarden {

enum class DType { kFp16, kBf16, kFp32 };

inline uint32_t DTypeBytes(DType d) { return d == DType::kFp32 ? 4 : 2; }
const char* DTypeName(DType d);

// Shape of one model's KV cache in a pool (validated by the config loader).
struct KvLayout {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kFp16;
  uint32_t page_tokens = 0;

  kernels::PageGeometry geometry() const {
    return kernels::PageGeometry{num_kv_heads, head_dim, page_tokens, DTypeBytes(dtype)};
  }
  size_t page_bytes() const { return geometry().page_bytes(); }
  // K (or V) bytes of one token in one head.
  size_t token_bytes() const { return geometry().token_bytes(); }
  std::string ToString() const;
  bool operator==(const KvLayout&) const = default;
};

}  // namespace kvwarden
