#!/usr/bin/env bash
# Benchmark of ClickHouse backups (issue 10) on a private clickhouse-server (free ports,
# temp dir): a MergeTree table of $ROWS rows (default 10,000,000; 12 monthly partitions).
#
#   logical backup   `backup run`      vs `clickhouse-client -q "SELECT * FROM t FORMAT Native" | gzip > f`
#   logical restore  `backup restore`  vs `gunzip -c f | clickhouse-client -q "INSERT INTO t FORMAT Native"`
#   part-level       `backup run` of a kind = "physical" target, then again after 1% new rows
#                    (bytes stored by each)
#
#   benches/clickhouse.sh                        (ROWS=10000000 RUNS=1 PROFILE=release)
#   ROWS=1000000 PROFILE=debug benches/clickhouse.sh
#   BIN=/path/to/backup ROWS=... benches/clickhouse.sh   (a binary built elsewhere)
#
# Prints a Markdown table: wall time (best of RUNS) and peak RSS (GNU time %M) of that
# run. Needs: clickhouse-server, clickhouse-client, gzip, /usr/bin/time, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
profile=${PROFILE:-release}
rows=${ROWS:-10000000}
runs=${RUNS:-1}
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  if [ "$profile" = release ]; then cargo build --release --locked --quiet; else cargo build --locked --quiet; fi
  bin="$here/target/$profile/backup"
fi

work=$(mktemp -d /tmp/backup-bench-ch.XXXXXX)
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(freeport); tcp=$(freeport); inter=$(freeport)
mkdir -p "$work/ch"
cat > "$work/ch/config.xml" <<XML
<yandex>
  <logger><level>warning</level><log>$work/ch/server.log</log><errorlog>$work/ch/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$inter</interserver_http_port>
  <path>$work/ch/data/</path>
  <tmp_path>$work/ch/tmp/</tmp_path>
  <user_files_path>$work/ch/user_files/</user_files_path>
  <format_schema_path>$work/ch/format_schemas/</format_schema_path>
  <users_config>$work/ch/users.xml</users_config>
  <mark_cache_size>536870912</mark_cache_size>
</yandex>
XML
cat > "$work/ch/users.xml" <<XML
<yandex><profiles><default></default></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default></default></quotas></yandex>
XML
clickhouse-server --config-file="$work/ch/config.xml" >/dev/null 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
q() { clickhouse-client --host 127.0.0.1 --port "$tcp" --query "$1"; }
for _ in $(seq 100); do q "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done

table_ddl="CREATE TABLE bench.t (d Date, id UInt64, user String, value Float64, tags Array(String)) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY (d, id)"
load() { # FROM COUNT
  q "INSERT INTO bench.t SELECT toDate('2026-01-01') + (number % 365), number, concat('user-', toString(number % 100000)), rand() / 1000, arrayMap(x -> toString(x), range(number % 3)) FROM numbers($1, $2)"
}
q "CREATE DATABASE bench"
q "$table_ddl"
load 0 "$rows"
q "OPTIMIZE TABLE bench.t FINAL"
fp() { q "SELECT count(), sum(cityHash64(d, id, user, value, tags)) FROM bench.t"; }
want=$(fp)

export BACKUP_STATE_DIR="$work/state" BACKUP_CONFIG="$work/backup.toml"
cat > "$work/backup.toml" <<TOML
[storages.local]
type = "local"
path = "$work/repo"

[targets.ch]
engine = "clickhouse"
url = "http://127.0.0.1:$http"
databases = ["bench"]
storages = ["local"]
disk_check = false

[targets.parts]
engine = "clickhouse"
kind = "physical"
url = "http://127.0.0.1:$http"
databases = ["bench"]
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
  printf '%s\t%s\t%s\n' "$label" "$bt" "$bm"
}
fresh="q 'DROP DATABASE IF EXISTS bench'"
stored() { # the size_bytes of the newest manifest of a target
  python3 -c 'import json,sys,glob; m=sorted(glob.glob(sys.argv[1]+"/*/manifest.json"))[-1]; print(sum(a["size_bytes"] for a in json.load(open(m))["artifacts"]))' "$work/repo/$1"
}

out=()
out+=("$(best '`clickhouse-client -q "SELECT * FORMAT Native" \| gzip > f`' "rm -f $work/f.gz" \
  sh -c "clickhouse-client --host 127.0.0.1 --port $tcp --query 'SELECT * FROM bench.t FORMAT Native' | gzip -6 > $work/f.gz")")
out+=("$(best '`backup run ch` (logical)' ":" "$bin" run ch)")
out+=("$(best '`backup verify ch latest`' ":" "$bin" verify ch latest)")
out+=("$(best '`gunzip -c f \| clickhouse-client -q "INSERT ... FORMAT Native"`' "$fresh; q 'CREATE DATABASE bench'; q '$table_ddl'" \
  sh -c "gunzip -c $work/f.gz | clickhouse-client --host 127.0.0.1 --port $tcp --query 'INSERT INTO bench.t FORMAT Native'")")
[ "$(fp)" = "$want" ] || { echo "the shell pipeline's restore differs" >&2; exit 1; }
out+=("$(best '`backup restore ch latest` (into an empty server)' "$fresh" "$bin" restore ch latest --yes)")
[ "$(fp)" = "$want" ] || { echo "backup restore differs: $(fp) vs $want" >&2; exit 1; }
q "OPTIMIZE TABLE bench.t FINAL"
logical_bytes=$(stored ch)
native_gz=$(stat -c %s "$work/f.gz")

out+=("$(best '`backup run parts` (part-level, first)' ":" "$bin" run parts)")
first_bytes=$(stored parts)
load "$rows" $((rows / 100))
out+=("$(best '`backup run parts` after 1% new rows' ":" "$bin" run parts)")
second_bytes=$(stored parts)
want=$(fp)
out+=("$(best '`backup restore parts latest` (into an empty server)' "$fresh" "$bin" restore parts latest --yes)")
[ "$(fp)" = "$want" ] || { echo "part-level restore differs: $(fp) vs $want" >&2; exit 1; }

echo "ClickHouse $(q "SELECT version()"), bench.t: $rows rows + 1% for the second part-level backup, ${BIN:-$profile build}, best of $runs"
echo "stored: Native|gzip file $((native_gz / 1048576)) MB; logical backup $((logical_bytes / 1048576)) MB;" \
  "part-level first $((first_bytes / 1048576)) MB, second $((second_bytes / 1024)) KB" \
  "($(awk -v a="$second_bytes" -v b="$first_bytes" 'BEGIN { printf "%.2f", 100 * a / b }')% of the first)"
echo
echo "| | time | rows/s | peak RSS |"
echo "|---|---|---|---|"
for r in "${out[@]}"; do
  IFS=$'\t' read -r label t m <<<"$r"
  rps=$(awk -v n="$rows" -v t="$t" 'BEGIN { printf "%d", (t > 0 ? n / t : 0) }')
  echo "| $label | ${t} s | $rps | $((m / 1024)) MB |"
done
