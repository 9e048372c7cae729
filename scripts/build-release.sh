#!/usr/bin/env bash
# The release build of `vigil` as the image ships it: whole-program (the
# release profile's LTO) and profile-guided optimization.
#
#   scripts/build-release.sh        prints the binary's path on stdout
#
# 1. Build `vigil` instrumented (-Cprofile-generate) in $TARGET/pgo-train.
# 2. Run it on a training workload made only of what this repository holds:
#    generated audit events (`vigil gen`, seed 11; the benchmarks use seed
#    7), the bundled samples of each source, every rule's test cases and the
#    embedded demo (`vigil run` with no Kafka configured: consumer, pipeline
#    and producer on librdkafka's mock broker).
# 3. Merge the profiles with llvm-profdata of rustc's own LLVM version.
# 4. Build `vigil` with -Cprofile-use in $TARGET/pgo.
#
# Steps 2 and 3 run again only when the instrumented binary changed (a
# new profile rebuilds every crate); delete $TARGET/pgo-train/vigil.profdata
# to train again anyway, e.g. after changing the rule pack.
#
# Both builds pass --target so that RUSTFLAGS reach only Vigil's code and its
# dependencies, not build scripts and procedural macros. Code the training
# does not run is optimized for size, as cold: it may run slower than in
# the plain build (it is I/O, set-up and error paths).
# docs/benchmarks.md compares this build with the plain `cargo build
# --release` one.
#
# Settings (environment):
#   CARGO_TARGET_DIR  the build cache (default: target)
#   LLVM_PROFDATA     llvm-profdata to use (default: rustup's llvm-tools,
#                     else llvm-profdata-<rustc's LLVM major version>, else
#                     llvm-profdata on PATH; its LLVM must not be older
#                     than rustc's)
set -euo pipefail

say() { printf 'build-release: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ -f Cargo.toml ] && [ -d sql-rules ] && [ -d samples ] \
  || die "run me from the repository root (scripts/build-release.sh)"

TARGET=$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)
HOST=$(rustc -vV | sed -n 's/^host: //p')
LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
TRAIN=$TARGET/pgo-train
PROFILES=$TRAIN/profiles
PROFDATA=$TRAIN/vigil.profdata

find_profdata() {
  if [ -n "${LLVM_PROFDATA:-}" ]; then
    echo "$LLVM_PROFDATA"
    return
  fi
  local rustup_tool
  rustup_tool="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
  for candidate in "$rustup_tool" "llvm-profdata-$LLVM_MAJOR" llvm-profdata; do
    if command -v "$candidate" >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
  die "no llvm-profdata: run 'rustup component add llvm-tools', or install llvm-$LLVM_MAJOR (Debian), or set LLVM_PROFDATA"
}

build() { # build DIR RUSTFLAG
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$2" \
    cargo build --release --locked -p vigil --target "$HOST" --target-dir "$1" >&2
}

train() {
  local vigil=$TRAIN/$HOST/release/vigil
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  rm -rf "$PROFILES"
  export LLVM_PROFILE_FILE="$PROFILES/vigil-%p-%m.profraw"
  say "training: generated audit events"
  "$vigil" gen --out "$WORK/gen.jsonl" --seed 11 --count 50000 --source k8s_audit >/dev/null
  "$vigil" replay --source k8s_audit --summary-only "$WORK/gen.jsonl" >/dev/null
  say "training: the bundled samples"
  "$vigil" replay --source k8s_audit --summary-only samples/k8s-audit.jsonl >/dev/null
  "$vigil" replay --source falco --summary-only samples/falco.jsonl >/dev/null
  "$vigil" replay --source tetragon --summary-only samples/tetragon.jsonl >/dev/null
  say "training: the rule pack's test cases"
  "$vigil" rules test sql-rules >/dev/null
  say "training: the embedded demo"
  # The demo logs to stderr: shown only when it fails.
  "$vigil" run >"$WORK/run.log" 2>&1 || { cat "$WORK/run.log" >&2; die "the embedded demo failed"; }
  unset LLVM_PROFILE_FILE
  ls "$PROFILES"/*.profraw >/dev/null 2>&1 || die "the training wrote no profiles"
}

main() {
  local profdata
  profdata=$(find_profdata)
  say "instrumented build in $TRAIN"
  build "$TRAIN" "-Cprofile-generate=$PROFILES"
  # rustc records the profile as an input of every crate: a new one
  # rebuilds them all, so train again only when the code changed.
  if [ "$PROFDATA" -nt "$TRAIN/$HOST/release/vigil" ]; then
    say "the profile is newer than the instrumented build: kept"
  else
    train
    "$profdata" merge -o "$PROFDATA" "$PROFILES" >&2
  fi
  say "optimized build in $TARGET/pgo"
  build "$TARGET/pgo" "-Cprofile-use=$PROFDATA"
  echo "$TARGET/pgo/$HOST/release/vigil"
}

main
