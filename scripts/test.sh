#!/usr/bin/env bash
# Installs what the tests need (when missing), then runs the whole test suite,
# formatting and lint checks. Used by CI through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers the tests start on loopback: Prometheus, Alertmanager, an
# SMTP server (aiosmtpd, run with Debian's /usr/bin/python3) and etcd
# (tests/cluster.rs).
need=()
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v git >/dev/null || need+=(git)
command -v openssl >/dev/null || need+=(openssl)   # TLS test certificates
[ -x /usr/bin/prometheus ] || need+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
command -v systemd-analyze >/dev/null || need+=(systemd)   # tests/systemd_unit.rs
command -v dpkg-deb >/dev/null || need+=(dpkg)             # tests/package.rs
[ -x /usr/bin/etcd ] || need+=(etcd-server)                 # tests/cluster.rs
# The `cluster` feature's etcd-client compiles etcd's .proto files at build
# time: protoc, and the well-known types (google/protobuf/*.proto) it
# imports. (The default build needs neither; see below.)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing ${need[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
  # Debian starts packaged daemons where it can; the tests start their own.
  $SUDO service prometheus stop >/dev/null 2>&1 || true
  $SUDO service prometheus-alertmanager stop >/dev/null 2>&1 || true
  $SUDO service etcd stop >/dev/null 2>&1 || true
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy || true
# tests/package.rs builds the .deb with cargo-deb (a few minutes to install cold).
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked

cargo fmt --all -- --check
# Every tracked file too: rustfmt does not follow a module a macro declares.
git ls-files -z '*.rs' | xargs -0 rustfmt --edition 2021 --check
# The floors and limits of docs/architecture.md section 2: no import circle
# among the files of src/, no file over 1,200 lines, no function over 120.
python3 scripts/import-circles src
python3 scripts/limits.py
# Both builds lint clean. The default one (no `cluster` feature) must need
# no protoc, as on a fresh machine: PROTOC points nowhere.
PROTOC=/nonexistent cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features cluster -- -D warnings
# One release build (with cluster support, as the .deb has it) for the
# package test and the demo, then every test binary, several at once
# (scripts/run-tests.py says why; it builds them with `--features cluster`).
cargo build --release --locked --features cluster
python3 scripts/run-tests.py
# The demo is also run as a test (tests/demo.rs); this runs it as the
# README does, in release mode (on the release binary built above: the
# feature only adds [cluster]).
cargo run --release --locked --features cluster -- demo
