#!/usr/bin/env bash
# Regenerates policy/src/sql/builtin_functions.txt: the names of PostgreSQL's
# own functions (schema pg_catalog), which the classifier tells apart from
# functions defined in the database (kind `user_function`).
#
# Usage: scripts/builtin-functions.sh [psql connection options...]
# Point it at an empty cluster of the newest PostgreSQL major version you
# support (extensions installed in it would be counted as built-in). Names
# from later versions than the one it reads are kept from the old file's
# "later versions" section.
set -euo pipefail

out="$(dirname "$0")/../policy/src/sql/builtin_functions.txt"
version=$(psql "$@" -XAtc "show server_version")
later=$(sed -n '/^# later versions/,$p' "$out" | tail -n +2)
{
    echo "# PostgreSQL's own function names (schema pg_catalog), read from"
    echo "# PostgreSQL $version by scripts/builtin-functions.sh; one per line,"
    echo "# byte order. Do not edit by hand, except the last section."
    psql "$@" -XAtc "select distinct proname collate \"C\" from pg_proc
        where pronamespace = 'pg_catalog'::regnamespace order by 1"
    echo "# later versions: pure functions added after the version above"
    echo "$later"
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") names)"
