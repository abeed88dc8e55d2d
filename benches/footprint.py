#!/usr/bin/python3
"""Footprint benchmark (issue #9): rollbackd's RSS and CPU at 100 targets x 3 rules.

Every target has a probe rule against one small local ThreadingHTTPServer
health endpoint, a host cpu rule and a host memory rule; poll_interval 5s;
the rollback is a harmless command that appends the target's name to a
file (it should never run: the service is healthy and the host thresholds
are set out of reach on purpose, cpu > 0.99 and memory > 0.95 for 1m, so
that a busy shared build machine does not turn the measurement into a
rollback benchmark).

Measured from /proc/PID of the daemon:
  - RSS: VmHWM (peak since start) and VmRSS sampled every second over the
    window (median and last reported as "steady");
  - CPU: utime + stime over the window, as % of one core.
The health server counts the largest number of connections it handled at
the same time (in its handler, under a lock) and the requests it served.

Run from the repository root, after `cargo build --release`:

    /usr/bin/python3 benches/footprint.py                 # 100 targets, 60 s window
    /usr/bin/python3 benches/footprint.py --targets 300 --window 120 --keep

Stdlib only; free loopback ports, a temp dir (removed unless --keep), the
daemon killed at the end, also on error.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchlib import (DEFAULT_BINARY, Procs, check_config, free_port, git_commit, http_get, machine,
                      wait_for)


class HealthServer:
    """GET /health -> 200 "ok". Counts concurrent connections and requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current = 0
        self.max_concurrent = 0
        self.max_in_window = 0
        self.requests = 0
        self.errors = 0
        hs = self

        class Handler(BaseHTTPRequestHandler):
            def handle(self):
                with hs.lock:
                    hs.current += 1
                    hs.max_concurrent = max(hs.max_concurrent, hs.current)
                    hs.max_in_window = max(hs.max_in_window, hs.current)
                try:
                    super().handle()
                finally:
                    with hs.lock:
                        hs.current -= 1

            def do_GET(self):
                with hs.lock:
                    hs.requests += 1
                if self.path != "/health":
                    with hs.lock:
                        hs.errors += 1
                    self.send_error(404)
                    return
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset_window(self):
        with self.lock:
            self.max_in_window = self.current
            return self.requests

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def config(d, targets, health_port, rb_port, cpu_above, memory_above, cpu_metric):
    out = [f"""# Written by benches/footprint.py
[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:{rb_port}"
poll_interval = "5s"

[notify.email]
from = "rollbackd <rollbackd@bench.invalid>"
to = ["admin@example.com"]
outbox_dir = "{d}/state/outbox"
"""]
    for i in range(targets):
        name = f"t{i:03d}"
        out.append(f"""
[[target]]
name = "{name}"
confirm = "none"
cooldown = "1h"

  [[target.rule]]
  name = "health"
  source = "probe"
  url = "http://127.0.0.1:{health_port}/health"
  timeout = "2s"
  measure = "failure_ratio"
  window = "30s"
  above = 0.5
  for = "1m"

  [[target.rule]]
  name = "cpu"
  source = "host"
  metric = "{cpu_metric}"
  above = {cpu_above}
  for = "1m"

  [[target.rule]]
  name = "memory"
  source = "host"
  metric = "memory"
  above = {memory_above}
  for = "1m"

  [target.rollback]
  kind = "command"
  timeout = "10s"
  steps = [["/bin/sh", "-c", "echo {name} >> {d}/rolled.txt"]]
""")
    path = os.path.join(d, "rollbackd.toml")
    with open(path, "w") as f:
        f.write("".join(out))
    return path


def proc_status(pid):
    v = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                v[k] = int(rest.split()[0])  # kB, or a count
    return v


def host_busy_ticks():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def journal_lines(d):
    try:
        with open(f"{d}/state/journal.jsonl", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds after the API is up before the window (default 20)")
    ap.add_argument("--window", type=float, default=60.0, help="measurement window in s (default 60)")
    ap.add_argument("--binary", default=DEFAULT_BINARY, help="rollbackd binary (default: %(default)s)")
    ap.add_argument("--cpu-above", type=float, default=0.99,
                    help="host cpu rule threshold (default 0.99: out of reach on a healthy host)")
    ap.add_argument("--cpu-metric", choices=("cpu", "memory"), default="cpu",
                    help="diagnostic: `memory` makes the second rule a second memory rule, to see the "
                         "cost without host-cpu status flapping on a saturated host")
    ap.add_argument("--memory-above", type=float, default=0.95, help="host memory rule threshold")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, log, journal)")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"missing {args.binary} (run cargo build --release)")

    print(f"# footprint benchmark: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"commit {git_commit()}, {machine()}")
    d = tempfile.mkdtemp(prefix="rollbackd-footprint-")
    procs = Procs()
    health = HealthServer()
    try:
        rb_port = free_port()
        path = config(d, args.targets, health.port, rb_port, args.cpu_above, args.memory_above,
                      args.cpu_metric)
        check_config(args.binary, path)
        p = procs.start("rollbackd", [args.binary, "run", "--config", path], f"{d}/rollbackd.log")

        def up():
            procs.check_alive()
            return http_get(f"http://127.0.0.1:{rb_port}/healthz", timeout=1)[0] == 200

        wait_for("rollbackd", up, 30)
        time.sleep(args.warmup)
        procs.check_alive()

        hz = os.sysconf("SC_CLK_TCK")
        req0 = health.reset_window()
        j0, host0 = journal_lines(d), host_busy_ticks()
        ticks0, t0 = cpu_ticks(p.pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < args.window:
            procs.check_alive()
            rss.append(proc_status(p.pid)["VmRSS"])
            time.sleep(1.0)
        ticks1, t1 = cpu_ticks(p.pid), time.monotonic()
        j1, host1 = journal_lines(d), host_busy_ticks()
        with open("/proc/loadavg") as f:
            loadavg = " ".join(f.read().split()[:3])
        st = proc_status(p.pid)
        with health.lock:
            req1, max_win, max_all = health.requests, health.max_in_window, health.max_concurrent
        code, body = http_get(f"http://127.0.0.1:{rb_port}/v1/status", timeout=5)
        phases = {}
        try:
            for t in json.loads(body)["targets"]:
                phases[t["phase"]] = phases.get(t["phase"], 0) + 1
        except (ValueError, KeyError, TypeError):
            phases = {"unreadable /v1/status": f"{code} {body[:80]!r}"}
        rolled = 0
        if os.path.exists(f"{d}/rolled.txt"):
            with open(f"{d}/rolled.txt") as f:
                rolled = sum(1 for _ in f)

        elapsed = t1 - t0
        cpu_pct = 100.0 * (ticks1 - ticks0) / hz / elapsed
        mib = lambda kb: kb / 1024.0
        print(f"targets {args.targets} x 3 rules, poll_interval 5s, window {elapsed:.1f} s "
              f"after {args.warmup:.0f} s warm-up")
        print()
        print("| targets | rules | peak RSS VmHWM (MiB) | steady RSS median (MiB) | RSS at end (MiB) "
              "| CPU (% of one core) | threads | probe requests/s | max concurrent connections "
              "(window / whole run) | rollbacks run |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| {args.targets} | {3 * args.targets} | {mib(st['VmHWM']):.1f} "
              f"| {mib(statistics.median(rss)):.1f} | {mib(st['VmRSS']):.1f} | {cpu_pct:.2f} "
              f"| {st['Threads']} | {(req1 - req0) / elapsed:.1f} | {max_win} / {max_all} | {rolled} |")
        print()
        print(f"phases at the end: {phases}")
        print(f"RSS min/max in window: {mib(min(rss)):.1f} / {mib(max(rss)):.1f} MiB; "
              f"health server errors {health.errors}")
        host = 100.0 * (host1[0] - host0[0]) / max(1, host1[1] - host0[1])
        print(f"journal entries written in the window: {j1 - j0} (a step is journaled when a rule "
              f"status, the phase or the version changes); host CPU busy {host:.0f}% of all cores "
              f"in the window, load average {loadavg}")
        print(f"target < 20 MiB: {'met' if mib(st['VmHWM']) < 20 else 'NOT met'} (peak); "
              f"target < 1% of one core: {'met' if cpu_pct < 1.0 else 'NOT met'}")
        if args.keep:
            print(f"kept {d}")
    finally:
        procs.stop_all()
        health.close()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
