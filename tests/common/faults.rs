//! A TCP proxy in front of a real S3 server that misbehaves on demand, for the fault
//! matrix: each new connection takes the next fault from a queue (an HTTP error status
//! with S3's error body, or a stall: accepted, read, never answered), and connections
//! past the queue are passed through byte for byte. Counting connections tells whether
//! the client retried. [`FaultProxy::stall_request`] stalls one request picked by its
//! text (the 2nd `?delete`, a `PUT` of a manifest) on a connection already passing.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and S3 error code, then close.
    Status(u16, &'static str),
    /// Read the request and never answer (the connection stays open).
    Stall,
}

pub struct FaultProxy {
    pub port: u16,
    queue: Arc<Mutex<VecDeque<Fault>>>,
    /// Every connection from now on stalls (a store that went silent).
    stall_all: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<AtomicUsize>,
    on_request: Arc<OnRequest>,
}

/// A request to stall, by the text of its request line: the `nth` one containing
/// `pattern` is swallowed (never forwarded, never answered), and so is everything the
/// client sends after it on that connection.
#[derive(Default)]
struct OnRequest {
    rule: Mutex<Option<(String, usize)>>,
    seen: AtomicUsize,
    stalled: std::sync::atomic::AtomicBool,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let queue: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
        let stall_all = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let on_request: Arc<OnRequest> = Arc::default();
        let (q, st, n, on) = (
            queue.clone(),
            stall_all.clone(),
            connections.clone(),
            on_request.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let fault = if st.load(Ordering::SeqCst) {
                    Some(Fault::Stall)
                } else {
                    q.lock().unwrap().pop_front()
                };
                let on = on.clone();
                std::thread::spawn(move || serve(client, upstream, fault, on));
            }
        });
        FaultProxy {
            port,
            queue,
            stall_all,
            connections,
            on_request,
        }
    }

    /// Stalls the `nth` request (1-based) whose bytes contain `pattern`, e.g.
    /// `("?delete", 2)`: the second DeleteObjects.
    pub fn stall_request(&self, pattern: &str, nth: usize) {
        *self.on_request.rule.lock().unwrap() = Some((pattern.to_string(), nth));
    }

    /// Whether the request picked by [`Self::stall_request`] has arrived (and hangs).
    pub fn request_stalled(&self) -> bool {
        self.on_request.stalled.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next connections get these faults, in order.
    pub fn push(&self, faults: &[Fault]) {
        self.queue.lock().unwrap().extend(faults.iter().cloned());
    }

    /// From now on every new connection stalls (or, with false, passes again).
    pub fn stall_all(&self, on: bool) {
        self.stall_all.store(on, Ordering::SeqCst);
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and Content-Length body) so the client is not cut off
/// while sending, which it would see as a network error rather than the status.
fn read_request(c: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut b = [0u8; 8192];
    let head_end = loop {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

/// Client to server, byte for byte, until the request picked by `on` shows up: from
/// then on the client's bytes are read and dropped.
fn pump_up(mut c: TcpStream, mut s: TcpStream, on: &OnRequest) {
    let mut b = [0u8; 16384];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let rule = on.rule.lock().unwrap().clone();
        if let Some((pattern, nth)) = rule.filter(|_| !on.stalled.load(Ordering::SeqCst)) {
            // The pattern may straddle two reads: search the last bytes of the previous
            // one too, counting only matches that end in this one.
            let mut window = std::mem::take(&mut tail);
            let old = window.len();
            window.extend_from_slice(&b[..n]);
            let p = pattern.as_bytes();
            let hits = window
                .windows(p.len())
                .enumerate()
                .filter(|(i, w)| *w == p && i + p.len() > old)
                .count();
            tail = window[window.len().saturating_sub(p.len())..].to_vec();
            if hits > 0 && on.seen.fetch_add(hits, Ordering::SeqCst) + hits >= nth {
                on.stalled.store(true, Ordering::SeqCst);
                while matches!(c.read(&mut b), Ok(n) if n > 0) {}
                break;
            }
        }
        if s.write_all(&b[..n]).is_err() {
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
}

fn serve(mut client: TcpStream, upstream: u16, fault: Option<Fault>, on: Arc<OnRequest>) {
    match fault {
        Some(Fault::Status(code, s3_code)) => {
            read_request(&mut client);
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            let _ = write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Some(Fault::Stall) => {
            read_request(&mut client);
            // Hold the connection open, answering nothing, until the client gives up.
            let mut b = [0u8; 1024];
            while matches!(client.read(&mut b), Ok(n) if n > 0) {}
        }
        None => {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = std::thread::spawn(move || pump_up(c2, s2, &on));
            let (mut s3, mut c3) = (server, client);
            let _ = std::io::copy(&mut s3, &mut c3);
            let _ = c3.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        }
    }
}
