// Client's TransferService calls (data plane control half).

#include "client_impl.h"
#include "kvwarden/client.h"

namespace kvwarden {
namespace client {

absl::StatusOr<DataPlaneInfo> Client::GetDataPlane(const std::string& pool) {
  auto ctx = impl_->Context();
  v1::GetDataPlaneRequest req;
  req.set_pool(pool);
  v1::DataPlaneInfo resp;
  if (grpc::Status s = impl_->transfer->GetDataPlane(ctx.get(), req, &resp); !s.ok()) {
    return FromGrpc(s);
  }
  DataPlaneInfo out;
  out.instance_id = resp.instance_id();
  out.ucx_worker_address = resp.ucx_worker_address();
  out.attach_socket = resp.attach_socket();
  out.layout = FromProto(resp.layout());
  out.page_bytes = resp.page_bytes();
  out.chunk_bytes = resp.chunk_bytes();
  out.device = resp.device();
  out.tcp_data_port = static_cast<uint16_t>(resp.tcp_data_port());
  return out;
}

absl::StatusOr<TransferGrant> Client::BeginTransfer(uint64_t lease_id, const PageRange& range,
                                                    TransferMode mode, uint32_t ttl_ms,
                                                    absl::Span<const ChunkRef> known_chunks,
                                                    TransferPath path) {
  auto ctx = impl_->Context();
  v1::BeginTransferRequest req;
  req.set_lease_id(lease_id);
  req.set_sequence_id(range.sequence_id);
  req.set_layer_start(range.layer_start);
  req.set_layer_count(range.layer_count);
  req.set_slot_start(range.slot_start);
  req.set_slot_end(range.slot_end);
  req.set_mode(static_cast<v1::TransferMode>(mode));
  req.set_ttl_ms(ttl_ms);
  req.set_path(static_cast<v1::TransferPath>(path));
  for (const ChunkRef& k : known_chunks) {
    v1::ChunkRef* ref = req.add_known_chunks();
    ref->set_chunk(k.chunk);
    ref->set_generation(k.generation);
  }
  v1::TransferGrant resp;
  if (grpc::Status s = impl_->transfer->BeginTransfer(ctx.get(), req, &resp); !s.ok()) {
    return FromGrpc(s);
  }
  TransferGrant out;
  out.id = resp.transfer_id();
  out.instance_id = resp.instance_id();
  out.epoch = resp.epoch();
  out.first_page = resp.first_page();
  out.num_pages = resp.num_pages();
  out.page_bytes = resp.page_bytes();
  for (const v1::LayerPageRuns& layer : resp.layers()) {
    std::vector<PageRunInfo>& runs = out.layers.emplace_back();
    for (const v1::PageRun& r : layer.runs()) runs.push_back({r.chunk(), r.offset(), r.pages()});
  }
  for (const v1::ChunkRef& c : resp.chunks()) out.chunks.push_back({c.chunk(), c.generation()});
  for (const v1::ChunkKey& k : resp.keys()) {
    out.keys.push_back({k.chunk(), k.generation(), k.remote_address(), k.size(), k.rkey()});
  }
  out.expires = absl::FromUnixMillis(resp.expires_unix_ms());
  out.data_secret = resp.data_secret();
  return out;
}

absl::Status Client::EndTransfer(uint64_t transfer_id) {
  auto ctx = impl_->Context();
  v1::EndTransferRequest req;
  req.set_transfer_id(transfer_id);
  v1::EndTransferResponse resp;
  return FromGrpc(impl_->transfer->EndTransfer(ctx.get(), req, &resp));
}

}  // namespace client
}  // namespace kvwarden
