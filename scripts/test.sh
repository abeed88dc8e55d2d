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
# etcd-client compiles etcd's .proto files at build time: protoc, and the
# well-known types (google/protobuf/*.proto) it imports.
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
cargo clippy --all-targets -- -D warnings
# One release build for the package test and the demo, then every test
# binary, several at once (scripts/run-tests.py says why).
cargo build --release --locked
python3 scripts/run-tests.py
# The demo is also run as a test (tests/demo.rs); this runs it the way the
# README does, in release mode (the release binary tests/package.rs built).
cargo run --release -- demo
