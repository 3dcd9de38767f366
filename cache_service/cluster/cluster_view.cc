#include "cache_service/cluster/cluster_view.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cache_service/util/log.h"
#include "common/cluster/entry_json.h"

namespace kvwarden {
namespace {

// A PrefixWatcher that keeps `mirror` (guarded by `mu`) equal to the prefix, at most
// `cap` entries.
template <typename Info>
std::unique_ptr<PrefixWatcher> Follow(EtcdClient* etcd, const std::string& prefix,
                                      const char* thread, absl::Duration window, size_t cap,
                                      absl::Mutex* mu,
                                      absl::flat_hash_map<std::string, Info>* mirror) {
  PrefixWatcher::Options w;
  w.etcd = etcd;
  w.prefix = prefix;
  w.thread_name = thread;
  w.window = window;
  w.on_listing = [mu, mirror, cap](const std::vector<EtcdClient::KeyValue>& kvs) {
    absl::flat_hash_map<std::string, Info> fresh;
    for (const EtcdClient::KeyValue& kv : kvs) {
      if (fresh.size() >= cap) break;
      Info info;
      if (ParseEntry(kv.value, &info)) fresh.emplace(kv.key, std::move(info));
    }
    absl::MutexLock lock(mu);
    mirror->swap(fresh);
  };
  w.on_event = [mu, mirror, cap](const EtcdClient::WatchEvent& e) {
    Info info;
    const bool keep = !e.deleted && ParseEntry(e.kv.value, &info);
    absl::MutexLock lock(mu);
    if (!keep) {
      mirror->erase(e.kv.key);
    } else if (auto it = mirror->find(e.kv.key); it != mirror->end()) {
      it->second = std::move(info);
    } else if (mirror->size() < cap) {
      mirror->emplace(e.kv.key, std::move(info));
    }
  };
  w.on_unreachable = [prefix](const absl::Status& s) {
    LogEvent(LogLevel::kWarning, "cluster_view_etcd_unreachable")
        .Field("prefix", prefix)
        .Field("error", s.message());
  };
  return std::make_unique<PrefixWatcher>(std::move(w));
}

}  // namespace

ClusterView::ClusterView(Options options)
    : options_(std::move(options)),
      nodes_prefix_(NodesPrefix(options_.key_prefix)),
      handles_prefix_(absl::StrCat(options_.key_prefix, "/handles/")) {
  nodes_watcher_ = Follow(options_.etcd, nodes_prefix_, "kvw-nodes-view", options_.window,
                          size_t{1} << 16, &mu_, &nodes_);
  handles_watcher_ = Follow(options_.etcd, handles_prefix_, "kvw-handles-view", options_.window,
                            options_.max_handles, &mu_, &handles_);
}

bool ClusterView::WaitListed(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  return nodes_watcher_->WaitListed(timeout) &&
         handles_watcher_->WaitListed(std::max(absl::ZeroDuration(), deadline - absl::Now()));
}

std::vector<v1::NodeInfo> ClusterView::Nodes() const {
  std::vector<v1::NodeInfo> out;
  {
    absl::MutexLock lock(&mu_);
    out.reserve(nodes_.size());
    for (const auto& [key, info] : nodes_) out.push_back(info);
  }
  std::sort(out.begin(), out.end(),
            [](const v1::NodeInfo& a, const v1::NodeInfo& b) { return a.node() < b.node(); });
  return out;
}

std::optional<v1::NodeInfo> ClusterView::Node(const std::string& name) const {
  const std::string key = NodeKey(options_.key_prefix, name);
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(key);
  if (it == nodes_.end()) return std::nullopt;
  return it->second;
}

std::optional<v1::HandleInfo> ClusterView::Handle(const std::string& tenant,
                                                  const std::string& handle) const {
  const std::string key = HandleKey(options_.key_prefix, tenant, handle);
  absl::MutexLock lock(&mu_);
  auto it = handles_.find(key);
  if (it == handles_.end()) return std::nullopt;
  return it->second;
}

}  // namespace kvwarden
