// node-postgres through the agent (tests/postgres_drivers.rs). Prints what
// it observed as JSON; the test asserts.
const path = require('path');
const { Client, Pool } = require(path.join(process.env.SLUICE_NODE_MODULES, 'pg'));

const config = {
  host: '127.0.0.1',
  port: Number(process.env.SLUICE_PORT),
  database: 'app',
  user: 'alice',
  password: process.env.SLUICE_TOKEN,
  ssl: false,
};
const LEDGER = 'SELECT id, owner, amount, card, tags FROM ledger WHERE id = $1';
const row = (r) => [r.id, r.owner, r.amount, r.card, r.tags];

(async () => {
  const seen = {};
  const client = new Client(config);
  await client.connect();
  seen.text = [];
  for (const id of [1, 2]) seen.text.push(row((await client.query(LEDGER, [id])).rows[0]));
  seen.prepared = [];
  for (const id of [2, 1, 2]) {
    seen.prepared.push(row((await client.query({ name: 'ledger', text: LEDGER, values: [id] })).rows[0]));
  }
  // Several statements in one simple Query.
  const multi = await client.query("SELECT 1 AS a; SELECT name FROM items WHERE id = 4");
  seen.multi = multi.map((r) => r.rows[0]);

  await client.query('BEGIN');
  await client.query('INSERT INTO notes (body) VALUES ($1)', ['from node-postgres']);
  await client.query('COMMIT');

  try {
    await client.query('DELETE FROM items WHERE id = $1', [1]);
    seen.denied = null;
  } catch (e) {
    seen.denied = { sqlstate: e.code, message: e.message };
  }
  seen.after_denied = (await client.query('SELECT name FROM items WHERE id = $1', [1])).rows[0].name;
  await client.end();

  const pool = new Pool({ ...config, max: 2 });
  const names = await Promise.all([12, 13, 14, 15].map((id) =>
    pool.query('SELECT name FROM items WHERE id = $1', [id])));
  seen.pool = names.map((r) => r.rows[0].name);
  await pool.end();
  console.log(JSON.stringify(seen));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
