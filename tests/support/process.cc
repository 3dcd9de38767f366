#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace kvwarden::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> out;
  for (const std::string& a : args) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// Waits for `pid` up to `timeout`; returns its exit code (128+signal), or -1 if still running.
int WaitFor(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0 || absl::Now() > deadline) return -1;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace

std::string BinPath(const std::string& name) {
  // The environment wins: scripts/gpu_check.sh runs the tests from a carried folder.
  const char* dir = std::getenv("KVW_BIN_DIR");
  return absl::StrCat(dir != nullptr && *dir != '\0' ? dir : KVW_BIN_DIR, "/", name);
}

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(tmp ? tmp : "/tmp", "/kvw-test-XXXXXX");
  path_ = mkdtemp(templ.data());
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Write(const std::string& name, const std::string& contents) const {
  const std::string p = absl::StrCat(path_, "/", name);
  std::ofstream(p) << contents;
  return p;
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::string& config_text) {
  return Start(config_text, {});
}

void DaemonProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitFor(pid_, absl::Seconds(5));
  pid_ = -1;
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::string& config_text, const std::vector<std::string>& extra_args,
    const std::string& listen, const std::vector<std::string>& wrapper) {
  std::unique_ptr<DaemonProcess> d(new DaemonProcess());
  const std::string config = d->dir_.Write("kvwardend.textproto", config_text);
  const std::string ready = absl::StrCat(d->dir_.path(), "/ready");
  const std::string log = absl::StrCat(d->dir_.path(), "/daemon.log");
  std::vector<std::string> args = {BinPath("kvwardend"), "--config=" + config, "--listen=" + listen,
                                   "--ready-file=" + ready};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  args.insert(args.begin(), wrapper.begin(), wrapper.end());
  auto argv = Argv(args);
  d->pid_ = fork();
  if (d->pid_ < 0) return absl::InternalError("fork failed");
  if (d->pid_ == 0) {
    // The daemon dies with the test process, even if the test crashes, and writes only
    // to its log, so a crashed test never leaves it holding ctest's output pipe.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (wrapper.empty()) {
      execv(argv[0], argv.data());
    } else {
      execvp(argv[0], argv.data());
    }
    _exit(127);
  }
  // The ready file appears (atomically) once the server accepts connections.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (access(ready.c_str(), F_OK) == 0) {
      d->target_ = std::string(absl::StripSuffix(ReadFile(ready), "\n"));
      return d;
    }
    int status = 0;
    if (waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
      d->pid_ = -1;
      return absl::InternalError(absl::StrCat("kvwardend exited at start: ", ReadFile(log)));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return absl::DeadlineExceededError("kvwardend did not become ready in 20 s");
}

DaemonProcess::~DaemonProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (WaitFor(pid_, absl::Seconds(5)) < 0) {
    kill(pid_, SIGKILL);
    WaitFor(pid_, absl::Seconds(5));
  }
}

std::string DaemonProcess::log() const {
  return ReadFile(absl::StrCat(dir_.path(), "/daemon.log"));
}

CommandResult RunCommand(const std::vector<std::string>& args) {
  TempDir dir;
  const std::string out = dir.path() + "/out", err = dir.path() + "/err";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  auto argv = Argv(args);
  pid_t pid = -1;
  CommandResult result;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0) {
    result.exit_code = WaitFor(pid, absl::Seconds(60));
  }
  posix_spawn_file_actions_destroy(&actions);
  result.out = ReadFile(out);
  result.err = ReadFile(err);
  return result;
}

Child SpawnWithStdoutPipe(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {};
  auto argv = Argv(args);
  Child child;
  child.pid = fork();
  if (child.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  child.stdout_fd = fds[0];
  return child;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  return line;
}

}  // namespace kvwarden::testing
