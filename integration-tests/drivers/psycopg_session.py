"""psycopg 3 through the agent (tests/postgres_drivers.rs).

Connects with the token in SLUICE_TOKEN to SLUICE_PORT, runs the scenario
the test names, and prints what it observed as JSON; the test asserts.
"""
import json
import os

import psycopg

conninfo = dict(host="127.0.0.1", port=os.environ["SLUICE_PORT"], dbname="app",
                user="alice", password=os.environ["SLUICE_TOKEN"], sslmode="disable")
LEDGER = "SELECT id, owner, amount, card, tags FROM ledger WHERE id = %s"
BYTEA = "SELECT convert_to(owner, 'UTF8') FROM ledger ORDER BY id"


def row(r):
    return [r[0], r[1], None if r[2] is None else str(r[2]),
            None if r[3] is None else str(r[3]), r[4]]


seen = {}
with psycopg.connect(**conninfo) as conn:
    # Text results, then binary results, then a server-side prepared statement.
    seen["text"] = [row(conn.execute(LEDGER, (i,)).fetchone()) for i in (1, 2)]
    with conn.cursor(binary=True) as cur:
        seen["binary"] = [row(cur.execute(LEDGER, (i,)).fetchone()) for i in (1, 2)]
    seen["prepared"] = [row(conn.execute(LEDGER, (i,), prepare=True).fetchone()) for i in (2, 1, 2)]
    # bytea, in text (hex) and in binary.
    seen["bytea"] = {}
    for mode in ("text", "binary"):
        with conn.cursor(binary=mode == "binary") as cur:
            cur.execute(BYTEA)
            seen["bytea"][mode] = [None if v is None else bytes(v).decode() for (v,) in cur]
    conn.commit()

    # A transaction that commits.
    with conn.transaction():
        conn.execute("INSERT INTO notes (body) VALUES (%s)", ("from psycopg",))

    # A denied statement inside the driver's implicit transaction: the
    # driver rolls back (and deallocates its prepared statements), and the
    # connection goes on.
    try:
        conn.execute("DELETE FROM items WHERE id = %s", (1,))
        seen["denied"] = None
    except psycopg.Error as e:
        seen["denied"] = {"sqlstate": e.sqlstate, "message": str(e).splitlines()[0]}
    conn.rollback()
    seen["after_denied"] = conn.execute("SELECT name FROM items WHERE id = %s", (1,)).fetchone()[0]
    conn.commit()

    # Pipeline mode: several Parse/Bind/Execute before one Sync.
    with conn.pipeline():
        curs = [conn.execute("SELECT name FROM items WHERE id = %s", (i,)) for i in (5, 6, 7)]
    seen["pipeline"] = [c.fetchone()[0] for c in curs]
    conn.commit()

    # A named (server-side) cursor.
    with conn.transaction():
        with conn.cursor(name="by_id") as cur:
            cur.execute("SELECT id FROM items ORDER BY id")
            seen["cursor"] = [r[0] for r in cur.fetchmany(3)]

print(json.dumps(seen))
