"""psycopg2 and SQLAlchemy on it through the agent (tests/postgres_drivers.rs).

psycopg2 interpolates parameters into the text on the client and sends
simple queries, in a transaction it opens itself; SQLAlchemy (the way
LangChain's SQLDatabase and most Python apps reach PostgreSQL) reflects
the schema with catalog queries before it reads. Prints what it observed
as JSON; the test asserts.
"""
import json
import os

import psycopg2
import sqlalchemy as sa

params = dict(host="127.0.0.1", port=int(os.environ["SLUICE_PORT"]), dbname="app",
              user="alice", password=os.environ["SLUICE_TOKEN"], sslmode="disable")
LEDGER = "SELECT id, owner, amount, card, tags FROM ledger WHERE id = %s"


def row(r):
    return [r[0], r[1], None if r[2] is None else str(r[2]),
            None if r[3] is None else str(r[3]), list(r[4])]


seen = {}
conn = psycopg2.connect(**params)
cur = conn.cursor()
seen["text"] = []
for i in (1, 2):
    cur.execute(LEDGER, (i,))
    seen["text"].append(row(cur.fetchone()))
cur.execute("INSERT INTO notes (body) VALUES (%s)", ("from psycopg2",))
conn.commit()
try:
    cur.execute("DELETE FROM items WHERE id = %s", (1,))
    seen["denied"] = None
except psycopg2.Error as e:
    seen["denied"] = {"sqlstate": e.pgcode, "message": e.pgerror.splitlines()[0].removeprefix("ERROR:  ")}
conn.rollback()
cur.execute("SELECT name FROM items WHERE id = %s", (1,))
seen["after_denied"] = cur.fetchone()[0]
conn.close()

engine = sa.create_engine("postgresql+psycopg2://", connect_args=params)
inspector = sa.inspect(engine)
seen["tables"] = sorted(inspector.get_table_names())
seen["columns"] = {t: [c["name"] for c in inspector.get_columns(t)] for t in ("ledger", "accounts")}
seen["primary_key"] = inspector.get_pk_constraint("ledger")["constrained_columns"]
seen["enums"] = [{"name": e["name"], "labels": e["labels"]} for e in inspector.get_enums()]
metadata = sa.MetaData()
ledger = sa.Table("ledger", metadata, autoload_with=engine)
with engine.connect() as c:
    seen["orm"] = [row(r) for r in c.execute(sa.select(ledger).where(ledger.c.id.in_([2, 1])).order_by(ledger.c.id))]
engine.dispose()
print(json.dumps(seen))
