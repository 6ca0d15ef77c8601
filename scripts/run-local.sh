#!/usr/bin/env bash
# `make run`: a control plane, one enrolled agent and (when PostgreSQL is
# installed) a throwaway demo database, all on loopback, in the foreground.
# State lives in ./.sluice (git-ignored). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.sluice
BIN=target/debug
HTTP=127.0.0.1:8080
GRPC=127.0.0.1:8443
AGENT_PG=127.0.0.1:15432
AGENT_STATUS=127.0.0.1:9190
# Below the kernel's ephemeral port range (32768-60999 by default), so an
# outgoing connection can never be holding it when PostgreSQL starts.
DEMO_PG_PORT=25432
export SLUICE_URL="http://$HTTP"
export SLUICE_TOKEN_FILE="$STATE/admin.token"
mkdir -p "$STATE"
chmod 711 "$STATE"  # traversable (PostgreSQL may run as another user), not listable

pids=()
pg_started=""
cleanup() {
    # A second Ctrl-C must not cut this short and leave the demo
    # PostgreSQL running.
    trap - EXIT
    trap '' INT TERM
    echo
    echo "stopping..."
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$pg_started" ]; then "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$STATE/postgres" -m fast stop >/dev/null 2>&1 || true; fi
    echo "stopped. State is kept in $STATE (rm -rf $STATE to start over)."
}
trap cleanup INT TERM EXIT

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

PG_BIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)")
have_pg=""
if [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ]; then have_pg=1; fi
# PostgreSQL refuses to run as root: run it as the `postgres` system user then.
as_pg=()
if [ "$(id -u)" = "0" ]; then
    if id postgres >/dev/null 2>&1; then as_pg=(runuser -u postgres --); else have_pg=""; echo "note: running as root without a 'postgres' user; skipping the demo database"; fi
fi
# The demo PostgreSQL of an earlier run that was killed before it could
# stop it (its postmaster.pid is still in our state directory): stop it,
# unless that run is still going (its control plane answers).
if [ -n "$have_pg" ] && [ -f "$STATE/postgres/postmaster.pid" ] && ! port_busy "$HTTP"; then
    echo "stopping the demo PostgreSQL an earlier 'make run' left running..."
    "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$STATE/postgres" -m fast stop >/dev/null 2>&1 || true
fi
for addr in "$HTTP" "$GRPC" "$AGENT_PG" "$AGENT_STATUS" "127.0.0.1:$DEMO_PG_PORT"; do
    if port_busy "$addr"; then
        echo "error: $addr is already in use (another 'make run'?). Stop that process first." >&2
        exit 1
    fi
done

wait_http() { # url what
    for _ in $(seq 1 150); do
        curl -fsS "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "error: $2 did not come up ($1)" >&2
    exit 1
}

# --- demo PostgreSQL --------------------------------------------------------
if [ -n "$have_pg" ]; then
    if [ ! -f "$STATE/postgres/PG_VERSION" ]; then
        echo "creating the demo PostgreSQL in $STATE/postgres..."
        head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$STATE/demo-db.password"
        chmod 600 "$STATE/demo-db.password"
        mkdir -p "$STATE/postgres"
        chmod 700 "$STATE/postgres"
        [ ${#as_pg[@]} -gt 0 ] && chown postgres: "$STATE/postgres"
        "${as_pg[@]}" "$PG_BIN/initdb" -D "$STATE/postgres" -U postgres --auth=trust >/dev/null
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "port = $DEMO_PG_PORT"
            echo "unix_socket_directories = ''"
            echo "password_encryption = 'scram-sha-256'"
        } | "${as_pg[@]}" tee -a "$STATE/postgres/postgresql.conf" >/dev/null
        # The agent logs in with a password (SCRAM); local admin access stays trust.
        "${as_pg[@]}" tee "$STATE/postgres/pg_hba.conf" >/dev/null <<HBA
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
        fresh_pg=1
    fi
    # The port on the command line too: state made by an older `make run`
    # has another one in its postgresql.conf.
    if ! "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$STATE/postgres" -l "$STATE/postgres/server.log" -o "-p $DEMO_PG_PORT" -w start >/dev/null; then
        echo "error: the demo PostgreSQL did not start; the end of its log ($STATE/postgres/server.log):" >&2
        tail -n 5 "$STATE/postgres/server.log" >&2
        echo "If another program uses port $DEMO_PG_PORT, stop it; if the log shows a damaged data directory, rm -rf $STATE/postgres to start the demo database over." >&2
        exit 1
    fi
    pg_started=1
    if [ -n "${fresh_pg:-}" ]; then
        psql -q -h 127.0.0.1 -p "$DEMO_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -v pw="$(cat "$STATE/demo-db.password")" -f scripts/demo-seed.sql >/dev/null
    fi
    # The agent hears of DDL run on the demo database directly (psql as
    # postgres) when it commits, not within --catalog-max-age.
    PGOPTIONS='-c client_min_messages=warning' psql -q -h 127.0.0.1 -p "$DEMO_PG_PORT" -U postgres -d demo \
        -v ON_ERROR_STOP=1 -f docs/ddl-notices.sql >/dev/null
    echo "demo PostgreSQL running on 127.0.0.1:$DEMO_PG_PORT (log: $STATE/postgres/server.log)"
else
    echo "note: PostgreSQL server binaries not found; starting without the demo database (apt-get install postgresql)"
fi

# --- control plane ----------------------------------------------------------
export SLUICE_DATA_DIR="$STATE/control-plane"
"$BIN/sluice-control-plane" serve --grpc-addr "$GRPC" &
pids+=($!)
wait_http "http://$HTTP/readyz" "the control plane"

if [ ! -s "$STATE/admin.token" ]; then
    "$BIN/sluice-control-plane" token issue --subject admin --role admin --ttl 30d > "$STATE/admin.token"
    chmod 600 "$STATE/admin.token"
fi

if [ -n "$have_pg" ]; then
    [ -n "${fresh_pg:-}" ] && "$BIN/sluice" credentials set demo-db --username sluice_demo --secret-file "$STATE/demo-db.password" >/dev/null
    "$BIN/sluice" policy apply examples/demo-policy.yaml --comment "make run demo policy" >/dev/null
fi

# --- agent ------------------------------------------------------------------
agent_args=(run --control-plane "https://$GRPC" --state-dir "$STATE/agent" --postgres-addr "$AGENT_PG" --status-addr "$AGENT_STATUS")
if [ ! -f "$STATE/agent/identity.json" ]; then
    join=$("$BIN/sluice" join-token create --agent local --ttl 10m 2>/dev/null)
    agent_args+=(--join-token "$join")
fi
"$BIN/sluice-agent" "${agent_args[@]}" &
pids+=($!)
wait_http "http://$AGENT_STATUS/readyz" "the agent's policy snapshot"

dev_token=$("$BIN/sluice" token issue --subject dev@example.com --group developers --ttl 12h)
cat <<MSG

================================================================================
 Sluice is running.
   control plane   http://$HTTP  (console: http://$HTTP/ , API: /api/v1/openapi.json)
   agent           postgres on $AGENT_PG, status on http://$AGENT_STATUS/status

 Try (in another terminal, from this directory):
   export SLUICE_TOKEN_FILE=$STATE/admin.token
   $BIN/sluice agents                 # the agent, connected, holding the policy
   $BIN/sluice policy list            # policy versions
   $BIN/sluice resources              # the demo database
   curl -s http://$AGENT_STATUS/status

 Connect through the agent; your token is the password, the database
 credential stays in the agent:
   PGPASSWORD=$dev_token \\
     psql "host=127.0.0.1 port=${AGENT_PG#*:} dbname=demo user=dev sslmode=require"

   demo=> SELECT name, email, card_number FROM customers LIMIT 3;  -- allowed; email and card masked
   demo=> DROP TABLE customers;                          -- blocked by policy (42501)
   demo=> SELECT 1; DROP TABLE orders;                   -- blocked: every statement is judged
   demo=> UPDATE customers SET phone = NULL WHERE id = 5; -- waits for a DBA's approval

 Approve it as a DBA (anyone in group dba but the requester):
   DBA=\$($BIN/sluice token issue --subject dba@example.com --group dba)
   SLUICE_TOKEN=\$DBA $BIN/sluice approvals list --status pending
   SLUICE_TOKEN=\$DBA $BIN/sluice approvals approve <id>

 The audit trail and the session records (transcripts, tamper-evident):
   $BIN/sluice audit tail --follow
   $BIN/sluice sessions list
   $BIN/sluice sessions show <id>      $BIN/sluice audit verify <id>

 Ctrl-C stops everything.
================================================================================
MSG
wait -n "${pids[@]}"
echo "a Sluice process exited; stopping the rest" >&2
