#!/usr/bin/env bash
# Vigil side by side with the tools a user would pick instead (issue 21):
# rsigma (Sigma rules in Rust) and DuckDB (SQL over the JSON lines).
#
#   scripts/bench-peers.sh            10 runs of each configuration
#   RUNS=3 scripts/bench-peers.sh     a quick look
#
# Run it from the repository root. It installs rsigma 0.23.0 (cargo install)
# and DuckDB (PyPI, in a virtualenv) into $HOME/.cache/vigil-peers once,
# builds `vigil` in release, prepares the two inputs of docs/benchmarks.md
# "Replay batch size", checks that the six-rule ports agree, then runs every
# configuration in turn (round-robin, so that a slow spell of the machine
# spreads over all of them), each as a whole process on one pinned core, and
# prints a markdown table of medians.
#
# Settings (environment):
#   RUNS        timed runs of each configuration on each input (default 10)
#   PEERS_CACHE where rsigma and the virtualenv live (default ~/.cache/vigil-peers)
#   CORE        the core every run is pinned to (default 0)
#   KEEP_WORK=1 keep the inputs and outputs (in a temporary directory) afterwards
#   VIGIL       a vigil binary to measure instead of building one, e.g. the
#               profile-guided build: VIGIL=$(scripts/build-release.sh)
set -euo pipefail

RUNS=${RUNS:-10}
PEERS_CACHE=${PEERS_CACHE:-$HOME/.cache/vigil-peers}
CORE=${CORE:-0}
RSIGMA_VERSION=0.23.0
DUCKDB_VERSION=2.0.1
SIGMA_RULES=../shared/reference/rules/sigma-kubernetes-audit
AUDIT_CAPTURE=../shared/data/k8s-audit/perfspec-background.jsonl

say() { printf 'bench-peers: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

check_prerequisites() {
  [ -f Cargo.toml ] && [ -d sql-rules ] && [ -d benchmarks/peers ] \
    || die "run me from the repository root (scripts/bench-peers.sh)"
  [[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
  for tool in cargo python3 taskset; do
    command -v "$tool" >/dev/null || die "$tool is needed"
  done
  # GNU time, not the shell keyword: it reports the peak RSS.
  [ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed: apt-get install time"
  [ -f "$AUDIT_CAPTURE" ] || die "the audit capture $AUDIT_CAPTURE is missing"
  [ -d "$SIGMA_RULES" ] || die "Sigma's Kubernetes audit rules ($SIGMA_RULES) are missing"
}

# rsigma, built once into the cache. --locked builds with the dependency
# versions its authors tested; if that fails (a yanked crate), without.
install_rsigma() {
  RSIGMA=$PEERS_CACHE/cargo/bin/rsigma
  if [ -x "$RSIGMA" ] && "$RSIGMA" --version 2>/dev/null | grep -q "$RSIGMA_VERSION"; then
    return
  fi
  say "installing rsigma $RSIGMA_VERSION into $PEERS_CACHE/cargo (a few minutes, once)"
  # Its own target directory (removed afterwards): cargo install would
  # otherwise build in $CARGO_TARGET_DIR, the project's build cache, if set.
  local target=$PEERS_CACHE/cargo-target
  CARGO_TARGET_DIR=$target cargo install rsigma --version "$RSIGMA_VERSION" --locked \
      --root "$PEERS_CACHE/cargo" \
    || CARGO_TARGET_DIR=$target cargo install rsigma --version "$RSIGMA_VERSION" \
      --root "$PEERS_CACHE/cargo" \
    || die "cargo install rsigma $RSIGMA_VERSION failed"
  rm -rf "$target"
}

# DuckDB's Python package, pinned (the port uses 1.3's `lambda x:` syntax,
# and the figures in docs/benchmarks.md are this version's), in a virtualenv
# of the cache.
install_duckdb() {
  local venv=$PEERS_CACHE/venv
  PYTHON=$venv/bin/python
  if [ -x "$PYTHON" ] \
    && [ "$("$PYTHON" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null)" = "$DUCKDB_VERSION" ]; then
    return
  fi
  say "installing DuckDB $DUCKDB_VERSION (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "duckdb==$DUCKDB_VERSION"
}

build_vigil() {
  if [ -n "${VIGIL:-}" ]; then
    say "measuring $VIGIL"
  else
    say "building vigil (release)"
    cargo build --release -p vigil
    VIGIL=${CARGO_TARGET_DIR:-target}/release/vigil
  fi
  [ -x "$VIGIL" ] || die "no binary at $VIGIL"
}

# The inputs of docs/benchmarks.md "Replay batch size": the real benign
# capture ten times over, and generated audit events (seed 7).
prepare_inputs() {
  say "preparing the inputs in $WORK"
  for _ in $(seq 10); do cat "$AUDIT_CAPTURE"; done > "$WORK/real.jsonl"
  "$VIGIL" gen --out "$WORK/gen.jsonl" --seed 7 --count 200000 --source k8s_audit >/dev/null
  EVENTS_real=$(wc -l < "$WORK/real.jsonl")
  EVENTS_gen=$(wc -l < "$WORK/gen.jsonl")
}

# A rules directory holding the given rule files and everything rules may
# use from the shipped pack: macros, lists and lookups.
# The six per-event rules ported to DuckDB (benchmarks/peers/duckdb_six_rules.sql),
# run as shipped: a change to one of them shows as a disagreement in
# check_six_rules until the port follows.
SIX_RULES=(anonymous_access clusterrolebinding_privileged events_deleted offensive_tool_user_agent pod_exec secret_read)
six_rule_files() {
  local r
  for r in "${SIX_RULES[@]}"; do echo "sql-rules/k8s_audit/$r.sql"; done
}

make_pack() {
  local dir=$1; shift
  mkdir -p "$dir/k8s_audit"
  cp "$@" "$dir/k8s_audit/"
  cp -r sql-rules/macros sql-rules/lists sql-rules/lookups "$dir/"
}

prepare_packs() {
  # The shipped rules derived from a Sigma rule: `-- based_on:` names sigma:...
  mapfile -t sigma_based < <(grep -l '^-- based_on:.*sigma:' sql-rules/k8s_audit/*.sql | sort)
  make_pack "$WORK/pack-sigma" "${sigma_based[@]}"
  mapfile -t six < <(six_rule_files)
  make_pack "$WORK/pack-six" "${six[@]}"
  SIGMA_BASED_COUNT=${#sigma_based[@]}
  SIGMA_RULE_COUNT=$(find "$SIGMA_RULES" -name '*.yml' | wc -l)
  say "${SIGMA_BASED_COUNT} shipped rules are based on Sigma rules; Sigma has ${SIGMA_RULE_COUNT} Kubernetes audit rules"
}

# The configurations: a name, a table label, and a command (set in CMD) that
# evaluates an input; each prints on stdout what count_detections reads.
CONFIGS=(vigil-all vigil-sigma rsigma vigil-six duckdb-six)
label() {
  case $1 in
    vigil-all) echo "Vigil, whole shipped pack ($(find sql-rules/k8s_audit -name '*.sql' | wc -l) audit rules)" ;;
    vigil-sigma) echo "Vigil, its ${SIGMA_BASED_COUNT} Sigma-based rules" ;;
    rsigma) echo "rsigma $RSIGMA_VERSION, Sigma's ${SIGMA_RULE_COUNT} Kubernetes audit rules" ;;
    vigil-six) echo "Vigil, 6 per-event rules" ;;
    duckdb-six) echo "DuckDB $("$PYTHON" -c 'import duckdb; print(duckdb.__version__)'), the same 6 rules, 1 thread" ;;
  esac
}
set_command() {
  local config=$1 input=$WORK/$2.jsonl
  case $config in
    vigil-all) CMD=("$VIGIL" replay --source k8s_audit --summary-only "$input") ;;
    vigil-sigma) CMD=("$VIGIL" replay --rules "$WORK/pack-sigma" --source k8s_audit --summary-only "$input") ;;
    vigil-six) CMD=("$VIGIL" replay --rules "$WORK/pack-six" --source k8s_audit --summary-only "$input") ;;
    # One match per line on stdout (JSON).
    rsigma) CMD=("$RSIGMA" engine eval -r "$SIGMA_RULES" -e "@$input") ;;
    duckdb-six) CMD=("$PYTHON" benchmarks/peers/duckdb_run.py "$input") ;;
  esac
}

# Detections in a run's output: alerts for Vigil (its summary's first line),
# matches for rsigma (one line each) and DuckDB (its total line).
count_detections() {
  local config=$1 out=$2
  case $config in
    vigil-*) sed -n 's/^replay: .* \([0-9][0-9]*\) alerts, .*/\1/p' "$out" ;;
    rsigma) grep -c . "$out" || true ;;
    duckdb-six) awk '$1 == "total" { print $2 }' "$out" ;;
  esac
}

# Matches per rule, `rule count` lines, for the six-rule comparison.
per_rule() {
  local config=$1 out=$2
  case $config in
    vigil-six) awk '$3 ~ /^k8s\./ && $1 ~ /^[0-9]+$/ { print $3, $1 }' "$out" ;;
    duckdb-six) awk '$1 != "total" { print $1, $2 }' "$out" ;;
  esac
}

# One untimed run of every configuration on every input: it warms the page
# cache and gives the detection counts (outputs are the same on every run).
count_all() {
  say "counting detections (one untimed run of each configuration)"
  for input in real gen; do
    for config in "${CONFIGS[@]}"; do
      set_command "$config" "$input"
      "${CMD[@]}" > "$WORK/out-$config-$input" 2> "$WORK/err-$config-$input" \
        || die "$config on $input failed; see $WORK/err-$config-$input"
      printf -v "DETECTIONS_${config//-/_}_$input" '%s' "$(count_detections "$config" "$WORK/out-$config-$input")"
    done
  done
}

# The events of the six rules' own test cases (sql-rules/k8s_audit/*.tests.jsonl),
# one per line: the benign and generated inputs make few of those rules fire,
# the tests make each of them fire and not fire.
prepare_rule_tests() {
  local f tests=()
  for f in $(six_rule_files); do
    tests+=("sql-rules/k8s_audit/$(basename "$f" .sql).tests.jsonl")
  done
  python3 -c '
import json, sys
for name in sys.argv[1:]:
    for line in open(name):
        if line.strip():
            for event in json.loads(line)["events"]:
                print(json.dumps(event))
' "${tests[@]}" > "$WORK/tests.jsonl"
  for config in vigil-six duckdb-six; do
    set_command "$config" tests
    "${CMD[@]}" > "$WORK/out-$config-tests" 2> "$WORK/err-$config-tests" \
      || die "$config on the rule tests failed; see $WORK/err-$config-tests"
  done
}

# Vigil and DuckDB must agree rule by rule, or the comparison is not fair.
check_six_rules() {
  local input vigil duck agree=true
  prepare_rule_tests
  for input in real gen tests; do
    vigil=$(per_rule vigil-six "$WORK/out-vigil-six-$input")
    duck=$(per_rule duckdb-six "$WORK/out-duckdb-six-$input" | awk '$2 != 0')
    echo "Six rules on $input, matches per rule (Vigil | DuckDB):"
    if [ -z "$vigil$duck" ]; then
      echo "  none from either"
    else
      join -a1 -a2 -e 0 -o 0,1.2,2.2 <(sort <<<"$vigil") <(sort <<<"$duck") \
        | awk '{ printf "  %-36s %8s | %8s%s\n", $1, $2, $3, ($2 == $3 ? "" : "   DIFFERENT") }'
    fi
    [ "$(sort <<<"$vigil")" = "$(sort <<<"$duck")" ] || agree=false
  done
  if $agree; then
    echo "Vigil and DuckDB agree on every rule, on the real, generated and test events."
  else
    say "warning: Vigil and DuckDB disagree on some rule (above)"
  fi
  echo
}

# What rsigma matched, per Sigma rule: on benign input these are its false
# positives.
rsigma_per_rule() {
  local input
  for input in real gen; do
    echo "rsigma matches per Sigma rule on $input:"
    python3 -c '
import collections, json, sys
counts = collections.Counter(json.loads(line)["rule_title"] for line in open(sys.argv[1]) if line.strip())
for title, n in counts.most_common():
    print(f"  {n:8}  {title}")
' "$WORK/out-rsigma-$input"
  done
  echo
}

# RUNS rounds; in each, every configuration once on each input. GNU time
# writes `wall-seconds peak-RSS-KB` to its own file (-o), apart from the
# tool's output, which is thrown away (its counts were taken above).
measure_all() {
  local round input config
  for round in $(seq "$RUNS"); do
    say "round $round of $RUNS"
    for input in real gen; do
      for config in "${CONFIGS[@]}"; do
        set_command "$config" "$input"
        taskset -c "$CORE" /usr/bin/time -f '%e %M' -o "$WORK/time" "${CMD[@]}" >/dev/null 2>&1 \
          || die "$config on $input failed in round $round"
        cat "$WORK/time" >> "$WORK/times-$config-$input"
      done
    done
  done
}

# 165630 -> 165,630
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One table cell: events/s (events over the median wall time) and median peak RSS.
cell() {
  local config=$1 input=$2 events wall rss
  events=$([ "$input" = real ] && echo "$EVENTS_real" || echo "$EVENTS_gen")
  wall=$(awk '{ print $1 }' "$WORK/times-$config-$input" | median)
  rss=$(awk '{ print $2 }' "$WORK/times-$config-$input" | median)
  printf '%s | %.2f s | %s MiB' "$(commas "$(awk -v e="$events" -v w="$wall" 'BEGIN { printf "%d", e / w + 0.5 }')")" \
    "$wall" "$(awk -v r="$rss" 'BEGIN { printf "%d", r / 1024 + 0.5 }')"
}

print_table() {
  local config n_real n_gen
  echo "Medians of $RUNS runs, each a whole process on core $CORE (start-up included); events/s = events / median wall time."
  echo "Real: the benign capture ×10, $(commas "$EVENTS_real") events. Generated: vigil gen --seed 7, $(commas "$EVENTS_gen") events."
  echo
  echo "| tool and rules | real: events/s | wall | peak RSS | detections | generated: events/s | wall | peak RSS | detections |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for config in "${CONFIGS[@]}"; do
    n_real=DETECTIONS_${config//-/_}_real
    n_gen=DETECTIONS_${config//-/_}_gen
    echo "| $(label "$config") | $(cell "$config" real) | $(commas "${!n_real}") | $(cell "$config" gen) | $(commas "${!n_gen}") |"
  done
  echo
  echo "Detections: alerts for Vigil, matches (one per rule and event) for rsigma and DuckDB."
}

main() {
  check_prerequisites
  install_rsigma
  install_duckdb
  build_vigil
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    say "keeping $WORK"
  else
    trap 'rm -rf "$WORK"' EXIT
  fi
  prepare_inputs
  prepare_packs
  count_all
  check_six_rules
  rsigma_per_rule
  local start=$SECONDS
  measure_all
  say "timed runs took $((SECONDS - start)) s"
  print_table
}

main "$@"
