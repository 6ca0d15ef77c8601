#!/usr/bin/env bash
# Makes sure the system packages Sluice's build, tests and demo need are
# present. As root it installs what is missing with apt-get; otherwise it
# names the packages and fails.
set -euo pipefail

need=()          # Debian packages to install
have_cmd() { command -v "$1" >/dev/null 2>&1; }
pg_bin() {       # PostgreSQL server binaries are not on PATH on Debian
    have_cmd "$1" && return 0
    compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}

have_cmd cargo || { echo "error: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
have_cmd cc || need+=(build-essential)
have_cmd psql || need+=(postgresql-client)
for b in initdb pg_ctl postgres pgbench; do pg_bin "$b" || { need+=(postgresql); break; }; done
# The foreign-table tests load postgres_fdw (in Debian's server package).
have_fdw() {
    have_cmd pg_config && [ -f "$(pg_config --sharedir)/extension/postgres_fdw.control" ] && return 0
    compgen -G "/usr/share/postgresql/*/extension/postgres_fdw.control" >/dev/null
}
have_fdw || need+=(postgresql-contrib)
have_cmd curl || need+=(curl)
# The driver tests run psycopg, asyncpg, psycopg2 and SQLAlchemy (in a
# virtual environment), node-postgres and postgres.js
# (scripts/ensure-drivers.sh installs them).
have_cmd python3 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
have_cmd node || need+=(nodejs)
have_cmd npm || need+=(npm)
have_cmd flock || need+=(util-linux)
# pg_query builds libpg_query through bindgen, which loads libclang.
have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    local d
    for d in /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu; do
        compgen -G "$d/libclang.so*" >/dev/null && return 0
        compgen -G "$d/libclang-[0-9]*.so*" >/dev/null && return 0
    done
    return 1
}
have_libclang || need+=(libclang-dev)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
# de-duplicate
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" = "0" ] && have_cmd apt-get; then
    echo "installing missing system packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
else
    echo "error: missing system packages: ${need[*]}" >&2
    echo "       install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
