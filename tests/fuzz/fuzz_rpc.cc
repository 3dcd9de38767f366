// libFuzzer: every RPC of kvwardend, as raw request bytes, through the real services
// (Daemon, daemon.h) on an in-process gRPC channel: no network, the handlers' parsing
// and validation and the table's apply path as a tenant reaches them.
//
// Records (fuzz_input.h): tag % kMethods picks the method, the payload is the request.
// A payload that parses as the request type has its sequence_id / lease_id /
// transfer_id < 16 replaced by ids of this input's world (three sequences: full,
// scissorhands, windowkv; the worker lease; the transfers it began), so calls reach
// past NOT_FOUND. Every call has a 50 ms deadline.

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>

#include "cache_service/daemon.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "grpcpp/impl/codegen/sync_stream.h"
#include "kvwarden/v1/admin.pb.h"
#include "kvwarden/v1/control.pb.h"
#include "kvwarden/v1/transfer.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace kvwarden::fuzz {
namespace {

constexpr const char* kConfig = R"pb(
  admin_token: "admin-token"
  pools {
    name: "main"
    layout { num_layers: 4 num_kv_heads: 2 head_dim: 4 dtype: DTYPE_FP16 page_tokens: 4 }
    capacity_pages: 2048
    chunk_bytes: 16384
  }
  tenants { name: "alpha" token: "alpha-token" quota_pages: 1024 }
  tenants { name: "beta" token: "beta-token" quota_pages: 1024 }
  leases { default_ttl_ms: 1000 min_ttl_ms: 1 max_ttl_ms: 2000 reap_interval_ms: 50 }
  data_plane { disable_ucx: true }
)pb";

using grpc::internal::RpcMethod;

struct Method {
  const char* path;
  RpcMethod::RpcType type;
  const google::protobuf::Message* request;  // prototype
};

const Method kMethodTable[] = {
    {"/kvwarden.v1.ControlService/RegisterWorker", RpcMethod::NORMAL_RPC, &v1::RegisterWorkerRequest::default_instance()},
    {"/kvwarden.v1.ControlService/KeepAlive", RpcMethod::NORMAL_RPC, &v1::KeepAliveRequest::default_instance()},
    {"/kvwarden.v1.ControlService/CreateSequence", RpcMethod::NORMAL_RPC, &v1::CreateSequenceRequest::default_instance()},
    {"/kvwarden.v1.ControlService/ForkSequence", RpcMethod::NORMAL_RPC, &v1::ForkSequenceRequest::default_instance()},
    {"/kvwarden.v1.ControlService/ReleaseSequence", RpcMethod::NORMAL_RPC, &v1::ReleaseSequenceRequest::default_instance()},
    {"/kvwarden.v1.ControlService/DescribeSequence", RpcMethod::NORMAL_RPC, &v1::DescribeSequenceRequest::default_instance()},
    {"/kvwarden.v1.ControlService/ReserveSlots", RpcMethod::NORMAL_RPC, &v1::ReserveSlotsRequest::default_instance()},
    {"/kvwarden.v1.ControlService/WriteKV", RpcMethod::CLIENT_STREAMING, &v1::WriteKVRequest::default_instance()},
    {"/kvwarden.v1.ControlService/ReadKV", RpcMethod::SERVER_STREAMING, &v1::ReadKVRequest::default_instance()},
    {"/kvwarden.v1.ControlService/StreamStats", RpcMethod::BIDI_STREAMING, &v1::StatsMessage::default_instance()},
    {"/kvwarden.v1.TransferService/BeginTransfer", RpcMethod::NORMAL_RPC, &v1::BeginTransferRequest::default_instance()},
    {"/kvwarden.v1.TransferService/EndTransfer", RpcMethod::NORMAL_RPC, &v1::EndTransferRequest::default_instance()},
    {"/kvwarden.v1.TransferService/GetDataPlane", RpcMethod::NORMAL_RPC, &v1::GetDataPlaneRequest::default_instance()},
    {"/kvwarden.v1.AdminService/ListSequences", RpcMethod::NORMAL_RPC, &v1::ListSequencesRequest::default_instance()},
    {"/kvwarden.v1.AdminService/ListTenants", RpcMethod::NORMAL_RPC, &v1::ListTenantsRequest::default_instance()},
};
constexpr size_t kMethods = sizeof(kMethodTable) / sizeof(kMethodTable[0]);

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Text(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!b.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

class World {
 public:
  World() {
    absl::StatusOr<DaemonSettings> settings = ParseDaemonConfig(kConfig, "fuzz");
    if (!settings.ok()) std::abort();
    daemon_ = *Daemon::Start(*settings);
    grpc::ServerBuilder builder;
    daemon_->AddTo(builder);
    server_ = builder.BuildAndStart();
    channel_ = server_->InProcessChannel(grpc::ChannelArguments());
  }

  // One call; its answer's bytes (empty when it failed).
  std::string Call(const Method& m, const std::string& request, const std::string& token, grpc::Status* status) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(50));
    RpcMethod method(m.path, m.type);
    grpc::ByteBuffer resp;
    switch (m.type) {
      case RpcMethod::NORMAL_RPC:
        *status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
            channel_.get(), method, &ctx, Bytes(request), &resp);
        return status->ok() ? Text(resp) : "";
      case RpcMethod::CLIENT_STREAMING: {
        std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> w(
            grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(channel_.get(), method, &ctx, &resp));
        w->Write(Bytes(request));
        w->WritesDone();
        *status = w->Finish();
        return status->ok() ? Text(resp) : "";
      }
      case RpcMethod::SERVER_STREAMING: {
        std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> r(
            grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel_.get(), method, &ctx,
                                                                           Bytes(request)));
        for (int i = 0; i < 64 && r->Read(&resp); ++i) {
        }
        ctx.TryCancel();
        *status = r->Finish();
        return "";
      }
      case RpcMethod::BIDI_STREAMING: {
        std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> rw(
            grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
                channel_.get(), method, &ctx));
        rw->Write(Bytes(request));
        rw->WritesDone();
        while (rw->Read(&resp)) {
        }
        *status = rw->Finish();
        return "";
      }
    }
    return "";
  }

  template <typename Resp>
  Resp Call(size_t method, const google::protobuf::Message& req, const std::string& token = "alpha-token") {
    grpc::Status s;
    Resp resp;
    resp.ParseFromString(Call(kMethodTable[method], req.SerializeAsString(), token, &s));
    return resp;
  }

  // A live worker lease of alpha: renewed every 500 ms (TTL 2 s), registered again
  // when it lapsed (then lease_changed(): its sequences went with it).
  uint64_t Lease() {
    lease_changed_ = false;
    const absl::Time now = absl::Now();
    if (now - renewed_ < absl::Milliseconds(500)) return lease_;
    renewed_ = now;
    v1::KeepAliveRequest keep;
    keep.set_lease_id(lease_);
    grpc::Status s;
    Call(kMethodTable[1], keep.SerializeAsString(), "alpha-token", &s);
    if (!s.ok()) {
      v1::RegisterWorkerRequest reg;
      reg.set_name("fuzz");
      reg.set_role(v1::WORKER_ROLE_BOTH);
      reg.set_ttl_ms(2000);
      lease_ = Call<v1::RegisterWorkerResponse>(0, reg).lease_id();
      lease_changed_ = true;
    }
    return lease_;
  }
  bool lease_changed() const { return lease_changed_; }

  // Full, scissorhands and windowkv sequences of 16 reserved tokens.
  std::vector<uint64_t> MakeSequences(uint64_t lease) {
    std::vector<uint64_t> seqs;
    for (const char* policy : {"", "scissorhands", "windowkv"}) {
      v1::CreateSequenceRequest create;
      create.set_lease_id(lease);
      create.set_pool("main");
      create.set_max_tokens(256);
      if (std::string(policy) == "scissorhands") {
        create.mutable_policy()->mutable_scissorhands()->set_budget(8);
        create.mutable_policy()->mutable_scissorhands()->set_recent(2);
        create.mutable_policy()->mutable_scissorhands()->set_window(8);
      } else if (std::string(policy) == "windowkv") {
        create.mutable_policy()->mutable_windowkv()->set_mean_budget(12);
        create.mutable_policy()->mutable_windowkv()->set_alpha(2);
        create.mutable_policy()->mutable_windowkv()->set_omega(2);
      }
      const uint64_t id = Call<v1::CreateSequenceResponse>(2, create).sequence_id();
      if (id == 0) continue;
      seqs.push_back(id);
      v1::ReserveSlotsRequest reserve;
      reserve.set_sequence_id(id);
      reserve.set_num_tokens(16);
      Call<v1::ReserveSlotsResponse>(6, reserve);
    }
    return seqs;
  }

 private:
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  uint64_t lease_ = 0;
  bool lease_changed_ = false;
  absl::Time renewed_ = absl::InfinitePast();
};

World& TheWorld() {
  static World* w = new World();
  return *w;
}

// Replaces small ids in the top-level message by the world's.
void Substitute(google::protobuf::Message* m, const std::vector<uint64_t>& seqs, uint64_t lease,
                const std::vector<uint64_t>& transfers) {
  const google::protobuf::Descriptor* d = m->GetDescriptor();
  const google::protobuf::Reflection* r = m->GetReflection();
  auto swap = [&](const char* name, const std::vector<uint64_t>& ids) {
    const google::protobuf::FieldDescriptor* f = d->FindFieldByName(name);
    if (f == nullptr || f->is_repeated() || f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_UINT64) return;
    const uint64_t v = r->GetUInt64(*m, f);
    if (v != 0 && v < 16 && !ids.empty()) r->SetUInt64(m, f, ids[v % ids.size()]);
  };
  swap("sequence_id", seqs);
  swap("lease_id", {lease});
  swap("transfer_id", transfers);
}

}  // namespace
}  // namespace kvwarden::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvwarden;
  using namespace kvwarden::fuzz;
  World& w = TheWorld();
  // The world (three sequences of 16 reserved tokens) persists across inputs: an input
  // that released one gets it made again, forks and transfers an input made are undone.
  const uint64_t lease = w.Lease();
  static std::vector<uint64_t> base;
  if (base.empty() || w.lease_changed()) base = w.MakeSequences(lease);
  std::vector<uint64_t> seqs = base, transfers;
  Records records(data, size);
  uint8_t tag = 0;
  std::string payload;
  bool released_base = false;
  while (records.Next(&tag, &payload)) {
    const Method& m = kMethodTable[tag % kMethods];
    std::unique_ptr<google::protobuf::Message> req(m.request->New());
    if (req->ParseFromString(payload)) {
      Substitute(req.get(), seqs, lease, transfers);
      payload = req->SerializeAsString();
    }
    // Admin calls with the admin token; tag bit 7 swaps alpha for beta (isolation paths).
    const bool admin = std::string(m.path).find("AdminService") != std::string::npos;
    const std::string token = admin ? "admin-token" : (tag & 0x80 ? "beta-token" : "alpha-token");
    grpc::Status s;
    const std::string answer = w.Call(m, payload, token, &s);
    if (s.error_code() == grpc::StatusCode::UNKNOWN || s.error_code() == grpc::StatusCode::INTERNAL) {
      std::fprintf(stderr, "%s answered %d: %s\n", m.path, s.error_code(), s.error_message().c_str());
      std::abort();
    }
    if (!s.ok()) continue;
    if (m.path == kMethodTable[2].path || m.path == kMethodTable[3].path) {  // new sequences join the world
      v1::CreateSequenceResponse created;  // ForkSequenceResponse has sequence_id at 1 too
      if (created.ParseFromString(answer) && created.sequence_id() != 0) seqs.push_back(created.sequence_id());
    } else if (m.path == kMethodTable[10].path) {
      v1::TransferGrant grant;
      if (grant.ParseFromString(answer)) transfers.push_back(grant.transfer_id());
    } else if (m.path == kMethodTable[4].path) {
      released_base = true;
    }
  }
  for (uint64_t t : transfers) {
    v1::EndTransferRequest end;
    end.set_transfer_id(t);
    w.Call<v1::EndTransferResponse>(11, end);
  }
  for (size_t i = released_base ? 0 : base.size(); i < seqs.size(); ++i) {
    v1::ReleaseSequenceRequest release;
    release.set_sequence_id(seqs[i]);
    w.Call<v1::ReleaseSequenceResponse>(4, release);
  }
  if (released_base) base.clear();
  return 0;
}
