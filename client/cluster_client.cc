#include "kvwarden/cluster_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvwarden {
namespace client {
namespace {

// Only a seed that cannot be reached is passed by: a refusal (a bad token, a daemon
// outside cluster mode) is the same on every node.
bool Unreachable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClusterClient>> Client::ConnectCluster(ClusterOptions options) {
  return ClusterClient::Connect(std::move(options));
}

absl::StatusOr<std::unique_ptr<ClusterClient>> ClusterClient::Connect(ClusterOptions options) {
  if (options.seeds.empty()) {
    return absl::InvalidArgumentError("ClusterOptions.seeds: name at least one daemon (host:port)");
  }
  return std::unique_ptr<ClusterClient>(new ClusterClient(std::move(options)));
}

ClusterClient::ClusterClient(ClusterOptions options) : options_(std::move(options)) {}

Options ClusterClient::ClientOptions(const std::string& target) const {
  Options o;
  o.target = target;
  o.token = options_.token;
  o.timeout = options_.timeout;
  o.tls_ca_pem = options_.tls_ca_pem;
  o.tls_cert_pem = options_.tls_cert_pem;
  o.tls_key_pem = options_.tls_key_pem;
  o.tls_server_name = options_.tls_server_name;
  return o;
}

absl::StatusOr<Client*> ClusterClient::ClientFor(const std::string& target) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(target);
  if (it != clients_.end()) return it->second.get();
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(ClientOptions(target));
  if (!c.ok()) return c.status();
  return clients_.emplace(target, *std::move(c)).first->second.get();
}

absl::StatusOr<ClusterNodes> ClusterClient::Ask() {
  std::string failures;
  for (size_t i = 0; i < options_.seeds.size(); ++i) {
    absl::StatusOr<Client*> c = ClientFor(options_.seeds[i]);
    absl::StatusOr<ClusterNodes> nodes = c.ok() ? (*c)->ListNodes() : c.status();
    if (nodes.ok()) {
      if (i == 0) {
        absl::MutexLock lock(&mu_);
        answered_self_ = nodes->self;
      }
      return nodes;
    }
    if (!Unreachable(nodes.status())) return nodes.status();
    absl::StrAppend(&failures, failures.empty() ? "" : "; ", options_.seeds[i], ": ",
                    nodes.status().message());
  }
  return absl::UnavailableError(absl::StrCat("no seed of the cluster answers (", failures, ")"));
}

absl::StatusOr<std::vector<NodeInfo>> ClusterClient::Nodes() {
  absl::StatusOr<ClusterNodes> nodes = Ask();
  if (!nodes.ok()) return nodes.status();
  return std::move(nodes->nodes);
}

absl::StatusOr<std::string> ClusterClient::LocalNode() {
  if (!options_.local_node.empty()) return options_.local_node;
  {
    absl::MutexLock lock(&mu_);
    if (!answered_self_.empty()) return answered_self_;
  }
  absl::StatusOr<Client*> c = ClientFor(options_.seeds[0]);
  absl::StatusOr<ClusterNodes> nodes = c.ok() ? (*c)->ListNodes() : c.status();
  if (!nodes.ok()) return nodes.status();
  absl::MutexLock lock(&mu_);
  answered_self_ = nodes->self;
  return answered_self_;
}

absl::StatusOr<NodeInfo> ClusterClient::Place(const std::string& pool, uint64_t pages,
                                              const std::optional<Layout>& layout) {
  absl::StatusOr<ClusterNodes> nodes = Ask();
  if (!nodes.ok()) return nodes.status();
  std::string local = options_.local_node;
  if (local.empty()) {
    absl::StatusOr<std::string> l = LocalNode();
    if (l.ok()) local = *l;  // no local node known: the most free pages decides
  }
  auto fits = [&](const NodePool& p) {
    return p.name == pool &&
           (!layout || (p.layout.num_layers == layout->num_layers &&
                        p.layout.num_kv_heads == layout->num_kv_heads &&
                        p.layout.head_dim == layout->head_dim && p.layout.dtype == layout->dtype &&
                        p.layout.page_tokens == layout->page_tokens));
  };
  const NodeInfo* best = nullptr;
  uint64_t best_free = 0;
  bool any_pool = false;
  for (const NodeInfo& n : nodes->nodes) {
    for (const NodePool& p : n.pools) {
      if (!fits(p)) continue;
      any_pool = true;
      if (p.free_pages < pages) continue;
      if (n.node == local) return n;  // local first
      if (best == nullptr || p.free_pages > best_free) {
        best = &n;
        best_free = p.free_pages;
      }
    }
  }
  if (best != nullptr) return *best;
  if (!any_pool) {
    return absl::NotFoundError(absl::StrCat("no node of the cluster has a pool '", pool, "'",
                                            layout ? " of that layout" : ""));
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("no node has ", pages, " free pages in pool '", pool, "'"));
}

absl::StatusOr<Client*> ClusterClient::On(const std::string& node) {
  absl::StatusOr<std::vector<NodeInfo>> nodes = Nodes();
  if (!nodes.ok()) return nodes.status();
  for (const NodeInfo& n : *nodes) {
    if (n.node == node) return ClientFor(n.grpc_address);
  }
  return absl::NotFoundError(absl::StrCat("node '", node, "' is not in the cluster"));
}

absl::StatusOr<ResolvedHandle> ClusterClient::Resolve(const std::string& handle) {
  absl::StatusOr<Handle> h = absl::UnavailableError("no seed");
  for (const std::string& seed : options_.seeds) {
    absl::StatusOr<Client*> c = ClientFor(seed);
    h = c.ok() ? (*c)->ResolveHandle(handle) : c.status();
    if (!Unreachable(h.status())) break;
  }
  if (!h.ok()) return h.status();
  absl::StatusOr<Client*> holder = ClientFor(h->grpc_address);
  if (!holder.ok()) return holder.status();
  return ResolvedHandle{*std::move(h), *holder};
}

absl::StatusOr<Migration> ClusterClient::Migrate(const std::string& from_node, uint64_t sequence_id,
                                                 const std::string& to_node,
                                                 const MigrateOptions& options) {
  absl::StatusOr<Client*> from = On(from_node);
  if (!from.ok()) return from.status();
  return (*from)->MigrateSequence(sequence_id, to_node, options);
}

}  // namespace client
}  // namespace kvwarden
