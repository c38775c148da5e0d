//! The durable Raft log, in the data directory.
//!
//! - `raft.log`: an append-only file of records, each framed as `length (u32 LE) ·
//!   CRC-32 of the payload (u32 LE) · payload (JSON)`. A record is one log entry, a
//!   truncation (`[index, ∞)` removed, after a conflict with a new leader) or a purge
//!   (`[0, log id]` removed, once a snapshot covers them). Opening replays the file into
//!   memory; a torn or corrupt tail (a crash in the middle of a write) ends the replay
//!   and is cut off, which loses only entries whose append was never acknowledged.
//!   When purged records make up most of the file it is rewritten (temporary file,
//!   fsync, rename).
//! - `vote.json`: the vote, replaced atomically and fsynced before `save_vote` returns:
//!   a node must never forget whom it voted for in a term.
//! - `committed.json`: the last committed log id, written without fsync: it only saves
//!   re-applying entries on restart, and an older value is still correct.
//!
//! Appends are fsynced before openraft is told they are flushed (which is when the
//! node may acknowledge them to the leader). A truncation or purge is not fsynced on
//! its own: the next append's fsync covers it, and losing one is harmless (a purged
//! entry comes back as a redundant one, a truncated one is truncated again by the
//! leader). The whole live log is kept in memory: snapshots bound it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
/// A frame longer than this is corruption, not a record.
const MAX_RECORD: u32 = 64 << 20;
/// The log file is rewritten once it is this large and more than half of it is dead.
const COMPACT_MIN: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
enum Record {
    Entry(Entry),
    Truncate(u64),
    Purge(LogId),
}

/// The log store; clones share it (openraft reads through one while it writes through
/// another).
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    /// Bytes in `raft.log`.
    file_len: u64,
    /// Each live entry and the size of its record.
    entries: BTreeMap<u64, (Entry, u64)>,
    live_bytes: u64,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

fn io_err(e: impl std::error::Error + 'static) -> io::Error {
    io::Error::other(e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub(crate) fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            file_len: 0,
            file: file.try_clone()?,
            entries: BTreeMap::new(),
            live_bytes: 0,
            last_purged: None,
            vote: read_json(&dir.join(VOTE_FILE))?,
            committed: read_json(&dir.join(COMMITTED_FILE))?,
        };
        let good = inner.replay(&bytes);
        if good < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                kept = good,
                dropped = bytes.len() as u64 - good,
                "raft log: torn or corrupt tail cut off"
            );
            file.set_len(good)?;
            file.sync_all()?;
        }
        inner.file_len = good;
        inner.file.seek(SeekFrom::End(0))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fsutil::read_optional(path)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io_err),
        None => Ok(None),
    }
}

fn frame(record: &Record) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(record).map_err(io_err)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_RECORD)
        .ok_or_else(|| io::Error::other("raft log record too large"))?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

impl Inner {
    /// Applies the records of `bytes`; returns the length of the valid prefix.
    fn replay(&mut self, bytes: &[u8]) -> u64 {
        let mut at = 0usize;
        while let Some(header) = bytes.get(at..at + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD {
                break;
            }
            let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            let Ok(record) = serde_json::from_slice::<Record>(payload) else {
                break;
            };
            self.apply(record, 8 + u64::from(len));
            at += 8 + len as usize;
        }
        at as u64
    }

    fn apply(&mut self, record: Record, size: u64) {
        match record {
            Record::Entry(entry) => {
                // An entry at an index that is already there replaces it, and everything
                // after it: that is what a conflicting append means.
                self.remove_from(entry.log_id.index);
                self.live_bytes += size;
                self.entries.insert(entry.log_id.index, (entry, size));
            }
            Record::Truncate(index) => self.remove_from(index),
            Record::Purge(log_id) => {
                let keep = self.entries.split_off(&(log_id.index + 1));
                for (_, (_, size)) in std::mem::replace(&mut self.entries, keep) {
                    self.live_bytes -= size;
                }
                if self.last_purged.is_none_or(|p| p.index < log_id.index) {
                    self.last_purged = Some(log_id);
                }
            }
        }
    }

    fn remove_from(&mut self, index: u64) {
        for (_, (_, size)) in self.entries.split_off(&index) {
            self.live_bytes -= size;
        }
    }

    /// Appends whole records: on an error, what part of them reached the file is cut
    /// off, so that a later record does not follow a partial one (replay stops there).
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            let _ = self.file.set_len(self.file_len);
            return Err(e);
        }
        self.file_len += bytes.len() as u64;
        Ok(())
    }

    fn maybe_compact(&mut self) -> io::Result<()> {
        if self.file_len < COMPACT_MIN || self.file_len < 2 * self.live_bytes {
            return Ok(());
        }
        let path = self.dir.join(LOG_FILE);
        let tmp = path.with_extension("tmp");
        let mut out = Vec::with_capacity(self.live_bytes as usize + 64);
        if let Some(p) = self.last_purged {
            out.extend(frame(&Record::Purge(p))?);
        }
        for (entry, _) in self.entries.values() {
            out.extend(frame(&Record::Entry(entry.clone()))?);
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        fsutil::sync_dir(&path)?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.file_len = out.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.lock();
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock();
        let last = inner.entries.values().next_back().map(|(e, _)| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        fsutil::write_atomic(&inner.dir.join(VOTE_FILE), &bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        let path = inner.dir.join(COMMITTED_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock();
        let mut buf = Vec::new();
        let mut framed = Vec::new();
        for entry in entries {
            let record = Record::Entry(entry);
            let bytes = frame(&record).map_err(|e| StorageIOError::write_logs(&e))?;
            buf.extend_from_slice(&bytes);
            framed.push((record, bytes.len() as u64));
        }
        if let Err(e) = inner.write(&buf).and_then(|()| inner.file.sync_data()) {
            callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(StorageIOError::write_logs(&e).into());
        }
        // Only now, durable, do the entries become readable and acknowledged.
        for (record, size) in framed {
            inner.apply(record, size);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        let bytes =
            frame(&Record::Truncate(log_id.index)).map_err(|e| StorageIOError::write_logs(&e))?;
        inner
            .write(&bytes)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.apply(Record::Truncate(log_id.index), 0);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        let bytes = frame(&Record::Purge(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        inner
            .write(&bytes)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.apply(Record::Purge(log_id), 0);
        inner
            .maybe_compact()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
