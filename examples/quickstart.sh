#!/usr/bin/env bash
# Quick start: the daily job against the embedded default configuration.
#
# Builds `backup`, starts a throwaway PostgreSQL cluster (initdb in a temp dir),
# loads sample data, then runs what cron would run — with no config file at all:
#   backup run postgres      (libpq defaults: PGHOST/PGPORT/PGUSER/PGDATABASE)
#   backup list / verify     (the local repository ./backups)
#   backup restore ...       (into a second database, row counts checked)
# and finally restores the same file with standard tools only (gunzip -c | psql),
# as the strategy document's runbook does. The cluster is removed at exit; the
# repository stays in the printed folder for you to look at.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release --locked --quiet
bin="$here/target/release/backup"

pgbin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$pgbin/initdb" ] || { echo "initdb not found; install PostgreSQL (apt-get install postgresql) or set PG_BIN" >&2; exit 1; }

work=${QUICKSTART_DIR:-$(mktemp -d /tmp/backup-quickstart.XXXXXX)}
mkdir -p "$work"
chmod 0777 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() { as_pg "$pgbin/pg_ctl" -D "$work/pgdata" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work/pgdata"; }
trap cleanup EXIT

echo "== throwaway cluster on 127.0.0.1:$port ($work/pgdata)"
as_pg "$pgbin/initdb" -A trust -U postgres -D "$work/pgdata" >/dev/null
as_pg "$pgbin/pg_ctl" -w -D "$work/pgdata" -l "$work/server.log" \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $work" start >/dev/null

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=saas_db
export BACKUP_STATE_DIR="$work/state"
unset BACKUP_CONFIG
psql -X -q -d postgres -c "CREATE DATABASE saas_db"
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, created_at timestamptz DEFAULT now());
CREATE TABLE chats (id bigserial PRIMARY KEY, owner_id bigint REFERENCES users(id), title text);
CREATE TABLE messages (id bigserial PRIMARY KEY, chat_id bigint REFERENCES chats(id), body text, created_at timestamptz DEFAULT now());
INSERT INTO users (email) SELECT 'user' || i || '@example.com' FROM generate_series(1, 1000) i;
INSERT INTO chats (owner_id, title) SELECT 1 + i % 1000, 'chat ' || i FROM generate_series(1, 200) i;
INSERT INTO messages (chat_id, body) SELECT 1 + i % 200, 'hello ' || md5(i::text) FROM generate_series(1, 50000) i;
SQL

cd "$work"
echo "== backup run postgres   (no config file: embedded default, repository ./backups)"
id=$("$bin" run postgres)
echo "== backup list"
"$bin" list
echo "== backup verify"
"$bin" verify postgres "$id"
echo "== backup restore postgres $id --to-database saas_db_restored --yes"
"$bin" restore postgres "$id" --to-database saas_db_restored --yes
echo "== the same file with standard tools only: gunzip -c dump.sql.gz | psql"
psql -X -q -d postgres -c "CREATE DATABASE saas_db_by_hand"
gunzip -c "backups/postgres/$id/dump.sql.gz" | psql -X -q -v ON_ERROR_STOP=1 -d saas_db_by_hand >/dev/null
for db in saas_db saas_db_restored saas_db_by_hand; do
  printf '%-18s messages=%s\n' "$db" "$(psql -X -At -d "$db" -c 'SELECT count(*) FROM messages')"
done
echo "== done: repository kept at $work/backups"
