#pragma once

// kvwarden::Client: the C++ library model workers link to talk to kvwardend.
//
// No gRPC or protobuf types appear here. Every call returns absl::Status(Or) with the
// daemon's gRPC status code and message unchanged (UNAVAILABLE when it cannot be
// reached). A Client is thread-safe: calls from many threads share one channel.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvwarden {
namespace client {

struct Options {
  std::string target = "127.0.0.1:50051";      // host:port of kvwardend
  std::string token;                           // tenant (or admin) bearer token
  absl::Duration timeout = absl::Seconds(10);  // per call
  // TLS when tls_ca_pem is set (PEM text of the CA that signed the daemon's certificate);
  // the client certificate and key for mutual TLS. tls_server_name overrides the name
  // checked against the certificate (default: the target's host).
  std::string tls_ca_pem, tls_cert_pem, tls_key_pem, tls_server_name;
};

enum class Role { kPrefill = 1, kDecode = 2, kBoth = 3 };

struct Layout {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t elem_bytes = 0;  // 2 for fp16/bf16, 4 for fp32
  std::string dtype;        // "fp16", "bf16", "fp32"
  uint32_t page_tokens = 0;

  // K (or V) bytes of one token of one head.
  size_t token_bytes() const { return size_t{head_dim} * elem_bytes; }
  // K (or V) bytes of `tokens` tokens of one layer, all heads.
  size_t layer_bytes(uint32_t tokens) const {
    return size_t{num_kv_heads} * tokens * token_bytes();
  }
};

// Retention policy for CreateSequence (see proto/kvwarden/v1/policy.proto). Zero fields
// take the daemon's defaults; kDefault uses the tenant's configured policy.
struct Policy {
  enum class Kind { kDefault, kFull, kStreaming, kScissorhands, kWindowKv, kH2o };
  Kind kind = Kind::kDefault;
  uint32_t budget = 0;                  // streaming, scissorhands and h2o B
  std::optional<uint32_t> sinks;        // streaming (default 4), scissorhands and h2o (default 0)
  uint32_t window = 0;                  // scissorhands w
  uint32_t recent = 0, drop = 0;        // scissorhands and h2o r, m
  float threshold_scale = 0;            // scissorhands
  std::vector<uint32_t> layer_budgets;  // scissorhands and h2o per-layer B
  uint32_t alpha = 0, omega = 0, top_p = 0, gamma = 0, lambda = 0, mean_budget = 0;  // windowkv
  bool aggregation = false;  // windowkv task

  static Policy Full() { return Of(Kind::kFull); }
  static Policy Streaming(uint32_t budget) {
    Policy p = Of(Kind::kStreaming);
    p.budget = budget;
    return p;
  }
  static Policy Scissorhands(uint32_t budget) {
    Policy p = Of(Kind::kScissorhands);
    p.budget = budget;
    return p;
  }
  static Policy WindowKv(uint32_t mean_budget) {
    Policy p = Of(Kind::kWindowKv);
    p.mean_budget = mean_budget;
    return p;
  }
  static Policy H2o(uint32_t budget) {
    Policy p = Of(Kind::kH2o);
    p.budget = budget;
    return p;
  }
  static Policy Of(Kind kind) {
    Policy p;
    p.kind = kind;
    return p;
  }
};

// Statistics of one (layer, head) for one decode step (StreamStats).
struct HeadStats {
  uint32_t layer = 0;
  uint32_t head = 0;
  uint32_t attended = 0;         // the first `attended` slots existed at the step
  std::vector<uint32_t> listed;  // slots at or above the threshold (sparse mode)
  std::vector<float> dense;      // or the full row (dense mode)
};
struct DecodeStep {
  std::vector<HeadStats> heads;  // every (layer, head) exactly once
};
struct WindowScores {
  uint32_t layer = 0;       // a WindowKV group leader
  std::vector<float> sums;  // [head][candidate]
};
struct HeadRetention {
  uint32_t layer = 0;
  uint32_t head = 0;
  uint32_t live_slots = 0;
  std::vector<uint32_t> evicted_positions;
};
struct RetentionUpdate {
  uint64_t epoch = 0;
  uint32_t steps_applied = 0;
  std::vector<HeadRetention> heads;  // heads whose slots changed
  uint32_t pages_freed = 0;
};

// One StreamStats stream. Each Send* waits for the daemon's RetentionUpdate. After an
// error the stream is closed (the error is returned); open a new one to continue.
// Not thread-safe: one stream per worker thread.
class StatsStream {
 public:
  virtual ~StatsStream() = default;
  virtual absl::StatusOr<RetentionUpdate> SendSteps(uint64_t sequence_id, uint64_t epoch,
                                                    const std::vector<DecodeStep>& steps) = 0;
  virtual absl::StatusOr<RetentionUpdate> SendWindowScores(
      uint64_t sequence_id, uint64_t epoch, const std::vector<WindowScores>& scores) = 0;
  // Half-closes and returns the stream's final status.
  virtual absl::Status Close() = 0;
};

struct Lease {
  uint64_t id = 0;
  uint32_t ttl_ms = 0;
};

struct Sequence {
  uint64_t id = 0;
  Layout layout;
  uint64_t epoch = 0;
};

struct Reservation {
  uint32_t first_position = 0;
  uint32_t num_tokens = 0;
  uint32_t first_slot = 0;
  uint32_t first_page_offset = 0;
  std::vector<std::vector<uint32_t>> layer_pages;  // [layer] pages holding head 0's new slots
  uint64_t epoch = 0;
  // After per-head eviction: the first new slot of every (layer, head); else empty and
  // first_slot holds for every head.
  std::vector<uint32_t> first_slots;
  // Heads whose oldest slots were dropped to make room (streaming policy).
  std::vector<HeadRetention> evicted;
};

struct Fork {
  uint64_t id = 0;
  uint32_t shared_pages = 0;
  uint32_t copied_pages = 0;
};

// Where a migrated sequence went (Client::MigrateSequence).
struct Migration {
  std::string node;          // the target
  std::string grpc_address;  // where the target serves: connect there to use it
  uint64_t sequence_id = 0;  // its id on the target
  uint64_t lease_id = 0;     // the target's lease that owns it
  uint64_t bytes_moved = 0;
  absl::Duration duration;
};

// Where a tenant's named sequence is (Client::PublishHandle, ResolveHandle).
struct Handle {
  std::string handle;
  std::string node;          // the node holding the sequence
  std::string grpc_address;  // where it serves: connect there to use the sequence
  uint64_t sequence_id = 0;  // its id there
};

// A node of the cluster as the daemons see it (Client::ListNodes, ClusterClient).
struct NodePool {
  std::string name;
  std::string device;  // "cpu" or "cuda:N"
  Layout layout;
  uint64_t capacity_pages = 0;
  uint64_t free_pages = 0;
};
struct NodeInfo {
  std::string node;
  std::string grpc_address;  // connect here to use the node
  std::string version;
  std::string migration_transport;  // "tcp", or "none": it neither sends nor takes sequences
  std::vector<NodePool> pools;
  absl::Time updated;  // the entry's last refresh (free pages are as of then)
};
struct ClusterNodes {
  std::string self;  // the node that answered
  std::vector<NodeInfo> nodes;
};

struct MigrateOptions {
  // An active lease of this tenant on the target to own the sequence; 0: the target
  // holds it under a lease of `hold` until a worker there forks it.
  uint64_t target_lease_id = 0;
  absl::Duration hold = absl::ZeroDuration();  // zero: 30 s; at most 5 min
  absl::Duration timeout = absl::Minutes(1);   // the whole migration
};

struct HeadInfo {
  uint32_t live_slots = 0;
  uint32_t budget = 0;
  uint32_t evicted = 0;
  // What the policy measures on the head, named by it (control.proto's HeadInfo.figures:
  // scissorhands low_max, low_mean; h2o score_max, score_mean), in its order.
  std::vector<std::pair<std::string, double>> figures;
  // The figure `name`, or nullopt when the policy has none of that name.
  std::optional<double> Figure(std::string_view name) const {
    for (const auto& [n, v] : figures) {
      if (n == name) return v;
    }
    return std::nullopt;
  }
};

struct SequenceInfo {
  uint64_t id = 0;
  std::string tenant;
  std::string pool;
  uint64_t lease = 0;
  Layout layout;
  uint64_t epoch = 0;
  uint32_t num_tokens = 0;
  uint32_t max_tokens = 0;
  std::string policy;
  std::string policy_summary;
  uint64_t decode_steps = 0;
  uint32_t pages_held = 0;
  uint32_t shared_pages = 0;
  uint64_t parent = 0;
  std::vector<std::vector<HeadInfo>> heads;  // [layer][head]
};

// K/V of one layer over a token range, packed head after head: head h holds
// head_live_counts[h] slots of token_bytes() each.
struct LayerKv {
  uint32_t layer = 0;
  uint64_t epoch = 0;
  std::vector<uint32_t> head_live_counts;
  std::vector<uint32_t> positions;  // per head, concatenated; empty when nothing evicted
  std::string k;
  std::string v;
};

// --- Data plane (TransferService); kvwarden/data_plane.h builds on these. ---
struct DataPlaneInfo {
  std::string instance_id;         // changes on every daemon start
  std::string ucx_worker_address;  // empty when the daemon runs without UCX
  std::string attach_socket;       // empty when attach is off
  Layout layout;
  uint64_t page_bytes = 0;
  uint64_t chunk_bytes = 0;
  std::string device;          // "cpu" or "cuda:N"
  uint16_t tcp_data_port = 0;  // the daemon-served TCP data path; 0 = off
};
enum class TransferMode { kRead = 1, kWrite = 2 };
// How a transfer's pages are reached: by UCX RMA over shared memory (a staging buffer
// where UCX cannot reach the pool's memory), in place through an AttachedPool on the
// daemon's host, or through the daemon-served TCP data path (any host).
enum class TransferPath { kUcx = 0, kInPlace = 1, kTcp = 2 };
// Whole pages of layers [layer_start, layer_start + layer_count) covering slots
// [slot_start, slot_end) of each (the range is widened to page boundaries).
struct PageRange {
  uint64_t sequence_id = 0;
  uint32_t layer_start = 0;
  uint32_t layer_count = 0;
  uint32_t slot_start = 0;
  uint32_t slot_end = 0;
};
struct ChunkRef {
  uint32_t chunk = 0;
  uint64_t generation = 0;
};
struct PageRunInfo {
  uint32_t chunk = 0;
  uint64_t offset = 0;  // bytes from the chunk's start
  uint32_t pages = 0;
};
struct ChunkKeyInfo {
  uint32_t chunk = 0;
  uint64_t generation = 0;
  uint64_t remote_address = 0;
  uint64_t size = 0;
  std::string rkey;  // packed UCX remote key
};
// A transfer lease: the pages stay pinned (and at `epoch`) until EndTransfer or expiry.
struct TransferGrant {
  uint64_t id = 0;
  std::string instance_id;
  uint64_t epoch = 0;
  uint32_t first_page = 0;
  uint32_t num_pages = 0;  // per layer
  uint64_t page_bytes = 0;
  std::vector<std::vector<PageRunInfo>> layers;  // [layer - layer_start]
  std::vector<ChunkRef> chunks;                  // every chunk named in layers
  std::vector<ChunkKeyInfo> keys;                // remote keys not in the request's known chunks
  absl::Time expires;
  std::string data_secret;  // proves the grant on the TCP data path (16 bytes)
};

class ClusterClient;
struct ClusterOptions;

class Client {
 public:
  // Does not block: the connection is made on the first call.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const Options& options);
  // A worker's view of a cluster through its daemons (kvwarden/cluster_client.h).
  static absl::StatusOr<std::unique_ptr<ClusterClient>> ConnectCluster(ClusterOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Round trip with no work; returns the daemon's version.
  absl::StatusOr<std::string> Ping();

  absl::StatusOr<Lease> RegisterWorker(const std::string& name, Role role, uint32_t ttl_ms = 0);
  absl::Status KeepAlive(uint64_t lease_id);
  // Ends the lease now (a clean exit): its sequences and transfers go at once, not after
  // the TTL. Returns how many sequences were released.
  absl::StatusOr<uint32_t> ReleaseWorker(uint64_t lease_id);

  absl::StatusOr<Sequence> CreateSequence(uint64_t lease_id, const std::string& pool,
                                          uint32_t max_tokens, const Policy& policy = {});
  absl::StatusOr<Fork> ForkSequence(uint64_t sequence_id, uint64_t lease_id);
  // Returns the pages that went back to the pool.
  absl::StatusOr<uint32_t> ReleaseSequence(uint64_t sequence_id);
  absl::StatusOr<SequenceInfo> DescribeSequence(uint64_t sequence_id);
  // Cluster mode: moves the sequence to `target_node` (README, "Cluster mode"). On
  // success it is gone here and lives on the target under a new id, byte for byte, with
  // its positions per head, epoch and policy state; on any error it is still here,
  // unchanged. Meanwhile its writes are refused and its reservations wait.
  absl::StatusOr<Migration> MigrateSequence(uint64_t sequence_id, const std::string& target_node,
                                            const MigrateOptions& options = {});
  // Cluster mode: names the sequence for this tenant across the cluster (letters,
  // digits, '.', '_', '-', ':'; up to 200). It follows the sequence when it migrates and
  // goes when the sequence ends. ALREADY_EXISTS when the name is taken.
  absl::StatusOr<Handle> PublishHandle(uint64_t sequence_id, const std::string& handle);
  // Where this tenant's sequence named `handle` is now, asked of any node; NOT_FOUND
  // when none is (it ended, or its node died).
  absl::StatusOr<Handle> ResolveHandle(const std::string& handle);
  // Cluster mode: every node of the cluster, as the daemon answering sees it.
  absl::StatusOr<ClusterNodes> ListNodes();
  absl::StatusOr<Reservation> ReserveSlots(uint64_t sequence_id, uint32_t num_tokens);

  // Writes tokens [token_start, token_start + num_tokens) of layers
  // [layer_start, layer_start + layer_count). k and v are [layer][head][token][head_dim]
  // in the layout's dtype. Split into messages of at most 512 KiB (kv_messages.h) on one stream.
  absl::Status WriteKV(uint64_t sequence_id, const Layout& layout, uint32_t layer_start,
                       uint32_t layer_count, uint32_t token_start, uint32_t num_tokens,
                       absl::Span<const uint8_t> k, absl::Span<const uint8_t> v);
  // Reads tokens [token_start, token_end) (token_end 0 = all reserved) of the layers,
  // at `epoch` if given (FAILED_PRECONDITION if the sequence has moved on).
  absl::StatusOr<std::vector<LayerKv>> ReadKV(uint64_t sequence_id, uint32_t layer_start,
                                              uint32_t layer_count, uint32_t token_start,
                                              uint32_t token_end,
                                              std::optional<uint64_t> epoch = std::nullopt);

  // A bidirectional statistics stream (no deadline: it lives as long as the worker).
  absl::StatusOr<std::unique_ptr<StatsStream>> OpenStatsStream();

  // TransferService (see proto/kvwarden/v1/transfer.proto). Most code uses
  // kvwarden::client::DataPlane or AttachedPool instead of these.
  absl::StatusOr<DataPlaneInfo> GetDataPlane(const std::string& pool);
  absl::StatusOr<TransferGrant> BeginTransfer(uint64_t lease_id, const PageRange& range,
                                              TransferMode mode, uint32_t ttl_ms = 0,
                                              absl::Span<const ChunkRef> known_chunks = {},
                                              TransferPath path = TransferPath::kUcx);
  absl::Status EndTransfer(uint64_t transfer_id);
  const Options& options() const;
  // After UNAVAILABLE: reconnects now (not after gRPC's growing backoff) and waits up to
  // `timeout` for the connection. Fail-fast calls alone do not drive a reconnect (gRPC's
  // backup poller would, every 5 s), so retry loops wait here. True when connected.
  bool AwaitConnected(absl::Duration timeout);

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Keeps a worker lease alive from a background thread ("kvw-keepalive") at a third of
// its TTL until destroyed. The client must outlive the keeper.
class LeaseKeeper {
 public:
  LeaseKeeper(Client* client, Lease lease);
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // The last KeepAlive failure, if any (e.g. FAILED_PRECONDITION after a lapse).
  absl::Status last_error() const;

 private:
  Client* const client_;
  const Lease lease_;
  absl::Notification stop_;
  mutable absl::Mutex mu_;
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace client

using Client = client::Client;

}  // namespace kvwarden
