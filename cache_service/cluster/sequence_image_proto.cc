#include "cache_service/cluster/sequence_image_proto.h"

#include "absl/strings/str_format.h"

namespace kvwarden {

absl::Status ImageToProto(const SequenceImage& in, const TenantLedger& ledger,
                          v1::SequenceImage* out) {
  out->set_source_sequence_id(in.id);
  out->set_tenant(ledger.name(in.tenant));
  out->set_pool(in.pool);
  v1::KvLayout* l = out->mutable_layout();
  l->set_num_layers(in.layout.num_layers);
  l->set_num_kv_heads(in.layout.num_kv_heads);
  l->set_head_dim(in.layout.head_dim);
  l->set_page_tokens(in.layout.page_tokens);
  switch (in.layout.dtype) {
    case DType::kFp16:
      l->set_dtype(v1::DTYPE_FP16);
      break;
    case DType::kBf16:
      l->set_dtype(v1::DTYPE_BF16);
      break;
    case DType::kFp32:
      l->set_dtype(v1::DTYPE_FP32);
      break;
  }
  if (!in.policy_wire.empty() && !out->mutable_policy()->ParseFromString(in.policy_wire)) {
    return absl::InternalError("the sequence's policy does not parse");
  }
  out->set_max_tokens(in.max_tokens);
  out->set_num_tokens(in.num_tokens);
  out->set_epoch(in.epoch);
  for (const HeadImage& h : in.heads) {
    v1::HeadImage* o = out->add_heads();
    o->set_live(h.live);
    o->set_evicted(h.evicted);
    uint32_t prev = 0;
    for (uint32_t p : h.positions) {
      o->add_position_deltas(p - prev);
      prev = p;
    }
  }
  out->set_retention_state(in.retention_state);
  out->mutable_layer_pages()->Add(in.layer_pages.begin(), in.layer_pages.end());
  out->mutable_page_crc32c()->Add(in.page_crc32c.begin(), in.page_crc32c.end());
  return absl::OkStatus();
}

absl::StatusOr<SequenceImage> ImageFromProto(const v1::SequenceImage& in) {
  SequenceImage out;
  out.id = in.source_sequence_id();
  out.pool = in.pool();
  const v1::KvLayout& l = in.layout();
  out.layout.num_layers = l.num_layers();
  out.layout.num_kv_heads = l.num_kv_heads();
  out.layout.head_dim = l.head_dim();
  out.layout.page_tokens = l.page_tokens();
  switch (l.dtype()) {
    case v1::DTYPE_FP16:
      out.layout.dtype = DType::kFp16;
      break;
    case v1::DTYPE_BF16:
      out.layout.dtype = DType::kBf16;
      break;
    case v1::DTYPE_FP32:
      out.layout.dtype = DType::kFp32;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("image.layout.dtype: %d is not a dtype", l.dtype()));
  }
  out.max_tokens = in.max_tokens();
  out.num_tokens = in.num_tokens();
  out.epoch = in.epoch();
  out.heads.reserve(in.heads_size());
  for (const v1::HeadImage& h : in.heads()) {
    HeadImage& o = out.heads.emplace_back();
    o.live = h.live();
    o.evicted = h.evicted();
    o.positions.reserve(h.position_deltas_size());
    uint64_t at = 0;
    for (int i = 0; i < h.position_deltas_size(); ++i) {
      at += h.position_deltas(i);
      // 64-bit: a sum past 2^32 is refused here, never wrapped into a valid position.
      if (at > UINT32_MAX || (i > 0 && h.position_deltas(i) == 0)) {
        return absl::InvalidArgumentError("image.heads: positions must ascend");
      }
      o.positions.push_back(static_cast<uint32_t>(at));
    }
  }
  out.retention_state = in.retention_state();
  out.layer_pages.assign(in.layer_pages().begin(), in.layer_pages().end());
  out.page_crc32c.assign(in.page_crc32c().begin(), in.page_crc32c().end());
  return out;
}

}  // namespace kvwarden
