#!/usr/bin/env python3
"""Writes the small seed corpus of each fuzz target into fuzz/corpus/<target>/.
Reproducible (no clock, no randomness); run again after changing a format. The
fuzzers grow their own corpus in a scratch copy, never in these folders."""
import io, os, struct, tarfile

# Records of one block: the archives end right after their end-of-archive marker.
tarfile.RECORDSIZE = 512

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
out = os.path.join(here, "corpus")


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


# --- config ---------------------------------------------------------------------
with open(os.path.join(root, "examples", "backup.toml")) as f:
    put("config", "example.toml", f.read())
put("config", "minimal.toml", """state_dir = "/tmp/s"
[storages.l]
type = "local"
path = "/tmp/repo"
[storages.l.retention]
keep_last = 3
keep_daily = 7
keep_within = "1y6mo"
period_representative = { monthly = "first" }
[storages.s]
type = "s3"
bucket = "b"
endpoint = "http://127.0.0.1:9000"
timeout_seconds = 30
object_lock = { mode = "GOVERNANCE", until = "retention" }
[storages.s.retention]
keep_weekly = 4
[targets.pg]
engine = "postgres"
kind = "physical"
storages = ["l"]
copy_to = ["s"]
schedule = "0 3 * * *"
timezone = "Europe/Paris"
max_age = "26h"
compression = "zstd"
compression_level = 3
[targets.pg.retention.l]
keep_hourly = 24
min_age = "1h"
[daemon]
listen = "127.0.0.1:9090"
""")

# --- manifest -------------------------------------------------------------------
put("manifest", "physical.json", """{
  "manifest_version": 1,
  "id": "20261124T020000Z",
  "target": "pg",
  "engine": "postgres",
  "kind": "physical",
  "format": "tar",
  "tag": "pre-deploy",
  "started_at": "2026-11-24T02:00:00Z",
  "finished_at": "2026-11-24T02:00:05.5Z",
  "duration_seconds": 5.5,
  "versions": {"backup": "0.1.0", "pg_basebackup": "16.4"},
  "artifacts": [
    {"name": "base.tar.gz", "size_bytes": 4096, "sha256": "00", "compression": "gzip",
     "raw_size_bytes": 20480, "content": "pg_basebackup tar"}
  ],
  "database": {"name": "app", "size_bytes": 1, "tables": [{"schema": "public", "name": "t", "rows": 3}],
               "extra": {"wal_segment_size": 16777216, "system_identifier": "7"}},
  "wal": {"timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
          "start_segment": "000000010000000000000002", "stop_segment": "000000010000000000000002"},
  "depends_on": ["20261123T020000Z"],
  "host": "db1",
  "encryption": {"method": "age", "recipients": ["age1x"],
                 "stored": {"base.tar.gz": {"size_bytes": 4200, "sha256": "11"}}}
}
""")

# Sizes at the top of their range, as a damaged or hand-edited manifest may carry.
put("manifest", "huge-sizes.json", """{"manifest_version": 1, "id": "20261124T020000Z-2", "target": "r",
 "engine": "redis", "kind": "logical", "format": "rdb", "started_at": "2026-11-24T02:00:00+01:00",
 "finished_at": "2026-11-24T02:00:00Z", "duration_seconds": 1e300, "versions": {},
 "artifacts": [
  {"name": "dump.rdb.gz", "size_bytes": 18446744073709551615, "sha256": "", "compression": "gzip",
   "raw_size_bytes": 0, "content": ""},
  {"name": "x", "size_bytes": 18446744073709551615, "sha256": "", "compression": "zstd",
   "raw_size_bytes": 18446744073709551615, "content": ""}],
 "database": {"extra": {"wal_segment_size": 18446744073709551615}}}
""")

# --- tar (pg_basebackup's base.tar, gunzipped) ----------------------------------
def tar_bytes(fmt, members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o700
                t.addfile(ti)
            elif kind == "link":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o600
                t.addfile(ti, io.BytesIO(data))
    return b.getvalue()

label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-24 02:00:00 UTC\nLABEL: backup\nSTART TIMELINE: 1\n"
manifest = b'{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [],\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n"Manifest-Checksum": "ab"}\n'
members = [("backup_label", "file", label), ("global", "dir", None),
           ("global/pg_control", "file", b"\x01" * 100), ("pg_tblspc/16384", "link", "/srv/ts"),
           ("backup_manifest", "file", manifest)]
put("tar", "ustar.tar", tar_bytes(tarfile.USTAR_FORMAT, members))
put("tar", "pax-long-name.tar", tar_bytes(tarfile.PAX_FORMAT,
    members[:1] + [("base/1/" + "x" * 150, "file", b"data")]))
put("tar", "gnu-long-name.tar", tar_bytes(tarfile.GNU_FORMAT,
    members[:1] + [("base/1/" + "y" * 150, "file", b"data")]))

# --- names: 8 bytes of segment size, then a name ---------------------------------
seg16 = struct.pack("<Q", 16 << 20)
seg1g = struct.pack("<Q", 1 << 30)
for i, n in enumerate(["000000010000000000000003", "000000010000000000000003.partial",
                       "00000002.history", "000000010000000000000002.00000028.backup",
                       "0/2000028", "1/FF000000", "20261124T020000Z", "20261124T020000Z-2"]):
    put("names", f"name{i}", seg16 + n.encode())
put("names", "gib-segments", seg1g + b"0000000300000001000000FF")

# --- times ------------------------------------------------------------------------
for i, t in enumerate(["30d", "1y6mo", "26h", "90s", "2w 3d", "2026-11-24T14:05:00Z",
                       "2026-11-24 14:05:00+02", "2026-11-24 14:05", "20261201T000000Z",
                       "2026-12-01"]):
    put("times", f"t{i}", t)

# --- rdb: RDB 10 with aux fields, expiry, int and LZF strings, a list, a set, a
# hash, a zset, a module-free stream header ------------------------------------------
CRC64_REDIS_POLY = 0xad93d23594c935a9

def crc64_redis(data):
    # Reflected Jones CRC-64 (Redis' crc64), bit by bit: seeds are tiny.
    crc = 0
    poly = int("{:064b}".format(CRC64_REDIS_POLY)[::-1], 2)
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc

def s(b):
    b = b.encode() if isinstance(b, str) else b
    assert len(b) < 64
    return bytes([len(b)]) + b

def rdb(body, version=b"0010"):
    f = b"REDIS" + version + body + b"\xff"
    return f + struct.pack("<Q", crc64_redis(f))

body = (b"\xfa" + s("redis-ver") + s("7.0.15") + b"\xfa" + s("ctime") + b"\xc2" + struct.pack("<i", 1700000000)
        + b"\xfe\x00\xfb\x05\x01"
        + b"\xfc" + struct.pack("<q", 1_900_000_000_000) + b"\x00" + s("k") + s("v1")
        + b"\x00" + s("n") + b"\xc0\x2a"
        + b"\x00" + s("z") + b"\xc3\x06\x0a\x02aaa\xa0\x00"  # LZF: "aaa" + 7 back-ref
        + b"\x01" + s("list") + b"\x02" + s("a") + s("b")
        + b"\x02" + s("set") + b"\x01" + s("m")
        + b"\x04" + s("hash") + b"\x01" + s("f") + s("v")
        + b"\x05" + s("zset") + b"\x01" + s("m") + struct.pack("<d", 1.5)
        + b"\xfe\x02" + b"\x00" + s("db2") + s("x"))
put("rdb", "types.rdb", rdb(body))
put("rdb", "no-checksum.rdb", b"REDIS0011\xfe\x00\x00" + s("k") + s("v") + b"\xff" + b"\x00" * 8)
put("rdb", "function.rdb", rdb(b"\xf5" + s("#!lua name=lib\nredis.register_function('f', function() return 1 end)"[:63]), b"0011"))

# --- mongo archive: magic, header, prelude, namespace blocks, EOFs ------------------
def cstr(x):
    return x.encode() + b"\x00"

def bson(fields):
    body = b""
    for k, v in fields:
        if isinstance(v, bool):
            body += b"\x08" + cstr(k) + (b"\x01" if v else b"\x00")
        elif isinstance(v, int) and -2**31 <= v < 2**31 and k != "CRC":
            body += b"\x10" + cstr(k) + struct.pack("<i", v)
        elif isinstance(v, int):
            body += b"\x12" + cstr(k) + struct.pack("<q", v)
        elif isinstance(v, str):
            e = v.encode()
            body += b"\x02" + cstr(k) + struct.pack("<i", len(e) + 1) + e + b"\x00"
        elif isinstance(v, list):
            body += b"\x04" + cstr(k) + bson([(str(i), x) for i, x in enumerate(v)])
        elif isinstance(v, tuple):
            body += b"\x03" + cstr(k) + bson(list(v))
    return struct.pack("<i", len(body) + 5) + body + b"\x00"

def crc64_xz(data):
    poly = 0xC96C5795D7870F42
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF

def signed(x):
    return x - (1 << 64) if x >= 1 << 63 else x

term = b"\xff\xff\xff\xff"
meta = '{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"collectionName":"users","type":"collection"}'
docs = [bson([("_id", i), ("n", (("a", [1, (("b", "x"),)]),))]) for i in range(3)]
op = bson([("op", "i"), ("ns", "app.users"), ("o", (("_id", 3),))])
a = struct.pack("<I", 0x8199E26D)
a += bson([("concurrent_collections", 4), ("version", "0.1"), ("server_version", "7.0.14"), ("tool_version", "100.10.0")])
a += bson([("db", "app"), ("collection", "users"), ("metadata", meta), ("size", 10)])
a += bson([("db", ""), ("collection", "oplog"), ("metadata", ""), ("size", 0)])
a += term
a += bson([("db", "app"), ("collection", "users"), ("EOF", False), ("CRC", 0)]) + b"".join(docs) + term
a += bson([("db", ""), ("collection", "oplog"), ("EOF", False), ("CRC", 0)]) + op + term
a += bson([("db", "app"), ("collection", "users"), ("EOF", True), ("CRC", signed(crc64_xz(b"".join(docs))))]) + term
a += bson([("db", ""), ("collection", "oplog"), ("EOF", True), ("CRC", signed(crc64_xz(op)))]) + term
put("mongo_archive", "users-and-oplog.archive", a)

# --- clickhouse native ----------------------------------------------------------------
with open(os.path.join(root, "tests", "data", "clickhouse-18.16-types.native"), "rb") as f:
    put("clickhouse_native", "types.native", f.read())
for i, t in enumerate(["Nullable(Array(Tuple(String, Decimal(20, 2), FixedString(3))))",
                       "Array(Enum8('a,b' = 1, 'c' = 2))"]):
    put("clickhouse_native", f"type{i}", t)
