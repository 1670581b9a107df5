//! Just enough tar for pg_basebackup's output: read the facts a base backup carries
//! (`backup_label`, the tail of `backup_manifest`) while the stream passes through, in
//! bounded memory, and unpack an archive into a new data directory.
//!
//! pg_basebackup writes ustar headers (names up to 99 bytes); GNU long names (`L`)
//! and pax path records (`x`) are understood too, so archives made by other tools
//! unpack as well.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

const BLOCK: usize = 512;
/// The manifest's WAL range and checksum sit in its last few hundred bytes.
const MANIFEST_TAIL: usize = 8192;
/// A backup_label is a few hundred bytes; anything larger is not one.
const LABEL_MAX: usize = 64 * 1024;

struct Header {
    name: String,
    size: u64,
    kind: u8,
    mode: u32,
    link: String,
}

fn field_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn octal(b: &[u8]) -> Result<u64> {
    if b.first().is_some_and(|c| c & 0x80 != 0) {
        // base-256 (GNU) for sizes over 8 GiB
        let mut v: u64 = (b[0] & 0x7f) as u64;
        for &c in &b[1..] {
            v = (v << 8) | c as u64;
        }
        return Ok(v);
    }
    let s = field_str(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).with_context(|| format!("bad octal field {s:?} in a tar header"))
}

fn parse_header(b: &[u8; BLOCK]) -> Result<Option<Header>> {
    if b.iter().all(|&c| c == 0) {
        return Ok(None);
    }
    let stored = octal(&b[148..156])?;
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                c as u64
            }
        })
        .sum();
    if stored != sum {
        bail!("tar header checksum mismatch (damaged archive or not a tar stream)");
    }
    let mut name = field_str(&b[0..100]);
    if &b[257..262] == b"ustar" {
        let prefix = field_str(&b[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    Ok(Some(Header {
        name,
        size: octal(&b[124..136])?,
        kind: b[156],
        mode: octal(&b[100..108])? as u32,
        link: field_str(&b[157..257]),
    }))
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// What a base backup's tar stream said about itself.
#[derive(Debug, Default, Clone)]
pub struct BaseFacts {
    pub backup_label: Option<String>,
    /// The last bytes of `backup_manifest` (its WAL-Ranges and checksum).
    pub manifest_tail: Option<String>,
    pub files: u64,
    pub ended: bool,
}

enum State {
    Header {
        buf: Box<[u8; BLOCK]>,
        filled: usize,
    },
    Data {
        left: u64,
        pad: u64,
        capture: Capture,
    },
    Done,
}

#[derive(PartialEq)]
enum Capture {
    None,
    Label,
    Manifest,
}

/// Passes a tar stream through unchanged, noting the base backup's facts on the way.
pub struct Sniffer<R> {
    inner: R,
    state: State,
    facts: BaseFacts,
    label: Vec<u8>,
    tail: Vec<u8>,
    error: Option<String>,
}

impl<R: Read> Sniffer<R> {
    pub fn new(inner: R) -> Self {
        Sniffer {
            inner,
            state: State::Header {
                buf: Box::new([0; BLOCK]),
                filled: 0,
            },
            facts: BaseFacts::default(),
            label: Vec::new(),
            tail: Vec::new(),
            error: None,
        }
    }

    pub fn into_facts(self) -> Result<(BaseFacts, R)> {
        if let Some(e) = self.error {
            bail!("reading pg_basebackup's tar stream: {e}");
        }
        let mut f = self.facts;
        if !self.label.is_empty() {
            f.backup_label = Some(String::from_utf8_lossy(&self.label).into_owned());
        }
        if !self.tail.is_empty() {
            f.manifest_tail = Some(String::from_utf8_lossy(&self.tail).into_owned());
        }
        Ok((f, self.inner))
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Header { buf, filled } => {
                    let n = (BLOCK - *filled).min(data.len());
                    buf[*filled..*filled + n].copy_from_slice(&data[..n]);
                    *filled += n;
                    data = &data[n..];
                    if *filled == BLOCK {
                        match parse_header(buf) {
                            Ok(None) => {
                                self.facts.ended = true;
                                self.state = State::Done;
                            }
                            Ok(Some(h)) => {
                                let capture = match h.name.trim_start_matches("./") {
                                    "backup_label" => Capture::Label,
                                    "backup_manifest" => Capture::Manifest,
                                    _ => Capture::None,
                                };
                                if matches!(h.kind, b'0' | 0) {
                                    self.facts.files += 1;
                                }
                                self.state = State::Data {
                                    left: h.size,
                                    pad: padded(h.size) - h.size,
                                    capture,
                                };
                                self.advance_if_empty();
                            }
                            Err(e) => {
                                self.error = Some(format!("{e:#}"));
                                self.state = State::Done;
                            }
                        }
                    }
                }
                State::Data { left, pad, capture } => {
                    let total = *left + *pad;
                    let n = (total.min(data.len() as u64)) as usize;
                    let body = (*left).min(n as u64) as usize;
                    match capture {
                        Capture::Label if self.label.len() + body <= LABEL_MAX => {
                            self.label.extend_from_slice(&data[..body])
                        }
                        Capture::Manifest => {
                            self.tail.extend_from_slice(&data[..body]);
                            if self.tail.len() > MANIFEST_TAIL {
                                let cut = self.tail.len() - MANIFEST_TAIL;
                                self.tail.drain(..cut);
                            }
                        }
                        _ => {}
                    }
                    *left -= body as u64;
                    *pad -= (n - body) as u64;
                    data = &data[n..];
                    self.advance_if_empty();
                }
            }
        }
    }

    fn advance_if_empty(&mut self) {
        if let State::Data {
            left: 0, pad: 0, ..
        } = self.state
        {
            self.state = State::Header {
                buf: Box::new([0; BLOCK]),
                filled: 0,
            };
        }
    }
}

impl<R: Read> Read for Sniffer<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// Reads a base backup's tar to the end: every header checksum, a backup_label,
/// a backup_manifest, and the end-of-archive marker.
pub fn check_base_backup(r: &mut dyn Read) -> Result<String> {
    let mut s = Sniffer::new(r);
    std::io::copy(&mut s, &mut std::io::sink())?;
    let (f, _) = s.into_facts()?;
    if !f.ended {
        bail!("the tar stream ends without the end-of-archive marker (truncated?)");
    }
    if f.backup_label.is_none() {
        bail!("the tar holds no backup_label: not a base backup");
    }
    Ok(format!(
        "tar whole: {} files, backup_label{}",
        f.files,
        if f.manifest_tail.is_some() {
            " and backup_manifest present"
        } else {
            " present (no backup_manifest)"
        }
    ))
}

/// Flushes everything written under `root` to disk: one syncfs(2) of its filesystem
/// (far faster than an fsync per file for a data directory of thousands of files).
pub fn sync_tree(root: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs takes a valid open file descriptor, which `d` holds.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncing the filesystem of {}", root.display()));
    }
    Ok(())
}

fn safe_join(root: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => bail!("refusing tar entry `{name}`: it points outside the data directory"),
        }
    }
    Ok(out)
}

fn skip(r: &mut dyn Read, n: u64) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if got != n {
        bail!("the archive ends in the middle of an entry");
    }
    Ok(())
}

fn read_body(r: &mut dyn Read, size: u64) -> Result<Vec<u8>> {
    if size > 1 << 20 {
        bail!("tar metadata entry of {size} bytes is too large");
    }
    let mut v = vec![0u8; size as usize];
    r.read_exact(&mut v)?;
    skip(r, padded(size) - size)?;
    Ok(v)
}

/// Unpacks a tar stream into `root` (which must exist). Returns the number of files.
/// Modes are kept (masked to the owner's bits, as PostgreSQL wants); ownership is not.
/// Files are not synced one by one: call [`sync_tree`] once at the end.
pub fn extract(r: &mut dyn Read, root: &Path) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = 0u64;
    let mut long_name: Option<String> = None;
    let mut buf = [0u8; BLOCK];
    loop {
        r.read_exact(&mut buf)
            .context("reading a tar header (archive truncated?)")?;
        let Some(h) = parse_header(&buf)? else {
            break;
        };
        let name = long_name.take().unwrap_or(h.name.clone());
        match h.kind {
            b'L' => {
                let v = read_body(r, h.size)?;
                long_name = Some(field_str(&v));
                continue;
            }
            b'x' => {
                let v = read_body(r, h.size)?;
                let text = String::from_utf8_lossy(&v);
                for rec in text.split('\n') {
                    if let Some((_, kv)) = rec.split_once(' ') {
                        if let Some(p) = kv.strip_prefix("path=") {
                            long_name = Some(p.to_string());
                        }
                    }
                }
                continue;
            }
            b'g' => {
                read_body(r, h.size)?;
                continue;
            }
            _ => {}
        }
        let path = safe_join(root, &name)?;
        match h.kind {
            b'0' | 0 | b'7' => {
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d)?;
                }
                let mut f = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let got = std::io::copy(&mut r.take(h.size), &mut f)
                    .with_context(|| format!("writing {}", path.display()))?;
                if got != h.size {
                    bail!("the archive ends in the middle of `{name}`");
                }
                f.flush()?;
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode((h.mode & 0o700).max(0o600)),
                )?;
                skip(r, padded(h.size) - h.size)?;
                files += 1;
            }
            b'5' => {
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
                skip(r, padded(h.size))?;
            }
            b'2' => {
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d)?;
                }
                std::os::unix::fs::symlink(&h.link, &path)
                    .with_context(|| format!("creating symlink {}", path.display()))?;
                skip(r, padded(h.size))?;
            }
            other => bail!(
                "tar entry `{name}` has type {:?}, which a base backup never contains",
                other as char
            ),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64, kind: u8) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..107].copy_from_slice(b"0000600");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[156] = kind;
        b[257..263].copy_from_slice(b"ustar\0");
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|&c| c as u64).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (n, d) in entries {
            v.extend_from_slice(&header(n, d.len() as u64, b'0'));
            v.extend_from_slice(d);
            v.resize(v.len() + (padded(d.len() as u64) as usize - d.len()), 0);
        }
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    #[test]
    fn sniffs_label_and_manifest_tail_in_small_reads() {
        let big = vec![b'x'; 20000];
        let mut manifest = big.clone();
        manifest.extend_from_slice(b"\"WAL-Ranges\": [ { \"Timeline\": 1 } ]}");
        let tar = archive(&[
            ("backup_label", b"START WAL LOCATION: 0/2000028"),
            ("base/1/1", &big),
            ("backup_manifest", &manifest),
        ]);
        let mut s = Sniffer::new(std::io::Cursor::new(tar.clone()));
        let mut out = Vec::new();
        let mut buf = [0u8; 77];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, tar);
        let (f, _) = s.into_facts().unwrap();
        assert_eq!(
            f.backup_label.as_deref(),
            Some("START WAL LOCATION: 0/2000028")
        );
        let tail = f.manifest_tail.unwrap();
        assert!(tail.len() <= MANIFEST_TAIL && tail.ends_with("]}"));
        assert_eq!(f.files, 3);
        assert!(f.ended);
    }

    #[test]
    fn extracts_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let tar = archive(&[("a/b", b"hello"), ("PG_VERSION", b"15\n")]);
        let n = extract(&mut std::io::Cursor::new(tar), d.path()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(d.path().join("a/b")).unwrap(), b"hello");
        let bad = archive(&[("../evil", b"x")]);
        let e = extract(&mut std::io::Cursor::new(bad), d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("outside"), "{e:#}");
    }
}
