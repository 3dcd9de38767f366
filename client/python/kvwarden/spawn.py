"""LocalDaemon: a kvwardend of a tool's (or test's) own, on loopback, stopped by its pid."""

import os
import signal
import subprocess
import time
from typing import Optional


def stop_process(proc: subprocess.Popen, timeout: float = 5.0):
    """SIGTERM, then SIGKILL if `proc` is still there after `timeout` seconds; waits for it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


class LocalDaemon:
    """Starts `binary` with `config` (text proto) in `workdir`, listening on a free
    loopback port (the address in `target` once ready), the attach socket in
    `attach_socket` when asked for, and `extra_args` (e.g. ["--metrics", "127.0.0.1:0"]).
    Use as a context manager, or call stop()."""

    def __init__(self, binary: str, config: str, workdir: str, attach: bool = False, start_timeout: float = 20,
                 extra_args=()):
        cfg = os.path.join(workdir, "kvwardend.textproto")
        with open(cfg, "w") as f:
            f.write(config)
        ready = os.path.join(workdir, "ready")
        self.attach_socket: Optional[str] = os.path.join(workdir, "attach.sock") if attach else None
        self.log_path = os.path.join(workdir, "kvwardend.log")
        self._log = open(self.log_path, "w")
        cmd = [binary, "--config", cfg, "--listen", "127.0.0.1:0", "--ready-file", ready]
        if self.attach_socket:
            cmd += ["--attach-socket", self.attach_socket]
        cmd += list(extra_args)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + start_timeout
        while not (os.path.exists(ready) and os.path.getsize(ready) > 0):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("kvwardend did not start: " + open(self.log_path).read())
            time.sleep(0.02)
        self.target = open(ready).read().strip()

    def stop(self):
        stop_process(self.proc)
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
