//! pg_basebackup's tar output, on top of the `tar` crate: read the facts a base backup
//! carries (`backup_label`, the tail of `backup_manifest`) while the stream passes
//! through, in bounded memory, and unpack an archive into a new data directory.
//!
//! `tar::Archive` pulls entries from a reader, but a backup pushes pg_basebackup's
//! stdout straight to storage, so [`Sniffer`] stays a pass-through and walks the headers
//! of the bytes going by with `tar::Header` (checksums, octal and base-256 sizes, ustar
//! prefixes are the crate's). [`extract`] unpacks with `tar::Archive`, which also reads
//! GNU long names and pax records, through a Sniffer as well: the crate reads those
//! metadata entries whole, and the Sniffer refuses oversized ones before it can, and
//! tells an archive cut at an entry boundary from a whole one.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use tar::{EntryType, Header};

const BLOCK: usize = 512;
/// The manifest's WAL range and checksum sit in its last few hundred bytes.
const MANIFEST_TAIL: usize = 8192;
/// A backup_label is a few hundred bytes; anything larger is not one.
const LABEL_MAX: u64 = 64 * 1024;
/// Long names and pax records are a few hundred bytes; `tar::Archive` buffers them
/// whole, so a damaged size field must not get that far.
const META_MAX: u64 = 1 << 20;

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// The `size` record of a pax header, which overrides the next member's header size:
/// the walk must skip what `tar::Archive` skips or it loses the header boundaries.
fn pax_size(records: &[u8]) -> Option<u64> {
    tar::PaxExtensions::new(records)
        .map_while(Result::ok)
        .find(|e| e.key() == Ok("size"))?
        .value()
        .ok()?
        .parse()
        .ok()
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

enum Keep {
    Nothing,
    Label,
    Manifest,
    Pax,
}

enum State {
    Header,
    Data { left: u64, pad: u64, keep: Keep },
    Done,
}

/// Passes a tar stream through unchanged, noting the base backup's facts on the way.
/// A stream that stops being tar (bad checksum, oversized metadata entry) fails the
/// read that shows it, so nothing more is uploaded or unpacked after it.
pub struct Sniffer<R> {
    inner: R,
    state: State,
    head: [u8; BLOCK],
    filled: usize,
    facts: BaseFacts,
    label: Vec<u8>,
    tail: Vec<u8>,
    pax: Vec<u8>,
    error: Option<String>,
}

impl<R: Read> Sniffer<R> {
    pub fn new(inner: R) -> Self {
        Sniffer {
            inner,
            state: State::Header,
            head: [0; BLOCK],
            filled: 0,
            facts: BaseFacts::default(),
            label: Vec::new(),
            tail: Vec::new(),
            pax: Vec::new(),
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

    fn observe(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => break,
                State::Header => {
                    let n = (BLOCK - self.filled).min(data.len());
                    self.head[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    self.filled += n;
                    data = &data[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.state = self.on_header()?;
                    }
                }
                State::Data { left, pad, keep } => {
                    let n = (*left + *pad).min(data.len() as u64) as usize;
                    let body = &data[..(*left).min(n as u64) as usize];
                    match keep {
                        Keep::Nothing => {}
                        Keep::Label => self.label.extend_from_slice(body),
                        Keep::Pax => self.pax.extend_from_slice(body),
                        Keep::Manifest => {
                            let body = &body[body.len().saturating_sub(MANIFEST_TAIL)..];
                            self.tail.extend_from_slice(body);
                            let cut = self.tail.len().saturating_sub(MANIFEST_TAIL);
                            self.tail.drain(..cut);
                        }
                    }
                    *left -= body.len() as u64;
                    *pad -= (n - body.len()) as u64;
                    if *left == 0 && *pad == 0 {
                        self.state = State::Header;
                    }
                    data = &data[n..];
                }
            }
        }
        Ok(())
    }

    /// Reads the header block just collected and says what follows it.
    fn on_header(&mut self) -> Result<State> {
        if self.head.iter().all(|&c| c == 0) {
            self.facts.ended = true;
            return Ok(State::Done);
        }
        let h = Header::from_byte_slice(&self.head);
        let mut summed = h.clone();
        summed.set_cksum();
        if h.cksum().ok() != summed.cksum().ok() {
            bail!("tar header checksum mismatch (damaged archive or not a tar stream)");
        }
        let kind = h.entry_type();
        let mut size = h.entry_size()?;
        let keep = if matches!(
            kind,
            EntryType::GNULongName
                | EntryType::GNULongLink
                | EntryType::XHeader
                | EntryType::XGlobalHeader
        ) {
            if size > META_MAX {
                bail!("tar metadata entry of {size} bytes is too large");
            }
            if kind == EntryType::XHeader {
                self.pax.clear();
                Keep::Pax
            } else {
                Keep::Nothing
            }
        } else {
            size = pax_size(&self.pax).unwrap_or(size);
            self.pax.clear();
            if kind.is_file() {
                self.facts.files += 1;
            }
            let path = h.path()?;
            match path.to_str().map(|p| p.trim_start_matches("./")) {
                Some("backup_label") if size <= LABEL_MAX => {
                    self.label.clear();
                    Keep::Label
                }
                Some("backup_manifest") => {
                    self.tail.clear();
                    Keep::Manifest
                }
                _ => Keep::Nothing,
            }
        };
        Ok(if size == 0 {
            State::Header
        } else {
            State::Data {
                left: size,
                pad: padded(size) - size,
                keep,
            }
        })
    }
}

impl<R: Read> Read for Sniffer<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.error.is_none() {
            let n = self.inner.read(buf)?;
            match self.observe(&buf[..n]) {
                Ok(()) => return Ok(n),
                Err(e) => {
                    self.error = Some(format!("{e:#}"));
                    self.state = State::Done;
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            self.error.clone().unwrap_or_default(),
        ))
    }
}

/// Reads a base backup's tar to the end: every header checksum, a backup_label,
/// a backup_manifest, and the end-of-archive marker.
pub fn check_base_backup(r: &mut dyn Read) -> Result<String> {
    let mut s = Sniffer::new(r);
    std::io::copy(&mut s, &mut std::io::sink()).context("reading pg_basebackup's tar stream")?;
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

/// `root` joined with an entry's name, refused if the name leaves `root` on its own
/// (`tar::Entry::unpack_in` would silently skip `..` names and strip a leading `/`).
fn safe_join(root: &Path, name: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => bail!(
                "refusing tar entry `{}`: it points outside the data directory",
                name.display()
            ),
        }
    }
    Ok(out)
}

/// Unpacks a tar stream into `root` (which must exist). Returns the number of files.
/// Modes are kept (masked to the owner's bits, as PostgreSQL wants); ownership and
/// mtimes are not. Symlinks are made as the archive says, wherever they point (a
/// tablespace link points outside by design), but nothing is written through one:
/// `unpack_in` refuses an entry whose parent resolves outside `root`, and replaces
/// rather than follows a symlink standing where a file goes.
/// Files are not synced one by one: call [`sync_tree`] once at the end.
pub fn extract(r: &mut dyn Read, root: &Path) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let mut archive = tar::Archive::new(Sniffer::new(r));
    archive.set_preserve_mtime(false);
    archive.set_mask(0o077);
    let mut files = 0u64;
    for entry in archive.entries().context("reading the tar stream")? {
        // A signal's cleanup empties `root`: stop writing into it.
        if crate::engine::cleanup::terminating() {
            bail!("interrupted");
        }
        let mut entry = entry.context("reading the tar stream")?;
        let name = entry.path()?.into_owned();
        let path = safe_join(root, &name)?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous => files += 1,
            EntryType::Directory | EntryType::Symlink => {}
            EntryType::XGlobalHeader => continue,
            other => bail!(
                "tar entry `{}` has type {:?}, which a base backup never contains",
                name.display(),
                other.as_byte() as char
            ),
        }
        entry
            .unpack_in(root)
            .with_context(|| format!("unpacking tar entry `{}`", name.display()))?;
        if kind == EntryType::Symlink {
            continue;
        }
        // The crate set the header's mode under the 0o077 mask; a file PostgreSQL must
        // write and a directory it must enter need more than that.
        let set = entry.header().mode().unwrap_or(0) & 0o700;
        let want = if kind.is_dir() { 0o700 } else { set.max(0o600) };
        if want != set {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
        }
    }
    let (facts, _) = archive.into_inner().into_facts()?;
    if !facts.ended {
        bail!("the archive ends without the end-of-archive marker (truncated?)");
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt;

    /// One entry, its name and link written as given: `tar::Builder` refuses to
    /// write the hostile names these tests need.
    fn entry(name: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) -> Vec<u8> {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(data);
        v.resize(padded(v.len() as u64) as usize, 0);
        v
    }

    fn file(name: &str, data: &[u8]) -> Vec<u8> {
        entry(name, EntryType::Regular, 0o600, "", data)
    }

    fn symlink(name: &str, target: &str) -> Vec<u8> {
        entry(name, EntryType::Symlink, 0o777, target, b"")
    }

    fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut v = entries.concat();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    fn unpack(tar: Vec<u8>, root: &Path) -> Result<u64> {
        extract(&mut Cursor::new(tar), root)
    }

    /// A tempdir holding an empty `data` directory to unpack into.
    fn data_dir() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        std::fs::create_dir(&root).unwrap();
        (t, root)
    }

    #[test]
    fn sniffs_label_and_manifest_tail_in_small_reads() {
        let big = vec![b'x'; 20000];
        let mut manifest = big.clone();
        manifest.extend_from_slice(b"\"WAL-Ranges\": [ { \"Timeline\": 1 } ]}");
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("backup_label", &b"START WAL LOCATION: 0/2000028"[..]),
            ("base/1/1", &big),
            ("backup_manifest", &manifest),
        ] {
            let mut h = Header::new_ustar();
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut s = Sniffer::new(Cursor::new(tar.clone()));
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
        let tar = archive(&[file("a/b", b"hello"), file("PG_VERSION", b"15\n")]);
        let n = unpack(tar, d.path()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(d.path().join("a/b")).unwrap(), b"hello");
        let bad = archive(&[file("../evil", b"x")]);
        let e = unpack(bad, d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("outside"), "{e:#}");
    }

    #[test]
    fn refuses_parent_dir_entries_and_writes_nothing_outside() {
        for name in ["../escape", "base/../../escape", "./../escape"] {
            let (t, root) = data_dir();
            let tar = archive(&[file("PG_VERSION", b"15\n"), file(name, b"x")]);
            let e = format!("{:#}", unpack(tar, &root).unwrap_err());
            assert!(
                e.contains(&format!("`{name}`")) && e.contains("outside"),
                "{e}"
            );
            assert!(!t.path().join("escape").exists());
        }
    }

    #[test]
    fn refuses_absolute_entries() {
        let (t, root) = data_dir();
        let abs = t.path().join("abs");
        for name in ["/tmp/x", abs.to_str().unwrap()] {
            let tar = archive(&[file(name, b"x")]);
            let e = format!("{:#}", unpack(tar, &root).unwrap_err());
            assert!(
                e.contains(&format!("`{name}`")) && e.contains("outside"),
                "{e}"
            );
        }
        assert!(!abs.exists());
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn symlinks_are_made_as_archived_but_never_written_through() {
        let (t, root) = data_dir();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"orig").unwrap();
        let out = outside.to_str().unwrap();

        // A tablespace link pointing outside is made as is, as before...
        let tar = archive(&[
            symlink("pg_tblspc/16384", out),
            symlink("up", ".."),
            file("pg_tblspc/16384/evil", b"x"),
        ]);
        let e = format!("{:#}", unpack(tar, &root).unwrap_err());
        assert!(
            e.contains("`pg_tblspc/16384/evil`") && e.contains("outside"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_link(root.join("pg_tblspc/16384")).unwrap(),
            outside
        );
        assert_eq!(
            std::fs::read_link(root.join("up")).unwrap(),
            Path::new("..")
        );
        // ...but nothing goes through one, whether into a directory...
        let e = format!(
            "{:#}",
            unpack(archive(&[file("up/evil", b"x")]), &root).unwrap_err()
        );
        assert!(e.contains("`up/evil`") && e.contains("outside"), "{e}");
        let e = unpack(
            archive(&[entry("up/d", EntryType::Directory, 0o700, "", b"")]),
            &root,
        );
        assert!(e.is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        assert!(!t.path().join("evil").exists() && !t.path().join("d").exists());

        // ...or onto a file: the link is replaced, its target left alone.
        let keep = outside.join("keep");
        let tar = archive(&[symlink("s", keep.to_str().unwrap()), file("s", b"new")]);
        assert_eq!(unpack(tar, &root).unwrap(), 1);
        assert_eq!(std::fs::read(&keep).unwrap(), b"orig");
        assert_eq!(std::fs::read(root.join("s")).unwrap(), b"new");

        // Hard links are refused outright, as before.
        let tar = archive(&[entry("h", EntryType::Link, 0o600, "/etc/passwd", b"")]);
        let e = format!("{:#}", unpack(tar, &root).unwrap_err());
        assert!(e.contains("`h`") && e.contains("never contains"), "{e}");
        assert!(!root.join("h").exists());
    }

    #[test]
    fn keeps_owner_modes_and_directories() {
        let (_t, root) = data_dir();
        let tar = archive(&[
            entry("base", EntryType::Directory, 0o755, "", b""),
            entry("base/1", EntryType::Regular, 0o644, "", b"a"),
            entry("ro", EntryType::Regular, 0o400, "", b"b"),
            entry("x", EntryType::Regular, 0o750, "", b"c"),
            entry("pg_wal/", EntryType::Directory, 0o700, "", b""),
        ]);
        assert_eq!(unpack(tar, &root).unwrap(), 3);
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("base"), 0o700);
        assert_eq!(mode("base/1"), 0o600);
        assert_eq!(mode("ro"), 0o600);
        assert_eq!(mode("x"), 0o700);
        assert!(root.join("pg_wal").is_dir());
    }

    #[test]
    fn reads_gnu_long_names_and_pax_records() {
        let long = format!("base/{}/1", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(5);
        b.append_data(&mut h, "backup_label", &b"label"[..])
            .unwrap();
        let mut h = Header::new_gnu();
        h.set_size(4);
        b.append_data(&mut h, &long, &b"long"[..]).unwrap();
        // Not `into_inner`: that would end the archive here.
        let mut tar = std::mem::take(b.get_mut());
        let rec = |k: &str, v: &str| {
            // A pax record's length counts its own digits.
            let body = format!(" {k}={v}\n");
            let n = (1..)
                .find(|n: &usize| n.to_string().len() + body.len() == *n)
                .unwrap();
            format!("{n}{body}")
        };
        let pax = rec("path", &format!("global/{}", "p".repeat(120)));
        tar.extend(entry(
            "PaxHeader",
            EntryType::XHeader,
            0o600,
            "",
            pax.as_bytes(),
        ));
        tar.extend(file("short", b"pax path"));
        // A pax size overrides the header's: the walk must skip what the crate skips.
        tar.extend(entry(
            "PaxHeader",
            EntryType::XHeader,
            0o600,
            "",
            rec("size", "600").as_bytes(),
        ));
        let mut sized = entry("sized", EntryType::Regular, 0o600, "", b"");
        sized.extend(vec![b'z'; 600]);
        sized.resize(padded(sized.len() as u64) as usize, 0);
        tar.extend(sized);
        tar.extend_from_slice(&[0u8; 1024]);

        let (_t, root) = data_dir();
        assert_eq!(unpack(tar.clone(), &root).unwrap(), 4);
        assert_eq!(std::fs::read(root.join(&long)).unwrap(), b"long");
        let pax_path = root.join(format!("global/{}", "p".repeat(120)));
        assert_eq!(std::fs::read(pax_path).unwrap(), b"pax path");
        assert_eq!(std::fs::read(root.join("sized")).unwrap(), vec![b'z'; 600]);
        let ok = check_base_backup(&mut Cursor::new(tar)).unwrap();
        assert!(ok.starts_with("tar whole: 4 files"), "{ok}");
    }

    #[test]
    fn refuses_truncated_damaged_and_oversized_archives() {
        let whole = archive(&[file("backup_label", b"label"), file("PG_VERSION", b"15\n")]);
        let cut = whole[..whole.len() - 1024].to_vec();
        let (_t, root) = data_dir();
        let e = format!("{:#}", unpack(cut.clone(), &root).unwrap_err());
        assert!(e.contains("end-of-archive"), "{e}");
        let e = format!(
            "{:#}",
            check_base_backup(&mut Cursor::new(cut)).unwrap_err()
        );
        assert!(e.contains("end-of-archive"), "{e}");

        let mut damaged = whole.clone();
        damaged[BLOCK * 2 + 1] ^= 1;
        let e = format!(
            "{:#}",
            check_base_backup(&mut Cursor::new(damaged.clone())).unwrap_err()
        );
        assert!(e.contains("checksum mismatch"), "{e}");
        let e = format!("{:#}", unpack(damaged, &root).unwrap_err());
        assert!(e.contains("checksum mismatch"), "{e}");

        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::GNULongName);
        h.set_size(1 << 40);
        h.set_cksum();
        let huge = h.as_bytes().to_vec();
        let e = format!("{:#}", unpack(huge, &root).unwrap_err());
        assert!(e.contains("too large"), "{e}");
    }
}
