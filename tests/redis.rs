//! Redis against real `redis-server` 7.0 instances (each on a free port in a temp dir):
//! snapshot over the replication protocol, verify with the RDB reader, network restore
//! with RESTORE ... ABSTTL, test-restore in a scratch server, and the refusals.
mod common;
use common::redis_server::{RedisServer, Resp};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn config(env: &Env, url: &str, extra: &str) -> PathBuf {
    env.write_config(&format!(
        r#"
[storages.local]
type = "local"
path = "{}"

[targets.cache]
engine = "redis"
url = "{url}"
storages = ["local"]
{extra}
"#,
        env.repo().display()
    ))
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Every type in several encodings, binary keys and values, millisecond TTLs, three
/// logical databases, a several-MB value, a stream with a consumer group and pending
/// entries, and a function library.
fn load_dataset(r: &RedisServer) {
    let mut c = r.connect();
    let mut cmds: Vec<Vec<Vec<u8>>> = vec![];
    let mut add = |args: Vec<Vec<u8>>| cmds.push(args);
    add(vec![b("SELECT"), b("0")]);
    add(vec![b("SET"), b("s:small"), b("hello")]);
    add(vec![b("SET"), b("s:int"), b("123456")]);
    add(vec![b("SET"), b("s:lzf"), b(&"abcabcabc".repeat(200))]);
    add(vec![
        b("SET"),
        b"bin\x00\xff\r\nkey".to_vec(),
        (0..=255u8).collect(),
    ]);
    // Several MB, not compressible by LZF (xorshift).
    let mut x: u32 = 7;
    let big: Vec<u8> = (0..6_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    add(vec![b("SET"), b("s:big"), big]);
    add(vec![b("RPUSH"), b("l:small"), b("a"), b("b"), b("c")]);
    let mut l = vec![b("RPUSH"), b("l:large")];
    l.extend((0..5000).map(|i| b(&format!("element-{i}"))));
    add(l);
    add(vec![b("SADD"), b("set:int"), b("1"), b("2"), b("300000")]);
    add(vec![b("SADD"), b("set:small"), b("x"), b("y")]);
    let mut s = vec![b("SADD"), b("set:large")];
    s.extend((0..1000).map(|i| b(&format!("member-{i}"))));
    add(s);
    add(vec![
        b("ZADD"),
        b("z:small"),
        b("1.5"),
        b("a"),
        b("inf"),
        b("b"),
    ]);
    let mut z = vec![b("ZADD"), b("z:large")];
    for i in 0..500 {
        z.push(b(&format!("{}.25", i)));
        z.push(b(&format!("m{i}")));
    }
    add(z);
    add(vec![
        b("HSET"),
        b("h:small"),
        b("f"),
        b("v"),
        b("n"),
        b("1"),
    ]);
    let mut h = vec![b("HSET"), b("h:large")];
    for i in 0..1000 {
        h.push(b(&format!("field-{i}")));
        h.push(b(&format!("value-{i}")));
    }
    add(h);
    for i in 0..50 {
        add(vec![
            b("XADD"),
            b("stream"),
            b("*"),
            b("n"),
            b(&i.to_string()),
        ]);
    }
    add(vec![b("XGROUP"), b("CREATE"), b("stream"), b("g1"), b("0")]);
    add(vec![
        b("XREADGROUP"),
        b("GROUP"),
        b("g1"),
        b("alice"),
        b("COUNT"),
        b("10"),
        b("STREAMS"),
        b("stream"),
        b(">"),
    ]);
    add(vec![
        b("XREADGROUP"),
        b("GROUP"),
        b("g1"),
        b("bob"),
        b("COUNT"),
        b("3"),
        b("STREAMS"),
        b("stream"),
        b(">"),
    ]);
    add(vec![b("PEXPIRE"), b("s:small"), b("3600123")]);
    add(vec![b("PEXPIRE"), b("h:large"), b("86400777")]);
    add(vec![b("SELECT"), b("1")]);
    add(vec![b("SET"), b("db1:a"), b("1")]);
    add(vec![b("SET"), b("db1:b"), b("2"), b("PX"), b("7200999")]);
    add(vec![b("SELECT"), b("5")]);
    add(vec![b("HSET"), b("db5:h"), b("k"), b("v")]);
    // A long, repetitive key: Redis stores it LZF-compressed, so the reader must
    // decompress it to RESTORE it under the right name.
    add(vec![b("SET"), b(&"customer:42:".repeat(20)), b("lzf-key")]);
    add(vec![
        b("FUNCTION"),
        b("LOAD"),
        b("#!lua name=mylib\nredis.register_function('echo1', function(keys, args) return args[1] end)"),
    ]);
    c.pipeline(&cmds);
}

fn manifest(env: &Env, id: &str) -> serde_json::Value {
    let p = env.repo().join("cache").join(id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn artifact(env: &Env, id: &str) -> PathBuf {
    env.repo().join("cache").join(id).join("dump.rdb.gz")
}

fn gunzip_to(src: &Path, dest: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gunzip -c '{}' > '{}'",
            src.display(),
            dest.display()
        ))
        .status()
        .unwrap();
    assert!(out.success());
}

fn dbsize(r: &RedisServer) -> i64 {
    let mut c = r.connect();
    (0..16)
        .map(|db| {
            c.ok(&[b"SELECT", db.to_string().as_bytes()]);
            c.ok(&[b"DBSIZE"]).int()
        })
        .sum()
}

#[test]
fn round_trip_of_every_type_is_identical_and_standard_tools_read_it() {
    let src = RedisServer::start();
    src.cmd(&[
        b"ACL",
        b"SETUSER",
        b"backup",
        b"on",
        b">s3cr3t-pw",
        b"~*",
        b"&*",
        b"+@all",
    ]);
    load_dataset(&src);
    // Expires between the backup and the restore: skipped and counted.
    src.cmd(&[b"SET", b"short", b"x", b"PX", b"1500"]);
    let env = Env::new();
    let url = format!("redis://backup:s3cr3t-pw@127.0.0.1:{}", src.port);
    config(&env, &url, "");
    let (code, out, err) = env.run(&["run", "cache"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out.trim().to_string();
    let m = manifest(&env, &id);
    assert!(!out.contains("s3cr3t") && !err.contains("s3cr3t"), "{err}");
    assert!(!m.to_string().contains("s3cr3t"), "{m}");
    assert_eq!(m["engine"], "redis");
    assert_eq!(m["format"], "rdb");
    let x = &m["database"]["extra"];
    assert_eq!(x["rdb_version"], 10, "{m}");
    assert_eq!(x["role"], "master");
    assert_eq!(x["functions"], 1);
    assert_eq!(x["keys_with_expiry"]["db0"], 2 + 1, "{m}");
    assert_eq!(x["keys_with_expiry"]["db1"], 1);
    let keys = |db: &str| {
        m["database"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["schema"] == db)
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((keys("db0"), keys("db1"), keys("db5")), (16, 2, 2), "{m}");
    assert!(m["versions"]["redis"].as_str().unwrap().starts_with("7."));

    // Standard tools read the artifact: gunzip + redis-check-rdb.
    let rdb = env.path().join("dump.rdb");
    gunzip_to(&artifact(&env, &id), &rdb);
    let chk = Command::new("redis-check-rdb").arg(&rdb).output().unwrap();
    let text = String::from_utf8_lossy(&chk.stdout);
    assert!(
        chk.status.success() && text.contains("RDB looks OK"),
        "{text}"
    );

    let v = env.ok(&["verify", "cache", &id]);
    assert!(!v.is_empty());
    let (_, vout, verr) = env.run(&["verify", "cache", &id, "--json"]);
    assert!(
        vout.contains("RDB version 10")
            && vout.contains("CRC64 ok")
            && vout.contains("redis-check-rdb agrees"),
        "{vout}\n{verr}"
    );

    std::thread::sleep(std::time::Duration::from_millis(1600));
    let dest = RedisServer::start();
    config(&env, &dest.url(), "");
    let (code, out, err) = env.run(&["restore", "cache", &id, "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("1 key(s) had already expired"), "{err}");
    assert!(err.contains("row counts of 3 table(s) match"), "{err}");

    assert_eq!(assert_same_dataset(&src, &dest), 19);
    let f = dest.cmd(&[b"FCALL", b"echo1", b"0", b"hi"]);
    assert_eq!(f, Resp::Bulk(Some(b("hi"))));
}

/// Every key of `src` is in `dest` with the same TYPE, DUMP payload (or, for
/// hashtables, content) and PTTL within a second. Returns the number of keys.
fn assert_same_dataset(src: &RedisServer, dest: &RedisServer) -> usize {
    let (a, bb) = (src.snapshot(), dest.snapshot());
    assert_eq!(a.keys().collect::<Vec<_>>(), bb.keys().collect::<Vec<_>>());
    for (k, (t, d, ttl)) in &a {
        let (t2, d2, ttl2) = &bb[k];
        assert_eq!(t, t2, "type of {k:?}");
        if d != d2 {
            // A hashtable's DUMP lists fields in its bucket order, which depends on the
            // table's history, not its content: the same content is what must hold.
            same_hashtable_content(src, dest, k, t);
        }
        assert!((ttl - ttl2).abs() <= 1000, "PTTL of {k:?}: {ttl} vs {ttl2}");
        assert_eq!(*ttl < 0, *ttl2 < 0, "expiry of {k:?}");
    }
    a.len()
}

/// Key `k` (a set or hash) is hashtable-encoded on both servers with equal content.
fn same_hashtable_content(a: &RedisServer, b: &RedisServer, k: &(u32, Vec<u8>), t: &str) {
    let read = |r: &RedisServer| {
        let mut c = r.connect();
        c.ok(&[b"SELECT", k.0.to_string().as_bytes()]);
        let enc = c.ok(&[b"OBJECT", b"ENCODING", &k.1]).bytes();
        let cmd: &[u8] = if t == "hash" { b"HGETALL" } else { b"SMEMBERS" };
        let Resp::Array(Some(items)) = c.ok(&[cmd, &k.1]) else {
            panic!("{t}")
        };
        let mut items: Vec<Vec<u8>> = items.iter().map(Resp::bytes).collect();
        if t == "hash" {
            let mut pairs: Vec<_> = items.chunks(2).map(|p| p.to_vec()).collect();
            pairs.sort();
            items = pairs.concat();
        } else {
            items.sort();
        }
        (enc, items)
    };
    let (x, y) = (read(a), read(b));
    assert_eq!(
        x.0,
        b"hashtable".to_vec(),
        "DUMP payload of {k:?} ({t}) differs"
    );
    assert_eq!(x, y, "content of {k:?} ({t}) differs");
}

#[test]
fn damaged_artifact_fails_verify_and_restore_leaves_the_destination_alone() {
    let src = RedisServer::start();
    src.cmd(&[b"SET", b"a", &[b'z'; 5000]]);
    src.cmd(&[b"RPUSH", b"l", b"1", b"2"]);
    let env = Env::new();
    config(&env, &src.url(), "");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    // Flip one byte inside the RDB and re-seal the gzip, size and SHA-256, so only
    // the RDB reader's CRC64 can tell.
    let rdb = env.path().join("dump.rdb");
    gunzip_to(&artifact(&env, &id), &rdb);
    let mut bytes = std::fs::read(&rdb).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    std::fs::write(&rdb, &bytes).unwrap();
    let gz = artifact(&env, &id);
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c '{}' > '{}'", rdb.display(), gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let sha =
        String::from_utf8(Command::new("sha256sum").arg(&gz).output().unwrap().stdout).unwrap();
    let mut m = manifest(&env, &id);
    m["artifacts"][0]["sha256"] = sha.split_whitespace().next().unwrap().into();
    m["artifacts"][0]["size_bytes"] = std::fs::metadata(&gz).unwrap().len().into();
    write_manifest(
        &env.repo().join("cache").join(&id).join("manifest.json"),
        &serde_json::to_vec_pretty(&m).unwrap(),
    );

    let (code, out, err) = env.run(&["verify", "cache", &id]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("CRC64 mismatch"),
        "{out}\n{err}"
    );
    let dest = RedisServer::start();
    config(&env, &dest.url(), "");
    let (code, _, err) = env.run(&["restore", "cache", &id, "--yes"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("was not touched"), "{err}");
    assert_eq!(dbsize(&dest), 0);

    // A flipped byte in the stored file itself: SHA-256 and gzip catch it too.
    let mut g = std::fs::read(&gz).unwrap();
    let j = g.len() / 2;
    g[j] ^= 0x01;
    std::fs::write(&gz, g).unwrap();
    let (code, _, _) = env.run(&["verify", "cache", &id]);
    assert_eq!(code, 3);
}

#[test]
fn non_empty_destination_is_refused_unless_clean() {
    // `--clean` stays an alias of `--flush` for Redis targets.
    // Disk-based replication: the `$<length>` payload form (the others use diskless
    // `$EOF:<mark>`, Redis 7.0's default).
    let src = RedisServer::start_with(&["--repl-diskless-sync", "no"]);
    src.cmd(&[b"SET", b"k", b"from-backup"]);
    let env = Env::new();
    config(&env, &src.url(), "");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let dest = RedisServer::start();
    dest.cmd(&[b"SET", b"other", b"x"]);
    config(&env, &dest.url(), "");
    let (code, _, err) = env.run(&["restore", "cache", &id, "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not empty") && err.contains("--flush"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(dest.cmd(&[b"GET", b"other"]), Resp::Bulk(Some(b("x"))));
    let (code, _, err) = env.run(&["restore", "cache", &id, "--table", "users", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--table"), "{err}");
    let plan = env.ok(&["restore", "cache", &id, "--clean", "--dry-run"]);
    assert!(plan.contains("FLUSHALL"), "{plan}");
    env.ok(&["restore", "cache", &id, "--clean", "--yes"]);
    assert_eq!(dest.cmd(&[b"GET", b"other"]), Resp::Bulk(None));
    assert_eq!(
        dest.cmd(&[b"GET", b"k"]),
        Resp::Bulk(Some(b("from-backup")))
    );
}

#[test]
fn server_refusing_sync_fails_naming_scan_mode_and_lists_nothing() {
    let src = RedisServer::start_with(&[
        "--rename-command",
        "SYNC",
        "",
        "--rename-command",
        "PSYNC",
        "",
    ]);
    src.cmd(&[b"SET", b"k", b"v"]);
    let env = Env::new();
    config(&env, &src.url(), "");
    let (code, out, err) = env.run(&["run", "cache"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("mode = \"scan\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    assert!(entries_under(&env.repo().join("cache")).is_empty());
}

#[test]
fn test_restore_passes_and_removes_the_scratch_server() {
    let src = RedisServer::start();
    load_dataset(&src);
    let env = Env::new();
    let scratch = env.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    config(
        &env,
        &src.url(),
        &format!(
            "[targets.cache.test_restore]\ntemp_dir = \"{}\"\n",
            scratch.display()
        ),
    );
    env.ok(&["run", "cache"]);
    let (code, out, err) = env.run(&["test-restore", "cache", "latest", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<_> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    for n in ["restore", "key counts", "keys with expiry"] {
        assert!(names.contains(&(n.to_string(), true)), "{names:?}\n{out}");
    }
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch folder left behind"
    );
}

#[test]
fn engine_keys_are_checked_when_the_config_is_loaded() {
    let env = Env::new();
    for (extra, url, want) in [
        (
            "colour = \"red\"",
            "redis://h:6379",
            "unknown field `colour`",
        ),
        (
            "tls_cert_file = \"/c\"",
            "rediss://h:6379",
            "tls_cert_file and tls_key_file go together",
        ),
        ("tls_ca_file = \"/x\"", "redis://h:6379", "not rediss://"),
        ("mode = \"fast\"", "redis://h:6379", "targets.cache.mode"),
        ("stop_command = []", "redis://h:6379", "stop_command"),
        (
            "start_command = \"redis-server\"",
            "redis://h:6379",
            "start_command",
        ),
        (
            "[targets.cache.test_restore]\nurl = \"redis://x:1\"",
            "redis://h:6379",
            "scratch redis-server",
        ),
        ("", "redis://u:topsecret@h:6379/4", "every logical database"),
    ] {
        config(&env, url, extra);
        let (code, out, err) = env.run(&["list", "cache"]);
        assert_eq!(code, 2, "{extra} {url}: {out}\n{err}");
        assert!(err.contains(want), "{extra} {url}: {err}");
        assert!(!err.contains("topsecret"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Capabilities a Redis target lacks: one line, exit 2, nothing touched.
    config(&env, "redis://127.0.0.1:1", "");
    for args in [
        vec![
            "pitr",
            "cache",
            "--target-immediate",
            "--data-dir",
            "/nonexistent",
        ],
        vec!["check", "cache"],
    ] {
        let (code, _, err) = env.run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// Redis' crc64 (Jones, reflected), bit by bit: to re-seal a crafted RDB.
fn crc64(data: &[u8]) -> u64 {
    let mut crc = 0u64;
    for &byte in data {
        crc ^= byte as u64;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x95ac_9329_ac4b_c9b5
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Replaces backup `id`'s artifact with `rdb` (gzipped), fixing size and SHA-256.
fn reseal(env: &Env, id: &str, rdb: &[u8]) {
    let raw = env.path().join("crafted.rdb");
    std::fs::write(&raw, rdb).unwrap();
    let gz = artifact(env, id);
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c '{}' > '{}'", raw.display(), gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let sha =
        String::from_utf8(Command::new("sha256sum").arg(&gz).output().unwrap().stdout).unwrap();
    let mut m = manifest(env, id);
    m["artifacts"][0]["sha256"] = sha.split_whitespace().next().unwrap().into();
    m["artifacts"][0]["size_bytes"] = std::fs::metadata(&gz).unwrap().len().into();
    m["artifacts"][0]["raw_size_bytes"] = (rdb.len() as u64).into();
    write_manifest(
        &env.repo().join("cache").join(id).join("manifest.json"),
        &serde_json::to_vec_pretty(&m).unwrap(),
    );
}

#[test]
fn a_backup_from_a_newer_rdb_version_is_refused_naming_both() {
    let src = RedisServer::start();
    src.cmd(&[b"SET", b"k", b"v"]);
    let env = Env::new();
    config(&env, &src.url(), "");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let rdb = env.path().join("dump.rdb");
    gunzip_to(&artifact(&env, &id), &rdb);
    let mut bytes = std::fs::read(&rdb).unwrap();
    assert_eq!(&bytes[..9], b"REDIS0010");
    // RDB 11 (Redis 7.2), re-sealed with a correct CRC64: only the version differs.
    bytes[8] = b'1';
    let n = bytes.len() - 8;
    let crc = crc64(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    reseal(&env, &id, &bytes);
    env.ok(&["verify", "cache", &id]);
    let dest = RedisServer::start();
    config(&env, &dest.url(), "");
    let (code, _, err) = env.run(&["restore", "cache", &id, "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("RDB version 11") && err.contains("Redis 7.0"),
        "{err}"
    );
    assert_eq!(dbsize(&dest), 0);
}

/// A TCP proxy in front of a Redis port: forwards both ways; from the server's `$`
/// (the SYNC reply) on, passes at most `limit` bytes, each 4 KiB after `delay`.
fn proxy(upstream: u16, limit: Option<usize>, delay: Option<std::time::Duration>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { return };
            let up = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d2, &mut u2);
            });
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut up, mut down) = (up, down);
                let mut sent = 0usize;
                let mut buf = [0u8; 4096];
                let mut in_payload = false;
                while let Ok(n) = up.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    in_payload |= buf[..n].contains(&b'$');
                    if in_payload {
                        sent += n;
                        if let Some(d) = delay {
                            std::thread::sleep(d);
                        }
                    }
                    if down.write_all(&buf[..n]).is_err() || limit.is_some_and(|l| sent > l) {
                        break;
                    }
                }
                let _ = down.shutdown(std::net::Shutdown::Both);
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// About 1 MB in 200 keys that LZF cannot shrink (xorshift).
fn load_incompressible(src: &RedisServer) {
    let mut x: u32 = 1;
    let cmds: Vec<Vec<Vec<u8>>> = (0..200)
        .map(|i| {
            let v: Vec<u8> = (0..5000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            vec![b("SET"), b(&format!("k{i}")), v]
        })
        .collect();
    src.connect().pipeline(&cmds);
}

#[test]
fn sigterm_mid_snapshot_lists_nothing() {
    let src = RedisServer::start();
    load_incompressible(&src);
    // 4 KiB per 10 ms: the 1 MB snapshot takes about 2.5 s.
    let port = proxy(src.port, None, Some(std::time::Duration::from_millis(10)));
    let env = Env::new();
    config(&env, &format!("redis://127.0.0.1:{port}"), "");
    let child = env
        .std_cmd()
        .args(["run", "cache"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "{err}");
    assert!(err.contains("removed the partial backup"), "{err}");
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    assert!(entries_under(&env.repo().join("cache")).is_empty());
}

#[test]
fn a_snapshot_cut_mid_stream_lists_nothing() {
    let src = RedisServer::start();
    load_incompressible(&src);
    // The proxy passes the handshake, then cuts the connection after 64 KiB of the
    // snapshot: the way a dying server or network looks to the tool.
    let proxy_port = proxy(src.port, Some(65536), None);
    let env = Env::new();
    config(&env, &format!("redis://127.0.0.1:{proxy_port}"), "");
    let (code, out, err) = env.run(&["run", "cache"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("nothing was kept"), "{err}");
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    assert!(entries_under(&env.repo().join("cache")).is_empty());
}

#[test]
fn scan_mode_backs_up_a_server_refusing_sync_and_restores_it() {
    let src = RedisServer::start_with(&[
        "--rename-command",
        "SYNC",
        "",
        "--rename-command",
        "PSYNC",
        "",
    ]);
    load_dataset(&src);
    let env = Env::new();
    config(&env, &src.url(), "mode = \"scan\"");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let m = manifest(&env, &id);
    assert_eq!(m["database"]["extra"]["mode"], "scan", "{m}");
    assert_eq!(m["database"]["extra"]["keys"], 15 + 2 + 2, "{m}");
    assert_eq!(m["database"]["extra"]["functions"], 1, "{m}");
    // A standard RDB: redis-check-rdb reads it.
    let rdb = env.path().join("dump.rdb");
    gunzip_to(&artifact(&env, &id), &rdb);
    let chk = Command::new("redis-check-rdb").arg(&rdb).output().unwrap();
    let text = String::from_utf8_lossy(&chk.stdout);
    assert!(
        chk.status.success() && text.contains("RDB looks OK"),
        "{text}"
    );
    env.ok(&["verify", "cache", &id]);
    let dest = RedisServer::start();
    config(&env, &dest.url(), "mode = \"scan\"");
    env.ok(&["restore", "cache", &id, "--yes"]);
    assert_eq!(assert_same_dataset(&src, &dest), 19);
    let f = dest.cmd(&[b"FCALL", b"echo1", b"0", b"hi"]);
    assert_eq!(f, Resp::Bulk(Some(b("hi"))));
}

#[test]
fn password_from_file_or_rediscli_auth_never_shows() {
    let src = RedisServer::start_with(&["--requirepass", "pw-in-a-file-9f3"]);
    src.cmd_auth("pw-in-a-file-9f3", &[b"SET", b"k", b"v"]);
    let env = Env::new();
    let pf = env.path().join("redis_password");
    std::fs::write(&pf, "pw-in-a-file-9f3\n").unwrap();
    config(
        &env,
        &src.url(),
        &format!("password_file = \"{}\"", pf.display()),
    );
    let id = env.ok(&["run", "cache"]).trim().to_string();
    assert!(!manifest(&env, &id).to_string().contains("9f3"));
    // REDISCLI_AUTH, as redis-cli reads it.
    config(&env, &src.url(), "");
    let out = env
        .cmd()
        .env("REDISCLI_AUTH", "pw-in-a-file-9f3")
        .args(["run", "cache"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A wrong password: one line, the server's words, no password.
    let url = format!("redis://:wrong-pw-77@127.0.0.1:{}", src.port);
    config(&env, &url, "");
    let (code, _, err) = env.run(&["run", "cache"]);
    assert_ne!(code, 0);
    assert!(!err.contains("wrong-pw-77"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1:
/// (CA cert, server cert, server key). (webpki refuses a CA certificate used as the
/// server's own, so a single self-signed certificate is not enough.)
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let ext = dir.join("san.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=backup-test-ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("tls.key"),
            "-out",
            &p("tls.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("tls.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("san.ext"),
            "-out",
            &p("tls.crt"),
        ],
    ] {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}

/// A server with a TLS port too (plain port for the test's own checks).
fn tls_server(ca: &Path, cert: &Path, key: &Path) -> (RedisServer, u16) {
    tls_server_with(ca, cert, key, "no")
}

fn tls_server_with(ca: &Path, cert: &Path, key: &Path, auth_clients: &str) -> (RedisServer, u16) {
    let port = free_port().to_string();
    let r = RedisServer::start_with(&[
        "--tls-port",
        &port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        auth_clients,
    ]);
    (r, port.parse().unwrap())
}

#[test]
fn tls_with_a_private_ca_round_trips() {
    let env = Env::new();
    let (ca_crt, cert, key) = private_ca(env.path());
    let (src, src_tls) = tls_server(&ca_crt, &cert, &key);
    load_dataset(&src);
    let ca = format!("tls_ca_file = \"{}\"", ca_crt.display());
    config(&env, &format!("rediss://127.0.0.1:{src_tls}"), &ca);
    let id = env.ok(&["run", "cache"]).trim().to_string();
    env.ok(&["verify", "cache", &id]);
    let (dest, dest_tls) = tls_server(&ca_crt, &cert, &key);
    config(&env, &format!("rediss://127.0.0.1:{dest_tls}"), &ca);
    env.ok(&["restore", "cache", &id, "--yes"]);
    assert_eq!(assert_same_dataset(&src, &dest), 19);
    // Without the CA the certificate is not trusted; tls_insecure skips the check.
    config(&env, &format!("rediss://127.0.0.1:{src_tls}"), "");
    let (code, _, err) = env.run(&["run", "cache"]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    config(
        &env,
        &format!("rediss://127.0.0.1:{src_tls}"),
        "tls_insecure = true",
    );
    env.ok(&["run", "cache"]);
    // Mutual TLS: a server that asks for a client certificate gets one (the server's
    // own pair, signed by the same CA, serves as the client's here).
    let (mtls, mtls_port) = tls_server_with(&ca_crt, &cert, &key, "yes");
    mtls.cmd(&[b"SET", b"k", b"v"]);
    let url = format!("rediss://127.0.0.1:{mtls_port}");
    config(&env, &url, &ca);
    let (code, _, err) = env.run(&["run", "cache"]);
    assert_ne!(code, 0, "{err}");
    let pair = format!(
        "{ca}\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    config(&env, &url, &pair);
    env.ok(&["run", "cache"]);
}

#[test]
fn a_cluster_node_is_refused_and_a_damaged_backup_fails_test_restore() {
    let node = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]);
    let env = Env::new();
    config(&env, &node.url(), "");
    let (code, _, err) = env.run(&["run", "cache"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cluster_enabled:1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let src = RedisServer::start();
    src.cmd(&[b"SET", b"k", b"v"]);
    let scratch = env.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let tr = format!(
        "[targets.cache.test_restore]\ntemp_dir = \"{}\"\n",
        scratch.display()
    );
    config(&env, &src.url(), &tr);
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let gz = artifact(&env, &id);
    let mut g = std::fs::read(&gz).unwrap();
    let j = g.len() / 2;
    g[j] ^= 0x01;
    std::fs::write(&gz, g).unwrap();
    let (code, out, err) = env.run(&["test-restore", "cache", &id, "--json"]);
    assert_eq!(code, 6, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["checks"][0]["name"], "restore");
    assert_eq!(r["checks"][0]["passed"], false, "{r}");
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch folder left behind"
    );
}

#[test]
fn verify_compares_key_counts_with_the_manifest() {
    let src = RedisServer::start();
    src.cmd(&[b"SET", b"a", b"1"]);
    src.cmd(&[b"SET", b"b", b"2", b"PX", b"3600000"]);
    let env = Env::new();
    config(&env, &src.url(), "");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let out = env.ok(&["verify", "cache", &id]);
    let _ = out;
    let path = env.repo().join("cache").join(&id).join("manifest.json");
    let mut m = manifest(&env, &id);
    assert_eq!(m["database"]["tables"][0]["schema"], "db0");
    m["database"]["tables"][0]["rows"] = 5.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, out, err) = env.run(&["verify", "cache", &id]);
    assert_eq!(code, 3, "{out}\n{err}");
    let all = format!("{out}{err}");
    let line = all
        .lines()
        .find(|l| l.contains("db0 has 2 keys in the RDB, the manifest says 5"))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(!line.contains('\n'));
    // Keys with an expiry are compared too.
    m["database"]["tables"][0]["rows"] = 2.into();
    m["database"]["extra"]["keys_with_expiry"]["db0"] = 0.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, out, err) = env.run(&["verify", "cache", &id]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        format!("{out}{err}")
            .contains("db0 has 1 keys with an expiry in the RDB, the manifest says 0"),
        "{out}\n{err}"
    );
}

/// Three databases, two customers' keys, for the partial restores.
fn load_customers(r: &RedisServer) {
    let mut c = r.connect();
    let cmds: Vec<Vec<Vec<u8>>> = vec![
        vec![b("SET"), b("customer:1:name"), b("ann")],
        vec![b("HSET"), b("customer:1:cart"), b("sku"), b("2")],
        vec![b("SET"), b("customer:2:name"), b("bob")],
        vec![b("SET"), b("config:global"), b("on")],
        vec![b("SELECT"), b("1")],
        vec![b("SET"), b("session:9"), b("x"), b("PX"), b("3600000")],
        vec![b("SELECT"), b("2")],
        vec![b("RPUSH"), b("customer:1:log"), b("a"), b("b")],
        vec![b("SET"), b("other"), b("y")],
    ];
    c.pipeline(&cmds);
}

/// Every key of a server: (db, key), sorted.
fn all_keys(r: &RedisServer) -> Vec<(u32, String)> {
    let mut c = r.connect();
    let mut out = vec![];
    for db in 0..16u32 {
        c.ok(&[b"SELECT", db.to_string().as_bytes()]);
        if let Resp::Array(Some(keys)) = c.ok(&[b"KEYS", b"*"]) {
            for k in keys {
                out.push((db, String::from_utf8(k.bytes()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn keys(list: &[(u32, &str)]) -> Vec<(u32, String)> {
    let mut v: Vec<_> = list.iter().map(|(d, k)| (*d, k.to_string())).collect();
    v.sort();
    v
}

#[test]
fn partial_restores_by_db_and_match_into_another_server() {
    let src = RedisServer::start();
    load_customers(&src);
    let env = Env::new();
    config(&env, &src.url(), "");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let before = all_keys(&src);

    // --db, twice, with --to-url: the target's own (non-empty) server is not touched.
    let dest = RedisServer::start();
    let (code, out, err) = env.run(&[
        "restore",
        "cache",
        &id,
        "--to-url",
        &dest.url(),
        "--db",
        "1",
        "--db",
        "2",
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        all_keys(&dest),
        keys(&[(1, "session:9"), (2, "customer:1:log"), (2, "other")])
    );
    assert_eq!(all_keys(&src), before);
    assert!(err.contains("db1, db2"), "{err}");
    // The TTL came along.
    let mut c = dest.connect();
    c.ok(&[b"SELECT", b"1"]);
    assert!(c.ok(&[b"PTTL", b"session:9"]).int() > 3_000_000);

    // --match into an empty server: only one customer's keys, from every db.
    let dest2 = RedisServer::start();
    let plan = env.ok(&[
        "restore",
        "cache",
        &id,
        "--to-url",
        &dest2.url(),
        "--match",
        "customer:1:*",
        "--dry-run",
    ]);
    assert!(
        plan.contains("customer:1:*") && !plan.contains("FLUSH"),
        "{plan}"
    );
    assert!(all_keys(&dest2).is_empty());
    let (code, out, err) = env.run(&[
        "restore",
        "cache",
        &id,
        "--to-url",
        &dest2.url(),
        "--match",
        "customer:1:*",
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        all_keys(&dest2),
        keys(&[
            (0, "customer:1:cart"),
            (0, "customer:1:name"),
            (2, "customer:1:log")
        ])
    );
    assert!(err.contains("restored 3 key(s)"), "{err}");
    // --match with --db: both apply.
    let dest3 = RedisServer::start();
    env.ok(&[
        "restore",
        "cache",
        &id,
        "--to-url",
        &dest3.url(),
        "--match",
        "customer:*",
        "--db",
        "0",
        "--yes",
    ]);
    assert_eq!(
        all_keys(&dest3),
        keys(&[
            (0, "customer:1:cart"),
            (0, "customer:1:name"),
            (0, "customer:2:name")
        ])
    );
    // Matching keys already there: refused (--match never flushes), nothing written.
    dest3.cmd(&[b"DEL", b"customer:2:name"]);
    let (code, _, err) = env.run(&[
        "restore",
        "cache",
        &id,
        "--to-url",
        &dest3.url(),
        "--match",
        "customer:*",
        "--yes",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("customer:*") && err.contains("never flushes"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(dbsize(&dest3), 2);
    // --match with --flush: refused before anything.
    let (code, _, err) = env.run(&[
        "restore",
        "cache",
        &id,
        "--to-url",
        &dest3.url(),
        "--match",
        "x*",
        "--flush",
        "--yes",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--match") && err.contains("--flush"), "{err}");
    assert_eq!(dbsize(&dest3), 2);
    // A password in the URL works and never shows.
    let locked = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let u = locked.url().replace("redis://", "redis://:s3cret-pw@");
    let (code, out, err) = env.run(&[
        "restore", "cache", &id, "--to-url", &u, "--db", "1", "--yes",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!format!("{out}{err}").contains("s3cret-pw"), "{out}\n{err}");
    assert!(err.contains("REDISCLI_AUTH"), "{err}");
}

#[test]
fn flush_empties_a_non_empty_destination_and_without_it_nothing_is_written() {
    let src = RedisServer::start();
    load_customers(&src);
    let env = Env::new();
    config(&env, &src.url(), "");
    let id = env.ok(&["run", "cache"]).trim().to_string();
    let dest = RedisServer::start();
    dest.cmd(&[b"SET", b"stale", b"x"]);
    config(&env, &dest.url(), "");
    let (code, _, err) = env.run(&["restore", "cache", &id, "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not empty") && err.contains("db0 (1 keys)") && err.contains("--flush"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(all_keys(&dest), keys(&[(0, "stale")]));
    // The rule applies to the databases restored: db1 is empty, so --db 1 goes ahead.
    env.ok(&["restore", "cache", &id, "--db", "1", "--yes"]);
    assert_eq!(all_keys(&dest), keys(&[(0, "stale"), (1, "session:9")]));
    // --flush --db 0 empties db0 only.
    let plan = env.ok(&["restore", "cache", &id, "--flush", "--db", "0", "--dry-run"]);
    assert!(plan.contains("FLUSHDB db0"), "{plan}");
    env.ok(&["restore", "cache", &id, "--flush", "--db", "0", "--yes"]);
    assert_eq!(
        all_keys(&dest),
        keys(&[
            (0, "config:global"),
            (0, "customer:1:cart"),
            (0, "customer:1:name"),
            (0, "customer:2:name"),
            (1, "session:9")
        ])
    );
    // --flush: FLUSHALL, then everything.
    dest.cmd(&[b"SET", b"stale", b"x"]);
    let plan = env.ok(&["restore", "cache", &id, "--flush", "--dry-run"]);
    assert!(plan.contains("FLUSHALL"), "{plan}");
    env.ok(&["restore", "cache", &id, "--flush", "--yes"]);
    assert_eq!(all_keys(&dest), all_keys(&src));
}

#[test]
fn test_restore_checks_must_exist_keys() {
    let src = RedisServer::start();
    load_customers(&src);
    let env = Env::new();
    let tr = |keys: &str| format!("[targets.cache.test_restore]\nmust_exist = [{keys}]\n");
    config(&env, &src.url(), &tr("\"config:global\", \"session:9\""));
    env.ok(&["run", "cache"]);
    let (code, out, err) = env.run(&["test-restore", "cache", "latest", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let check = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "must_exist")
        .unwrap_or_else(|| panic!("{out}"))
        .clone();
    assert_eq!(check["passed"], true, "{out}");

    config(
        &env,
        &src.url(),
        &tr("\"config:global\", \"config:missing\""),
    );
    let (code, out, err) = env.run(&["test-restore", "cache", "latest"]);
    assert_eq!(code, 6, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("`config:missing`"),
        "{out}\n{err}"
    );
    // An empty key name is refused when the config is loaded.
    config(&env, &src.url(), &tr("\"\""));
    let (code, _, err) = env.run(&["list", "cache"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must_exist"), "{err}");
}
