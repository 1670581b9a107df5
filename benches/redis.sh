#!/usr/bin/env bash
# Benchmark of Redis backups (issue 9): `backup run` against `redis-cli --rdb file &&
# gzip file`, `backup verify`, and a network restore into an empty server in keys/s.
#
#   benches/redis.sh                     (KEYS=1000000 RUNS=3 PROFILE=release)
#   PROFILE=debug KEYS=200000 benches/redis.sh
#
# Data: `DEBUG POPULATE $KEYS` plus 4 hashes and 4 sorted sets of 100,000 fields/members
# each, on a private redis-server (free port, temp dir, no persistence, no diskless-sync
# delay: redis-cli --rdb would otherwise wait 5 s for more replicas). Prints a
# Markdown table: wall time (best of RUNS) and peak RSS (GNU time %M) of that run.
# Needs: redis-server, redis-cli, gzip, /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
profile=${PROFILE:-release}
keys=${KEYS:-1000000}
runs=${RUNS:-3}
if [ "$profile" = release ]; then
  cargo build --release --locked --quiet
else
  cargo build --locked --quiet
fi
bin="$here/target/$profile/backup"

work=$(mktemp -d /tmp/backup-bench-redis.XXXXXX)
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_server() { # name port
  mkdir -p "$work/$1"
  redis-server --port "$2" --bind 127.0.0.1 --daemonize yes --dir "$work/$1" \
    --pidfile "$work/$1/redis.pid" --logfile "$work/$1/redis.log" \
    --save "" --appendonly no --enable-debug-command yes \
    --repl-diskless-sync-delay 0 >/dev/null
  for _ in $(seq 100); do redis-cli -p "$2" PING >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server $1 did not start" >&2; exit 1
}
cleanup() {
  for s in src dest; do
    [ -f "$work/$s/redis.pid" ] && kill "$(cat "$work/$s/redis.pid")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
src=$(freeport); start_server src "$src"
dest=$(freeport); start_server dest "$dest"

redis-cli -p "$src" DEBUG POPULATE "$keys" >/dev/null
awk 'BEGIN {
  for (k = 1; k <= 4; k++) for (b = 0; b < 100; b++) {
    h = "HSET big:hash:" k; z = "ZADD big:zset:" k
    for (i = b * 1000; i < (b + 1) * 1000; i++) { h = h " field:" i " value:" i; z = z " " i ".5 member:" i }
    print h; print z
  }
}' | redis-cli -p "$src" --pipe >/dev/null
total=$(redis-cli -p "$src" DBSIZE)

export BACKUP_STATE_DIR="$work/state" BACKUP_CONFIG="$work/backup.toml"
cat > "$work/backup.toml" <<TOML
[storages.local]
type = "local"
path = "$work/repo"

[targets.cache]
engine = "redis"
url = "redis://127.0.0.1:$src"
storages = ["local"]
disk_check = false
TOML

# best LABEL PREP CMD...: best wall time of $runs runs (PREP runs untimed before each).
best() {
  local label=$1 prep=$2; shift 2
  local bt="" bm=""
  for _ in $(seq "$runs"); do
    eval "$prep"
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r t m < "$work/time"
    if [ -z "$bt" ] || awk -v a="$t" -v b="$bt" 'BEGIN { exit !(a < b) }'; then bt=$t; bm=$m; fi
  done
  echo "$label|$bt|$bm"
}

rows=()
rows+=("$(best '`redis-cli --rdb f && gzip f`' "rm -f $work/f $work/f.gz" \
  sh -c "redis-cli -p $src --rdb $work/f >/dev/null && gzip -6 $work/f")")
rows+=("$(best '`backup run cache`' ":" "$bin" run cache)")
rows+=("$(best '`backup verify cache latest`' ":" "$bin" verify cache latest)")
rows+=("$(best '`backup restore cache --to-url` (empty server)' "redis-cli -p $dest FLUSHALL >/dev/null" \
  "$bin" restore cache latest --to-url "redis://127.0.0.1:$dest" --yes)")
restored=$(redis-cli -p "$dest" DBSIZE)
size=$(du -m "$(ls -d "$work"/repo/cache/*/dump.rdb.gz | tail -n 1)" | cut -f1)

echo "Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), $total keys ($keys from DEBUG POPULATE + 4 hashes and 4 sorted sets of 100,000), dump.rdb.gz ${size} MB, $profile build, best of $runs"
echo
echo "| | time | keys/s | peak RSS |"
echo "|---|---|---|---|"
for r in "${rows[@]}"; do
  IFS='|' read -r label t m <<<"$r"
  kps=$(awk -v n="$total" -v t="$t" 'BEGIN { printf "%d", (t > 0 ? n / t : 0) }')
  echo "| $label | ${t} s | $kps | $((m / 1024)) MB |"
done
[ "$restored" = "$total" ] || { echo "restore left $restored keys, expected $total" >&2; exit 1; }
