#include "cache_service/cluster/handles.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cache_service/cluster/cluster_view.h"
#include "cache_service/cluster/serial_worker.h"
#include "cache_service/util/log.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/entry_json.h"
#include "google/protobuf/util/json_util.h"

namespace kvwarden {

Handles::Handles(Options options)
    : options_(std::move(options)), worker_(std::make_unique<SerialWorker>("kvw-handles")) {}

Handles::~Handles() { worker_.reset(); }

absl::Status Handles::CheckName(absl::string_view handle) {
  if (handle.empty() || handle.size() > 200) {
    return absl::InvalidArgumentError("handle: must be 1 to 200 characters");
  }
  for (char c : handle) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        c != ':') {
      return absl::InvalidArgumentError("handle: only letters, digits, '.', '_', '-' and ':'");
    }
  }
  return absl::OkStatus();
}

void Handles::SetAddress(std::string grpc_address) {
  absl::MutexLock lock(&mu_);
  address_ = std::move(grpc_address);
}

std::string Handles::Key(const Entry& e) const {
  return HandleKey(options_.key_prefix, options_.ledger->name(e.tenant), e.handle);
}

absl::StatusOr<Handles::Entry> Handles::MakeEntry(TenantId tenant, SequenceId sequence,
                                                  const std::string& handle) const {
  Entry e{tenant, handle, {}, ""};
  e.info.set_handle(handle);
  e.info.set_node(options_.node);
  {
    absl::MutexLock lock(&mu_);
    e.info.set_grpc_address(address_);
  }
  e.info.set_sequence_id(sequence);
  e.info.set_published_unix_ms(absl::ToUnixMillis(absl::Now()));
  if (!google::protobuf::util::MessageToJsonString(e.info, &e.value).ok()) {
    return absl::InternalError("a HandleInfo does not print as JSON");
  }
  return e;
}

void Handles::Publish(TenantId tenant, SequenceId sequence, const std::string& handle, Done done) {
  if (absl::Status s = CheckName(handle); !s.ok()) return done(s);
  auto job = [this, tenant, sequence, handle, done](bool cancelled) {
    if (cancelled) return done(absl::UnavailableError("the daemon is stopping"));
    {
      absl::MutexLock lock(&mu_);
      if (auto it = entries_.find(sequence); it != entries_.end()) {
        return done(absl::AlreadyExistsError(absl::StrCat(
            "sequence ", sequence, " has the handle '", it->second.handle, "' already")));
      }
    }
    const int64_t lease = options_.node_lease();
    if (lease == 0)
      return done(absl::UnavailableError("this node is not registered in etcd (yet); retry"));
    absl::StatusOr<Entry> e = MakeEntry(tenant, sequence, handle);
    if (!e.ok()) return done(e.status());
    absl::StatusOr<bool> written = options_.etcd->PutIfAbsent(Key(*e), e->value, lease);
    if (!written.ok())
      return done(absl::UnavailableError(absl::StrCat("etcd: ", written.status().message())));
    if (!*written) {
      return done(absl::AlreadyExistsError(
          absl::StrCat("handle '", handle, "' names another sequence already")));
    }
    const v1::HandleInfo info = e->info;
    {
      absl::MutexLock lock(&mu_);
      entries_[sequence] = *e;
    }
    // Recorded first, checked second: a sequence that ended meanwhile either found the
    // record (SequenceEnded took it) or is seen gone here.
    if (!options_.alive(sequence)) {
      SequenceEnded(sequence, /*migrated=*/false);
      return done(absl::NotFoundError(
          absl::StrCat("sequence ", sequence, " ended while its handle was published")));
    }
    done(info);
  };
  if (!worker_->Post(std::move(job))) {
    done(absl::ResourceExhaustedError("too many handle requests wait on this node; retry later"));
  }
}

absl::Status Handles::PublishAdopted(TenantId tenant, SequenceId sequence,
                                     const std::string& handle) {
  if (absl::Status s = CheckName(handle); !s.ok()) return s;
  const int64_t lease = options_.node_lease();
  if (lease == 0) return absl::UnavailableError("this node is not registered in etcd (yet)");
  absl::StatusOr<Entry> e = MakeEntry(tenant, sequence, handle);
  if (!e.ok()) return e.status();
  if (absl::Status s = options_.etcd->Put(Key(*e), e->value, lease); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("etcd: ", s.message()));
  }
  absl::MutexLock lock(&mu_);
  entries_[sequence] = *std::move(e);
  return absl::OkStatus();
}

void Handles::Resolve(TenantId tenant, const std::string& handle, Done done) {
  if (absl::Status s = CheckName(handle); !s.ok()) return done(s);
  if (options_.view != nullptr) {
    if (std::optional<v1::HandleInfo> hit =
            options_.view->Handle(options_.ledger->name(tenant), handle)) {
      return done(*std::move(hit));
    }
  }
  auto job = [this, tenant, handle, done](bool cancelled) {
    if (cancelled) return done(absl::UnavailableError("the daemon is stopping"));
    const std::string key = HandleKey(options_.key_prefix, options_.ledger->name(tenant), handle);
    absl::StatusOr<std::optional<EtcdClient::KeyValue>> kv = options_.etcd->Get(key);
    if (!kv.ok())
      return done(absl::UnavailableError(absl::StrCat("etcd: ", kv.status().message())));
    if (!kv->has_value())
      return done(absl::NotFoundError(absl::StrCat("handle '", handle, "' not found")));
    v1::HandleInfo info;
    if (!ParseEntry((*kv)->value, &info)) {
      return done(absl::DataLossError(
          absl::StrCat("handle '", handle, "': its entry is not a HandleInfo")));
    }
    done(info);
  };
  if (!worker_->Post(std::move(job))) {
    done(absl::ResourceExhaustedError("too many handle requests wait on this node; retry later"));
  }
}

std::string Handles::HandleOf(SequenceId sequence) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(sequence);
  return it == entries_.end() ? "" : it->second.handle;
}

void Handles::SequenceEnded(SequenceId sequence, bool migrated) {
  Entry e;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(sequence);
    if (it == entries_.end()) return;
    e = std::move(it->second);
    entries_.erase(it);
  }
  if (migrated) return;
  // Only our own entry goes: compared by value, so a newer owner's is never deleted.
  worker_->Post([this, e = std::move(e)](bool cancelled) {
    if (cancelled) return;  // the node's lease takes the entry with it
    absl::StatusOr<bool> gone = options_.etcd->DeleteIfValue(Key(e), e.value);
    if (!gone.ok()) {
      LogEvent(LogLevel::kWarning, "handle_not_deleted")
          .Field("handle", e.handle)
          .Field("detail", gone.status().message());
    }
  });
}

void Handles::Republish(int64_t lease) {
  std::vector<Entry> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [seq, e] : entries_) all.push_back(e);
  }
  for (const Entry& e : all) {
    if (absl::Status s = options_.etcd->Put(Key(e), e.value, lease); !s.ok()) {
      LogEvent(LogLevel::kWarning, "handle_not_republished")
          .Field("handle", e.handle)
          .Field("detail", s.message());
    }
  }
}

}  // namespace kvwarden
