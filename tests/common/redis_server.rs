//! Real `redis-server` instances for the Redis tests (each on a free port in a temp
//! dir, no persistence, stopped by pid on drop), and a small RESP client so tests can
//! send binary keys and read `DUMP` payloads byte for byte (redis-cli would escape them).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// (db, key) -> (TYPE, DUMP payload, PTTL).
pub type Snapshot = BTreeMap<(u32, Vec<u8>), (String, Vec<u8>, i64)>;

pub struct RedisServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Resp::Bulk(Some(b)) => b.clone(),
            Resp::Simple(s) => s.clone().into_bytes(),
            other => panic!("not a string reply: {other:?}"),
        }
    }
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("not an integer reply: {other:?}"),
        }
    }
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// `extra`: more server arguments, e.g. `["--rename-command", "SYNC", ""]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("backup-test-redis-")
            .tempdir()
            .unwrap();
        let port = super::free_port();
        let out = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--daemonize", "yes", "--pidfile"])
            .arg(dir.path().join("redis.pid"))
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(extra)
            .output()
            .expect("redis-server (apt-get install redis-server)");
        assert!(out.status.success(), "redis-server: {out:?}");
        let s = RedisServer { dir, port };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn connect(&self) -> RespConn {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        RespConn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// One command on a fresh connection; panics on an error reply.
    pub fn cmd(&self, args: &[&[u8]]) -> Resp {
        self.connect().ok(args)
    }

    /// One command after `AUTH password` (a server started with --requirepass).
    pub fn cmd_auth(&self, password: &str, args: &[&[u8]]) -> Resp {
        let mut c = self.connect();
        c.ok(&[b"AUTH", password.as_bytes()]);
        c.ok(args)
    }

    /// Every key of every db: (db, key) -> (TYPE, DUMP payload, PTTL).
    pub fn snapshot(&self) -> Snapshot {
        let mut c = self.connect();
        let mut out = BTreeMap::new();
        for db in 0..16u32 {
            c.ok(&[b"SELECT", db.to_string().as_bytes()]);
            let Resp::Array(Some(keys)) = c.ok(&[b"KEYS", b"*"]) else {
                panic!("KEYS")
            };
            for k in keys {
                let k = k.bytes();
                let t = String::from_utf8(c.ok(&[b"TYPE", &k]).bytes()).unwrap();
                let d = c.ok(&[b"DUMP", &k]).bytes();
                let ttl = c.ok(&[b"PTTL", &k]).int();
                out.insert((db, k), (t, d, ttl));
            }
        }
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}

pub struct RespConn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl RespConn {
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&buf).unwrap();
    }

    pub fn read(&mut self) -> Resp {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).unwrap();
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).to_string();
        match line[0] {
            b'+' => Resp::Simple(text),
            b'-' => Resp::Error(text),
            b':' => Resp::Int(text.parse().unwrap()),
            b'$' => {
                let n: i64 = text.parse().unwrap();
                if n < 0 {
                    return Resp::Bulk(None);
                }
                let mut b = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut b).unwrap();
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
            b'*' => {
                let n: i64 = text.parse().unwrap();
                if n < 0 {
                    return Resp::Array(None);
                }
                Resp::Array(Some((0..n).map(|_| self.read()).collect()))
            }
            c => panic!("bad RESP type byte {c}"),
        }
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Resp {
        self.send(args);
        self.read()
    }

    pub fn ok(&mut self, args: &[&[u8]]) -> Resp {
        let r = self.call(args);
        if let Resp::Error(e) = &r {
            panic!("{:?}: {e}", String::from_utf8_lossy(args[0]));
        }
        r
    }

    /// Many commands in one round trip (replies checked).
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) {
        for c in cmds {
            let a: Vec<&[u8]> = c.iter().map(|x| x.as_slice()).collect();
            self.send(&a);
        }
        for _ in cmds {
            if let Resp::Error(e) = self.read() {
                panic!("pipeline: {e}");
            }
        }
    }
}
