#!/usr/bin/env bash
# Installs the client drivers the driver tests run through the agent
# (integration-tests/tests/postgres_drivers.rs): psycopg, asyncpg, psycopg2
# and SQLAlchemy into a Python virtual environment, node-postgres and
# postgres.js with npm, all under target/drivers, at the versions pinned in
# integration-tests/drivers/.
# Idempotent and safe to run concurrently (the tests call it too); does
# nothing once the pinned versions are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
src=integration-tests/drivers
dest=${SLUICE_DRIVERS_DIR:-target/drivers}
mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9

stamp() { cat "$src/requirements.txt" "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1; }
want=$(stamp)
if [ "$(cat "$dest/.installed" 2>/dev/null)" = "$want" ]; then
    exit 0
fi

for cmd in python3 node npm; do
    command -v "$cmd" >/dev/null || { echo "error: $cmd not found: the driver tests need it (make deps installs it as root: apt-get install python3-venv nodejs npm)" >&2; exit 1; }
done

echo "installing the drivers the driver tests use into $dest (psycopg, asyncpg, psycopg2, SQLAlchemy, node-postgres, postgres.js)..."
rm -rf "$dest/venv" "$dest/node"
python3 -m venv "$dest/venv" || { echo "error: python3 cannot create a virtual environment (apt-get install python3-venv)" >&2; exit 1; }
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check -r "$src/requirements.txt"
mkdir -p "$dest/node"
cp "$src/package.json" "$src/package-lock.json" "$dest/node/"
(cd "$dest/node" && npm ci --silent --no-audit --no-fund)
echo "$want" > "$dest/.installed"
