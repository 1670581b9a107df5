#!/usr/bin/env bash
# PITR benchmark: physical base backup, wal-push throughput, PITR restore.
#
#   cargo build --release && benches/pitr.sh            # SCALE=50 SEGMENTS=200 by default
#
# Runs a throwaway PostgreSQL cluster (as the postgres OS user when run as root) with
# pgbench -i -s $SCALE, archiving through `backup wal-push`, and prints one line per
# measurement: what, seconds, and peak RSS of our process (from /usr/bin/time).
# Compares against `pg_basebackup -Ft -z` (same gzip family) and, when installed
# (apt-get install pgbackrest), pgBackRest with process-max=2 and gz at the same level.
set -euo pipefail
SCALE=${SCALE:-50}
SEGMENTS=${SEGMENTS:-200}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/backup}
W=$(mktemp -d /tmp/backup-bench-XXXX)
chmod 0777 "$W"
PORT=${PORT:-25499}  # below the ephemeral port range: a client socket cannot hold it
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGRUN=(); if [ "$(id -u)" = 0 ]; then PGRUN=(runuser -u postgres --); fi
cleanup() { as_pg "$PGBIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1 || true
            as_pg "$PGBIN/pg_ctl" -D "$W/restored" -m immediate stop >/dev/null 2>&1 || true
            as_pg "$PGBIN/pg_ctl" -D "$W/pgbr-restored" -m immediate stop >/dev/null 2>&1 || true
            rm -rf "$W"; }
trap cleanup EXIT
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err"; exit 1; }
  read -r secs kb < "$W/time"
  printf '%-44s %8.2f s  peak RSS %6d MB\n' "$label" "$secs" $((kb / 1024))
}

mkdir -p "$W/repo/pg/wal" && chmod -R 0777 "$W/repo"
cat > "$W/backup.toml" <<TOML
[storages.local]
type = "local"
path = "$W/repo"
[targets.pg]
engine = "postgres"
kind = "physical"
url = "postgresql://postgres@127.0.0.1:$PORT/postgres"
storages = ["local"]
compression_level = ${LEVEL:-6}
TOML
chmod 0644 "$W/backup.toml"
as_pg "$PGBIN/initdb" -A trust -U postgres -D "$W/data" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w -o "-p $PORT -k $W -c listen_addresses=127.0.0.1 \
  -c wal_level=replica -c max_wal_senders=5 -c archive_mode=on \
  -c archive_command='$BIN --config $W/backup.toml -q wal-push pg %p'" start >/dev/null
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1
echo "pgbench -i -s $SCALE: $(psql -h 127.0.0.1 -p "$PORT" -U postgres -Atc "SELECT pg_size_pretty(pg_database_size('postgres'))" postgres)"

measure "backup run (physical, gzip ${LEVEL:-6})" "$BIN" --config "$W/backup.toml" --no-progress run pg
measure "pg_basebackup -Ft -z (gzip default level)" "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres \
  -D "$W/pgbb" -Ft -z -X none -c fast
echo "sizes: ours $(du -sh "$W"/repo/pg/2*/base.tar.gz | cut -f1), pg_basebackup $(du -sh "$W/pgbb/base.tar.gz" | cut -f1)"

# wal-push: SEGMENTS segment-sized files cut from the cluster's own data files.
mkdir -p "$W/segs" "$W/bench-repo"
# (the data files repeated as often as needed: compressibility like real table pages)
for _ in $(seq 1 $((SEGMENTS / 8 + 1))); do find "$W/data/base" -type f -size +1M -print0 | xargs -0 cat; done 2>/dev/null \
  | head -c $((SEGMENTS * 16 * 1024 * 1024)) | split -b 16M -d -a 4 - "$W/segs/chunk-" || true
i=0; for f in "$W"/segs/chunk-*; do mv "$f" "$W/segs/$(printf '0000000A%08X%08X' $((i / 256)) $((i % 256)))"; i=$((i + 1)); done
n=$(ls "$W/segs" | wc -l)
sed "s#path = \"$W/repo\"#path = \"$W/bench-repo\"#" "$W/backup.toml" > "$W/bench.toml"
cat > "$W/push-all.sh" <<SH
for f in $W/segs/*; do $BIN --config $W/bench.toml -q wal-push pg "\$f" || exit 1; done
SH
start=$(date +%s.%N)
measure "wal-push $n segments to local (one process each)" bash "$W/push-all.sh"
end=$(date +%s.%N)
echo "wal-push: $(echo "$n / ($end - $start)" | bc -l | xargs printf '%.1f') segments/s"
cat > "$W/fetch-all.sh" <<SH
for f in $W/segs/*; do n=\$(basename \$f); $BIN --config $W/bench.toml -q wal-fetch pg \$n $W/fetched || exit 1; done
SH
measure "wal-fetch $n segments from local" bash "$W/fetch-all.sh"

# The same segments to an S3 server (moto on loopback), one process each.
if command -v moto_server >/dev/null; then
  S3PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  moto_server -H 127.0.0.1 -p "$S3PORT" >/dev/null 2>&1 &
  MOTO=$!
  trap 'kill $MOTO 2>/dev/null || true; cleanup' EXIT
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$S3PORT) 2>/dev/null && break; sleep 0.1; done
  curl -s -X PUT "http://127.0.0.1:$S3PORT/walbench" >/dev/null
  cat > "$W/s3.toml" <<TOML
[storages.s3]
type = "s3"
bucket = "walbench"
endpoint = "http://127.0.0.1:$S3PORT"
force_path_style = true
[targets.pg]
engine = "postgres"
kind = "physical"
url = "postgresql://postgres@127.0.0.1:$PORT/postgres"
storages = ["s3"]
TOML
  cat > "$W/push-s3.sh" <<SH
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for f in $W/segs/*; do $BIN --config $W/s3.toml -q wal-push pg "\$f" || exit 1; done
SH
  start=$(date +%s.%N)
  measure "wal-push $n segments to S3 (moto)" bash "$W/push-s3.sh"
  end=$(date +%s.%N)
  echo "wal-push to S3: $(echo "$n / ($end - $start)" | bc -l | xargs printf '%.1f') segments/s"
fi

# PITR restore of the base backup to its end (includes start and recovery).
"$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc "SELECT pg_switch_wal()" postgres >/dev/null
sleep 2
measure "backup pitr --target-immediate --start" "$BIN" --config "$W/backup.toml" --no-progress pitr pg \
  --target-immediate --data-dir "$W/restored" --start --port $((PORT + 1)) --target-action promote

command -v pgbackrest >/dev/null || { echo "pgbackrest not installed: skipping the comparison"; exit 0; }
# pgBackRest reads the data directory itself, so it runs as the cluster's owner.
mkdir -p "$W/pgbr" && chmod 0777 "$W/pgbr"
cat > "$W/pgbr.conf" <<CONF
[global]
repo1-path=$W/pgbr/repo
lock-path=$W/pgbr/lock
log-path=$W/pgbr/log
spool-path=$W/pgbr/spool
process-max=2
compress-type=gz
compress-level=${LEVEL:-6}
start-fast=y
archive-check=n
log-level-console=warn
log-level-file=off
[bench]
pg1-path=$W/data
pg1-port=$PORT
pg1-socket-path=$W
pg1-user=postgres
CONF
chmod 0644 "$W/pgbr.conf"
as_pg pgbackrest --config="$W/pgbr.conf" --stanza=bench stanza-create >/dev/null
measure "pgbackrest backup --type=full (process-max=2)" "${PGRUN[@]}" pgbackrest --config="$W/pgbr.conf" --stanza=bench --type=full backup
echo "size: pgbackrest $(du -sh "$W/pgbr/repo/backup" | cut -f1)"
"$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc "SELECT pg_switch_wal()" postgres >/dev/null
sleep 3
# The cluster's real WAL, as archived by wal-push, fetched back for both tools to push.
mkdir -p "$W/realwal" && chmod 0777 "$W/realwal"
for f in "$W"/repo/pg/wal/00000001/*.gz; do n=$(basename "$f" .gz)
  case $n in *.*) continue;; esac
  "$BIN" --config "$W/backup.toml" -q wal-fetch pg "$n" "$W/realwal/$n"; done
chmod 0644 "$W"/realwal/*
n=$(ls "$W/realwal" | wc -l)
cat > "$W/push-real-ours.sh" <<SH
for f in $W/realwal/*; do $BIN --config $W/bench.toml -q wal-push pg "\$f" || exit 1; done
SH
cat > "$W/push-real-pgbr.sh" <<SH
for f in $W/realwal/*; do pgbackrest --config=$W/pgbr.conf --stanza=bench archive-push "\$f" || exit 1; done
SH
rm -rf "$W/bench-repo"; mkdir -p "$W/bench-repo"
measure "wal-push of $n real WAL segments (ours)" bash "$W/push-real-ours.sh"
measure "archive-push of $n real WAL segments (pgbackrest)" "${PGRUN[@]}" bash "$W/push-real-pgbr.sh"
mkdir -p "$W/pgbr-restored" && chown postgres "$W/pgbr-restored" 2>/dev/null || true
chmod 0700 "$W/pgbr-restored"
pgbr_restore() {
  as_pg pgbackrest --config="$W/pgbr.conf" --stanza=bench --pg1-path="$W/pgbr-restored" --type=immediate \
    --target-action=promote restore
  as_pg "$PGBIN/pg_ctl" -D "$W/pgbr-restored" -l "$W/pgbr-restored.log" -w \
    -o "-p $((PORT + 2)) -c archive_mode=off -c logging_collector=off" start >/dev/null
  until [ "$("$PGBIN/psql" -h 127.0.0.1 -p $((PORT + 2)) -U postgres -Atc 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ]; do sleep 0.1; done
}
export -f pgbr_restore as_pg; export W PGBIN PORT
measure "pgbackrest restore --type=immediate + start" bash -c pgbr_restore
