#!/usr/bin/python3
"""Cluster benchmark (issue 13, HA on etcd): takeover time and added action latency.

(a) Takeover. Two rollbackd nodes with [cluster] (lease_ttl 2s by default)
    on one local etcd watch one target with an Alertmanager rule
    (for = "0s"); its rollback is one command step that appends the time
    and then sleeps 30 s. An alert is POSTed to both nodes (as an
    Alertmanager with both in its receivers would); the node that takes
    the lock starts the plan. Once the step is in its sleep the owner is
    SIGKILLed (its step's process group too: the host died). Measured: from
    the kill to the survivor's journal entry `recovered` (the incident
    taken over, RollingBack -> Verifying), and to the first
    `GET /v1/status` of the survivor that names itself the owner (polled
    every 20 ms). Expected: the lease expires 2/3 to 3/3 of lease_ttl
    after the kill (keepalives go out every third of it), then the
    survivor's next poll (poll_interval) takes over. Target: <= lease_ttl + 1 s.

(b) Added action latency. N targets, each with its own Alertmanager rule
    (alertname BenchN, for = "0s") and a rollback step that appends
    `date +%s.%N` to a file. One alert is POSTed at a time (to the single
    node, or to both clustered nodes at once); measured from just before
    the POST to the RollingBack entry in the journal (the first incident
    of a target: the clustered node takes the lock and publishes the
    state in etcd before it journals), and to the step's start. Reported:
    the medians, single vs clustered, and their difference. Target:
    clustered - single < 50 ms.

Run from the repository root, after `cargo build --release`:

    /usr/bin/python3 benches/cluster.py                     # 5 takeovers, 20 samples each
    /usr/bin/python3 benches/cluster.py --runs 10 --samples 40 --keep

Stdlib only. etcd (/usr/bin/etcd, Debian's etcd-server) on free loopback
ports, a temp dir (removed unless --keep), every process it started
killed at the end, also on error.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import (DEFAULT_BINARY, Procs, check_config, fmt, free_port, git_commit, http_get,
                      machine, median, wait_for)

ETCD = "/usr/bin/etcd"


def parse_rfc3339(s):
    """Journal timestamps (nanosecond fractions, Z) -> epoch seconds."""
    s = s.replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        frac = "".join(c for c in rest if c.isdigit())
        tz = rest[len(frac):]
        s = f"{head}.{frac[:6].ljust(6, '0')}{tz}"
    return datetime.datetime.fromisoformat(s).timestamp()


def journal(state_dir):
    try:
        with open(os.path.join(state_dir, "journal.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def first_step(state_dir, target, pred):
    """Epoch time of the first journaled step of `target` matching `pred`."""
    for e in journal(state_dir):
        if e.get("type") == "step" and e.get("target") == target and pred(e):
            return parse_rfc3339(e["at"])
    return None


def post(url, body, timeout=5.0):
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def alert_payload(alertname):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "rollbackd", "groupKey": alertname,
        "alerts": [{
            "status": "firing", "labels": {"alertname": alertname}, "annotations": {},
            "startsAt": now, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": alertname,
        }],
    })


class Etcd:
    def __init__(self, procs, d):
        self.client = free_port()
        peer = free_port()
        c, p = f"http://127.0.0.1:{self.client}", f"http://127.0.0.1:{peer}"
        procs.start("etcd", [
            ETCD, "--data-dir", f"{d}/etcd-data", "--listen-client-urls", c,
            "--advertise-client-urls", c, "--listen-peer-urls", p,
            "--initial-advertise-peer-urls", p, "--initial-cluster", f"default={p}",
        ], f"{d}/etcd.log")
        self.url = c
        wait_for("etcd", lambda: '"health":"true"' in http_get(f"{c}/health", timeout=1)[1], 30)


class Node:
    """One `rollbackd run`; `targets` is a list of (name, alertname, step)."""

    def __init__(self, procs, args, d, name, targets, cluster=None, prefix="/rollbackd/"):
        self.name, self.dir, self.port = name, f"{d}/{name}", free_port()
        os.makedirs(self.dir, exist_ok=True)
        text = f"""# Written by benches/cluster.py
[daemon]
state_dir = "{self.dir}/state"
listen = "127.0.0.1:{self.port}"
poll_interval = "{args.poll}"
max_simultaneous_breaches = 0
max_rollbacks_per_hour = 1000
"""
        if cluster:
            text += f"""
[cluster]
etcd = ["{cluster}"]
node = "{name}"
lease_ttl = "{args.ttl}s"
prefix = "{prefix}"
"""
        for tname, alertname, step in targets:
            text += f"""
[[target]]
name = "{tname}"
confirm = "none"
cooldown = "1h"

  [[target.rule]]
  name = "paged"
  source = "alertmanager"
  match = {{ alertname = "{alertname}" }}
  for = "0s"

  [target.rollback]
  kind = "command"
  timeout = "60s"
  steps = [["/bin/sh", "-c", '{step}']]

  [target.verify]
  within = "2s"
"""
        self.config = f"{self.dir}/rollbackd.toml"
        with open(self.config, "w") as f:
            f.write(text)
        check_config(args.binary, self.config)
        self.proc = procs.start(name, [args.binary, "run", "--config", self.config],
                                f"{self.dir}/rollbackd.log")
        self.cluster = cluster

    @property
    def state(self):
        return f"{self.dir}/state"

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.dir}")
        if http_get(self.url("/healthz"), timeout=1)[0] != 200:
            return False
        if not self.cluster:
            return True
        code, text = http_get(self.url("/metrics"), timeout=1)
        return code == 200 and f'rollbackd_cluster_etcd_up{{node="{self.name}"}} 1' in text

    def owner(self, target):
        code, body = http_get(self.url("/v1/status"), timeout=1)
        if code != 200:
            return None
        for t in json.loads(body)["targets"]:
            if t["name"] == target:
                c = t.get("cluster") or {}
                return None if c.get("standby") else c.get("owner")
        return None


def takeover_once(idx, args, procs, etcd, d):
    run = f"{d}/takeover-{idx}"
    os.makedirs(run)
    step = f"date +%s.%N >> {run}/actions.txt; echo $$ > {run}/step.pid; sleep 30"
    nodes = [Node(procs, args, run, f"n{i}", [("web", "BenchTakeover", step)], etcd.url,
                  prefix=f"/bench-{idx}/") for i in (1, 2)]
    wait_for("both nodes up and on etcd", lambda: all(n.ready() for n in nodes), 30)
    time.sleep(0.5)
    payload = alert_payload("BenchTakeover")
    threads = [threading.Thread(target=post, args=(n.url("/v1/alertmanager"), payload))
               for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for("the plan's step", lambda: os.path.exists(f"{run}/step.pid"), 30)
    owner = wait_for("an owner", lambda: next(
        (n for n in nodes if n.owner("web") == n.name), None), 10)
    survivor = next(n for n in nodes if n is not owner)
    time.sleep(args.ttl / 2)  # the kill lands at a random point of the keepalive cycle
    killed = time.time()
    owner.proc.kill()
    try:
        with open(f"{run}/step.pid") as f:
            os.killpg(int(f.read().strip()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    seen = wait_for("the survivor to own the target",
                    lambda: survivor.owner("web") == survivor.name and time.time(), 30,
                    interval=0.02)
    recovered = wait_for("the survivor's recovered step", lambda: first_step(
        survivor.state, "web", lambda e: e["event"]["event"] == "recovered"), 10)
    with open(f"{run}/actions.txt") as f:
        lines = len(f.readlines())
    procs.stop_all(keep=("etcd",))
    return {"journal": recovered - killed, "status": seen - killed, "plan_runs": lines}


def latency(args, procs, etcd, d, clustered):
    kind = "clustered" if clustered else "single"
    run = f"{d}/latency-{kind}"
    os.makedirs(run)
    targets = [(f"t{i:03d}", f"Bench{i:03d}", f"date +%s.%N >> {run}/t{i:03d}.txt")
               for i in range(args.samples)]
    names = ["n1", "n2"] if clustered else ["solo"]
    nodes = [Node(procs, args, run, n, targets, etcd.url if clustered else None,
                  prefix="/bench-latency/") for n in names]
    wait_for(f"{kind} nodes up", lambda: all(n.ready() for n in nodes), 30)
    time.sleep(1.0)
    to_journal, to_step = [], []
    for tname, alertname, _ in targets:
        payload = alert_payload(alertname)
        threads = [threading.Thread(target=post, args=(n.url("/v1/alertmanager"), payload))
                   for n in nodes]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def journaled():
            ts = [first_step(n.state, tname, lambda e: e["to"] == "RollingBack") for n in nodes]
            ts = [t for t in ts if t]
            return min(ts) if ts else None

        j = wait_for(f"{tname} RollingBack", journaled, 20, interval=0.01)
        s = wait_for(f"{tname} step", lambda: os.path.exists(f"{run}/{tname}.txt") and
                     open(f"{run}/{tname}.txt").readline().strip(), 20, interval=0.01)
        to_journal.append(j - t0)
        to_step.append(float(s) - t0)
        time.sleep(args.gap)
    procs.stop_all(keep=("etcd",))
    return to_journal, to_step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="takeovers (default 5)")
    ap.add_argument("--samples", type=int, default=20,
                    help="alerts per latency series (default 20)")
    ap.add_argument("--ttl", type=int, default=2, help="lease_ttl in seconds (default 2)")
    ap.add_argument("--poll", default="500ms", help="poll_interval (default 500ms)")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between alerts (default 0.3)")
    ap.add_argument("--binary", default=DEFAULT_BINARY, help="rollbackd binary (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journals)")
    args = ap.parse_args()
    for path in (args.binary, ETCD):
        if not os.path.exists(path):
            sys.exit(f"missing {path}" + (" (run cargo build --release)" if path == args.binary else ""))
    poll_s = float(args.poll[:-2]) / 1000 if args.poll.endswith("ms") else float(args.poll.rstrip("s"))

    print(f"# cluster benchmark: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"commit {git_commit()}, {machine()}")
    print(f"# binary {args.binary}; lease_ttl {args.ttl}s, poll_interval {args.poll}; "
          f"one local etcd ({ETCD})")
    d = tempfile.mkdtemp(prefix="rollbackd-cluster-bench-")
    procs = Procs()
    try:
        etcd = Etcd(procs, d)
        rows = []
        for i in range(1, args.runs + 1):
            r = takeover_once(i, args, procs, etcd, d)
            rows.append(r)
            print(f"takeover {i}: journal {fmt(r['journal'])} s, status {fmt(r['status'])} s, "
                  f"plan ran {r['plan_runs']}x", flush=True)
        single_j, single_s = latency(args, procs, etcd, d, clustered=False)
        clus_j, clus_s = latency(args, procs, etcd, d, clustered=True)
    finally:
        procs.stop_all()
        if args.keep:
            print(f"# kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)

    limit = args.ttl + 1.0
    print()
    print("## (a) takeover after SIGKILL of the owner")
    print()
    print("| run | kill -> survivor's `recovered` step (s) | kill -> survivor's status says owner (s) "
          "| plan runs |")
    print("| ---: | ---: | ---: | ---: |")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {fmt(r['journal'])} | {fmt(r['status'])} | {r['plan_runs']} |")
    js = [r["journal"] for r in rows]
    print(f"| median | {fmt(median(js))} | {fmt(median([r['status'] for r in rows]))} | |")
    print(f"| max | {fmt(max(js))} | {fmt(max(r['status'] for r in rows))} | |")
    print()
    print(f"target <= lease_ttl + 1 s = {limit:.1f} s (lease_ttl + one poll = {args.ttl + poll_s:.1f} s): "
          + ("met" if max(js) <= limit else "NOT met"))
    print()
    print("## (b) POST /v1/alertmanager -> action, single node vs two clustered nodes")
    print()
    print("| | samples | median to RollingBack journaled (ms) | p90 (ms) | median to step start (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")

    def p90(xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]

    for label, j, s in (("single node", single_j, single_s), ("clustered (2 nodes)", clus_j, clus_s)):
        print(f"| {label} | {len(j)} | {fmt(median(j) * 1000, '{:.1f}')} | "
              f"{fmt(p90(j) * 1000, '{:.1f}')} | {fmt(median(s) * 1000, '{:.1f}')} |")
    added = (median(clus_j) - median(single_j)) * 1000
    added_step = (median(clus_s) - median(single_s)) * 1000
    print()
    print(f"added by the cluster (median, clustered - single): {added:.1f} ms to the journal, "
          f"{added_step:.1f} ms to the step; target < 50 ms: "
          + ("met" if max(added, added_step) < 50 else "NOT met"))


if __name__ == "__main__":
    main()
