"""asyncpg through the agent (tests/postgres_drivers.rs).

asyncpg sends client_encoding as 'utf-8' (quoted), prepares every
statement, and asks for every result in binary. Prints what it observed as
JSON; the test asserts.
"""
import asyncio
import datetime
import ipaddress
import json
import os

import asyncpg

params = dict(host="127.0.0.1", port=int(os.environ["SLUICE_PORT"]), database="app",
              user="alice", password=os.environ["SLUICE_TOKEN"], ssl=False)
LEDGER = "SELECT id, owner, amount, card, tags FROM ledger WHERE id = $1"


def row(r):
    return [r[0], r[1], None if r[2] is None else str(r[2]),
            None if r[3] is None else str(r[3]), r[4]]


async def main():
    seen = {}
    conn = await asyncpg.connect(**params)
    seen["binary"] = [row(await conn.fetchrow(LEDGER, i)) for i in (1, 2)]
    stmt = await conn.prepare(LEDGER)
    seen["prepared"] = [row(await stmt.fetchrow(i)) for i in (2, 1, 2)]
    seen["arrays"] = await conn.fetchval("SELECT ARRAY[1.5, NULL, 3]::numeric[]::text")
    seen["array_values"] = [None if v is None else str(v)
                            for v in await conn.fetchval("SELECT ARRAY[1.5, NULL, 3]::numeric[]")]
    seen["record"] = list(await conn.fetchval("SELECT row(7, 'a,b', NULL::text)"))
    seen["bytea"] = [None if r[0] is None else r[0].decode()
                     for r in await conn.fetch("SELECT convert_to(owner, 'UTF8') FROM ledger ORDER BY id")]
    seen["accounts"] = [
        [r["id"], r["status"], r["history"],
         None if r["contact"] is None else [str(v) for v in r["contact"]]]
        for r in await conn.fetch("SELECT id, status, history, contact FROM accounts ORDER BY id")]

    # Binary parameters of types asyncpg learns from the target (it
    # declares none at Parse): the audit trail must read them.
    seen["typed_params"] = await conn.fetchval(
        "SELECT count(*) FROM accounts WHERE status = $1 AND id > $2 AND (contact).since < $3"
        " AND $4::timestamptz IS NOT NULL AND $5::contact IS NOT NULL"
        " AND $6::interval IS NOT NULL AND $7::inet IS NOT NULL",
        "active", 0, datetime.date(2025, 1, 1),
        datetime.datetime(2026, 1, 2, 3, 4, 5, 120, tzinfo=datetime.timezone.utc),
        ("Eve", "eve", datetime.date(1999, 12, 31)),
        datetime.timedelta(days=1, hours=2), ipaddress.ip_address("10.0.0.1"))

    async with conn.transaction():
        await conn.execute("INSERT INTO notes (body) VALUES ($1)", "from asyncpg")

    try:
        await conn.execute("DELETE FROM items WHERE id = $1", 1)
        seen["denied"] = None
    except asyncpg.PostgresError as e:
        seen["denied"] = {"sqlstate": e.sqlstate, "message": e.message}
    seen["after_denied"] = await conn.fetchval("SELECT name FROM items WHERE id = $1", 1)

    async with conn.transaction():
        seen["cursor"] = [r[0] async for r in conn.cursor("SELECT id FROM items WHERE id <= 3 ORDER BY id")]
    await conn.close()

    pool = await asyncpg.create_pool(**params, min_size=2, max_size=2)
    seen["pool"] = await asyncio.gather(*[
        pool.fetchval("SELECT name FROM items WHERE id = $1", i) for i in (8, 9, 10, 11)])
    await pool.close()
    print(json.dumps(seen))


asyncio.run(main())
