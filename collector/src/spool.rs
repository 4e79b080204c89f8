//! Disk spool: closed batches that ClickHouse cannot take now, kept on disk in order until it can.
//!
//! In: [`Batch`]es from the sink writer ([`crate::sink::SinkWriter`]) when an insert failed with
//! a retryable error, when the schema is not ready yet or a retry is pending, or when ClickHouse
//! is slower than the input (every insert slot busy and a batch waiting). Out: the same
//! batches, oldest first, for the writer to replay ([`Spool::oldest_except`] skips the ones
//! already being replayed when several inserts are in flight).
//!
//! **Format.** One batch per segment file `<sequence>.seg` (20 digits, so names sort in order):
//! an 8-byte magic `EGSPOOL1`, the table kind (1 flows, 2 interface counters, 3 exporter
//! stats, 4 flows already in RowBinary), the row count (u32 LE), the payload length (u64 LE),
//! the CRC-32 of the payload (u32 LE), and the rows as `postcard` (compact serde), or for kind
//! 4 the RowBinary bytes as they are inserted. A segment is written to `<sequence>.tmp`
//! and renamed into place, so a crash never leaves a half-written `.seg`; leftover `.tmp` files
//! are removed at open. A segment whose magic, lengths or checksum do not match is renamed to
//! `.bad`, counted (`egress_spool_corrupt_segments_total`) and skipped, never replayed.
//!
//! **fsync policy** (`spool.fsync`): `batch` (default) syncs each segment file and the
//! directory before the batch counts as spooled, so spooled rows survive a `kill -9` and a power
//! loss; `none` leaves the writing to the page cache, which survives a `kill -9` of the process
//! but not a crash of the machine, for disks where a sync per batch is too slow.
//!
//! **Bound.** At most `spool.max_bytes` of segments. When a new batch would exceed it, the
//! oldest segments are deleted first and their rows counted as dropped with reason `spool_full`
//! (logged at ERROR: data is lost, and `egress_records_dropped_total{reason="spool_full"}` is
//! what to alert on). Nothing else ever deletes a segment but a successful replay.
//!
//! **Duplicates.** A replayed batch is deleted after ClickHouse acknowledged it. A crash between
//! the two replays that batch again after the restart: at most one batch (`batch.max_rows`
//! rows) per crash is stored twice. Replicated tables on current servers deduplicate an
//! identical block by themselves; plain MergeTree tables do not. Batches that never reached
//! ClickHouse are never duplicated.
//!
//! **One owner.** The directory is locked (`flock` on `<dir>/LOCK`) while a collector uses it:
//! each collector instance needs its own spool directory. The lock goes with the process, so a
//! killed collector's spool opens at once on restart, and its segments are replayed first.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, EncodedFlows};

/// First bytes of every segment file.
const MAGIC: &[u8; 8] = b"EGSPOOL1";
/// Bytes before the payload: magic, kind, rows, payload length, CRC-32.
const HEADER_BYTES: usize = 8 + 1 + 4 + 8 + 4;

/// When spooled data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Sync every segment and the directory: survives a power loss.
    #[default]
    Batch,
    /// Leave it to the page cache: survives a killed process, not a crashed machine.
    None,
}

/// The `[spool]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Keep batches on disk while ClickHouse is down or slow. Off: a failed batch is retried in
    /// memory and the input queue absorbs what it can (what it cannot is dropped, `queue_full`).
    pub enabled: bool,
    /// Directory of the segment files; created if missing. One per collector instance.
    pub dir: PathBuf,
    /// Most bytes of segments kept; beyond it the oldest are dropped (`spool_full`).
    pub max_bytes: u64,
    /// `batch` (sync each segment) or `none` (page cache); see the module documentation.
    pub fsync: FsyncPolicy,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from(".local/spool"),
            max_bytes: 1 << 30,
            fsync: FsyncPolicy::Batch,
        }
    }
}

impl SpoolConfig {
    /// Every problem with this section, each starting with its key (without `spool.`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled && self.dir.as_os_str().is_empty() {
            problems.push("dir: must not be empty when the spool is enabled".to_owned());
        }
        if self.enabled && self.max_bytes < 1 << 20 {
            problems.push(format!(
                "max_bytes: {} is below the minimum of 1 MiB",
                self.max_bytes
            ));
        }
        problems
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The directory or a segment could not be read or written.
    #[error("spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error("spool {0}: locked by another collector (each instance needs its own spool.dir)")]
    Locked(String),
    /// A batch could not be encoded (a bug).
    #[error("spool: cannot encode a batch: {0}")]
    Encode(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, SpoolError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    sequence: u64,
    bytes: u64,
    kind: u8,
    rows: u32,
}

/// Rows of a spooled batch that the bound forced out, by table kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Flow records dropped.
    pub flows: u64,
    /// Interface counter samples dropped.
    pub counters: u64,
    /// Exporter statistics rows dropped.
    pub stats: u64,
}

impl Evicted {
    fn add(&mut self, kind: u8, rows: u32) {
        let rows = u64::from(rows);
        match kind {
            1 | 4 => self.flows += rows,
            2 => self.counters += rows,
            _ => self.stats += rows,
        }
    }
}

/// The next batch to replay: its identity and rows.
#[derive(Debug)]
pub struct Spooled {
    /// Sequence number; give it to [`Spool::remove`] once ClickHouse has the rows.
    pub sequence: u64,
    /// The rows.
    pub batch: Batch,
}

/// The spool directory and its segments, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    fsync: FsyncPolicy,
    segments: VecDeque<Segment>,
    total_bytes: u64,
    next_sequence: u64,
    corrupt: u64,
    /// Held for the lifetime of the spool: the `flock` on `LOCK`.
    _lock: nix::fcntl::Flock<File>,
}

impl Spool {
    /// Opens (creating if needed) and locks the directory, removes leftover `.tmp` files and
    /// lists the segments in order.
    pub fn open(config: &SpoolConfig) -> Result<Self> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| SpoolError::Locked(dir.display().to_string()))?;
        let mut segments = Vec::new();
        // Sequence numbers are never reused, not even those of set-aside (`.bad`) segments.
        let mut highest: Option<u64> = None;
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let (Some(stem), Some(extension)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if let (Ok(sequence), "seg" | "bad") = (stem.parse::<u64>(), extension) {
                highest = highest.max(Some(sequence));
            }
            match (extension, stem.parse::<u64>()) {
                ("tmp", _) => fs::remove_file(&path).map_err(io(&path))?,
                ("seg", Ok(sequence)) => {
                    let header = read_header(&path);
                    match header {
                        Some((kind, rows, payload)) => segments.push(Segment {
                            sequence,
                            bytes: (HEADER_BYTES as u64).saturating_add(payload),
                            kind,
                            rows,
                        }),
                        None => quarantine(&path)?,
                    }
                }
                _ => {}
            }
        }
        segments.sort_by_key(|s| s.sequence);
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let next_sequence = highest.map_or(0, |h| h + 1);
        Ok(Self {
            dir,
            max_bytes: config.max_bytes,
            fsync: config.fsync,
            segments: segments.into(),
            total_bytes,
            next_sequence,
            corrupt: 0,
            _lock: lock,
        })
    }

    /// No batch waiting.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Batches waiting.
    pub fn batches(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of segments on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Rows waiting, flow records only.
    pub fn flow_records(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| matches!(s.kind, 1 | 4))
            .map(|s| u64::from(s.rows))
            .sum()
    }

    /// Corrupt segments found (and set aside) since open.
    pub fn corrupt_segments(&self) -> u64 {
        self.corrupt
    }

    fn path(&self, sequence: u64, extension: &str) -> PathBuf {
        self.dir.join(format!("{sequence:020}.{extension}"))
    }

    /// Writes `batch` as the newest segment. When the bound requires it, the oldest segments
    /// are deleted first; their rows are returned so the caller can count them. A batch larger
    /// than the whole bound is still written, alone (the configuration check keeps
    /// `spool.max_bytes` at four batches or more, so this does not happen in practice).
    pub fn append(&mut self, batch: &Batch) -> Result<Evicted> {
        let (kind, rows, payload) = match batch {
            Batch::Flows(rows) => (1, rows.len(), postcard::to_stdvec(rows).map(Cow::Owned)),
            Batch::EncodedFlows(encoded) => (4, encoded.rows, Ok(Cow::Borrowed(&encoded.bytes[..]))),
            Batch::Counters(rows) => (2, rows.len(), postcard::to_stdvec(rows).map(Cow::Owned)),
            Batch::Stats(rows) => (3, rows.len(), postcard::to_stdvec(rows).map(Cow::Owned)),
        };
        let payload = payload.map_err(|e| SpoolError::Encode(e.to_string()))?;
        let rows = u32::try_from(rows).map_err(|_| SpoolError::Encode("more than 2^32 rows".into()))?;
        let bytes = (HEADER_BYTES + payload.len()) as u64;
        let mut evicted = Evicted::default();
        while self.total_bytes + bytes > self.max_bytes {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            let path = self.path(oldest.sequence, "seg");
            fs::remove_file(&path).map_err(io(&path))?;
            self.total_bytes -= oldest.bytes;
            evicted.add(oldest.kind, oldest.rows);
        }
        let sequence = self.next_sequence;
        let tmp = self.path(sequence, "tmp");
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.push(kind);
        header.extend_from_slice(&rows.to_le_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        file.write_all(&header).map_err(io(&tmp))?;
        file.write_all(&payload).map_err(io(&tmp))?;
        if self.fsync == FsyncPolicy::Batch {
            file.sync_all().map_err(io(&tmp))?;
        }
        drop(file);
        let path = self.path(sequence, "seg");
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if self.fsync == FsyncPolicy::Batch {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        self.next_sequence += 1;
        self.total_bytes += bytes;
        self.segments.push_back(Segment {
            sequence,
            bytes,
            kind,
            rows,
        });
        Ok(evicted)
    }

    /// The oldest batch whose sequence is not in `skip` (the ones being replayed already, when
    /// several inserts are in flight), read back and verified. A corrupt segment is set aside
    /// (renamed `.bad`, counted) and the next one is tried. `None` when there is none.
    pub fn oldest_except(&mut self, skip: &[u64]) -> Result<Option<Spooled>> {
        let mut index = 0;
        while let Some(segment) = self.segments.get(index).cloned() {
            if skip.contains(&segment.sequence) {
                index += 1;
                continue;
            }
            let path = self.path(segment.sequence, "seg");
            match read_segment(&path) {
                Ok(Some(batch)) => {
                    return Ok(Some(Spooled {
                        sequence: segment.sequence,
                        batch,
                    }))
                }
                Ok(None) => {
                    tracing::error!(path = %path.display(), rows = segment.rows,
                        "corrupt spool segment set aside (.bad); its rows are not replayed");
                    quarantine(&path)?;
                    self.corrupt += 1;
                    self.forget(index);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Deletes the segment `sequence` once its rows are stored. Nothing to do when it is gone
    /// already (evicted by the bound meanwhile).
    pub fn remove(&mut self, sequence: u64) -> Result<()> {
        let Some(index) = self.segments.iter().position(|s| s.sequence == sequence) else {
            return Ok(());
        };
        let path = self.path(sequence, "seg");
        fs::remove_file(&path).map_err(io(&path))?;
        self.forget(index);
        Ok(())
    }

    fn forget(&mut self, index: usize) {
        if let Some(segment) = self.segments.remove(index) {
            self.total_bytes -= segment.bytes;
        }
    }
}

/// Kind, rows and payload length of a segment whose header is sound (length included).
fn read_header(path: &Path) -> Option<(u8, u32, u64)> {
    let mut file = File::open(path).ok()?;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact(&mut header).ok()?;
    let size = file.metadata().ok()?.len();
    parse_header(&header, size)
}

fn parse_header(header: &[u8], file_size: u64) -> Option<(u8, u32, u64)> {
    if header.get(..8)? != MAGIC {
        return None;
    }
    let kind = *header.get(8)?;
    let rows = u32::from_le_bytes(header.get(9..13)?.try_into().ok()?);
    let payload = u64::from_le_bytes(header.get(13..21)?.try_into().ok()?);
    let sound = (1..=4).contains(&kind) && (HEADER_BYTES as u64).checked_add(payload) == Some(file_size);
    sound.then_some((kind, rows, payload))
}

/// The batch of a segment; `None` when it is corrupt.
fn read_segment(path: &Path) -> Result<Option<Batch>> {
    let bytes = fs::read(path).map_err(io(path))?;
    let Some((kind, rows, _)) = bytes
        .get(..HEADER_BYTES)
        .and_then(|h| parse_header(h, bytes.len() as u64))
    else {
        return Ok(None);
    };
    let crc = u32::from_le_bytes(bytes[21..25].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    if crc32fast::hash(payload) != crc {
        return Ok(None);
    }
    let batch = match kind {
        1 => postcard::from_bytes(payload).map(Batch::Flows),
        4 => {
            // The RowBinary bytes are the payload itself: a slice of the segment as read, not
            // a copy (draining the header moved every byte of it).
            return Ok(Some(Batch::EncodedFlows(EncodedFlows {
                rows: rows as usize,
                bytes: bytes::Bytes::from(bytes).slice(HEADER_BYTES..),
            })));
        }
        2 => postcard::from_bytes(payload).map(Batch::Counters),
        _ => postcard::from_bytes(payload).map(Batch::Stats),
    };
    Ok(batch.ok().filter(|b| b.len() == rows as usize))
}

fn quarantine(path: &Path) -> Result<()> {
    let bad = path.with_extension("bad");
    fs::rename(path, &bad).map_err(io(path))
}

#[cfg(test)]
mod tests;
