#include "tests/support/etcd_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cluster/etcd_client.h"

namespace kvwarden::testing {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";

bool Exited(pid_t pid, absl::Duration within) {
  const absl::Time deadline = absl::Now() + within;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

bool Listening(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// Starts etcd with `args` (argv[0] included), its output appended to `log_path`; the
// pid, or -1 when fork failed.
pid_t SpawnEtcd(std::vector<std::string> args, const std::string& log_path) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<EtcdProcess>> EtcdProcess::Start(const std::string& also_on) {
  if (access(kEtcd, X_OK) != 0) {
    return absl::FailedPreconditionError(
        "no /usr/bin/etcd: apt-get install etcd-server (scripts/install_deps.sh)");
  }
  std::unique_ptr<EtcdProcess> e(new EtcdProcess());
  e->client_port_ = FreeLoopbackPort();
  e->peer_port_ = FreeLoopbackPort();
  e->endpoint_ = absl::StrCat("127.0.0.1:", e->client_port_);
  e->also_on_ = also_on;
  if (absl::Status s = e->Launch(); !s.ok()) return s;
  return e;
}

absl::Status EtcdProcess::Launch() {
  std::string client = absl::StrCat("http://", endpoint_);
  if (!also_on_.empty()) absl::StrAppend(&client, ",http://", also_on_, ":", client_port_);
  const std::string peer = absl::StrCat("http://127.0.0.1:", peer_port_);
  const std::string data = absl::StrCat(dir_.path(), "/data", generation_);
  const std::string log_path = absl::StrCat(dir_.path(), "/etcd.log");
  std::vector<std::string> args = {kEtcd,
                                   "--name=kvw-test",
                                   "--data-dir=" + data,
                                   "--listen-client-urls=" + client,
                                   "--advertise-client-urls=" + client,
                                   "--listen-peer-urls=" + peer,
                                   "--initial-advertise-peer-urls=" + peer,
                                   "--initial-cluster=kvw-test=" + peer,
                                   "--log-level=warn"};
  pid_ = SpawnEtcd(args, log_path);
  if (pid_ < 0) return absl::InternalError("fork failed");
  // Plain connects until etcd listens, then the gRPC probe.
  const absl::Time listen_deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < listen_deadline && !Listening(client_port_))
    absl::SleepFor(absl::Milliseconds(20));
  EtcdClient::Options options;
  options.endpoints = {endpoint_};
  options.call_timeout = absl::Milliseconds(500);
  absl::StatusOr<std::unique_ptr<EtcdClient>> etcd = EtcdClient::Create(options);
  if (!etcd.ok()) return etcd.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  absl::Status last;
  while (absl::Now() < deadline) {
    // A write, not a read: a linearizable read sent before the member has elected itself
    // holds etcd's read loop for its request timeout (~7 s), and every read after it waits.
    if (last = (*etcd)->Put("/kvw-test-ready", "1"); last.ok()) return absl::OkStatus();
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("etcd exited at start: ", log()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("etcd did not answer in 20 s: ", last.ToString()));
}

void EtcdProcess::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (!Exited(pid_, absl::Seconds(5))) {
    kill(pid_, SIGKILL);
    Exited(pid_, absl::Seconds(5));
  }
  pid_ = -1;
}

absl::Status EtcdProcess::Restart(bool wipe) {
  Stop();
  if (wipe) ++generation_;
  return Launch();
}

EtcdProcess::~EtcdProcess() { Stop(); }

std::string EtcdProcess::log() const {
  std::ifstream in(absl::StrCat(dir_.path(), "/etcd.log"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start() {
  if (access(kEtcd, X_OK) != 0 || access("/usr/bin/etcdctl", X_OK) != 0) {
    return absl::FailedPreconditionError(
        "no /usr/bin/etcd or etcdctl: apt-get install etcd-server etcd-client "
        "(scripts/install_deps.sh)");
  }
  std::unique_ptr<EtcdCluster> c(new EtcdCluster());
  std::vector<std::string> peers;
  std::string initial;
  // Six ports, all different: FreeLoopbackPort closes its probe, so the kernel may hand
  // the same port out twice in a row, and two members on one port never form a cluster.
  std::vector<int> ports;
  while (ports.size() < 6) {
    const int port = FreeLoopbackPort();
    if (port != 0 && std::find(ports.begin(), ports.end(), port) == ports.end())
      ports.push_back(port);
  }
  for (int i = 0; i < 3; ++i) {
    c->endpoints_.push_back(absl::StrCat("127.0.0.1:", ports[2 * i]));
    peers.push_back(absl::StrCat("http://127.0.0.1:", ports[2 * i + 1]));
    absl::StrAppend(&initial, i ? "," : "", "m", i, "=", peers[i]);
  }
  for (int i = 0; i < 3; ++i) {
    const std::string client = "http://" + c->endpoints_[i];
    std::vector<std::string> args = {kEtcd,
                                     absl::StrCat("--name=m", i),
                                     absl::StrCat("--data-dir=", c->dir_.path(), "/m", i),
                                     "--listen-client-urls=" + client,
                                     "--advertise-client-urls=" + client,
                                     "--listen-peer-urls=" + peers[i],
                                     "--initial-advertise-peer-urls=" + peers[i],
                                     "--initial-cluster=" + initial,
                                     "--initial-cluster-state=new",
                                     "--log-level=warn"};
    const pid_t pid = SpawnEtcd(args, absl::StrCat(c->dir_.path(), "/m", i, ".log"));
    if (pid < 0) return absl::InternalError("fork failed");
    c->pids_.push_back(pid);
  }
  EtcdClient::Options options;
  options.endpoints = c->endpoints_;
  options.call_timeout = absl::Milliseconds(500);
  absl::StatusOr<std::unique_ptr<EtcdClient>> etcd = EtcdClient::Create(options);
  if (!etcd.ok()) return etcd.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::Status last;
  while (absl::Now() < deadline) {
    if (last = (*etcd)->Put("/kvw-test-ready", "1"); last.ok() && c->Leader().ok()) return c;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the etcd cluster did not form in 30 s: ", last.ToString()));
}

EtcdCluster::~EtcdCluster() {
  for (pid_t pid : pids_) {
    kill(pid, SIGCONT);
    kill(pid, SIGTERM);
  }
  for (pid_t pid : pids_) {
    if (!Exited(pid, absl::Seconds(5))) {
      kill(pid, SIGKILL);
      Exited(pid, absl::Seconds(5));
    }
  }
}

std::string EtcdCluster::cluster_flag() const {
  std::string flag = "--cluster=etcd://";
  for (size_t i = 0; i < endpoints_.size(); ++i)
    absl::StrAppend(&flag, i ? "," : "", endpoints_[i]);
  return flag;
}

absl::StatusOr<int> EtcdCluster::Leader() const {
  // Each member once: its own id and the leader's id, in "-w fields" lines like
  // "\"MemberID\" : 123". A frozen member never answers.
  std::vector<std::string> member_ids(endpoints_.size());
  std::string leader;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    const CommandResult r =
        RunCommand({"/usr/bin/etcdctl", "--endpoints=" + endpoints_[i], "--command-timeout=1s",
                    "--dial-timeout=1s", "endpoint", "status", "-w", "fields"});
    if (r.exit_code != 0) continue;
    auto field = [&](const std::string& name) -> std::string {
      const size_t at = r.out.find("\"" + name + "\" : ");
      if (at == std::string::npos) return "";
      const size_t start = at + name.size() + 5;
      return r.out.substr(start, r.out.find('\n', start) - start);
    };
    member_ids[i] = field("MemberID");
    if (const std::string l = field("Leader"); !l.empty() && l != "0") leader = l;
  }
  for (size_t i = 0; i < member_ids.size(); ++i) {
    if (!leader.empty() && member_ids[i] == leader) return static_cast<int>(i);
  }
  return absl::UnavailableError("no answering etcd member is the leader they name");
}

void EtcdCluster::Freeze(int member) { kill(pids_[member], SIGSTOP); }
void EtcdCluster::Thaw(int member) { kill(pids_[member], SIGCONT); }

}  // namespace kvwarden::testing
