#!/usr/bin/env bash
# The failover benchmark of benches/FAILOVER.md: 3 real `walship serve` processes
# on loopback, a 4-client HTTP writer (keep-alive, unique keys), and per timing
# setting (heartbeat 50 ms / election 300 ms, then 100 ms / 1 s):
#   - 20 trials of kill -9 of the leader -> first write acknowledged by the new leader
#     (the killed node is restarted and rejoins between trials);
#   - 20 switchovers (POST /v1/admin/switchover), longest gap between acknowledged writes;
#   - at the end, every acknowledged key is checked on every node and the committed
#     logs are compared record by record.
# Usage: benches/failover.sh            (WALSHIP_BENCH_TRIALS=N to change the trial count)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/demo}"
export WALSHIP_BENCH_TRIALS="${WALSHIP_BENCH_TRIALS:-20}"
cargo test -p walship --release --test failover_process -- \
    --ignored --nocapture --exact bench_failover
