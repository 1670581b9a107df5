#!/usr/bin/env bash
# Benchmark of logical backups (issue 2): `backup run` to local and to an S3 server
# against the shell pipeline `pg_dump -Fp | gzip > file`, on pgbench data.
#
#   benches/logical.sh [SCALE...]        (default: 50 200)
#
# Prints a Markdown table: wall time (best of RUNS, default 3) and peak RSS of the
# whole process tree's largest member (GNU time %M). Needs: PostgreSQL server
# binaries, pgbench, moto_server (pip install 'moto[server]'), /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release --locked --quiet
bin="$here/target/release/backup"
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
    rm -rf "$work/repo" "$work/pipe.sql.gz"
  done
  echo "$best $rss"
}

echo "| scale | database | pg_dump -Fp \| gzip | backup run → local | backup run → S3 (moto) | dump size (gzip) | peak RSS local / S3 |"
echo "|---|---|---|---|---|---|---|"
for s in "${scales[@]}"; do
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
  pgbench -i -q -s "$s" bench >/dev/null 2>&1
  psql -X -q -d bench -c "VACUUM ANALYZE" >/dev/null
  dbsize=$(psql -X -At -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
  read -r tp _ < <(measure "pg_dump -Fp -d bench | gzip > $work/pipe.sql.gz")
  read -r tl rl < <(measure "$bin -q --no-progress run local")
  "$bin" -q run local >/dev/null
  size=$(du -h "$work"/repo/local/*/dump.sql.gz | cut -f1)
  rm -rf "$work/repo"
  read -r ts rs < <(measure "$bin -q --no-progress run s3")
  echo "| $s | $dbsize | ${tp}s | ${tl}s | ${ts}s | $size | $((rl / 1024)) MiB / $((rs / 1024)) MiB |"
done
