#!/usr/bin/env bash
# Check every ops/ artifact with the real tool (issue 6). Run by .ci/run; run it by hand
# the same way:  scripts/ops-checks.sh
#
# - installs the tools from Debian packages when missing (root; idempotent):
#   promtool (prometheus), haproxy, systemd-analyze (systemd), curl, jq
# - promtool check config / check rules / test rules on ops/prometheus.yml,
#   ops/walship-alerts.yml, ops/walship-alerts.test.yml
# - every walship_* metric an alert or a dashboard panel uses is defined in bin/src/metrics.rs
# - haproxy -c on ops/haproxy.cfg
# - ops/grafana-dashboard.json: valid JSON, the expected panels, each well formed
# - ops/config/n*.toml: each is accepted by a real `walship serve` (addresses moved to
#   free loopback ports, data_dir to a temp dir), which answers GET /health
# - `promtool check metrics` on GET /metrics of a real single-node `walship serve` after
#   a few writes (the histograms have data)
# - systemd-analyze verify ops/walship.service (installs the built binary as
#   /usr/local/bin/walship when that is missing and creates the `walship` system user),
#   and `systemd-analyze security --offline` keeps its exposure at most 2.0
#
# Uses the release binary under ${CARGO_TARGET_DIR:-target}/release/walship, building it
# when missing. Leaves no process running. Exit status: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
WALSHIP=$TARGET_DIR/release/walship

log() { printf '%s\n' "$*" >&2; }
die() { log "ops-checks: $*"; exit 1; }

# ---------------------------------------------------------------- tools
install_tools() {
    local need=()
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    command -v jq >/dev/null 2>&1 || need+=(jq)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    if [ ${#need[@]} -eq 0 ]; then
        log "== tools: already installed ($(command -v promtool haproxy systemd-analyze | tr '\n' ' '))"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "missing ${need[*]}; run as root to install them (apt-get)"
    log "== tools: installing ${need[*]} from Debian packages"
    # Do not start the packages' daemons (prometheus, haproxy) on this machine.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        made_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    } >/tmp/ops-checks-apt.log 2>&1 || rc=$?
    [ "$made_policy" -eq 0 ] || rm -f "$policy"
    if [ "$rc" -ne 0 ]; then
        tail -n 30 /tmp/ops-checks-apt.log >&2
        die "apt-get install ${need[*]} failed (exit $rc)"
    fi
    for t in promtool haproxy systemd-analyze curl jq python3; do
        command -v "$t" >/dev/null 2>&1 || die "$t still missing after apt-get install"
    done
}
install_tools
log "   $(promtool --version 2>&1 | head -n1)"
log "   $(haproxy -v 2>&1 | head -n1)"
log "   $(systemd-analyze --version 2>&1 | head -n1)"

if [ ! -x "$WALSHIP" ]; then
    log "== building $WALSHIP"
    cargo build --release -p walship --bin walship
fi
[ -x "$WALSHIP" ] || die "no walship binary at $WALSHIP"

# ---------------------------------------------------------------- harness
PASSED=0
FAILED=0
FAILED_NAMES=()
WORK=$(mktemp -d /tmp/ops-checks.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check NAME COMMAND...: run one check, print its output indented, count it.
check() {
    local name=$1
    shift
    log "== $name"
    local rc=0
    # Not in a subshell: the PIDS of nodes a check starts stay visible to cleanup.
    "$@" >"$WORK/check.out" 2>&1 || rc=$?
    sed 's/^/   /' "$WORK/check.out" >&2
    if [ "$rc" -eq 0 ]; then
        log "   ok"
        PASSED=$((PASSED + 1))
    else
        log "   FAILED (exit $rc): $name"
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_node CONFIG LOG: start `walship serve` in the background; sets NODE_PID.
start_node() {
    WALSHIP_LOG=${WALSHIP_LOG:-warn} "$WALSHIP" serve --config "$1" >"$2" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}

# stop_node PID: SIGTERM (clean shutdown) and wait; fails if it does not exit in 20 s.
stop_node() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        log "   node $pid did not stop within 20s of SIGTERM; killed"
        return 1
    fi
    wait "$pid" 2>/dev/null || true
}

# wait_http URL [STATUS]: poll until URL answers STATUS (default 200), at most 20 s.
wait_http() {
    local url=$1 want=${2:-200} i code
    for i in $(seq 200); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [ "$code" = "$want" ] && return 0
        sleep 0.1
    done
    log "   $url did not answer $want within 20s (last: $code)"
    return 1
}

# ---------------------------------------------------------------- prometheus
check "promtool check config ops/prometheus.yml" promtool check config ops/prometheus.yml
check "promtool check rules ops/walship-alerts.yml" promtool check rules ops/walship-alerts.yml
check "promtool test rules ops/walship-alerts.test.yml" promtool test rules ops/walship-alerts.test.yml

# Every alert has a firing and a not-firing case in the unit tests.
alerts_tested() {
    local a rc=0
    for a in $(sed -n 's/^ *- alert: *//p' ops/walship-alerts.yml); do
        local fire none
        fire=$(awk -v a="$a" '$0 ~ "alertname: "a"$" {getline; if ($0 ~ "exp_alerts:$") n++} END {print n+0}' ops/walship-alerts.test.yml)
        none=$(awk -v a="$a" '$0 ~ "alertname: "a"$" {getline; if ($0 ~ "exp_alerts: \\[\\]") n++} END {print n+0}' ops/walship-alerts.test.yml)
        printf '%-36s firing cases: %s, not-firing cases: %s\n' "$a" "$fire" "$none"
        if [ "$fire" -eq 0 ] || [ "$none" -eq 0 ]; then
            echo "   alert $a lacks a firing or a not-firing test case"
            rc=1
        fi
    done
    return $rc
}
check "every alert has firing and not-firing unit tests" alerts_tested

# walship_* metric names used in PromQL of FILE... (comments dropped).
used_metrics() {
    sed -e 's/^[[:space:]]*#.*//' "$@" | grep -o 'walship_[a-z0-9_]*[a-z0-9]' | sort -u
}
metrics_defined() {
    local defined name base rc=0
    defined=$(grep -o '"walship_[a-z0-9_]*"' bin/src/metrics.rs | tr -d '"' | sort -u)
    for name in $(used_metrics "$@"); do
        base=$name
        case $name in *_bucket | *_sum | *_count) base=${name%_*} ;; esac
        if printf '%s\n' "$defined" | grep -qx -e "$name" -e "$base"; then
            echo "$name: defined"
        else
            echo "$name: NOT defined in bin/src/metrics.rs"
            rc=1
        fi
    done
    return $rc
}
check "metrics used by ops/walship-alerts.yml exist in bin/src/metrics.rs" metrics_defined ops/walship-alerts.yml

# ---------------------------------------------------------------- haproxy
check "haproxy -c -f ops/haproxy.cfg" haproxy -c -f ops/haproxy.cfg

# ---------------------------------------------------------------- grafana
EXPECTED_PANELS=(
    "Role (1 = leader)" "Term" "Replication lag (bytes)" "Replication lag (seconds)"
    "Followers streaming" "Write throughput" "WAL throughput" "WAL retained"
    "Ack latency p99" "fsync p99"
)
dashboard_valid() {
    local f=ops/grafana-dashboard.json t rc=0
    jq empty "$f" || return 1
    jq -e '.uid == "walship" and (.title | length > 0) and (.schemaVersion | type == "number")' "$f" >/dev/null ||
        { echo "uid/title/schemaVersion missing"; rc=1; }
    jq -e '[.templating.list[] | select(.name == "DS_PROMETHEUS" and .type == "datasource" and .query == "prometheus")] | length == 1' "$f" >/dev/null ||
        { echo "no datasource variable DS_PROMETHEUS"; rc=1; }
    jq -e '[.panels[].id] | length == (unique | length)' "$f" >/dev/null || { echo "panel ids are not unique"; rc=1; }
    # each panel: type, title, gridPos, the Prometheus datasource, >= 1 target with expr and refId
    local bad
    bad=$(jq -r '.panels[] | select(
            (.type | type) != "string" or (.title | type) != "string"
            or (.gridPos | (.h and .w and (.x | type == "number") and (.y | type == "number"))) != true
            or .datasource.uid != "${DS_PROMETHEUS}"
            or (.targets | length) == 0
            or ([.targets[] | select((.expr | type) != "string" or (.expr | length) == 0 or (.refId | type) != "string")] | length) > 0
          ) | .title' "$f")
    [ -z "$bad" ] || { echo "malformed panels: $bad"; rc=1; }
    for t in "${EXPECTED_PANELS[@]}"; do
        if jq -e --arg t "$t" '[.panels[] | select(.title == $t)] | length == 1' "$f" >/dev/null; then
            echo "panel \"$t\": present"
        else
            echo "panel \"$t\": MISSING"
            rc=1
        fi
    done
    return $rc
}
check "ops/grafana-dashboard.json: valid JSON with the expected panels" dashboard_valid
dashboard_promql() {
    jq -r '.panels[].targets[].expr' ops/grafana-dashboard.json >"$WORK/dashboard.promql"
    # promtool parses PromQL in rule files: one recording rule per panel query.
    jq '{groups: [{name: "dashboard", rules: [.panels[] as $p | $p.targets[]
            | {record: "dashboard:panel\($p.id)_\(.refId)", expr: .expr}]}]}' \
        ops/grafana-dashboard.json >"$WORK/dashboard-rules.json"
    promtool check rules "$WORK/dashboard-rules.json" || return 1
    metrics_defined "$WORK/dashboard.promql"
}
check "ops/grafana-dashboard.json: PromQL parses; its metrics exist in bin/src/metrics.rs" dashboard_promql

# ---------------------------------------------------------------- example configs
# Each ops/config/n*.toml, with its 10.0.0.x addresses moved to free loopback ports and
# its data_dir/token_file to a temp dir, must be accepted by `walship serve`.
configs_accepted() {
    local dir=$WORK/configs rc=0 f i
    mkdir -p "$dir"
    echo "ops-checks-token" >"$dir/token"
    chmod 0600 "$dir/token"
    local sed_args=()
    for i in 1 2 3; do
        sed_args+=(-e "s/10\.0\.0\.$i:7400/127.0.0.1:$(free_port)/g" -e "s/10\.0\.0\.$i:7480/127.0.0.1:$(free_port)/g")
    done
    for f in ops/config/n*.toml; do
        local n
        n=$(basename "$f" .toml)
        sed "${sed_args[@]}" \
            -e "s|^data_dir *=.*|data_dir = \"$dir/$n.data\"|" \
            -e "s|^token_file *=.*|token_file = \"$dir/token\"|" "$f" >"$dir/$n.toml"
        if grep -q '10\.0\.0\.' "$dir/$n.toml"; then
            echo "$f: an address other than 10.0.0.{1,2,3}:{7400,7480}; cannot move it to loopback"
            rc=1
            continue
        fi
        local http
        http=$(sed -n 's/^http_listen *= *"\(.*\)"/\1/p' "$dir/$n.toml")
        start_node "$dir/$n.toml" "$dir/$n.log"
        if wait_http "http://$http/health"; then
            echo "$f: accepted; GET /health = 200"
        else
            echo "$f: REFUSED or not healthy; its log:"
            sed 's/^/     /' "$dir/$n.log"
            rc=1
        fi
    done
    # All three ran together as one cluster: stop them.
    for i in "${PIDS[@]}"; do stop_node "$i" || rc=1; done
    PIDS=()
    return $rc
}
check "ops/config/n*.toml accepted by walship serve" configs_accepted

# ---------------------------------------------------------------- /metrics
metrics_lint() {
    local dir=$WORK/single port_l port_h
    mkdir -p "$dir"
    port_l=$(free_port)
    port_h=$(free_port)
    cat >"$dir/walship.toml" <<EOF
cluster_id  = "ops-checks"
node_id     = "n1"
data_dir    = "$dir/data"
listen      = "127.0.0.1:$port_l"
http_listen = "127.0.0.1:$port_h"

[[members]]
id = "n1"
addr = "127.0.0.1:$port_l"
http = "127.0.0.1:$port_h"

[failover]
heartbeat_interval = "50ms"
election_timeout = "300ms"
EOF
    local url=http://127.0.0.1:$port_h rc=0 i lsn
    start_node "$dir/walship.toml" "$dir/node.log"
    local pid=$NODE_PID
    if ! wait_http "$url/leader"; then
        sed 's/^/     /' "$dir/node.log"
        stop_node "$pid"
        return 1
    fi
    for i in $(seq 20); do
        lsn=$(curl -sf -X PUT --data-binary "value-$i" "$url/v1/kv/key-$i" | jq -r .lsn) ||
            { echo "PUT key-$i failed"; rc=1; break; }
    done
    curl -sf "$url/v1/kv/key-20?min_lsn=$lsn&wait=2s" >/dev/null || { echo "GET key-20 min_lsn=$lsn failed"; rc=1; }
    curl -sf "$url/status" >/dev/null || { echo "GET /status failed"; rc=1; }
    curl -sf "$url/metrics" >"$dir/metrics.txt" || { echo "GET /metrics failed"; rc=1; }
    stop_node "$pid" || rc=1
    PIDS=()
    echo "scraped $(grep -vc '^#' "$dir/metrics.txt") samples of $(grep -c '^# TYPE' "$dir/metrics.txt") metric families after 20 writes"
    # promtool check metrics prints lint problems and exits non-zero on any.
    promtool check metrics <"$dir/metrics.txt" || rc=1
    # The histograms saw the writes.
    local h
    for h in 'walship_wal_fsync_duration_seconds_count' 'walship_ack_wait_seconds_count{ack="remote_flush"}'; do
        if awk -v h="$h" '$1 == h && $2 > 0 {found=1} END {exit !found}' "$dir/metrics.txt"; then
            echo "$h > 0"
        else
            echo "$h missing or 0"
            rc=1
        fi
    done
    return $rc
}
check "promtool check metrics on a running node's GET /metrics" metrics_lint

# ---------------------------------------------------------------- systemd
systemd_verify() {
    # The unit runs /usr/local/bin/walship as user walship (see ops/README.md).
    if [ ! -e /usr/local/bin/walship ]; then
        [ "$(id -u)" -eq 0 ] || { echo "/usr/local/bin/walship is missing; run as root to install it"; return 1; }
        install -m 0755 "$WALSHIP" /usr/local/bin/walship
        echo "installed $WALSHIP as /usr/local/bin/walship"
    fi
    if ! getent passwd walship >/dev/null; then
        [ "$(id -u)" -eq 0 ] || { echo "user walship is missing; run as root to create it"; return 1; }
        useradd --system --user-group --home-dir /var/lib/walship --no-create-home \
            --shell /usr/sbin/nologin walship
        echo "created system user walship"
    fi
    # verify prints nothing when the unit is clean; any output is a finding.
    local out
    out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify ops/walship.service 2>&1) || { printf '%s\n' "$out"; return 1; }
    if [ -n "$out" ]; then
        printf '%s\n' "$out"
        return 1
    fi
    echo "systemd-analyze verify: no findings"
    # The hardening stays in place: exposure at most 2.0 on systemd's 0-10 scale.
    out=$(systemd-analyze security --offline=yes --threshold=20 ops/walship.service 2>&1) || {
        printf '%s\n' "$out"
        echo "systemd-analyze security: exposure above 2.0; was the unit's hardening weakened?"
        return 1
    }
    printf '%s\n' "$out" | grep 'Overall exposure level' || true
}
check "systemd-analyze verify + security ops/walship.service" systemd_verify

# ---------------------------------------------------------------- summary
if [ "$FAILED" -ne 0 ]; then
    log "failed checks:"
    for n in "${FAILED_NAMES[@]}"; do log "  - $n"; done
fi
echo "ops-checks: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
