#!/usr/bin/env bash
# Benchmark of logical backups, on pgbench data:
# - issue 2: `backup run` to local and to an S3 server against the shell pipeline
#   `pg_dump -Fp | gzip > file`;
# - issue 15 (compression): `pg_dump -Fc > file` against `backup run` of a plain dump
#   with gzip and with zstd (default levels: gzip 6, zstd 3), and the restore of each
#   (`pg_restore -d` of the -Fc file, `backup restore` of the gzip and the zstd dump).
#
#   benches/logical.sh [SCALE...]        (default: 50 200)
#   TABLES=compression benches/logical.sh 50     (only the issue 15 tables)
#   TABLES=issue2 benches/logical.sh 50          (only the issue 2 table)
#   PROFILE=debug ...                            (target/debug build, no cargo build)
#
# Prints Markdown tables: wall time (best of RUNS, default 3) and peak RSS of the
# whole process tree's largest member (GNU time %M). Needs: PostgreSQL server
# binaries, pgbench, moto_server (pip install 'moto[server]'), /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release --locked --quiet; fi
bin="$here/target/$profile/backup"
tables=${TABLES:-all}
scales=("${@:-50 200}")
# shellcheck disable=SC2206
scales=(${scales[*]})
runs=${RUNS:-3}

pgbin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
work=$(mktemp -d /tmp/backup-bench.XXXXXX)
chmod 0777 "$work"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
s3port=$(freeport)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$work/pgdata" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${moto_pid:-}" ] && kill "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

as_pg "$pgbin/initdb" -A trust -U postgres -D "$work/pgdata" >/dev/null
as_pg "$pgbin/pg_ctl" -w -D "$work/pgdata" -l "$work/server.log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $work -c shared_buffers=256MB -c max_wal_size=4GB" start >/dev/null
moto_server -H 127.0.0.1 -p "$s3port" >/dev/null 2>&1 &
moto_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null && break; sleep 0.1; done
curl -s -X PUT "http://127.0.0.1:$s3port/bench" >/dev/null

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export BACKUP_STATE_DIR="$work/state"
cat > "$work/backup.toml" <<TOML
[storages.local]
type = "local"
path = "$work/repo"

[storages.s3]
type = "s3"
bucket = "bench"
endpoint = "http://127.0.0.1:$s3port"
force_path_style = true

[targets.local]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:$port/bench"
storages = ["local"]
disk_check = false

[targets.s3]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:$port/bench"
storages = ["s3"]

[targets.gz]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:$port/bench"
storages = ["local"]
disk_check = false

[targets.zst]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:$port/bench"
storages = ["local"]
disk_check = false
compression = "zstd"
TOML
export BACKUP_CONFIG="$work/backup.toml"

# best wall time and the RSS of that run: "seconds kib"
measure() {
  local best="" rss=""
  for _ in $(seq "$runs"); do
    local out
    /usr/bin/time -o "$work/time.out" -f "%e %M" bash -c "$1" >/dev/null 2>"$work/cmd.err" || { cat "$work/cmd.err" >&2; exit 1; }
    out=$(tail -n 1 "$work/time.out")
    local t=${out% *} m=${out#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
    rm -rf "$work/repo" "$work/pipe.sql.gz" "$work/bench.pgdump"
  done
  echo "$best $rss"
}

# Like measure, but runs `$2` (setup, untimed) before each timed `$1`, and keeps files.
measure_restore() {
  local best="" rss=""
  for _ in $(seq "$runs"); do
    bash -c "$2" >/dev/null 2>&1
    local out
    /usr/bin/time -o "$work/time.out" -f "%e %M" bash -c "$1" >/dev/null 2>"$work/cmd.err" || { cat "$work/cmd.err" >&2; exit 1; }
    out=$(tail -n 1 "$work/time.out")
    local t=${out% *} m=${out#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
  done
  echo "$best $rss"
}

load() {
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
  pgbench -i -q -s "$1" bench >/dev/null 2>&1
  psql -X -q -d bench -c "VACUUM ANALYZE" >/dev/null
}

if [ "$tables" != issue2 ]; then
  echo "| scale | database | pg_dump -Fc > file | backup run, gzip | backup run, zstd | size -Fc / gzip / zstd | peak RSS -Fc / gzip / zstd |"
  echo "|---|---|---|---|---|---|---|"
  restore_rows=()
  for s in "${scales[@]}"; do
    load "$s"
    dbsize=$(psql -X -At -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
    read -r tc rc < <(measure "pg_dump -Fc -d bench -f $work/bench.pgdump")
    read -r tg rg < <(measure "$bin -q --no-progress run gz")
    read -r tz rz < <(measure "$bin -q --no-progress run zst")
    pg_dump -Fc -d bench -f "$work/bench.pgdump"
    "$bin" -q run gz >/dev/null
    "$bin" -q run zst >/dev/null
    sc=$(du -h "$work/bench.pgdump" | cut -f1)
    sg=$(du -h "$work"/repo/gz/*/dump.sql.gz | cut -f1)
    sz=$(du -h "$work"/repo/zst/*/dump.sql.zst | cut -f1)
    echo "| $s | $dbsize | ${tc}s | ${tg}s | ${tz}s | $sc / $sg / $sz | $((rc / 1024)) / $((rg / 1024)) / $((rz / 1024)) MiB |"
    fresh="psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS r' -c 'CREATE DATABASE r'"
    read -r uc _ < <(measure_restore "pg_restore -d r $work/bench.pgdump" "$fresh")
    read -r ug mg < <(measure_restore "$bin -q --no-progress restore gz latest --to-database r --yes" "$fresh")
    read -r uz mz < <(measure_restore "$bin -q --no-progress restore zst latest --to-database r --yes" "$fresh")
    restore_rows+=("| $s | ${uc}s | ${ug}s | ${uz}s | $((mg / 1024)) / $((mz / 1024)) MiB |")
    rm -rf "$work/repo" "$work/bench.pgdump"
  done
  echo
  echo "| scale | pg_restore -d (from -Fc) | backup restore, gzip | backup restore, zstd | peak RSS gzip / zstd |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${restore_rows[@]}"
  [ "$tables" = compression ] && exit 0
  echo
fi

echo "| scale | database | pg_dump -Fp \| gzip | backup run → local | backup run → S3 (moto) | dump size (gzip) | peak RSS local / S3 |"
echo "|---|---|---|---|---|---|---|"
for s in "${scales[@]}"; do
  load "$s"
  dbsize=$(psql -X -At -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
  read -r tp _ < <(measure "pg_dump -Fp -d bench | gzip > $work/pipe.sql.gz")
  read -r tl rl < <(measure "$bin -q --no-progress run local")
  "$bin" -q run local >/dev/null
  size=$(du -h "$work"/repo/local/*/dump.sql.gz | cut -f1)
  rm -rf "$work/repo"
  read -r ts rs < <(measure "$bin -q --no-progress run s3")
  echo "| $s | $dbsize | ${tp}s | ${tl}s | ${ts}s | $size | $((rl / 1024)) MiB / $((rs / 1024)) MiB |"
done
