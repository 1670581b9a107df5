#!/usr/bin/env bash
# File-level physical backups (method = "files") against pgBackRest and pg_basebackup -Fp,
# same machine, same cluster, same run.
#
#   cargo build --release && benches/incremental.sh        # SCALE=50 by default; SCALE=200 too
#
# One throwaway cluster (initdb -k, as the postgres OS user when run as root) with
# pgbench -i -s $SCALE, archiving through `backup wal-push`. Measured, one line each
# (seconds and peak RSS from /usr/bin/time):
#   full backup: ours (zstd, jobs=2), pgBackRest (process-max=2, zst), pg_basebackup -Fp
#   incr after pgbench -T $WRITE_SECONDS: ours, pgBackRest, and the bytes each stored
#   restore of that incr (to a started, promoted server): ours, pgBackRest
#   --delta restore after 1% of pgbench_accounts changed: ours, pgBackRest
# Needs: pgbackrest (apt-get install pgbackrest) for the comparison lines.
set -euo pipefail
SCALE=${SCALE:-50}
WRITE_SECONDS=${WRITE_SECONDS:-60}
JOBS=${JOBS:-2}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/backup}
W=$(mktemp -d /tmp/backup-incr-XXXX)
chmod 0777 "$W"
PORT=${PORT:-25599}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGRUN=(); if [ "$(id -u)" = 0 ]; then PGRUN=(runuser -u postgres --); fi
stop() { as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true; }
cleanup() { for d in data ours pgbr; do stop "$W/$d"; done; rm -rf "$W"; }
trap cleanup EXIT
measure() { # label, command... (a CHECKPOINT first: the dirty pages' flush is paid by
  # neither tool, not by whichever runs first)
  local label=$1; shift
  psql_ $PORT "CHECKPOINT" >/dev/null 2>&1 || true
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err"; exit 1; }
  read -r secs kb < "$W/time"
  printf '%-58s %8.2f s  peak RSS %6d MB\n' "$label" "$secs" $((kb / 1024))
}
psql_() { "$PGBIN/psql" -h 127.0.0.1 -p "$1" -U postgres -Atc "$2" postgres; }
wait_promoted() { until [ "$(psql_ "$1" 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.1; done; }

mkdir -p "$W/repo/pg/wal" && chmod -R 0777 "$W/repo"
cat > "$W/backup.toml" <<TOML
[storages.local]
type = "local"
path = "$W/repo"
[targets.pg]
engine = "postgres"
kind = "physical"
method = "files"
jobs = $JOBS
compression = "zstd"
url = "postgresql://postgres@127.0.0.1:$PORT/postgres"
storages = ["local"]
TOML
chmod 0644 "$W/backup.toml"
mkdir -p "$W/pgbr" && chmod 0777 "$W/pgbr"
cat > "$W/pgbr.conf" <<CONF
[global]
repo1-path=$W/pgbr/repo
lock-path=$W/pgbr/lock
log-path=$W/pgbr/log
spool-path=$W/pgbr/spool
process-max=$JOBS
compress-type=zst
compress-level=3
start-fast=y
archive-check=y
log-level-console=warn
log-level-file=off
[bench]
pg1-path=$W/data
pg1-port=$PORT
pg1-socket-path=$W
pg1-user=postgres
CONF
chmod 0644 "$W/pgbr.conf"
# Both tools archive the WAL (each restores from its own archive).
ARCHIVE="$BIN --config $W/backup.toml -q wal-push pg %p"
command -v pgbackrest >/dev/null && ARCHIVE="$ARCHIVE && pgbackrest --config=$W/pgbr.conf --stanza=bench archive-push %p"
as_pg "$PGBIN/initdb" -k -A trust -U postgres -D "$W/data" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w -o "-p $PORT -k $W -c listen_addresses=127.0.0.1 \
  -c wal_level=replica -c max_wal_senders=5 -c archive_mode=on \
  -c archive_command='$ARCHIVE'" start >/dev/null
HAVE_PGBR=0
if command -v pgbackrest >/dev/null; then
  as_pg pgbackrest --config="$W/pgbr.conf" --stanza=bench stanza-create >/dev/null && HAVE_PGBR=1
fi
PGBR=("${PGRUN[@]}" pgbackrest --config="$W/pgbr.conf" --stanza=bench)
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1
echo "pgbench -i -s $SCALE: $(psql_ $PORT "SELECT pg_size_pretty(pg_database_size('postgres'))"), jobs/process-max $JOBS"

# --- full ---
measure "backup run --type full (zstd 3, jobs $JOBS)" "$BIN" --config "$W/backup.toml" --no-progress run pg --type full
[ $HAVE_PGBR = 1 ] && measure "pgbackrest backup --type=full (zst 3, process-max $JOBS)" "${PGBR[@]}" --type=full backup
measure "pg_basebackup -Fp (plain copy, no compression)" "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres \
  -D "$W/pgbb" -Fp -X none -c fast
echo "full sizes: ours $(du -sb "$W"/repo/pg/2* | tail -1 | cut -f1) bytes$([ $HAVE_PGBR = 1 ] && echo ", pgbackrest $(du -sb "$W/pgbr/repo/backup" | cut -f1) bytes")"
rm -rf "$W/pgbb"

# --- incr after writes ---
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -T "$WRITE_SECONDS" -c 2 postgres >/dev/null 2>&1
ours_before=$(du -sb "$W/repo/pg" | cut -f1)
pgbr_before=$([ $HAVE_PGBR = 1 ] && du -sb "$W/pgbr/repo/backup" | cut -f1 || echo 0)
measure "backup run --type incr (after pgbench -T $WRITE_SECONDS)" "$BIN" --config "$W/backup.toml" --no-progress run pg --type incr
[ $HAVE_PGBR = 1 ] && measure "pgbackrest backup --type=incr" "${PGBR[@]}" --type=incr backup
echo "incr stored: ours $(( $(du -sb "$W/repo/pg" | cut -f1) - ours_before )) bytes (WAL included)$([ $HAVE_PGBR = 1 ] && echo ", pgbackrest $(( $(du -sb "$W/pgbr/repo/backup" | cut -f1) - pgbr_before )) bytes")"
ours_incr=$(ls "$W/repo/pg" | grep -v wal | sort | tail -1)
echo "ours, the incr alone: $(du -sb "$W/repo/pg/$ours_incr" | cut -f1) bytes"
psql_ $PORT "SELECT pg_switch_wal()" >/dev/null; sleep 2

# --- restore of the incr, started and promoted ---
ours_restore() {
  "$BIN" --config "$W/backup.toml" --no-progress pitr pg --target-immediate --data-dir "$W/ours" \
    --start --port $((PORT + 1)) --target-action promote
}
pgbr_restore() {
  mkdir -p "$W/pgbr-data" && chown postgres "$W/pgbr-data" 2>/dev/null || true; chmod 0700 "$W/pgbr-data"
  as_pg pgbackrest --config="$W/pgbr.conf" --stanza=bench --pg1-path="$W/pgbr-data" $DELTA --type=immediate \
    --target-action=promote restore
  as_pg "$PGBIN/pg_ctl" -D "$W/pgbr-data" -l "$W/pgbr-data.log" -w \
    -o "-p $((PORT + 2)) -k $W -c archive_mode=off" start >/dev/null
  until [ "$("$PGBIN/psql" -h 127.0.0.1 -p $((PORT + 2)) -U postgres -Atc 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ]; do sleep 0.1; done
}
export -f pgbr_restore ours_restore as_pg; export W PGBIN PORT BIN
DELTA=""; export DELTA
measure "backup pitr (the incr) --target-immediate --start" bash -c ours_restore
[ $HAVE_PGBR = 1 ] && measure "pgbackrest restore (the incr) --type=immediate + start" bash -c pgbr_restore

# --- --delta after 1% of the accounts changed ---
psql_ $PORT "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0" >/dev/null
measure "backup run --type incr (1% of accounts changed)" "$BIN" --config "$W/backup.toml" --no-progress run pg --type incr
[ $HAVE_PGBR = 1 ] && measure "pgbackrest backup --type=incr (1% changed)" "${PGBR[@]}" --type=incr backup
psql_ $PORT "SELECT pg_switch_wal()" >/dev/null; sleep 2
stop "$W/ours"; stop "$W/pgbr-data"
measure "backup pitr --delta (into the restored cluster) + start" "$BIN" --config "$W/backup.toml" --no-progress \
  pitr pg --target-immediate --delta --data-dir "$W/ours" --start --port $((PORT + 1)) --target-action promote
if [ $HAVE_PGBR = 1 ]; then DELTA="--delta"; export DELTA; measure "pgbackrest restore --delta + start" bash -c pgbr_restore; fi
