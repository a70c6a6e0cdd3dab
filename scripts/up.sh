#!/usr/bin/env bash
# Make PostgreSQL and Redis reachable: use running servers, else start the installed
# binaries in .run/, else fail with a one-line fix.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="$PWD/.run"
DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/orchestration}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"

read -r PG_HOST PG_PORT PG_USER < <(python3 - "$DATABASE_URL" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres")
PY
)
read -r REDIS_HOST REDIS_PORT < <(python3 - "$REDIS_URL" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or 6379)
PY
)

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

find_pg_bin() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/$name" ]; then echo "$dir/$name"; return; fi
    done
}

pg_up() {
    if tcp_open "$PG_HOST" "$PG_PORT"; then return 0; fi
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do tcp_open "$PG_HOST" "$PG_PORT" && return 0; sleep 0.2; done
    fi
    local initdb pg_ctl
    initdb=$(find_pg_bin initdb); pg_ctl=$(find_pg_bin pg_ctl)
    if [ -z "$initdb" ] || [ -z "$pg_ctl" ]; then
        echo "make up: PostgreSQL is not reachable at $PG_HOST:$PG_PORT and not installed; fix: apt-get install -y postgresql (or set DATABASE_URL)" >&2
        return 1
    fi
    mkdir -p "$RUN_DIR"
    local as=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown -R postgres "$RUN_DIR" 2>/dev/null || true
        as=(runuser -u postgres --)
    fi
    if [ ! -f "$RUN_DIR/pg/PG_VERSION" ]; then
        mkdir -p "$RUN_DIR/pg"; [ "$(id -u)" = 0 ] && chown postgres "$RUN_DIR/pg"
        "${as[@]}" "$initdb" -D "$RUN_DIR/pg" -U "$PG_USER" --auth=trust >/dev/null
    fi
    "${as[@]}" "$pg_ctl" -D "$RUN_DIR/pg" -l "$RUN_DIR/pg.log" -w \
        -o "-p $PG_PORT -k $RUN_DIR -c listen_addresses=$PG_HOST" start >/dev/null
    echo "make up: started PostgreSQL from $initdb in $RUN_DIR/pg on port $PG_PORT"
}

redis_up() {
    if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then return 0; fi
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "make up: Redis is not reachable at $REDIS_HOST:$REDIS_PORT and not installed; fix: apt-get install -y redis-server (or set REDIS_URL)" >&2
        return 1
    fi
    mkdir -p "$RUN_DIR"
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" \
        --appendonly no --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" --pidfile "$RUN_DIR/redis.pid"
    for _ in $(seq 1 50); do tcp_open "$REDIS_HOST" "$REDIS_PORT" && break; sleep 0.1; done
    echo "make up: started Redis in $RUN_DIR on port $REDIS_PORT"
}

pg_up
redis_up
echo "make up: PostgreSQL $PG_HOST:$PG_PORT and Redis $REDIS_HOST:$REDIS_PORT are reachable"
