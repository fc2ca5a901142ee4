"""A private stoked for one benchmark: its own state dir, socket and config file in a
work directory, started and stopped by its pid (never by name)."""

import os
import signal
import subprocess
import time


class PrivateAgent:
    def __init__(self, stoked, work, extra_config=""):
        self.stoked = stoked
        self.sock = os.path.join(work, "stoke.sock")
        self.state = os.path.join(work, "state")
        self.conf = os.path.join(work, "stoked.conf")
        self.log = os.path.join(work, "stoked.log")
        self.extra_config = extra_config
        self.proc = None

    def start(self, timeout_s=10):
        """Starts it and waits for its socket; returns None, or why it did not start."""
        with open(self.conf, "w") as f:
            f.write(f'state_dir: "{self.state}"\nsocket_path: "{self.sock}"\nlog_level: "warn"\n{self.extra_config}')
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([self.stoked, "--config", self.conf], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.path.exists(self.sock):
                return None
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        return f"stoked did not start; its log:\n{self.log_tail()}"

    def stop(self):
        """SIGTERM (graceful), SIGKILL after 20 s."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, n=2000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError as e:
            return f"(no log: {e.strerror})"
