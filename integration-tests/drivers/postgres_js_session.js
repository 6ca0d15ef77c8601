// postgres.js (the driver under Drizzle and many Node.js agents) through
// the agent (tests/postgres_drivers.rs). It prepares every query as a
// named statement, describing it first to learn its parameter types, and
// pipelines queries on one connection. Prints what it observed as JSON;
// the test asserts.
const path = require('path');
const postgres = require(path.join(process.env.SLUICE_NODE_MODULES, 'postgres'));

const sql = postgres({
  host: '127.0.0.1',
  port: Number(process.env.SLUICE_PORT),
  database: 'app',
  username: 'alice',
  password: process.env.SLUICE_TOKEN,
  ssl: false,
  max: 1,
  onnotice: () => {},
});
const row = (r) => [r.id, r.owner, r.amount, r.card, r.tags];

(async () => {
  const seen = {};
  seen.text = [];
  for (const id of [1, 2]) {
    seen.text.push(row((await sql`SELECT id, owner, amount, card, tags FROM ledger WHERE id = ${id}`)[0]));
  }
  // Many queries in flight on the one connection.
  const piped = await Promise.all([5, 6, 7, 8].map((id) => sql`SELECT name FROM items WHERE id = ${id}`));
  seen.pipelined = piped.map((r) => r[0].name);
  seen.any = (await sql`SELECT name FROM items WHERE id = ANY(${[2, 3]}) ORDER BY id`).map((r) => r.name);
  seen.identifier = (await sql`SELECT ${sql('name')} FROM ${sql('items')} WHERE id = ${9}`)[0].name;

  await sql.begin(async (tx) => {
    await tx`INSERT INTO notes (body) VALUES (${'from postgres.js'})`;
  });

  try {
    await sql`DELETE FROM items WHERE id = ${1}`;
    seen.denied = null;
  } catch (e) {
    seen.denied = { sqlstate: e.code, message: e.message };
  }
  seen.after_denied = (await sql`SELECT name FROM items WHERE id = ${1}`)[0].name;

  const batches = [];
  for await (const rows of sql`SELECT id FROM items WHERE id <= 5 ORDER BY id`.cursor(2)) {
    batches.push(rows.map((r) => r.id));
  }
  seen.cursor = batches;
  await sql.end({ timeout: 5 });
  console.log(JSON.stringify(seen));
})().catch(async (e) => {
  console.error(e);
  await sql.end({ timeout: 1 });
  process.exit(1);
});
