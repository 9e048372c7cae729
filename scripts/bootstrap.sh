#!/usr/bin/env bash
# Install what building and testing Vigil needs on a Debian/Ubuntu machine.
#
#   scripts/bootstrap.sh            Debian packages librdkafka builds with
#   scripts/bootstrap.sh --broker   ... and the tansu Kafka-compatible broker
#                                   the integration tests run against
#
# Installs only what is missing, so it is cheap to run again.
set -euo pipefail

want_broker=false
for arg in "$@"; do
  case "$arg" in
    --broker) want_broker=true ;;
    *) echo "usage: $0 [--broker]" >&2; exit 2 ;;
  esac
done

packages=(build-essential cmake pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "bootstrap: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if $want_broker; then
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v tansu >/dev/null; then
    # About 15 minutes on 2 cores; cached in ~/.cargo/bin afterwards.
    echo "bootstrap: installing the tansu broker (cargo install tansu 0.6.0)"
    cargo install tansu --locked --version 0.6.0 --features dynostore
  fi
fi
echo "bootstrap: ok"
