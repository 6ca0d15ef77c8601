#!/usr/bin/env bash
# `make bench`: pgbench -S through Sluice vs. direct vs. PgBouncer (session
# mode), interleaved in one run, plus agent memory; writes docs/benchmarks.md.
# A benchmark, not a test: it reports what it measures and never fails on a
# number. Tunables: BENCH_SECONDS (per run, default 10), BENCH_SCALE (10),
# BENCH_IDLE (idle connections for the memory figure, 1000), BENCH_QUICK
# (e.g. "prepared:1 prepared:8": only those pgbench cells, printed, no
# memory/masking runs and no report written: for tuning). BENCH_CP_CORE=1
# (with BENCH_QUICK or BENCH_PROFILE): the control plane on core 1 and everything else
# (PostgreSQL, the agent, PgBouncer, pgbench) on core 0, as if the control
# plane ran on a host of its own; direct and PgBouncer get one core too.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-10}
SCALE=${BENCH_SCALE:-10}
IDLE=${BENCH_IDLE:-1000}
[ -n "${BENCH_QUICK:-}" ] && IDLE=${BENCH_IDLE:-10}
if [ -n "${BENCH_CP_CORE:-}" ]; then
    [ -n "${BENCH_QUICK:-}${BENCH_PROFILE:-}" ] || { echo "error: BENCH_CP_CORE needs BENCH_QUICK or BENCH_PROFILE (its numbers are not the report's)" >&2; exit 1; }
    command -v taskset >/dev/null || { echo "error: BENCH_CP_CORE needs taskset (apt-get install util-linux)" >&2; exit 1; }
    [ "$(nproc)" -ge 2 ] || { echo "error: BENCH_CP_CORE needs two cores" >&2; exit 1; }
    # Everything this script starts inherits core 0; the control plane is
    # moved to core 1 once started.
    taskset -pc 0 $$ >/dev/null
fi
OUT=docs/benchmarks.md
BIN=${BENCH_BIN:-target/release}

for cmd in pgbench pgbouncer psql python3 curl; do
    command -v "$cmd" >/dev/null || { echo "error: $cmd not found (make bench installs pgbouncer when run as root: apt-get install pgbouncer postgresql-contrib)" >&2; exit 1; }
done

echo "building release binaries..."
[ -z "${BENCH_BIN:-}" ] && cargo build --release --bins -q

work=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$work"
pids=()
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
PG_BIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "error: $1 not ready" >&2; exit 1; }
PG_PORT=$(free_port); PGB_PORT=$(free_port); HTTP_PORT=$(free_port); GRPC_PORT=$(free_port); AGENT_PORT=$(free_port); STATUS_PORT=$(free_port)

echo "starting PostgreSQL (scale $SCALE)..."
mkdir -p "$work/pg" && chmod 700 "$work/pg"
[ ${#as_pg[@]} -gt 0 ] && chown postgres: "$work/pg"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
"${as_pg[@]}" tee -a "$work/pg/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = $((IDLE + 200))
shared_buffers = 256MB
password_encryption = 'scram-sha-256'
CONF
printf 'host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' | "${as_pg[@]}" tee "$work/pg/pg_hba.conf" >/dev/null
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w start >/dev/null
PSQL=(psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE ROLE app LOGIN PASSWORD 'bench-secret-pw'" -c "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1
# Masking: a 1,000-row, 5-column result, two of its columns masked.
"${PSQL[@]}" -d bench -c "CREATE TABLE mask_bench AS SELECT g AS id, 'Customer Number ' || g AS name, 'customer' || g || '@example.com' AS email, 'order ' || g || ' shipped to the north warehouse, priority normal' AS note, (g * 7)::numeric(12,2) AS amount FROM generate_series(1, 1000) g"
"${PSQL[@]}" -d bench -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO app"

echo "starting the control plane and agent..."
export SLUICE_DATA_DIR="$work/cp" SLUICE_HTTP_ADDR="127.0.0.1:$HTTP_PORT" SLUICE_GRPC_ADDR="127.0.0.1:$GRPC_PORT" SLUICE_LOG=warn
"$BIN/sluice-control-plane" serve > "$work/cp.log" 2>&1 &
CP_PID=$!
pids+=($CP_PID)
[ -n "${BENCH_CP_CORE:-}" ] && taskset -a -pc 1 "$CP_PID" >/dev/null
wait_http "http://127.0.0.1:$HTTP_PORT/readyz"
export SLUICE_URL="http://127.0.0.1:$HTTP_PORT"
export SLUICE_TOKEN=$("$BIN/sluice-control-plane" token issue --subject bench-admin --role admin --ttl 2h)
printf 'bench-secret-pw' | "$BIN/sluice" credentials set bench-db --username app --secret-stdin >/dev/null
cat > "$work/policy.yaml" <<POLICY
resources:
  - name: bench
    kind: postgres
    agent: bench
    address: 127.0.0.1:$PG_PORT
    database: bench
    credential: bench-db
  - name: bench-masked
    kind: postgres
    agent: bench
    address: 127.0.0.1:$PG_PORT
    database: bench
    credential: bench-db
policies:
  - name: bench
    subjects: { groups: [bench] }
    resources: { names: [bench] }
    rules:
      - deny: { sql: { statements: [ddl, dcl, dynamic, write] } }
      - allow: { sql: { statements: [read, transaction, session] } }
  - name: bench-masked
    subjects: { groups: [bench] }
    resources: { names: [bench-masked] }
    rules:
      - mask: { columns: ["public.mask_bench.name", "public.mask_bench.email"], detectors: [email, credit_card, ssn], as: redact }
      - allow: { sql: { statements: [read, transaction, session] } }
POLICY
"$BIN/sluice" policy apply "$work/policy.yaml" >/dev/null
join=$("$BIN/sluice" join-token create --agent bench 2>/dev/null)
"$BIN/sluice-agent" run --control-plane "https://127.0.0.1:$GRPC_PORT" --join-token "$join" --state-dir "$work/agent" \
    --postgres-addr "127.0.0.1:$AGENT_PORT" --status-addr "127.0.0.1:$STATUS_PORT" --max-connections-per-subject $((IDLE + 100)) > "$work/agent.log" 2>&1 &
AGENT_PID=$!
pids+=($AGENT_PID)
wait_http "http://127.0.0.1:$STATUS_PORT/readyz"
TOKEN=$("$BIN/sluice" token issue --subject bench --group bench --ttl 2h)

echo "starting PgBouncer (session mode)..."
mkdir -p "$work/pgb"
printf '"postgres" ""\n' > "$work/pgb/userlist.txt"
cat > "$work/pgb/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $work/pgb/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 64
logfile = $work/pgb/pgbouncer.log
INI
chmod -R a+rX "$work/pgb"; [ ${#as_pg[@]} -gt 0 ] && chown -R postgres: "$work/pgb"
if [ "$(id -u)" = 0 ]; then pgbouncer -q -u postgres "$work/pgb/pgbouncer.ini" & else pgbouncer -q "$work/pgb/pgbouncer.ini" & fi
PGB_PID=$!
pids+=($PGB_PID)
sleep 1

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) a process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
RSS_IDLE=$(rss_kb "$AGENT_PID")

# Memory on a fresh agent (before any load, so allocator reuse after the
# runs cannot flatter the per-session figure).
echo "measuring agent memory with $IDLE idle client connections..."
exec 7> >(python3 bench/idle_clients.py 127.0.0.1 "$AGENT_PORT" bench "$TOKEN" "$IDLE" > "$work/idle.out" 2>&1)
for _ in $(seq 1 600); do grep -q '^ready' "$work/idle.out" 2>/dev/null && break; grep -qi error "$work/idle.out" 2>/dev/null && { cat "$work/idle.out" >&2; exit 1; }; sleep 0.2; done
grep -q '^ready' "$work/idle.out" || { echo "error: idle clients did not connect" >&2; cat "$work/idle.out" >&2; exit 1; }
sleep 1
RSS_LOADED=$(rss_kb "$AGENT_PID")
exec 7>&-
sleep 2

results="$work/results.csv"
echo "mode,clients,target,tps,latency_ms,median_us,p99_us,proxy_cpu_us,cp_cpu_us" > "$results"
run() { # mode clients target port user password
    local mode=$1 c=$2 target=$3 port=$4 user=$5 pw=$6 jobs=$(( $2 < 2 ? $2 : 2 )) median="" p99="" proxy="" cpu0="" cpu_us="" cp0="" cp_us=""
    case $target in sluice) proxy=$AGENT_PID ;; pgbouncer) proxy=$PGB_PID ;; esac
    [ -n "$proxy" ] && cpu0=$(cpu_ticks "$proxy")
    # Through Sluice the control plane works too (it stores the audit
    # events the agent ships), on the same cores.
    [ "$target" = sluice ] && cp0=$(cpu_ticks "$CP_PID")
    local logp="$work/log-$mode-$c-$target"
    local extra=()
    [ "$c" = 1 ] && extra=(-l --log-prefix "$logp")
    local out
    out=$(cd "$work" && PGPASSWORD="$pw" PGSSLMODE=disable pgbench -S -n -M "$mode" -c "$c" -j "$jobs" -T "$SECS" "${extra[@]}" -h 127.0.0.1 -p "$port" -U "$user" bench 2>&1) || { echo "$out" >&2; echo "error: pgbench against $target failed" >&2; exit 1; }
    local tps lat txs
    tps=$(echo "$out" | awk -F'= ' '/^tps/ {split($2,a," "); print a[1]; exit}')
    lat=$(echo "$out" | awk -F'= ' '/^latency average/ {split($2,a," "); print a[1]; exit}')
    txs=$(echo "$out" | awk -F': ' '/^number of transactions actually processed/ {split($2,a,"/"); print a[1]; exit}')
    # The proxy's own CPU per transaction: what it costs, independent of
    # how the cores were shared during the run.
    [ -n "$proxy" ] && [ "${txs:-0}" -gt 0 ] && cpu_us=$(( ($(cpu_ticks "$proxy") - cpu0) * TICK_US / txs ))
    [ -n "$cp0" ] && [ "${txs:-0}" -gt 0 ] && cp_us=$(( ($(cpu_ticks "$CP_PID") - cp0) * TICK_US / txs ))
    if [ "$c" = 1 ]; then
        read -r median p99 < <(cat "$logp".* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[int(NR*0.99+0.5)]}')
        rm -f "$logp".*
    fi
    echo "$mode,$c,$target,$tps,$lat,$median,$p99,$cpu_us,$cp_us" >> "$results"
    printf '  %-8s -c %-3s %-9s %10s tps  %8s ms avg%s%s%s%s\n' "$mode" "$c" "$target" "$tps" "$lat" "${median:+  median ${median}us}" "${p99:+  p99 ${p99}us}" "${cpu_us:+  proxy cpu ${cpu_us}us/tx}" "${cp_us:+  control plane cpu ${cp_us}us/tx}"
}
if [ -n "${BENCH_PROFILE:-}" ]; then
    # BENCH_PROFILE=simple|prepared: profile the agent under pgbench -S -c 1
    # (-c BENCH_PROFILE_CLIENTS)
    # with linux-perf, print the top of the report, and stop.
    # BENCH_SYSCALLS=1: count the agent's system calls per transaction
    # (strace) instead.
    if [ -n "${BENCH_SYSCALLS:-}" ]; then
        command -v strace >/dev/null || { echo "error: BENCH_SYSCALLS needs strace (apt-get install strace)" >&2; exit 1; }
        strace -f -p "$AGENT_PID" -c -o "$work/strace.out" &
        tracer=$!
        sleep 1
        txs=$(cd "$work" && PGPASSWORD="$TOKEN" PGSSLMODE=disable pgbench -S -n -M "$BENCH_PROFILE" -c "${BENCH_PROFILE_CLIENTS:-1}" -j "$(( ${BENCH_PROFILE_CLIENTS:-1} < 2 ? ${BENCH_PROFILE_CLIENTS:-1} : 2 ))" -T "$SECS" -h 127.0.0.1 -p "$AGENT_PORT" -U bench bench | awk -F': ' '/^number of transactions actually processed/ {split($2,a,"/"); print a[1]}')
        kill -INT "$tracer"; wait "$tracer" || true
        echo "$txs transactions; system calls per transaction:"
        awk -v n="$txs" '$1 ~ /^[0-9.]+$/ && NF >= 5 { printf "  %-20s %6.2f\n", $NF, $4 / n }' "$work/strace.out" | sort -k2 -rn | head -20
        exit 0
    fi
    command -v perf >/dev/null || { echo "error: BENCH_PROFILE needs linux-perf (apt-get install linux-perf)" >&2; exit 1; }
    # BENCH_PROFILE_AFTER="mode:clients": run that load first (to profile
    # an agent that has already served it).
    if [ -n "${BENCH_PROFILE_AFTER:-}" ]; then
        m=${BENCH_PROFILE_AFTER%%:*} c=${BENCH_PROFILE_AFTER##*:}
        (cd "$work" && PGPASSWORD="$TOKEN" PGSSLMODE=disable pgbench -S -n -M "$m" -c "$c" -j "$(( c < 2 ? c : 2 ))" -T "$SECS" -h 127.0.0.1 -p "$AGENT_PORT" -U bench bench | grep -E '^tps')
    fi
    # BENCH_PROFILE_CP=1: profile the control plane (storing the audit
    # events the agent ships) instead of the agent.
    profiled=$AGENT_PID
    [ -n "${BENCH_PROFILE_CP:-}" ] && profiled=$CP_PID
    perf record -F 1999 ${BENCH_PERF_RECORD:--g} -p "$profiled" -o "$work/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
    perf_pid=$!
    (cd "$work" && PGPASSWORD="$TOKEN" PGSSLMODE=disable pgbench -S -n -M "$BENCH_PROFILE" -c "${BENCH_PROFILE_CLIENTS:-1}" -j "$(( ${BENCH_PROFILE_CLIENTS:-1} < 2 ? ${BENCH_PROFILE_CLIENTS:-1} : 2 ))" -T "$SECS" -h 127.0.0.1 -p "$AGENT_PORT" -U bench bench | grep -E '^(tps|latency)')
    wait "$perf_pid"
    [ -n "${BENCH_PERF_KEEP:-}" ] && cp "$work/perf.data" "$BENCH_PERF_KEEP"
    perf report -i "$work/perf.data" ${BENCH_PERF_ARGS:---no-children} --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -${BENCH_PERF_LINES:-60}
    exit 0
fi
if [ -n "${BENCH_QUICK:-}" ]; then
    echo "running pgbench -S (quick: $BENCH_QUICK), ${SECS}s per run, interleaved..."
    for cell in $BENCH_QUICK; do
        mode=${cell%%:*} c=${cell##*:}
        run "$mode" "$c" direct "$PG_PORT" postgres ""
        run "$mode" "$c" sluice "$AGENT_PORT" bench "$TOKEN"
        run "$mode" "$c" pgbouncer "$PGB_PORT" postgres ""
    done
    exit 0
fi
echo "running pgbench -S, ${SECS}s per run, interleaved..."
for mode in simple prepared; do
    for c in 1 8 32; do
        run "$mode" "$c" direct "$PG_PORT" postgres ""
        run "$mode" "$c" sluice "$AGENT_PORT" bench "$TOKEN"
        run "$mode" "$c" pgbouncer "$PGB_PORT" postgres ""
    done
done

echo "masking: throughput on one core, and added latency for a 1,000-row result..."
MASK_MBPS=$("$BIN/sluice-agent" bench-masking --rows 1000 --seconds 3 | awk '{print $1}')
echo "SELECT * FROM mask_bench;" > "$work/mask.sql"
masking="$work/masking.csv"
echo "target,median_us,tps" > "$masking"
mask_run() { # target port user password database
    local logp="$work/log-mask-$1" out median tps
    out=$(cd "$work" && PGPASSWORD="$4" PGSSLMODE=disable pgbench -n -f "$work/mask.sql" -c 1 -T "$SECS" -l --log-prefix "$logp" -h 127.0.0.1 -p "$2" -U "$3" "$5" 2>&1) || { echo "$out" >&2; echo "error: pgbench (masking) against $1 failed" >&2; exit 1; }
    tps=$(echo "$out" | awk -F'= ' '/^tps/ {split($2,a," "); print a[1]; exit}')
    median=$(cat "$logp".* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    rm -f "$logp".*
    echo "$1,$median,$tps" >> "$masking"
    printf '  %-14s median %8s us  %8s tps\n' "$1" "$median" "$tps"
}
for _ in 1 2; do
    mask_run direct "$PG_PORT" postgres "" bench
    mask_run sluice "$AGENT_PORT" bench "$TOKEN" bench
    mask_run sluice-masked "$AGENT_PORT" bench "$TOKEN" bench-masked
done

RSS_AFTER_RUNS=$(rss_kb "$AGENT_PID")
BENCH_NOTES_FILE=bench/notes.md MASKING_CSV="$masking" MASK_MBPS="$MASK_MBPS" python3 bench/report.py "$results" "$OUT" "$RSS_IDLE" "$RSS_AFTER_RUNS" "$RSS_LOADED" "$IDLE" "$SECS" "$SCALE"
echo "wrote $OUT"
