#!/usr/bin/python3
"""Side-by-side detection benchmark (issue #9): Alertmanager vs rollbackd.

One run, on the same data:

  exporter (http_requests_total{code="200"|"500"}, 200 req/s, 5xx ratio
  stepped 1% -> 20% at T0)
    -> Prometheus (scrape 1s, evaluation 1s), alerting rule
       ratio(rate[5s]) > 0.05 for 10s
         -> Alertmanager (group_wait 0s) -> webhook receiver (arrival time)
                                         -> rollbackd POST /v1/alertmanager
    -> rollbackd target "promql": the same PromQL polled by rollbackd itself
       (poll_interval 1s, above 0.05, for 10s)
  rollbackd target "alertmanager": rule source = "alertmanager", for = "0s".

Each target's rollback is one command step appending `date +%s.%N` to a
file, so "action start" is the instant rollbackd's executor started the
step. Reported per run, relative to T0: the webhook's arrival, A (own
PromQL rule) and B (Alertmanager receiver); and A/webhook, B - webhook.
Every run starts a fresh Prometheus, Alertmanager and daemon.

Run from the repository root, after `cargo build --release`:

    /usr/bin/python3 benches/detection.py            # 3 runs
    /usr/bin/python3 benches/detection.py --runs 5 --keep

Stdlib only. Free loopback ports, a temp dir per run (removed unless
--keep), every process it started killed at the end, also on error.
"""

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchlib import (DEFAULT_BINARY, Procs, check_config, fmt, free_port, git_commit, http_get,
                      machine, median, wait_for)

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMTOOL = "/usr/bin/promtool"

ALERT = "BenchHighErrorRate"
QUERY = ('sum(rate(http_requests_total{code=~"5.."}[5s])) '
         '/ sum(rate(http_requests_total[5s]))')
RPS = 200.0
RATIO_BEFORE = 0.01
RATIO_AFTER = 0.20


class Exporter:
    """http_requests_total by code, growing at `RPS` with a 5xx ratio that
    `step` changes; the counters are advanced to the instant of each scrape."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0.0
        self.err = 0.0
        self.ratio = RATIO_BEFORE
        self.last = time.time()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                ok, err = exporter.sample()
                body = ("# TYPE http_requests_total counter\n"
                        f'http_requests_total{{code="200"}} {ok:.3f}\n'
                        f'http_requests_total{{code="500"}} {err:.3f}\n').encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _advance(self):
        now = time.time()
        n = RPS * (now - self.last)
        self.last = now
        self.err += n * self.ratio
        self.ok += n * (1.0 - self.ratio)
        return now

    def sample(self):
        with self.lock:
            self._advance()
            return self.ok, self.err

    def step(self, ratio):
        """Switch to `ratio` now; returns the instant (T0)."""
        with self.lock:
            t0 = self._advance()
            self.ratio = ratio
            return t0

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhookReceiver:
    """Records the arrival time and payload of each Alertmanager delivery."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # (arrival time, payload dict)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                t = time.time()
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"unparsed": raw.decode("utf-8", "replace")}
                with receiver.lock:
                    receiver.events.append((t, payload))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first_firing(self):
        with self.lock:
            for t, p in self.events:
                if p.get("status") == "firing":
                    return t, p
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def parse_rfc3339(s):
    """Prometheus/Alertmanager timestamps (nanosecond fractions, Z) -> epoch."""
    s = s.replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        frac = "".join(c for c in rest if c.isdigit())
        tz = rest[len(frac):]
        s = f"{head}.{frac[:6].ljust(6, '0')}{tz}"
    return datetime.datetime.fromisoformat(s).timestamp()


def first_time(path):
    try:
        with open(path) as f:
            line = f.readline().strip()
        return float(line) if line else None
    except (OSError, ValueError):
        return None


def write_configs(d, exporter_port, prom_port, am_port, hook_port, rb_port):
    rules = f"""groups:
  - name: bench
    interval: 1s
    rules:
      - alert: {ALERT}
        expr: {QUERY} > 0.05
        for: 10s
        labels:
          severity: page
        annotations:
          summary: 5xx ratio above 5%
"""
    prom = f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {d}/rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ['127.0.0.1:{exporter_port}']
"""
    am = f"""route:
  receiver: bench
  group_by: ['alertname']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: bench
    webhook_configs:
      - url: http://127.0.0.1:{hook_port}/hook
        send_resolved: true
      - url: http://127.0.0.1:{rb_port}/v1/alertmanager
        send_resolved: true
"""
    rb = f"""# Written by benches/detection.py
[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:{rb_port}"
poll_interval = "1s"
max_simultaneous_breaches = 0

[prometheus]
url = "http://127.0.0.1:{prom_port}"
timeout = "1s"

[notify.email]
from = "rollbackd <rollbackd@bench.invalid>"
to = ["admin@example.com"]
outbox_dir = "{d}/state/outbox"

[[target]]
name = "promql"
confirm = "none"
cooldown = "1h"

  [[target.rule]]
  name = "http-5xx-rate"
  source = "prometheus"
  query = '{QUERY}'
  above = 0.05
  for = "10s"

  [target.rollback]
  kind = "command"
  timeout = "10s"
  steps = [["/bin/sh", "-c", "date +%s.%N >> {d}/A.txt"]]

[[target]]
name = "alertmanager"
confirm = "none"
cooldown = "1h"

  [[target.rule]]
  name = "paged"
  source = "alertmanager"
  match = {{ alertname = "{ALERT}" }}
  for = "0s"

  [target.rollback]
  kind = "command"
  timeout = "10s"
  steps = [["/bin/sh", "-c", "date +%s.%N >> {d}/B.txt"]]
"""
    files = {"rules.yml": rules, "prometheus.yml": prom, "alertmanager.yml": am,
             "rollbackd.toml": rb}
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def run_once(idx, args, procs):
    d = tempfile.mkdtemp(prefix=f"rollbackd-detect-{idx}-")
    exporter = Exporter()
    hook = WebhookReceiver()
    prom_port, am_port, rb_port = free_port(), free_port(), free_port()
    try:
        write_configs(d, exporter.port, prom_port, am_port, hook.port, rb_port)
        try:
            check_config(args.binary, f"{d}/rollbackd.toml")
        except RuntimeError as e:
            # A daemon without the blast-radius guard rejects its key: drop it.
            if "max_simultaneous_breaches" not in str(e):
                raise
            path = f"{d}/rollbackd.toml"
            with open(path) as f:
                text = f.read().replace("max_simultaneous_breaches = 0\n", "")
            with open(path, "w") as f:
                f.write(text)
            print(f"run {idx}: this rollbackd rejects max_simultaneous_breaches; left out",
                  file=sys.stderr)
            check_config(args.binary, path)
        if os.path.exists(PROMTOOL):
            r = subprocess.run([PROMTOOL, "check", "rules", f"{d}/rules.yml"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"promtool rejected the rule file:\n{r.stdout}{r.stderr}")

        procs.start("alertmanager", [
            ALERTMANAGER, f"--config.file={d}/alertmanager.yml", f"--storage.path={d}/am-data",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ], f"{d}/alertmanager.log")
        procs.start("rollbackd", [args.binary, "run", "--config", f"{d}/rollbackd.toml"],
                    f"{d}/rollbackd.log")
        procs.start("prometheus", [
            PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/prom-data",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], f"{d}/prometheus.log")

        def ready(port, path):
            procs.check_alive()
            return http_get(f"http://127.0.0.1:{port}{path}", timeout=1)[0] == 200

        wait_for("alertmanager", lambda: ready(am_port, "/-/ready"), 30)
        wait_for("prometheus", lambda: ready(prom_port, "/-/ready"), 30)
        wait_for("rollbackd", lambda: ready(rb_port, "/healthz"), 30)

        q = urllib.parse.quote(QUERY, safe="")

        def has_ratio():
            procs.check_alive()
            code, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}")
            if code != 200:
                return False
            res = json.loads(body)["data"]["result"]
            return bool(res) and res[0]["value"][1] not in ("NaN", "+Inf")

        wait_for("the ratio in Prometheus", has_ratio, 60, interval=0.2)
        # A full 5 s rate window of baseline data, the daemon's rule seen Ok
        # for a few polls, and the step at a random phase of the 1 s scrape,
        # evaluation and poll cycles.
        time.sleep(args.warmup + random.random())
        procs.check_alive()
        if first_time(f"{d}/A.txt") or first_time(f"{d}/B.txt") or hook.first_firing():
            raise RuntimeError(f"something fired before the step; see {d}")

        t0 = exporter.step(RATIO_AFTER)

        def all_seen():
            procs.check_alive()
            return (hook.first_firing() and first_time(f"{d}/A.txt")
                    and first_time(f"{d}/B.txt"))

        try:
            wait_for("webhook, A and B", all_seen, args.timeout, interval=0.05)
        except TimeoutError as e:
            print(f"run {idx}: {e} (missing ones reported as n/a)", file=sys.stderr)

        ff = hook.first_firing()
        w = ff[0] - t0 if ff else None
        fired = None  # the evaluation that found `for` elapsed (startsAt sent to Alertmanager)
        if ff:
            try:
                fired = parse_rfc3339(ff[1]["alerts"][0]["startsAt"]) - t0
            except (KeyError, IndexError, ValueError):
                pass
        active = None  # the evaluation that first saw the condition (pending since)
        code, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/alerts")
        if code == 200:
            for al in json.loads(body)["data"]["alerts"]:
                if al["labels"].get("alertname") == ALERT:
                    active = parse_rfc3339(al["activeAt"]) - t0
        a = first_time(f"{d}/A.txt")
        b = first_time(f"{d}/B.txt")
        a = a - t0 if a else None
        b = b - t0 if b else None
        code, status = http_get(f"http://127.0.0.1:{rb_port}/v1/status")
        with open(f"{d}/status.json", "w") as f:
            f.write(status)
        return {
            "run": idx, "dir": d, "active": active, "fired": fired, "webhook": w, "A": a, "B": b,
            "A/webhook": (a / w) if (a is not None and w) else None,
            "B-webhook": (b - w) if (b is not None and w is not None) else None,
        }
    finally:
        procs.stop_all()
        exporter.close()
        hook.close()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--binary", default=DEFAULT_BINARY, help="rollbackd binary (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=8.0,
                    help="seconds of baseline data after the ratio first shows (default 8)")
    ap.add_argument("--timeout", type=float, default=40.0,
                    help="seconds after T0 to wait for all three (default 40)")
    ap.add_argument("--keep", action="store_true", help="keep each run's temp dir (logs, journal)")
    args = ap.parse_args()
    for path in (args.binary, PROMETHEUS, ALERTMANAGER):
        if not os.path.exists(path):
            sys.exit(f"missing {path}" + (" (run cargo build --release)" if path == args.binary else ""))

    started = time.time()
    print(f"# detection benchmark: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"commit {git_commit()}, {machine()}")
    print(f"# binary {args.binary}; {args.runs} runs; step {RATIO_BEFORE:.0%} -> {RATIO_AFTER:.0%} "
          f"5xx at {RPS:.0f} req/s")
    procs = Procs()
    rows = []
    for i in range(1, args.runs + 1):
        r = run_once(i, args, procs)
        rows.append(r)
        print(f"run {i}: webhook {fmt(r['webhook'])} s, A {fmt(r['A'])} s, B {fmt(r['B'])} s"
              + (f"  ({r['dir']})" if args.keep else ""), flush=True)

    print()
    print("| run | Prometheus pending (s) | Prometheus firing (s) | webhook arrival (s) | A: own PromQL rule (s) "
          "| B: Alertmanager receiver (s) | A / webhook | B - webhook (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['run']} | {fmt(r['active'])} | {fmt(r['fired'])} | {fmt(r['webhook'])} | {fmt(r['A'])} | {fmt(r['B'])} "
              f"| {fmt(r['A/webhook'], '{:.3f}')} | {fmt(r['B-webhook'], '{:+.3f}')} |")
    med = {k: median([r[k] for r in rows]) for k in ("active", "fired", "webhook", "A", "B", "A/webhook", "B-webhook")}
    print(f"| median | {fmt(med['active'])} | {fmt(med['fired'])} | {fmt(med['webhook'])} | {fmt(med['A'])} | {fmt(med['B'])} "
          f"| {fmt(med['A/webhook'], '{:.3f}')} | {fmt(med['B-webhook'], '{:+.3f}')} |")
    print()
    ok_a = med["A/webhook"] is not None and med["A/webhook"] <= 1.0
    ok_b = med["B-webhook"] is not None and med["B-webhook"] <= 0.1
    print(f"target A/webhook median <= 1.0: {'met' if ok_a else 'NOT met'} "
          f"({fmt(med['A/webhook'], '{:.3f}')})")
    print(f"target B - webhook median <= +0.1 s: {'met' if ok_b else 'NOT met'} "
          f"({fmt(med['B-webhook'], '{:+.3f}')} s)")
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
