#!/usr/bin/env python3
"""Run every test binary of the crate, several at once.

`cargo test` runs its test binaries one after the other; most of ours spend
their time waiting on real servers, child processes and timers, so the
suite is bound by the slowest chain, not by the CPU. This builds every
target once (`cargo test --all-targets --features cluster --no-run`: CI
always tests cluster support, so tests/cluster*.rs, which require the
feature, are never skipped), then runs the binaries
`ROLLBACKD_TEST_JOBS` at a time (default 3), longest first, each with its
own log. A failing binary's log is printed whole; the exit status is 1 if
any binary failed. Extra arguments are passed to every test binary (e.g. a
name filter).

A binary whose timing assertions prove sensitive to a busy machine can be
listed in SERIAL to run alone after the others (docs/testing.md).
"""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Longest first (measured), so the pool is never left waiting on one
# late starter.
ORDER = [
    "smtp_timeouts",
    "prometheus_absence",
    "evidence",
    "package",
    "cluster_daemon",
    "prometheus",
    "journal_soak",
    "faults",
    "smtp",
    "slow_clients",
    "state_memory",
    "evidence_rules",
    "daemon",
    "api",
    "service_lifecycle",
    "confirm_command",
    "hostile_input",
    "fault_worker",
    "demo",
    "observability",
]

# Run alone at the end (none today: evidence's latency and spread checks and
# cluster_daemon's takeover bounds passed with 3 binaries at once).
SERIAL = set()


def build():
    """Build every target; return [(name, kind, executable)]."""
    cmd = [
        os.environ.get("CARGO", "cargo"),
        "test",
        "--all-targets",
        "--features",
        "cluster",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=False)
    if out.returncode != 0:
        sys.exit(out.returncode)
    found = []
    for line in out.stdout.decode().splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") != "compiler-artifact" or not m.get("executable"):
            continue
        if not m["profile"]["test"] and "bench" not in m["target"]["kind"]:
            continue
        kind = m["target"]["kind"][0]
        name = m["target"]["name"]
        if kind in ("lib", "bin"):
            name = f"{name} ({kind} unit tests)"
        elif kind == "bench":
            name = f"{name} (bench)"
        found.append((name, kind, m["executable"]))
    return found


def rank(item):
    name = item[0]
    return ORDER.index(name) if name in ORDER else len(ORDER)


def main():
    jobs = int(os.environ.get("ROLLBACKD_TEST_JOBS", "3"))
    extra = sys.argv[1:]
    binaries = sorted(build(), key=rank)
    logs = os.path.join(ROOT, "target", "test-logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("CARGO_MANIFEST_DIR", ROOT)
    env.setdefault("CARGO", "cargo")
    lock = threading.Lock()
    results = {}

    def run(item):
        name, kind, exe = item
        log = os.path.join(logs, f"{name.split(' ')[0]}.{kind}.log")
        args = [exe] + ([] if kind == "bench" else extra)
        started = time.monotonic()
        with open(log, "wb") as f:
            code = subprocess.run(
                args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
            ).returncode
        took = time.monotonic() - started
        with open(log, "rb") as f:
            text = f.read().decode(errors="replace")
        summary = [l for l in text.splitlines() if l.startswith("test result:")]
        with lock:
            results[name] = (code, took, log)
            status = "ok  " if code == 0 else "FAIL"
            detail = summary[-1] if summary else ""
            print(f"{status} {took:6.1f}s  {name}  {detail}", flush=True)
            if code != 0:
                print(f"----- {log} -----\n{text}\n----- end of {name} -----", flush=True)

    started = time.monotonic()
    parallel = [b for b in binaries if b[0] not in SERIAL]
    serial = [b for b in binaries if b[0] in SERIAL]
    print(f"running {len(binaries)} test binaries, {jobs} at a time ({len(serial)} alone at the end)", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run, parallel))
    for b in serial:
        run(b)
    failed = sorted(n for n, (code, _, _) in results.items() if code != 0)
    took = time.monotonic() - started
    print(f"\n{len(results)} test binaries in {took:.0f}s; {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
