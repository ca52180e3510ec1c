#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests: `source .ci/postgres.sh start` initdb's a cluster
# in a temporary directory (as the `postgres` user when run as root: initdb refuses root),
# starts it on 127.0.0.1 on a free port with its unix socket in that directory, and exports
# H5STORE_TEST_POSTGRES_URL; `.ci/postgres.sh stop` (or `stop_postgres`) stops it and removes
# the directory. State lives in $H5STORE_PG_DIR.
set -euo pipefail

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || { echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; return 1; }
    echo "$dir"
}

as_pg() {  # run a command as the postgres user when we are root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    local bin port dir
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/h5store-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    export H5STORE_PG_DIR="$dir"
    export H5STORE_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    echo "$H5STORE_TEST_POSTGRES_URL" >"$dir/url"
}

stop_postgres() {
    local dir="${1:-${H5STORE_PG_DIR:-}}"
    [ -n "$dir" ] && [ -d "$dir/data" ] || return 0
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed, not sourced
    case "${1:-}" in
        start) start_postgres; echo "export H5STORE_PG_DIR=$H5STORE_PG_DIR H5STORE_TEST_POSTGRES_URL=$H5STORE_TEST_POSTGRES_URL" ;;
        stop) stop_postgres "${2:-}" ;;
        *) echo "usage: .ci/postgres.sh start | stop [DIR]" >&2; exit 2 ;;
    esac
fi
