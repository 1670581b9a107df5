#!/usr/bin/env bash
# Load under faults (issue 13): 8 processes pushing 400 WAL segments into one
# repository at once (a local folder and a moto bucket), then `verify` and a fetch of
# every segment; and `backup run` to S3 straight and behind a proxy adding 50 ms to
# every request.
#
#   benches/faults.sh                    (PROFILE=release SEGMENTS=400 PROCS=8 NOISE_MIB=200)
#   PROFILE=debug SEGMENTS=80 NOISE_MIB=40 benches/faults.sh
#
# Prints a Markdown table. Needs: PostgreSQL server binaries, moto_server, python3,
# /usr/bin/time.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
profile=${PROFILE:-release}
segments=${SEGMENTS:-400}
procs=${PROCS:-8}
noise=${NOISE_MIB:-200}
if [ "$profile" = release ]; then cargo build --release --locked --quiet; else cargo build --locked --quiet; fi
bin="$here/target/$profile/backup"

pgbin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
work=$(mktemp -d /tmp/backup-bench-faults.XXXXXX)
chmod 0777 "$work"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport); s3port=$(freeport); proxyport=$(freeport)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$work/pgdata" -m immediate stop >/dev/null 2>&1 || true
  for p in ${moto_pid:-} ${proxy_pid:-}; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

as_pg "$pgbin/initdb" -A trust -U postgres -D "$work/pgdata" >/dev/null
as_pg "$pgbin/pg_ctl" -w -D "$work/pgdata" -l "$work/server.log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $work" start >/dev/null
moto_server -H 127.0.0.1 -p "$s3port" >/dev/null 2>&1 &
moto_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null && break; sleep 0.1; done
curl -s -X PUT "http://127.0.0.1:$s3port/bench" >/dev/null

# A proxy adding 50 ms before each request (each time the client speaks after the
# server did, or on a new connection): per-request latency, not per byte.
cat > "$work/latency.py" <<'PY'
import asyncio, sys
listen, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def pipe(r, w, state, side):
    try:
        while data := await r.read(65536):
            if side == "up" and state["turn"] != "up":
                state["turn"] = "up"
                await asyncio.sleep(delay)
            if side == "down":
                state["turn"] = "down"
            w.write(data)
            await w.drain()
    finally:
        w.close()
async def handle(cr, cw):
    sr, sw = await asyncio.open_connection("127.0.0.1", upstream)
    state = {"turn": "down"}
    await asyncio.gather(pipe(cr, sw, state, "up"), pipe(sr, cw, state, "down"), return_exceptions=True)
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with s:
        await s.serve_forever()
asyncio.run(main())
PY
python3 "$work/latency.py" "$proxyport" "$s3port" 0.05 &
proxy_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$proxyport) 2>/dev/null && break; sleep 0.1; done

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

[storages.slow]
type = "s3"
bucket = "bench"
prefix = "slow"
endpoint = "http://127.0.0.1:$proxyport"
force_path_style = true

[targets.pg]
engine = "postgres"
kind = "physical"
url = "postgresql://postgres@127.0.0.1:$port/postgres"
storages = ["local", "s3"]

[targets.app]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:$port/app"
storages = ["s3"]

[targets.appslow]
engine = "postgres"
url = "postgresql://postgres@127.0.0.1:$port/app"
storages = ["slow"]
TOML
cfg="$work/backup.toml"

# --- 1. WAL pushed by $procs processes at once -----------------------------------
# One 16 MiB segment's bytes, hard-linked under every name (no 6 GiB of test data).
mkdir -p "$work/wal"
python3 - "$work/wal/seed" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(256):
        f.write(os.urandom(4096) + bytes(61440))   # 64 KiB blocks, partly random
PY
for i in $(seq 1 "$segments"); do
  ln "$work/wal/seed" "$work/wal/$(printf '00000001%08X%08X' $((i / 256)) $((i % 256)))"
done
rm "$work/wal/seed"
t0=$(date +%s.%N)
ls "$work/wal" | xargs -P "$procs" -I{} "$bin" --config "$cfg" -q wal-push pg "$work/wal/{}"
t1=$(date +%s.%N)
push_s=$(echo "$t1 - $t0" | bc)
local_n=$(find "$work/repo/pg/wal" -type f ! -name '.meta-*' | wc -l)
s3_n=$(curl -s "http://127.0.0.1:$s3port/bench?list-type=2&prefix=pg/wal/&max-keys=1000" -H "Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0" | grep -o '<Key>' | wc -l)
verify=$("$bin" --config "$cfg" verify pg --all 2>&1 | grep -c '^OK' || true)
bad=0
for f in $(ls "$work/wal" | shuf -n 40 --random-source=<(yes)); do
  "$bin" --config "$cfg" -q wal-fetch pg "$f" "$work/fetched" && cmp -s "$work/fetched" "$work/wal/$f" || bad=$((bad+1))
done

# --- 2. backup run to S3, straight and with 50 ms per request --------------------
as_pg "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE app" postgres
as_pg "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d app -c \
  "CREATE TABLE noise AS SELECT i, (SELECT string_agg(md5(random()::text || i || j), '') FROM generate_series(1, 64) j) AS t FROM generate_series(1, $((noise * 512))) i"
runs=${RUNS:-3}
best() { # target
  local b=""
  for _ in $(seq "$runs"); do
    local s e
    s=$(date +%s.%N); "$bin" --config "$cfg" -q run "$1" >/dev/null; e=$(date +%s.%N)
    local d; d=$(echo "$e - $s" | bc)
    if [ -z "$b" ] || [ "$(echo "$d < $b" | bc)" = 1 ]; then b=$d; fi
  done
  echo "$b"
}
straight=$(best app)
slow=$(best appslow)

echo "| measure | value |"
echo "|---|---|"
echo "| profile | $profile |"
echo "| WAL segments pushed by $procs processes at once | $segments in ${push_s}s ($(echo "scale=1; $segments / $push_s" | bc) segments/s) |"
echo "| segments stored locally / on S3 | $local_n / $s3_n |"
echo "| verify pg --all: OK reports | $verify |"
echo "| sampled segments fetched back and compared, mismatches | 40, $bad |"
echo "| backup run of ${noise} MiB to S3, best of $runs | ${straight}s |"
echo "| the same through +50 ms per request | ${slow}s ($(echo "scale=2; $slow / $straight" | bc)x) |"
