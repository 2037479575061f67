# Sourced by .ci/run: a throwaway PostgreSQL 15 cluster with pgvector for the gallery tests.
#   pg_install   installs PostgreSQL 15 (Debian packages) and builds pgvector from
#                $CANDLE_FACE_SHARED/vendor-src/pgvector-0.8.6 when they are missing
#   pg_start     initdb + pg_ctl start in a temporary directory on a loopback port, as the
#                dedicated user `candleface-pg` when run as root; exports CANDLE_FACE_PG_URL
#   pg_stop      stops the cluster and removes its directory (safe to call twice)

PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PGVECTOR_SRC="${CANDLE_FACE_SHARED:-../shared}/vendor-src/pgvector-0.8.6"
PG_USER=candleface-pg
PG_DIR=""

pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

pg_install() {
  if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_config" ] \
    || [ ! -f "/usr/include/postgresql/$PG_VERSION/server/postgres.h" ]; then
    echo "== installing PostgreSQL $PG_VERSION"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      "postgresql-$PG_VERSION" "postgresql-server-dev-$PG_VERSION" make gcc >/dev/null
  fi
  local ext_dir
  ext_dir="$("$PG_BIN/pg_config" --sharedir)/extension"
  if [ ! -f "$ext_dir/vector--0.8.6.sql" ]; then
    echo "== building pgvector 0.8.6"
    if [ ! -d "$PGVECTOR_SRC" ]; then
      echo "pgvector source not found at $PGVECTOR_SRC" >&2
      return 1
    fi
    local build
    build="$(mktemp -d)"
    cp -r "$PGVECTOR_SRC/." "$build"
    make -s -C "$build" PG_CONFIG="$PG_BIN/pg_config" >/dev/null
    make -s -C "$build" PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
    rm -rf "$build"
  fi
}

pg_start() {
  if [ "$(id -u)" = 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  fi
  PG_DIR="$(mktemp -d /tmp/candle-face-pg.XXXXXX)"
  [ "$(id -u)" = 0 ] && chown "$PG_USER" "$PG_DIR"
  local port=$((20000 + RANDOM % 20000))
  pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 \
    --no-locale >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c maintenance_work_mem=512MB" \
    start >/dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
  export CANDLE_FACE_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "== PostgreSQL $PG_VERSION with pgvector on 127.0.0.1:$port ($PG_DIR)"
}

pg_stop() {
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR/data" ]; then
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
  PG_DIR=""
}
