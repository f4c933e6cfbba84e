#!/usr/bin/env bash
# End-to-end: a REAL HAProxy, configured from ops/haproxy.cfg, in front of a real
# 3-node walship cluster on loopback keeps writes working across switchovers.
#
#   scripts/haproxy-e2e.sh [--require]
#
# 1. starts 3 `walship serve` (quorum, ack remote_flush, heartbeat 50ms, election 300ms)
#    on free 127.0.0.1 ports, and HAProxy with ops/haproxy.cfg rewritten to those ports
#    and to fast health checks (inter 100ms fall 1 rise 1); nothing else is changed, so
#    the leader backend (GET /leader), the replica backend
#    (GET /replica?max_lag_bytes=16777216) and the read fallback are the shipped ones;
# 2. a writer PUTs unique keys through HAProxy's write frontend without pause; a write
#    that gets no 200 (HAProxy 503 while no node passes /leader, walship 307/503
#    not_leader, 504 outcome unknown, a cut connection) is retried with the same value,
#    at most MAX_ATTEMPTS times per key;
# 3. meanwhile POST /v1/admin/switchover moves the leader twice (n_a -> n_b -> n_c);
#    after each, the writer must get SETTLE_WRITES more writes acknowledged;
# 4. then every acknowledged write must be readable through HAProxy's read frontend
#    with ?min_lsn=<its LSN> (value equal), and every node's committed log
#    (GET /v1/log) must hold every acknowledged key with its value: nothing lost.
#
# Without haproxy installed it skips (exit 0) with a message, unless --require or CI
# is set (CI installs it first with scripts/ops-checks.sh). Uses the release binary
# ${CARGO_TARGET_DIR:-target}/release/walship (built when missing). Every process it
# starts is stopped on exit, whatever happens (KEEP_WORK=1 keeps the temp dir of a failed
# run: configs, logs, acknowledged writes). Upper bounds only, no timed assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
WALSHIP=$TARGET_DIR/release/walship

REQUIRE=0
[ "${1:-}" = "--require" ] && REQUIRE=1
[ -n "${CI:-}" ] && REQUIRE=1

SETTLE_WRITES=${SETTLE_WRITES:-40}  # acknowledged writes needed after each switchover
MAX_ATTEMPTS=${MAX_ATTEMPTS:-200}   # tries per key (25 ms apart: >= 5 s of unavailability)
MAX_WRITES=${MAX_WRITES:-5000}      # the writer never runs unbounded

log() { printf 'haproxy-e2e: %s\n' "$*" >&2; }

for t in haproxy curl jq python3; do
    if ! command -v "$t" >/dev/null 2>&1; then
        if [ "$REQUIRE" -eq 1 ]; then
            log "FAILED: $t is not installed (scripts/ops-checks.sh installs it)"
            exit 1
        fi
        log "SKIPPED: $t is not installed (run scripts/ops-checks.sh as root to install it)"
        exit 0
    fi
done
if [ ! -x "$WALSHIP" ]; then
    log "building $WALSHIP"
    cargo build --release -p walship --bin walship
fi

WORK=$(mktemp -d /tmp/haproxy-e2e.XXXXXX)
PIDS=()
WRITER_PID=
cleanup() {
    local rc=$? p
    touch "$WORK/stop" 2>/dev/null || true
    [ -z "$WRITER_PID" ] || kill "$WRITER_PID" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}" $WRITER_PID; do wait "$p" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        log "FAILED (exit $rc); last lines of each log:"
        for f in "$WORK"/*.log; do
            [ -e "$f" ] || continue
            echo "--- $f" >&2
            tail -n 25 "$f" >&2
        done
        echo "haproxy-e2e: 0 passed, 1 failed"
    fi
    if [ "$rc" -ne 0 ] && [ -n "${KEEP_WORK:-}" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    log "FAILED: $*"
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# code URL [curl args...]: HTTP status of one request (000 when there is no answer).
code() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true
}

# ---------------------------------------------------------------- cluster
IDS=(n1 n2 n3)
declare -A ADDR HTTP
for id in "${IDS[@]}"; do
    ADDR[$id]=127.0.0.1:$(free_port)
    HTTP[$id]=127.0.0.1:$(free_port)
done
MEMBERS=
for id in "${IDS[@]}"; do
    MEMBERS+=$'[[members]]\n'"id = \"$id\""$'\n'"addr = \"${ADDR[$id]}\""$'\n'"http = \"${HTTP[$id]}\""$'\n\n'
done
for id in "${IDS[@]}"; do
    cat >"$WORK/$id.toml" <<EOF
cluster_id  = "haproxy-e2e"
node_id     = "$id"
data_dir    = "$WORK/$id.data"
listen      = "${ADDR[$id]}"
http_listen = "${HTTP[$id]}"

$MEMBERS
[replication]
mode = "quorum"
ack = "remote_flush"
ack_timeout = "2s"

[failover]
auto = true
heartbeat_interval = "50ms"
election_timeout = "300ms"

[wal]
segment_size = "16MiB"
EOF
    WALSHIP_LOG=${WALSHIP_LOG:-info} "$WALSHIP" serve --config "$WORK/$id.toml" >"$WORK/$id.log" 2>&1 &
    PIDS+=($!)
done
log "3 nodes started: $(for id in "${IDS[@]}"; do printf '%s=http://%s ' "$id" "${HTTP[$id]}"; done)"

# leader: the id whose GET /leader answers 200 (empty when none does).
leader() {
    local id
    for id in "${IDS[@]}"; do
        if [ "$(code "http://${HTTP[$id]}/leader")" = 200 ]; then
            echo "$id"
            return
        fi
    done
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 50 ms up to SECONDS.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    for i in $(seq $((secs * 20))); do
        "$@" && return 0
        sleep 0.05
    done
    fail "$what: not within ${secs}s"
}
is_leader() { [ "$(code "http://${HTTP[$1]}/leader")" = 200 ]; }
has_leader() { [ -n "$(leader)" ]; }
all_replicas_stream() {
    local l id
    l=$(leader)
    [ -n "$l" ] || return 1
    for id in "${IDS[@]}"; do
        [ "$id" = "$l" ] && continue
        [ "$(code "http://${HTTP[$id]}/replica?max_lag_bytes=16777216")" = 200 ] || return 1
    done
}
wait_for "a leader elected" 20 has_leader
wait_for "both followers streaming" 20 all_replicas_stream
log "leader: $(leader)"

# ---------------------------------------------------------------- haproxy
WPORT=$(free_port)
RPORT=$(free_port)
HCFG=$WORK/haproxy.cfg
SED=(-e "s/bind \*:8480/bind 127.0.0.1:$WPORT/"
    -e "s/bind \*:8481/bind 127.0.0.1:$RPORT/"
    -e 's/inter 500ms fall 1 rise 1/inter 100ms fall 1 rise 1/'
    -e 's/inter 1s fall 2 rise 1/inter 100ms fall 1 rise 1/')
for i in 1 2 3; do SED+=(-e "s/10\.0\.0\.$i:7480/${HTTP[n$i]}/g"); done
sed "${SED[@]}" ops/haproxy.cfg >"$HCFG"
# The rewrite must have hit every line it targets: ops/haproxy.cfg changed shape otherwise.
grep -q "bind 127.0.0.1:$WPORT" "$HCFG" && grep -q "bind 127.0.0.1:$RPORT" "$HCFG" ||
    fail "ops/haproxy.cfg has no 'bind *:8480' / 'bind *:8481' to rewrite"
[ "$(grep -c 'inter 100ms fall 1 rise 1' "$HCFG")" -eq 2 ] ||
    fail "ops/haproxy.cfg: expected the health-check timings 'inter 500ms fall 1 rise 1' and 'inter 1s fall 2 rise 1'"
! grep -q '10\.0\.0\.' "$HCFG" || fail "ops/haproxy.cfg names servers other than 10.0.0.{1,2,3}:7480"
grep -q 'option httpchk GET /leader' "$HCFG" && grep -q 'option httpchk GET /replica?max_lag_bytes=' "$HCFG" ||
    fail "ops/haproxy.cfg lost its /leader or /replica health checks"
# Request logs on HAProxy's stdout (its log file is printed on failure).
sed -i -e 's/^global$/global\n    log stdout format raw local0/' \
    -e 's/^defaults$/defaults\n    log global\n    option httplog/' "$HCFG"
# A stats page, to see which servers each backend's health checks let in.
SPORT=$(free_port)
printf '\nlisten stats\n    bind 127.0.0.1:%s\n    stats enable\n    stats uri /stats\n' "$SPORT" >>"$HCFG"
haproxy -c -q -f "$HCFG" || fail "haproxy -c rejects the generated config $HCFG"
haproxy -db -f "$HCFG" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
W=http://127.0.0.1:$WPORT
R=http://127.0.0.1:$RPORT
log "haproxy: write frontend $W, read frontend $R"
haproxy_routes_writes() { [ "$(code "$W/leader")" = 200 ]; }
wait_for "haproxy routes to the leader" 10 haproxy_routes_writes

# up_servers BACKEND: the servers HAProxy's health checks mark UP, sorted, space-separated.
up_servers() {
    curl -sf --max-time 2 "http://127.0.0.1:$SPORT/stats;csv" |
        awk -F, -v b="$1" '$1 == b && $2 != "BACKEND" && $2 != "FRONTEND" && $18 ~ /^UP/ {print $2}' |
        sort | tr '\n' ' ' | sed 's/ $//'
}
# backends_match LEADER: walship_leader holds only LEADER, walship_replicas only the others.
backends_match() {
    local l=$1 want_r id
    want_r=$(for id in "${IDS[@]}"; do [ "$id" = "$l" ] || echo "$id"; done | tr '\n' ' ' | sed 's/ $//')
    BACKENDS="walship_leader: [$(up_servers walship_leader)], walship_replicas: [$(up_servers walship_replicas)]"
    [ "$BACKENDS" = "walship_leader: [$l], walship_replicas: [$want_r]" ]
}
check_backends() {
    local i
    for i in $(seq 200); do
        backends_match "$1" && { log "  haproxy health checks: $BACKENDS"; return 0; }
        sleep 0.05
    done
    fail "haproxy health checks do not route as expected with leader $1 within 10s: $BACKENDS"
}
check_backends "$(leader)"

# ---------------------------------------------------------------- writer
ACKED=$WORK/acked.txt # key value lsn attempts ack-time-ms
RETRIES=$WORK/retries.txt
: >"$ACKED"
: >"$RETRIES"
writer() {
    local i=0 key val resp attempts body=$WORK/writer.body
    while [ ! -e "$WORK/stop" ] && [ "$i" -lt "$MAX_WRITES" ]; do
        i=$((i + 1))
        key=$(printf 'k%05d' "$i")
        val="v$i-$RANDOM$RANDOM"
        attempts=0
        while :; do
            attempts=$((attempts + 1))
            resp=$(curl -s -o "$body" -w '%{http_code}' --max-time 5 -X PUT --data-binary "$val" "$W/v1/kv/$key") || resp=000
            case $resp in
            200)
                echo "$key $val $(jq -r .lsn "$body") $attempts $(date +%s%3N)" >>"$ACKED"
                break
                ;;
            5?? | 307 | 000)
                # no acknowledgement: retry the same value (a PUT is idempotent)
                echo "$key $resp" >>"$RETRIES"
                if [ "$attempts" -ge "$MAX_ATTEMPTS" ]; then
                    echo "key $key: no 200 after $attempts attempts (last $resp: $(head -c 300 "$body" 2>/dev/null))" >"$WORK/writer.failed"
                    return 1
                fi
                sleep 0.025
                ;;
            *)
                echo "key $key: unexpected HTTP $resp: $(head -c 300 "$body")" >"$WORK/writer.failed"
                return 1
                ;;
            esac
        done
    done
}
writer >"$WORK/writer.log" 2>&1 &
WRITER_PID=$!

acked() { wc -l <"$ACKED"; }
writer_ok() { [ ! -e "$WORK/writer.failed" ] || fail "writer: $(cat "$WORK/writer.failed")"; }
# acked_at_least N: true once N writes are acknowledged (fails fast if the writer gave up)
acked_at_least() {
    writer_ok
    [ "$(acked)" -ge "$1" ]
}
wait_for "first $SETTLE_WRITES writes through haproxy" 30 acked_at_least "$SETTLE_WRITES"

# ---------------------------------------------------------------- switchovers
SWITCHES=0
REFUSED_SWITCHOVERS=0
# switchover TO: POST /v1/admin/switchover to the leader until TO leads (at most 3
# attempts). A refused attempt is reported loudly but tolerated: whatever walship does
# then (the old leader resumes, or an election picks another node), writes through
# HAProxy must keep working and nothing acknowledged may be lost, which is what this
# test is about.
switchover() {
    local from to=$1 before out rc attempt
    before=$(acked)
    for attempt in 1 2 3; do
        wait_for "a leader before the switchover to $to" 15 has_leader
        from=$(leader)
        [ "$from" != "$to" ] || break
        log "switchover $from -> $to with $(acked) writes acknowledged (attempt $attempt)"
        rc=0
        out=$(curl -s -w ' HTTP %{http_code}' --max-time 15 -X POST -H 'content-type: application/json' \
            --data "{\"to\": \"$to\"}" "http://${HTTP[$from]}/v1/admin/switchover") || rc=$?
        log "  POST /v1/admin/switchover: $out"
        case $out in *"HTTP 200") break ;; esac
        REFUSED_SWITCHOVERS=$((REFUSED_SWITCHOVERS + 1))
        log "  WARNING: walship did not complete the switchover to $to (curl exit $rc): $out"
        [ "$attempt" -lt 3 ] || fail "3 switchover attempts to $to failed"
    done
    wait_for "$to leads after the switchover" 15 is_leader "$to"
    check_backends "$to"
    wait_for "$SETTLE_WRITES writes acknowledged through haproxy after the switchover to $to" 30 \
        acked_at_least $((before + SETTLE_WRITES))
    SWITCHES=$((SWITCHES + 1))
    log "  $to leads; $(($(acked) - before)) writes acknowledged since the switchover began"
}
first=$(leader)
others=()
for id in "${IDS[@]}"; do [ "$id" = "$first" ] || others+=("$id"); done
switchover "${others[0]}"
switchover "${others[1]}"

touch "$WORK/stop"
wait "$WRITER_PID" || true
WRITER_PID=
writer_ok
N=$(acked)
MAXTRIES=$(awk 'BEGIN {m = 0} $4 > m {m = $4} END {print m}' "$ACKED")
GAP=$(awk 'NR > 1 && $5 - t > m {m = $5 - t} {t = $5} END {print m + 0}' "$ACKED")
log "writer stopped: $N writes acknowledged, $(wc -l <"$RETRIES") retries ($(awk '{print $2}' "$RETRIES" | sort | uniq -c | awk '{printf "%s x HTTP %s, ", $1, $2}')most for one key: $MAXTRIES attempts); longest time between two acknowledgements: ${GAP} ms"
[ "$(awk '{print $1}' "$ACKED" | sort | uniq -d | wc -l)" -eq 0 ] || fail "a key was acknowledged twice"

# ---------------------------------------------------------------- nothing lost
# Every acknowledged write, read through HAProxy's read frontend with min_lsn. A read
# that HAProxy itself answers 503 (no server passed its check at that instant) is retried
# like a write, at most 20 times; any other answer but 200 with the value is a failure.
bad=0
read_retries=0
via=$WORK/read.body
while read -r key val lsn _; do
    for try in $(seq 20); do
        c=$(curl -s -o "$via" -w '%{http_code}' --max-time 10 "$R/v1/kv/$key?min_lsn=$lsn&wait=5s") || c=000
        [ "$c" = 503 ] && grep -q 'No server is available' "$via" || break
        read_retries=$((read_retries + 1))
        sleep 0.05
    done
    if [ "$c" != 200 ] || [ "$(cat "$via")" != "$val" ]; then
        log "read $key?min_lsn=$lsn via haproxy: HTTP $c after $try tries, body '$(head -c 100 "$via")', want '$val'"
        bad=$((bad + 1))
    fi
done <"$ACKED"
[ "$read_retries" -eq 0 ] || {
    log "WARNING: HAProxy answered $read_retries reads 503 'No server is available' (retried); backends: $(up_servers walship_replicas) | $(up_servers walship_leader)"
    grep -c 'walship_read.*NOSRV' "$WORK/haproxy.log" >&2 || true
}
[ "$bad" -eq 0 ] || fail "$bad of $N acknowledged writes not readable through the read frontend"
log "all $N acknowledged writes read back through the read frontend (min_lsn)"

# Every node's committed log holds every acknowledged key with its value.
jq -R 'split(" ") | {(.[0]): .[1]}' "$ACKED" | jq -s 'add' >"$WORK/acked.json"
MAXLSN=$(tail -n 1 "$ACKED" | awk '{print $3}')
node_has_all() {
    local id=$1 missing
    # applied at least up to the last acknowledged LSN, and committed as far
    curl -sf --max-time 10 -o /dev/null "http://${HTTP[$id]}/v1/kv/$(tail -n 1 "$ACKED" | awk '{print $1}')?min_lsn=$MAXLSN&wait=5s" || return 1
    curl -sf --max-time 10 "http://${HTTP[$id]}/v1/log?limit=100000" >"$WORK/$id.ndjson" || return 1
    missing=$(jq -s --slurpfile acked "$WORK/acked.json" '
        (map(select(.key != null and .value_b64 != null)) | map({(.key): (.value_b64 | @base64d)}) | add // {}) as $log
        | [$acked[0] | to_entries[] | select($log[.key] != .value) | .key] | length' "$WORK/$id.ndjson")
    [ "$missing" -eq 0 ] || { echo "$missing" >"$WORK/$id.missing"; return 1; }
}
for id in "${IDS[@]}"; do
    ok=0
    for _ in $(seq 20); do
        if node_has_all "$id"; then
            ok=1
            break
        fi
        sleep 0.5
    done
    [ "$ok" -eq 1 ] || fail "node $id's committed log lacks $(cat "$WORK/$id.missing" 2>/dev/null || echo 'some of the') acknowledged writes (or the node did not answer) after 10s"
done
log "every node's committed log holds all $N acknowledged writes"
[ "$REFUSED_SWITCHOVERS" -eq 0 ] || log "WARNING: $REFUSED_SWITCHOVERS switchover attempt(s) did not complete (see above); retried"
log "PASSED: $SWITCHES switchovers through haproxy ($(haproxy -v | head -n1 | awk '{print $1, $2, $3}')), $N writes acknowledged, none lost"
echo "haproxy-e2e: 1 passed, 0 failed"
