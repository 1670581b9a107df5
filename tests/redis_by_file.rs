//! `restore --by-file` against a real `redis-server` 7.0 run from a config file by the
//! target's own `start_command` and stopped by its `stop_command`: the data file (and,
//! with appendonly on, the AOF) replaced, the server restarted with the backup's keys.
mod common;
use common::redis_server::{RedisServer, Snapshot};
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A server started from `redis.conf` in its own dir, as an operator's would be.
struct Served {
    server: RedisServer,
    conf: PathBuf,
}

impl Served {
    fn start(extra_conf: &str) -> Served {
        let dir = tempfile::Builder::new()
            .prefix("backup-test-redis-byfile-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let conf = dir.path().join("redis.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {d}\ndbfilename dump.rdb\nsave \"\"\npidfile {d}/redis.pid\nlogfile {d}/redis.log\n{extra_conf}\n"
            ),
        )
        .unwrap();
        let s = Served {
            server: RedisServer { dir, port },
            conf,
        };
        s.launch();
        s
    }

    fn start_command(&self) -> Vec<String> {
        vec![
            "redis-server".into(),
            self.conf.display().to_string(),
            "--daemonize".into(),
            "yes".into(),
        ]
    }

    fn stop_command(&self) -> Vec<String> {
        [
            "redis-cli",
            "-p",
            &self.server.port.to_string(),
            "shutdown",
            "nosave",
        ]
        .map(String::from)
        .to_vec()
    }

    fn launch(&self) {
        let c = self.start_command();
        let st = std::process::Command::new(&c[0])
            .args(&c[1..])
            .status()
            .unwrap();
        assert!(st.success());
        wait_port(self.server.port);
        // Until loading:0.
        let t = Instant::now();
        while !String::from_utf8_lossy(&self.server.cmd(&[b"INFO", b"persistence"]).bytes())
            .contains("loading:0")
        {
            assert!(t.elapsed() < Duration::from_secs(10), "still loading");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self) {
        let c = self.stop_command();
        std::process::Command::new(&c[0])
            .args(&c[1..])
            .status()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.server.port)).is_ok() {
            assert!(t.elapsed() < Duration::from_secs(10), "did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn config(&self, env: &Env, commands: bool) {
        self.config_with(env, commands, self.start_command())
    }

    fn config_with(&self, env: &Env, commands: bool, start: Vec<String>) {
        let cmds = if commands {
            format!(
                "stop_command = {:?}\nstart_command = {:?}\n",
                self.stop_command(),
                start
            )
        } else {
            String::new()
        };
        env.write_config(&format!(
            r#"
[storages.local]
type = "local"
path = "{}"

[targets.cache]
engine = "redis"
url = "{}"
storages = ["local"]
{cmds}"#,
            env.repo().display(),
            self.server.url()
        ));
    }

    fn info(&self) -> String {
        String::from_utf8_lossy(&self.server.cmd(&[b"INFO", b"everything"]).bytes()).into_owned()
    }
}

fn load(r: &RedisServer) {
    let mut c = r.connect();
    for cmd in [
        &[&b"SET"[..], b"s:a", b"hello"][..],
        &[b"SET", b"s:int", b"12345"],
        &[b"SET", b"bin\x00\xffkey", b"\x00\x01\x02\xff"],
        &[b"SET", b"ttl:long", b"x", b"EX", b"3600"],
        &[b"RPUSH", b"l", b"a", b"b", b"c"],
        &[b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"],
        &[b"SADD", b"si", b"1", b"2", b"3"],
        &[b"ZADD", b"z", b"1.5", b"a", b"2", b"b"],
        &[b"SELECT", b"1"],
        &[b"SET", b"one", b"1"],
        &[b"RPUSH", b"list", b"x", b"y"],
        &[b"SELECT", b"5"],
        &[b"SET", b"five", b"5"],
        &[b"XADD", b"st", b"1-1", b"k", b"v"],
    ] {
        c.ok(cmd);
    }
}

fn change(r: &RedisServer) {
    let mut c = r.connect();
    for cmd in [
        &[&b"SET"[..], b"s:a", b"changed"][..],
        &[b"DEL", b"l"],
        &[b"SET", b"new", b"key"],
        &[b"SELECT", b"1"],
        &[b"FLUSHDB"],
        &[b"SELECT", b"7"],
        &[b"SET", b"seven", b"7"],
    ] {
        c.ok(cmd);
    }
}

fn assert_same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, (t, d, ttl)) in a {
        let (t2, d2, ttl2) = &b[k];
        assert_eq!((t, d), (t2, d2), "{k:?}");
        assert!((ttl - ttl2).abs() <= 2000, "PTTL of {k:?}: {ttl} vs {ttl2}");
        assert_eq!(*ttl < 0, *ttl2 < 0, "expiry of {k:?}");
    }
}

/// Backs up, changes the data, returns (env, id, the backup's snapshot).
fn backed_up(s: &Served) -> (Env, String, Snapshot) {
    load(&s.server);
    let before = s.server.snapshot();
    let env = Env::new();
    s.config(&env, true);
    let id = env.ok(&["run", "cache"]).trim().to_string();
    change(&s.server);
    assert_ne!(s.server.snapshot(), before);
    (env, id, before)
}

#[test]
fn by_file_replaces_the_data_file_and_keeps_nothing_aside() {
    let s = Served::start("appendonly no");
    let (env, id, before) = backed_up(&s);

    // Without the commands: a usage error naming them; nothing touched.
    s.config(&env, false);
    let (code, _, err) = env.run(&["restore", "cache", &id, "--by-file", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stop_command") && err.contains("start_command") && err.lines().count() == 1,
        "{err}"
    );
    s.config(&env, true);

    // --dry-run: the plan, and nothing changed.
    let changed = s.server.snapshot();
    let out = env.ok(&["restore", "cache", &id, "--by-file", "--dry-run"]);
    assert!(
        out.contains("SHUTDOWN NOSAVE")
            && out.contains(&format!("dump.rdb.backup-{id}.old"))
            && out.contains("redis-cli"),
        "{out}"
    );
    assert_same(&changed, &s.server.snapshot());

    // Not on a terminal, without --yes: refused (exit 5), nothing changed.
    let (code, _, err) = env.run(&["restore", "cache", &id, "--by-file"]);
    assert_eq!(code, 5, "{err}");

    let t = Instant::now();
    let (code, out, err) = env.run(&["restore", "cache", &id, "--by-file", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("restored backup") && err.contains("match"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_same(&before, &s.server.snapshot());
    let left: Vec<_> = std::fs::read_dir(s.server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".backup-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(s.info().contains("aof_enabled:0"));
}

#[test]
fn by_file_with_appendonly_on_restores_and_the_aof_holds_the_keys() {
    let s = Served::start("appendonly yes\nappenddirname aof");
    let (env, id, before) = backed_up(&s);
    let (code, out, err) = env.run(&["restore", "cache", &id, "--by-file", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same(&before, &s.server.snapshot());
    let i = s.info();
    assert!(
        i.contains("aof_enabled:1") && i.contains("aof_last_bgrewrite_status:ok"),
        "{i}"
    );
    assert!(!s
        .server
        .dir
        .path()
        .join(format!("aof.backup-{id}.old"))
        .exists());

    // The AOF is what a restart loads: the keys must be in it.
    s.stop();
    s.launch();
    assert_same(&before, &s.server.snapshot());
    assert!(s.server.log().contains("DB loaded from append only file"));
}

#[test]
fn a_failed_start_keeps_the_previous_file_aside_and_says_where() {
    let s = Served::start("appendonly no");
    let (env, id, _) = backed_up(&s);
    s.server.cmd(&[b"SAVE"]);
    let changed = s.server.snapshot();
    s.config_with(&env, true, vec!["false".into()]);
    let (code, _, err) = env.run(&["restore", "cache", &id, "--by-file", "--yes"]);
    assert_eq!(code, 1, "{err}");
    let old = s
        .server
        .dir
        .path()
        .join(format!("dump.rdb.backup-{id}.old"));
    assert!(old.exists(), "{err}");
    assert!(
        err.contains("start_command `false` failed")
            && err.contains(&format!("mv {}", old.display())),
        "{err}"
    );
    // The operator puts it back, as the message says.
    std::fs::rename(&old, s.server.dir.path().join("dump.rdb")).unwrap();
    s.launch();
    assert_same(&changed, &s.server.snapshot());
}
