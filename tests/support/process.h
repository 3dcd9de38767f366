#pragma once

// Real processes for integration tests: the kvwardend binary on an ephemeral loopback
// port (stopped by pid), and command runs (kvwctl) with their exit code and output.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwarden::testing {

// $KVW_BIN_DIR/<name> when set, else <build>/bin/<name> (KVW_BIN_DIR is compiled into
// every test).
std::string BinPath(const std::string& name);

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& contents) const;

 private:
  std::string path_;
};

class DaemonProcess {
 public:
  // Writes `config_text` to a file and starts kvwardend with --listen=127.0.0.1:0,
  // returning once it has written its ready file (or failing if it exits first).
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(const std::string& config_text);
  // As above with extra flags (e.g. --attach-socket) and a fixed --listen address (so a
  // restarted daemon comes back where clients look for it).
  // `wrapper` (e.g. {"ip", "netns", "exec", NS}) runs the daemon through a command
  // that execs it in place (the pid stays the daemon's).
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::string& config_text, const std::vector<std::string>& extra_args,
      const std::string& listen = "127.0.0.1:0", const std::vector<std::string>& wrapper = {});
  // SIGKILL now (a crash), waiting for the pid.
  void Kill();
  // SIGTERM, then SIGKILL after 5 s; waits for the pid.
  ~DaemonProcess();

  const std::string& target() const { return target_; }
  pid_t pid() const { return pid_; }
  std::string log() const;  // the daemon's stderr so far

 private:
  DaemonProcess() = default;
  TempDir dir_;
  pid_t pid_ = -1;
  std::string target_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with the given arguments and waits for it.
CommandResult RunCommand(const std::vector<std::string>& argv);

// Starts argv[0] with stdout to a pipe; returns the pid and the pipe's read end.
struct Child {
  pid_t pid = -1;
  int stdout_fd = -1;
};
Child SpawnWithStdoutPipe(const std::vector<std::string>& argv);
// Reads one '\n'-terminated line from `fd` (blocking; empty at EOF).
std::string ReadLine(int fd);

}  // namespace kvwarden::testing
