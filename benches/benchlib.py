"""Shared helpers of the Python benchmarks in benches/ (stdlib only).

Every child process is started through `Procs`, which kills exactly the
processes it started (by PID) when the benchmark ends, fails or is
interrupted.
"""

import atexit
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.path.join(ROOT, "target", "release", "rollbackd")


def free_port():
    """A free loopback port: bind port 0, read it back, release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2.0):
    """(status, body) of one GET; (0, error text) when there is no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def wait_for(what, predicate, timeout, interval=0.05):
    """Poll `predicate` until it returns a true value; raise after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Procs:
    """The child processes of one benchmark; all killed on `stop_all`,
    at interpreter exit, and on SIGTERM/SIGINT."""

    def __init__(self):
        self.children = []
        atexit.register(self.stop_all)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.stop_all()
        sys.exit(128 + signum)

    def start(self, name, argv, log_path):
        log = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.children.append((name, p))
        return p

    def check_alive(self):
        for name, p in self.children:
            if p.poll() is not None:
                raise RuntimeError(f"{name} (pid {p.pid}) exited with {p.returncode}")

    def stop_all(self, keep=()):
        """SIGTERM every child (but those named in `keep`), SIGKILL after 5 s."""
        stopping = [(n, p) for n, p in self.children if n not in keep]
        for _name, p in stopping:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for _name, p in stopping:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.children = [(n, p) for n, p in self.children if n in keep]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.2f}"):
    return "n/a" if x is None else spec.format(x)


def git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def check_config(binary, path):
    """`rollbackd check --config path`; raise with its output when rejected."""
    r = subprocess.run([binary, "check", "--config", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"rollbackd check rejected {path} (exit {r.returncode}):\n{r.stdout}{r.stderr}")
