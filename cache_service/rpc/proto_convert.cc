#include "cache_service/rpc/proto_convert.h"

namespace kvwarden {

void ToProto(const KvLayout& in, v1::KvLayout* out) {
  out->set_num_layers(in.num_layers);
  out->set_num_kv_heads(in.num_kv_heads);
  out->set_head_dim(in.head_dim);
  out->set_page_tokens(in.page_tokens);
  switch (in.dtype) {
    case DType::kFp16:
      out->set_dtype(v1::DTYPE_FP16);
      break;
    case DType::kBf16:
      out->set_dtype(v1::DTYPE_BF16);
      break;
    case DType::kFp32:
      out->set_dtype(v1::DTYPE_FP32);
      break;
  }
}

void ToProto(const SequenceInfo& in, const TenantLedger& ledger, v1::SequenceInfo* out) {
  out->set_sequence_id(in.id);
  out->set_tenant(ledger.name(in.tenant));
  out->set_pool(in.pool);
  out->set_lease_id(in.lease);
  ToProto(in.layout, out->mutable_layout());
  out->set_epoch(in.epoch);
  out->set_num_tokens(in.num_tokens);
  out->set_max_tokens(in.max_tokens);
  out->set_policy(in.policy);
  out->set_pages_held(in.pages_held);
  out->set_shared_pages(in.shared_pages);
  out->set_parent_sequence_id(in.parent);
  out->set_policy_summary(in.policy_summary);
  out->set_decode_steps(in.decode_steps);
  out->set_budget_note(in.pressure_note);
  if (in.heads.empty() && in.layer_pages.empty()) return;
  const uint32_t heads = in.layout.num_kv_heads;
  for (uint32_t l = 0; l < in.layer_num_pages.size(); ++l) {
    v1::LayerInfo* layer = out->add_layers();
    layer->set_layer(l);
    layer->set_num_pages(in.layer_num_pages[l]);
    if (!in.layer_pages.empty()) {
      layer->mutable_page_ids()->Add(in.layer_pages[l].begin(), in.layer_pages[l].end());
    }
    if (in.heads.empty()) continue;
    for (uint32_t h = 0; h < heads; ++h) {
      const HeadInfo& hs = in.heads[l * heads + h];
      v1::HeadInfo* head = layer->add_heads();
      head->set_head(h);
      head->set_live_slots(hs.live_slots);
      head->set_budget(hs.budget);
      head->set_evicted(hs.evicted);
      for (const HeadFigure& f : hs.figures) {
        v1::HeadFigure* figure = head->add_figures();
        figure->set_name(f.name);
        figure->set_value(f.value);
      }
    }
  }
}

void ToProto(const PagePool& pool, const TenantLedger& ledger, v1::PoolStats* out) {
  out->set_draining(pool.draining());
  const PagePoolStats s = pool.Stats();
  out->set_name(pool.name());
  out->set_device(pool.device());
  ToProto(pool.layout(), out->mutable_layout());
  out->set_page_bytes(pool.page_bytes());
  out->set_chunk_pages(pool.chunk_pages());
  out->set_capacity_pages(s.capacity_pages);
  out->set_used_pages(s.used_pages);
  out->set_free_pages(s.capacity_pages - s.used_pages);
  out->set_shared_pages(s.shared_pages);
  out->set_pinned_pages(s.pinned_pages);
  out->set_chunks_total(s.chunks_total);
  out->set_chunks_unowned(s.chunks_unowned);
  out->set_chunks_bound(s.chunks_bound);
  for (const PoolTenantStats& t : s.tenants) {
    v1::PoolTenantUsage* u = out->add_tenants();
    u->set_tenant(ledger.name(t.tenant));
    u->set_chunks(t.chunks);
    u->set_pages(t.pages);
  }
}

StatsBatch FromProto(const v1::StatsMessage& in) {
  StatsBatch out;
  out.epoch = in.epoch();
  for (const v1::DecodeStep& step : in.steps()) {
    DecodeStepStats& s = out.steps.emplace_back();
    s.heads.reserve(step.heads_size());
    for (const v1::HeadStats& h : step.heads()) {
      s.heads.push_back(HeadStepStats{h.layer(),
                                      h.head(),
                                      h.attended(),
                                      {h.listed().begin(), h.listed().end()},
                                      {h.dense().begin(), h.dense().end()}});
    }
  }
  for (const v1::WindowScores& w : in.window_scores()) {
    out.window_scores.push_back(WindowScoresIn{w.layer(), {w.sums().begin(), w.sums().end()}});
  }
  return out;
}

void ToProto(const RetentionResult& in, SequenceId id, v1::RetentionUpdate* out) {
  out->set_sequence_id(id);
  out->set_epoch(in.epoch);
  out->set_steps_applied(in.steps_applied);
  out->set_pages_freed(static_cast<uint32_t>(in.pages_freed));
  for (const HeadRetention& c : in.changes) ToProto(c, out->add_heads());
}

void ToProto(const HeadRetention& in, v1::HeadRetention* out) {
  out->set_layer(in.layer);
  out->set_head(in.head);
  out->set_live_slots(in.live_slots);
  out->mutable_evicted_positions()->Add(in.evicted_positions.begin(), in.evicted_positions.end());
}

}  // namespace kvwarden
