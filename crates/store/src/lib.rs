//! statecast's embedded durable store: an [`Engine`] that keeps topic state, revs, sequence
//! numbers and tombstones in a single [redb] file, `<data dir>/statecast.redb`.
//!
//! The hub loads everything once at start-up ([`Engine::load`]) and then hands each batch of
//! changes to [`Engine::commit`], which writes the whole batch in one redb write transaction
//! with [`Durability::Immediate`]: when `commit` returns the batch is on disk, and a crash
//! leaves either all of it or none of it.
//!
//! # Layout
//!
//! Three tables for the state (and the history's, described in `history.rs`):
//!
//! * `topics`: topic name (`&str`) → encoded record (`&[u8]`), one row per topic, tombstones
//!   included (a removed topic keeps its rev so revs never go back).
//! * `meta`: `"seq"` → the highest committed sequence number (8 bytes, little-endian `u64`)
//!   and `"epoch"` → a random 16-hex-digit string (UTF-8) written on first open and never
//!   changed, which identifies this store's history; `"history_bytes"` → what the durable
//!   history holds (8 bytes LE, see `history.rs`).
//! * `times`: topic name → when its last change was made and when it was last written,
//!   changed or not (two `u64` LE Unix milliseconds, 16 bytes). A store written before
//!   times were kept has no such table or row: those topics' times are 0, not known.
//!   Kept apart from `topics` so a write that changes nothing rewrites 16 bytes, not the
//!   state.
//!
//! # Record encoding
//!
//! A topic's value is a fixed 17-byte header followed by the state:
//!
//! ```text
//! rev: u64 LE (8) | seq: u64 LE (8) | kind: u8 (1) | state JSON bytes (kind 1 only)
//! ```
//!
//! `kind` is `0` for a tombstone (nothing may follow) and `1` for a live state (the rest of the
//! value is the JSON document exactly as the hub serialized it). The format was chosen over a
//! self-describing one (JSON, a serde format) because it is trivial to write without
//! allocation or re-serialization, costs 17 bytes per topic, needs no extra dependency, and
//! stores the state bytes untouched, so `load` hands back what `commit` was given. It is
//! checked strictly on load: a short value, an unknown kind, trailing bytes after a tombstone
//! or a state that is not valid JSON is reported as an [`EngineError`] naming the topic.
//!
//! The database is opened with redb's integrity check enabled, so a file damaged outside redb
//! fails to open with an error instead of being trusted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, TableDefinition,
};
use statecast_core::engine::{Engine, EngineError, Loaded, Record, StoredTopic, Touch};
use statecast_core::history::{At, ChangesQuery, Page, Point};

mod history;
mod history_pending;
mod history_read;

pub use history::DEFAULT_MAX_BYTES as DEFAULT_HISTORY_MAX_BYTES;

/// The name of the database file inside the data directory.
pub const FILE_NAME: &str = "statecast.redb";

/// Topic name → encoded record (see the crate docs for the encoding).
const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// `"seq"` and `"epoch"` (see the crate docs).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Topic name → changed and written times (see the crate docs).
const TIMES: TableDefinition<&str, &[u8]> = TableDefinition::new("times");

const META_SEQ: &str = "seq";
const META_EPOCH: &str = "epoch";
const META_HISTORY_BYTES: &str = "history_bytes";

/// Length of the fixed part of an encoded record: rev, seq and kind.
const HEADER_LEN: usize = 8 + 8 + 1;
const KIND_TOMBSTONE: u8 = 0;
const KIND_STATE: u8 = 1;

/// Opens the database again, after a failed write.
type OpenDb = Box<dyn Fn() -> Result<Database, EngineError> + Send + Sync>;

/// The embedded durable store: an [`Engine`] backed by one redb file in a data directory.
///
/// Holds redb's file lock for as long as it lives, so only one process (and one
/// `RedbEngine`) can have a data directory open at a time. Dropping it closes the file.
///
/// # After a failed commit
///
/// Once a write transaction fails (a full disk, an I/O error), redb refuses every later
/// one until the database is closed and opened again. So the engine re-opens it at the
/// start of the next [`Engine::commit`]: redb then recovers the file to its last durable
/// commit (nothing acknowledged is lost; the refused batch is not there). If the disk is
/// still full the re-open fails, that commit fails with the reason, and the next one tries
/// again. How often commits are attempted meanwhile is the hub's choice (it backs off).
pub struct RedbEngine {
    db: Mutex<Handle>,
    open_db: OpenDb,
    /// The database file, for error messages.
    path: PathBuf,
    /// What all topics' history may hold (see `history.rs`).
    history_max_bytes: u64,
    /// What it holds (`meta`'s `"history_bytes"`, as last committed; only the commit
    /// thread changes it).
    history_bytes: AtomicU64,
}

/// The open database, whether it must be opened again before its next write, and what
/// the history's pending log holds.
struct Handle {
    /// `None` only after a re-open failed.
    db: Option<Database>,
    reopen: bool,
    log: history_pending::LogState,
    /// Since when the log has held changes.
    log_since: Option<Instant>,
}

impl fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbEngine {
    /// Opens the store in `dir`, creating the directory and `dir/statecast.redb` if needed.
    ///
    /// On first open this also creates the tables and a fresh random epoch. Fails with an
    /// error saying the data directory is in use if another statecast process (or another
    /// `RedbEngine` in this one) has it open, with an error naming the file and what to do
    /// if the file exists but is empty or not a store (see [`RedbEngine::open_setting_aside`]),
    /// and with an error naming the path for anything else (permissions, an incompatible
    /// file, ...).
    pub fn open(dir: &Path) -> Result<RedbEngine, EngineError> {
        let path = data_file(dir)?;
        match open_store(dir, &path)? {
            Opened::Store(db) => RedbEngine::start(db, dir, path),
            Opened::Broken(why) => Err(broken_error(&path, &why)),
        }
    }

    /// Like [`RedbEngine::open`], but a file that is empty or not a store is first moved
    /// aside to `statecast.redb.broken-<UTC time>` in the same directory (never deleted)
    /// and an empty store is started instead. Returns where the file went, if it was moved.
    /// A good store is opened as it is.
    pub fn open_setting_aside(dir: &Path) -> Result<(RedbEngine, Option<PathBuf>), EngineError> {
        let path = data_file(dir)?;
        if let Opened::Store(db) = open_store(dir, &path)? {
            return Ok((RedbEngine::start(db, dir, path)?, None));
        }
        let aside = aside_name(&path);
        std::fs::rename(&path, &aside).map_err(|e| {
            EngineError(format!(
                "cannot move {} aside to {}: {e}",
                path.display(),
                aside.display()
            ))
        })?;
        Ok((RedbEngine::open(dir)?, Some(aside)))
    }

    /// Over an opened database: creates what a new store lacks.
    fn start(db: Database, dir: &Path, path: PathBuf) -> Result<RedbEngine, EngineError> {
        let (dir, file) = (dir.to_owned(), path.clone());
        let open_db: OpenDb = Box::new(move || match open_store(&dir, &file)? {
            Opened::Store(db) => Ok(db),
            Opened::Broken(why) => Err(broken_error(&file, &why)),
        });
        RedbEngine::over(db, open_db, path)
    }

    /// Over an opened database, which `open_db` opens again when needed.
    fn over(db: Database, open_db: OpenDb, path: PathBuf) -> Result<RedbEngine, EngineError> {
        let engine = RedbEngine {
            db: Mutex::new(Handle {
                db: Some(db),
                reopen: false,
                log: history_pending::LogState::default(),
                log_since: None,
            }),
            open_db,
            path,
            history_max_bytes: history::DEFAULT_MAX_BYTES,
            history_bytes: AtomicU64::new(0),
        };
        engine.init()?;
        Ok(engine)
    }

    /// Bounds what all topics' history holds, in bytes: over it, the oldest changes go
    /// first (`history_max_bytes`; default [`DEFAULT_HISTORY_MAX_BYTES`]).
    pub fn with_history_max_bytes(mut self, max: u64) -> RedbEngine {
        self.history_max_bytes = max;
        self
    }

    /// Begins a read transaction, holding the handle's lock only for that.
    fn read(&self) -> Result<redb::ReadTransaction, EngineError> {
        let handle = self.lock();
        self.opened(&handle)?
            .begin_read()
            .map_err(|e| self.error("cannot begin read transaction", e))
    }

    /// The database file this engine has open (`<dir>/statecast.redb`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Handle> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the tables and the epoch if this is a new file. Leaves an existing epoch alone.
    fn init(&self) -> Result<(), EngineError> {
        let mut handle = self.lock();
        let db = self.opened(&handle)?;
        let mut txn = db
            .begin_write()
            .map_err(|e| self.error("cannot begin write transaction", e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.error("cannot set durability", e))?;
        {
            txn.open_table(TOPICS)
                .map_err(|e| self.error("cannot open topics table", e))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.error("cannot open meta table", e))?;
            let has_epoch = meta
                .get(META_EPOCH)
                .map_err(|e| self.error("cannot read epoch", e))?
                .is_some();
            if !has_epoch {
                let epoch = format!("{:016x}", rand::random::<u64>());
                meta.insert(META_EPOCH, epoch.as_bytes())
                    .map_err(|e| self.error("cannot write epoch", e))?;
            }
        }
        txn.commit()
            .map_err(|e| self.error("cannot commit initialization", e))?;
        self.load_counts(&mut handle)
    }

    /// Reads what the history holds (from `meta`) and what its pending log holds: at open,
    /// and after a re-open, which loses the moves that no commit had made durable yet.
    fn load_counts(&self, handle: &mut Handle) -> Result<(), EngineError> {
        let txn = self
            .opened(handle)?
            .begin_read()
            .map_err(|e| self.error("cannot begin read transaction", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| self.error("cannot open meta table", e))?;
        let bytes = meta
            .get(META_HISTORY_BYTES)
            .map_err(|e| self.error("cannot read the history's size", e))?
            .and_then(|g| <[u8; 8]>::try_from(g.value()).ok())
            .map_or(0, u64::from_le_bytes);
        self.history_bytes.store(bytes, Ordering::Relaxed);
        handle.log = history_pending::LogState::read(&txn).map_err(|e| self.error("history", e))?;
        handle.log_since = (handle.log.count > 0).then(Instant::now);
        Ok(())
    }

    /// The open database; an error if the last re-open failed.
    fn opened<'a>(&self, handle: &'a Handle) -> Result<&'a Database, EngineError> {
        handle
            .db
            .as_ref()
            .ok_or_else(|| self.error("the store is closed", "re-opening it failed"))
    }

    /// Closes and opens the database again, as redb asks after a failed write transaction.
    fn reopen(&self, handle: &mut Handle) -> Result<(), EngineError> {
        // Closed first: the open takes the file's lock.
        handle.db = None;
        let db = (self.open_db)()?;
        handle.db = Some(db);
        handle.reopen = false;
        self.load_counts(handle)
    }

    /// Writes `records` and `seq` in one write transaction (see [`Engine::commit`]), the
    /// history's changes to its pending log from key `next_key` on. Returns how many.
    fn write(
        &self,
        db: &Database,
        records: &[Record<'_>],
        seq: u64,
        next_key: u64,
    ) -> Result<u64, EngineError> {
        let mut logged = 0;
        let mut txn = db
            .begin_write()
            .map_err(|e| self.error("cannot begin write transaction", e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.error("cannot set durability", e))?;
        {
            let mut table = txn
                .open_table(TOPICS)
                .map_err(|e| self.error("cannot open topics table", e))?;
            let mut log = match records.iter().any(|r| r.keep_ms > 0) {
                true => Some(
                    txn.open_table(history_pending::PENDING)
                        .map_err(|e| self.error("cannot open the history's log", e))?,
                ),
                false => None,
            };
            let (mut buf, mut row) = (Vec::new(), Vec::new());
            for record in records {
                buf.clear();
                encode(record.rev, record.seq, record.state, &mut buf);
                let old = table.insert(record.topic, buf.as_slice()).map_err(|e| {
                    self.error(&format!("cannot write topic {:?}", record.topic), e)
                })?;
                if let Some(log) = log.as_mut().filter(|_| record.keep_ms > 0) {
                    history_pending::encode(
                        record,
                        old.as_ref().and_then(|g| state_of(g.value())),
                        &mut row,
                    );
                    drop(old);
                    log.insert(next_key + logged, row.as_slice())
                        .map_err(|e| self.error("cannot write the history's log", e))?;
                    logged += 1;
                }
            }
            let mut times = txn
                .open_table(TIMES)
                .map_err(|e| self.error("cannot open times table", e))?;
            for record in records {
                times
                    .insert(
                        record.topic,
                        times_value(record.time_ms, record.time_ms).as_slice(),
                    )
                    .map_err(|e| {
                        self.error(&format!("cannot write times of {:?}", record.topic), e)
                    })?;
            }
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.error("cannot open meta table", e))?;
            meta.insert(META_SEQ, seq.to_le_bytes().as_slice())
                .map_err(|e| self.error("cannot write seq", e))?;
        }
        // Dropping an uncommitted transaction aborts it, so an error above writes nothing.
        txn.commit().map_err(|e| self.error("cannot commit", e))?;
        Ok(logged)
    }

    /// Moves up to `max` changes from the history's pending log into its tables (see
    /// `history_pending.rs`), in one transaction that the next commit makes durable.
    fn flush(&self, handle: &mut Handle, max: u64) -> Result<(), EngineError> {
        if handle.reopen {
            self.reopen(handle)?;
        }
        if handle.log.count == 0 {
            return Ok(());
        }
        let total = self.history_bytes.load(Ordering::Relaxed);
        let result = self.write_index(self.opened(handle)?, total, max);
        handle.reopen = result.is_err();
        let (moved, total) = result?;
        self.history_bytes.store(total, Ordering::Relaxed);
        handle.log.count = handle.log.count.saturating_sub(moved);
        if handle.log.count == 0 {
            handle.log_since = None;
        }
        Ok(())
    }

    fn write_index(&self, db: &Database, total: u64, max: u64) -> Result<(u64, u64), EngineError> {
        let mut txn = db
            .begin_write()
            .map_err(|e| self.error("cannot begin write transaction", e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.error("cannot set durability", e))?;
        let (moved, after) =
            history_pending::index(&txn, total, max, now_ms(), self.history_max_bytes)
                .map_err(|e| self.error("history", e))?;
        if after != total {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.error("cannot open meta table", e))?;
            meta.insert(META_HISTORY_BYTES, after.to_le_bytes().as_slice())
                .map_err(|e| self.error("cannot write the history's size", e))?;
        }
        txn.commit().map_err(|e| self.error("cannot commit", e))?;
        Ok((moved, after))
    }

    /// Moves the whole pending log, so that a read sees every acknowledged change.
    fn flush_all(&self) -> Result<(), EngineError> {
        let mut handle = self.lock();
        while handle.log.count > 0 {
            self.flush(&mut handle, history_pending::INDEX_BATCH)?;
        }
        Ok(())
    }

    fn write_touches(&self, db: &Database, touches: &[Touch<'_>]) -> Result<(), EngineError> {
        let mut txn = db
            .begin_write()
            .map_err(|e| self.error("cannot begin write transaction", e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.error("cannot set durability", e))?;
        {
            let mut times = txn
                .open_table(TIMES)
                .map_err(|e| self.error("cannot open times table", e))?;
            for touch in touches {
                let changed = match times
                    .get(touch.topic)
                    .map_err(|e| self.error("cannot read times", e))?
                {
                    Some(row) => row
                        .value()
                        .get(..8)
                        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default())),
                    None => 0,
                };
                times
                    .insert(
                        touch.topic,
                        times_value(changed, touch.written_ms).as_slice(),
                    )
                    .map_err(|e| {
                        self.error(&format!("cannot write times of {:?}", touch.topic), e)
                    })?;
            }
        }
        txn.commit().map_err(|e| self.error("cannot commit", e))
    }

    /// An error about this store's file: `"{what} in {path}: {err}"`.
    fn error(&self, what: &str, err: impl fmt::Display) -> EngineError {
        EngineError(format!("{what} in {}: {err}", self.path.display()))
    }
}

/// Creates `dir` if needed; the path of the database file in it.
fn data_file(dir: &Path) -> Result<PathBuf, EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        EngineError(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    Ok(dir.join(FILE_NAME))
}

/// What is at the store's path: a store (opened), or a file that is not one, and why.
enum Opened {
    Store(Database),
    Broken(String),
}

/// Opens the database file; redb creates it when it does not exist. Any error but a
/// file that is not a store is an [`EngineError`] saying what to do.
fn open_store(dir: &Path, path: &Path) -> Result<Opened, EngineError> {
    if let Some(why) = broken_before_open(path) {
        return Ok(Opened::Broken(why));
    }
    match Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
    {
        Ok(db) => Ok(Opened::Store(db)),
        Err(e) if is_broken(&e) => Ok(Opened::Broken(e.to_string())),
        Err(e) => Err(open_error(dir, path, e)),
    }
}

/// Why the file at `path` cannot be a store, found before redb opens it: redb would take
/// an empty file for a new database, and a store is never empty once created, so an empty
/// one was truncated or replaced outside statecast.
fn broken_before_open(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() == 0).then(|| "the file is empty (0 bytes)".to_owned())
}

/// Whether redb refused the file for what it holds (not a redb file, damaged), rather than
/// for where it is (locked, unreadable) or its format version.
fn is_broken(err: &DatabaseError) -> bool {
    match err {
        DatabaseError::Storage(StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(StorageError::Io(e)) => {
            matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            )
        }
        _ => false,
    }
}

/// The refusal to start over a file that is not a store: names it and what to do.
fn broken_error(path: &Path, why: &str) -> EngineError {
    EngineError(format!(
        "{} is not a statecast store ({why}); refusing to start over it, as that would \
         start an empty store with a new history. Restore the file from a backup, or start \
         with --reset-broken-store to move it aside (to {}.broken-<time>) and begin with \
         an empty store",
        path.display(),
        FILE_NAME
    ))
}

/// Where a broken file is moved: `<file>.broken-<UTC time>`, with a number added if that
/// exists already, so an earlier one is never overwritten.
fn aside_name(path: &Path) -> PathBuf {
    let time = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let base = format!("{}.broken-{time}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{base}-{n}"));
    }
    candidate
}

/// Turns a failure to open the database into a message a user can act on.
fn open_error(dir: &Path, path: &Path, err: DatabaseError) -> EngineError {
    let msg = match err {
        DatabaseError::DatabaseAlreadyOpen => format!(
            "data directory {} is in use by another statecast process \
             ({} is locked); stop that process or choose another data directory",
            dir.display(),
            path.display()
        ),
        DatabaseError::LockProtocolMismatch => format!(
            "data directory {} is in use by another process using an incompatible \
             version of redb ({} is locked)",
            dir.display(),
            path.display()
        ),
        DatabaseError::UpgradeRequired(version) => format!(
            "cannot open {}: the file uses redb file format {version}, which this \
             version of statecast cannot read",
            path.display()
        ),
        other => format!("cannot open store {}: {other}", path.display()),
    };
    EngineError(msg)
}

/// A `times` row: changed, then written.
fn times_value(changed_ms: u64, written_ms: u64) -> [u8; 16] {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&changed_ms.to_le_bytes());
    value[8..].copy_from_slice(&written_ms.to_le_bytes());
    value
}

/// Appends the encoding of one record (see the crate docs) to `buf`.
fn encode(rev: u64, seq: u64, state: Option<&[u8]>, buf: &mut Vec<u8>) {
    buf.reserve(HEADER_LEN + state.map_or(0, <[u8]>::len));
    buf.extend_from_slice(&rev.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    match state {
        None => buf.push(KIND_TOMBSTONE),
        Some(json) => {
            buf.push(KIND_STATE);
            buf.extend_from_slice(json);
        }
    }
}

/// A decoded record: rev, seq and state (`None` for a tombstone).
type Decoded = (u64, u64, Option<Vec<u8>>);

/// The state inside an encoded record, unchecked (`None` for a tombstone).
fn state_of(record: &[u8]) -> Option<&[u8]> {
    (record.get(HEADER_LEN - 1) == Some(&KIND_STATE)).then(|| &record[HEADER_LEN..])
}

/// The time now, Unix milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Decodes a record written by [`encode`]; the error says what is wrong with it.
fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "record is {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    let (rev, header) = split_u64(header);
    let (seq, kind) = split_u64(header);
    match kind[0] {
        KIND_TOMBSTONE if rest.is_empty() => Ok((rev, seq, None)),
        KIND_TOMBSTONE => Err(format!("tombstone followed by {} bytes", rest.len())),
        KIND_STATE => match serde_json::from_slice::<serde_json::Value>(rest) {
            Ok(_) => Ok((rev, seq, Some(rest.to_vec()))),
            Err(e) => Err(format!("state is not valid JSON: {e}")),
        },
        kind => Err(format!("unknown record kind {kind}")),
    }
}

/// Splits a little-endian `u64` off the front of `bytes`.
fn split_u64(bytes: &[u8]) -> (u64, &[u8]) {
    match bytes.split_first_chunk::<8>() {
        Some((n, rest)) => (u64::from_le_bytes(*n), rest),
        // Only called on the fixed-size header, which always has room.
        None => (0, bytes),
    }
}

impl Engine for RedbEngine {
    /// Reads every topic (tombstones included), the highest committed seq and the epoch.
    fn load(&self) -> Result<Loaded, EngineError> {
        let handle = self.lock();
        let txn = self
            .opened(&handle)?
            .begin_read()
            .map_err(|e| self.error("cannot begin read transaction", e))?;

        let meta = txn
            .open_table(META)
            .map_err(|e| self.error("cannot open meta table", e))?;
        let seq = match meta
            .get(META_SEQ)
            .map_err(|e| self.error("cannot read seq", e))?
        {
            None => 0,
            Some(guard) => {
                let bytes = guard.value();
                let arr: [u8; 8] = bytes.try_into().map_err(|_| {
                    self.error(
                        "corrupt meta value",
                        format_args!("seq is {} bytes, expected 8", bytes.len()),
                    )
                })?;
                u64::from_le_bytes(arr)
            }
        };
        let epoch = match meta
            .get(META_EPOCH)
            .map_err(|e| self.error("cannot read epoch", e))?
        {
            None => return Err(self.error("corrupt store", "the epoch is missing")),
            Some(guard) => String::from_utf8(guard.value().to_vec())
                .map_err(|e| self.error("corrupt meta value", format_args!("epoch: {e}")))?,
        };

        let table = txn
            .open_table(TOPICS)
            .map_err(|e| self.error("cannot open topics table", e))?;
        let len = table
            .len()
            .map_err(|e| self.error("cannot read topics", e))?;
        let mut topics = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for row in table
            .iter()
            .map_err(|e| self.error("cannot read topics", e))?
        {
            let (key, value) = row.map_err(|e| self.error("cannot read topics", e))?;
            let topic = key.value().to_owned();
            let (rev, seq, state) = decode(value.value())
                .map_err(|e| self.error(&format!("corrupt record for topic {topic:?}"), e))?;
            topics.push(StoredTopic {
                topic,
                rev,
                seq,
                state,
                changed_ms: 0,
                written_ms: 0,
            });
        }
        // A store from before times has no `times` table: its topics' times stay 0.
        match txn.open_table(TIMES) {
            Ok(times) => {
                for stored in &mut topics {
                    let Some(row) = times
                        .get(stored.topic.as_str())
                        .map_err(|e| self.error("cannot read times", e))?
                    else {
                        continue;
                    };
                    let bytes: [u8; 16] = row.value().try_into().map_err(|_| {
                        self.error(
                            &format!("corrupt times of topic {:?}", stored.topic),
                            format_args!("{} bytes, expected 16", row.value().len()),
                        )
                    })?;
                    let (changed, written) = bytes.split_at(8);
                    stored.changed_ms = u64::from_le_bytes(changed.try_into().unwrap_or_default());
                    stored.written_ms = u64::from_le_bytes(written.try_into().unwrap_or_default());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error("cannot open times table", e)),
        }

        Ok(Loaded {
            topics,
            seq,
            epoch,
            recent: Vec::new(),
        })
    }

    /// Rewrites the written time of each touched topic (its changed time stays), durably.
    fn touch(&self, touches: &[Touch<'_>]) -> Result<(), EngineError> {
        let mut handle = self.lock();
        if handle.reopen {
            self.reopen(&mut handle)?;
        }
        let result = self.write_touches(self.opened(&handle)?, touches);
        handle.reopen = result.is_err();
        result
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn history_bytes(&self) -> u64 {
        self.history_bytes.load(Ordering::Relaxed)
    }

    fn changes(&self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        self.flush_all()?;
        history_read::changes(&self.read()?, query).map_err(|e| self.error("history", e))
    }

    fn state_at(&self, topic: &str, kept_since_ms: u64, at_ms: u64) -> Result<At, EngineError> {
        self.flush_all()?;
        history_read::state_at(&self.read()?, topic, kept_since_ms, at_ms)
            .map_err(|e| self.error("history", e))
    }

    fn field_points(
        &self,
        topic: &str,
        pointer: &str,
        _kept_since_ms: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        self.flush_all()?;
        history_read::field_points(&self.read()?, topic, pointer, from_ms, to_ms)
            .map_err(|e| self.error("history", e))
    }

    /// Writes `records` and `seq` in one write transaction with immediate durability: on
    /// `Ok` all of it is on disk, on `Err` none of it is. After a failed commit, first opens
    /// the database again (see [`RedbEngine`]).
    fn commit(&self, records: &[Record<'_>], seq: u64) -> Result<(), EngineError> {
        let mut handle = self.lock();
        if handle.reopen {
            self.reopen(&mut handle)?;
        }
        let result = self.write(self.opened(&handle)?, records, seq, handle.log.next_key);
        // Whatever failed, redb may refuse every later write until it is opened again.
        handle.reopen = result.is_err();
        let logged = result?;
        if logged > 0 {
            handle.log.next_key += logged;
            handle.log.count += logged;
            handle.log_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn maintain(&self, idle: bool) -> Option<Duration> {
        let mut handle = self.lock();
        let waited = handle.log_since.map(|t| t.elapsed())?;
        let due = handle.log.count >= history_pending::INDEX_BATCH
            || (idle && waited >= history_pending::LINGER);
        if due
            && self
                .flush(&mut handle, history_pending::INDEX_BATCH)
                .is_err()
        {
            // The next commit re-opens the store and says why, if it still fails.
            return Some(history_pending::LINGER);
        }
        match handle.log_since.map(|t| t.elapsed()) {
            None => None,
            Some(_) if handle.log.count >= history_pending::INDEX_BATCH => Some(Duration::ZERO),
            Some(waited) => Some(history_pending::LINGER.saturating_sub(waited)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tempfile::TempDir;

    fn rec<'a>(topic: &'a str, rev: u64, seq: u64, state: Option<&'a [u8]>) -> Record<'a> {
        Record {
            topic,
            rev,
            seq,
            state,
            time_ms: 0,
            patch: None,
            keep_ms: 0,
        }
    }

    fn sorted(mut loaded: Loaded) -> Loaded {
        loaded.topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        loaded
    }

    #[test]
    fn fresh_store_is_empty_with_an_epoch() {
        let dir = TempDir::new().unwrap();
        let engine = RedbEngine::open(&dir.path().join("new").join("nested")).unwrap();
        let loaded = engine.load().unwrap();
        assert!(loaded.topics.is_empty());
        assert_eq!(loaded.seq, 0);
        assert_eq!(loaded.epoch.len(), 16);
        assert!(loaded.epoch.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(engine.path().ends_with(FILE_NAME));
    }

    #[test]
    fn times_survive_a_reopen_and_a_touch_moves_only_the_written_time() {
        let dir = TempDir::new().unwrap();
        {
            let engine = RedbEngine::open(dir.path()).unwrap();
            let change = Record {
                time_ms: 1_000,
                ..rec("a", 1, 1, Some(b"1"))
            };
            engine.commit(&[change], 1).unwrap();
            engine
                .touch(&[Touch {
                    topic: "a",
                    written_ms: 5_000,
                }])
                .unwrap();
        }
        let loaded = RedbEngine::open(dir.path()).unwrap().load().unwrap();
        let a = &loaded.topics[0];
        assert_eq!((a.changed_ms, a.written_ms), (1_000, 5_000));
    }

    #[test]
    fn a_store_from_before_times_loads_with_times_unknown() {
        let dir = TempDir::new().unwrap();
        drop(RedbEngine::open(dir.path()).unwrap());
        // Written as the previous version did: a topics row, no times table.
        {
            let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut topics = txn.open_table(TOPICS).unwrap();
                let mut buf = Vec::new();
                encode(3, 7, Some(br#"{"x":1}"#), &mut buf);
                topics.insert("old", buf.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let loaded = RedbEngine::open(dir.path()).unwrap().load().unwrap();
        let old = &loaded.topics[0];
        assert_eq!((old.rev, old.changed_ms, old.written_ms), (3, 0, 0));
    }

    #[test]
    fn round_trip_across_reopen() {
        let dir = TempDir::new().unwrap();
        let epoch = {
            let engine = RedbEngine::open(dir.path()).unwrap();
            engine
                .commit(
                    &[
                        rec("a", 1, 1, Some(br#"{"x":1}"#)),
                        rec("b", 1, 2, Some(b"[1,2,3]")),
                    ],
                    2,
                )
                .unwrap();
            engine
                .commit(&[rec("b", 2, 3, None), rec("c", 7, 3, Some(b"\"s\""))], 3)
                .unwrap();
            engine.load().unwrap().epoch
        };

        let engine = RedbEngine::open(dir.path()).unwrap();
        let loaded = sorted(engine.load().unwrap());
        assert_eq!(
            loaded,
            Loaded {
                topics: vec![
                    StoredTopic {
                        topic: "a".into(),
                        rev: 1,
                        seq: 1,
                        state: Some(br#"{"x":1}"#.to_vec()),
                        changed_ms: 0,
                        written_ms: 0,
                    },
                    StoredTopic {
                        topic: "b".into(),
                        rev: 2,
                        seq: 3,
                        state: None,
                        changed_ms: 0,
                        written_ms: 0,
                    },
                    StoredTopic {
                        topic: "c".into(),
                        rev: 7,
                        seq: 3,
                        state: Some(b"\"s\"".to_vec()),
                        changed_ms: 0,
                        written_ms: 0,
                    },
                ],
                seq: 3,
                epoch,
                recent: Vec::new(),
            }
        );
    }

    #[test]
    fn epoch_is_stable_across_reopen_and_differs_between_stores() {
        let dir = TempDir::new().unwrap();
        let first = RedbEngine::open(dir.path()).unwrap().load().unwrap().epoch;
        let second = RedbEngine::open(dir.path()).unwrap().load().unwrap().epoch;
        assert_eq!(first, second);

        let other = TempDir::new().unwrap();
        let third = RedbEngine::open(other.path())
            .unwrap()
            .load()
            .unwrap()
            .epoch;
        assert_ne!(first, third);
    }

    #[test]
    fn overwrite_replaces_a_topic() {
        let dir = TempDir::new().unwrap();
        let engine = RedbEngine::open(dir.path()).unwrap();
        engine.commit(&[rec("t", 1, 1, Some(b"1"))], 1).unwrap();
        engine.commit(&[rec("t", 2, 2, Some(b"{}"))], 2).unwrap();
        engine.commit(&[rec("t", 3, 3, None)], 3).unwrap();
        engine.commit(&[rec("t", 4, 4, Some(b"true"))], 4).unwrap();
        let loaded = engine.load().unwrap();
        assert_eq!(
            loaded.topics,
            vec![StoredTopic {
                topic: "t".into(),
                rev: 4,
                seq: 4,
                state: Some(b"true".to_vec()),
                changed_ms: 0,
                written_ms: 0,
            }]
        );
        assert_eq!(loaded.seq, 4);
    }

    #[test]
    fn empty_commit_stores_seq() {
        let dir = TempDir::new().unwrap();
        {
            let engine = RedbEngine::open(dir.path()).unwrap();
            engine.commit(&[], 42).unwrap();
        }
        let loaded = RedbEngine::open(dir.path()).unwrap().load().unwrap();
        assert!(loaded.topics.is_empty());
        assert_eq!(loaded.seq, 42);
    }

    #[test]
    fn second_open_reports_directory_in_use() {
        let dir = TempDir::new().unwrap();
        let first = RedbEngine::open(dir.path()).unwrap();
        let err = RedbEngine::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another statecast process"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        drop(first);
        // Released on drop.
        RedbEngine::open(dir.path()).unwrap();
    }

    #[test]
    fn batch_of_1000_commits_atomically() {
        let dir = TempDir::new().unwrap();
        let names: Vec<String> = (0..1000).map(|i| format!("topic/{i:04}")).collect();
        let states: Vec<String> = (0..1000).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        let records: Vec<Record<'_>> = names
            .iter()
            .zip(&states)
            .enumerate()
            .map(|(i, (n, s))| rec(n, 1, i as u64 + 1, Some(s.as_bytes())))
            .collect();
        {
            let engine = RedbEngine::open(dir.path()).unwrap();
            engine.commit(&records, 1000).unwrap();
        }
        let loaded = sorted(RedbEngine::open(dir.path()).unwrap().load().unwrap());
        assert_eq!(loaded.seq, 1000);
        assert_eq!(loaded.topics.len(), 1000);
        for (i, t) in loaded.topics.iter().enumerate() {
            assert_eq!(t.topic, names[i]);
            assert_eq!(t.seq, i as u64 + 1);
            assert_eq!(t.state.as_deref(), Some(states[i].as_bytes()));
        }
    }

    #[test]
    fn corrupt_record_is_an_error_naming_the_topic() {
        for bad in [
            &b"short"[..],
            &[0u8; 18][..],                             // tombstone with trailing byte
            &[[0u8; 16].as_slice(), &[7]].concat()[..], // unknown kind
            &[[0u8; 16].as_slice(), &[1], b"{not json"].concat()[..],
        ] {
            let dir = TempDir::new().unwrap();
            {
                let engine = RedbEngine::open(dir.path()).unwrap();
                let handle = engine.lock();
                let txn = engine.opened(&handle).unwrap().begin_write().unwrap();
                txn.open_table(TOPICS)
                    .unwrap()
                    .insert("bad/topic", bad)
                    .unwrap();
                txn.commit().unwrap();
            }
            let engine = RedbEngine::open(dir.path()).unwrap();
            let err = engine.load().unwrap_err().to_string();
            assert!(err.contains("\"bad/topic\""), "{err}");
            assert!(err.contains(FILE_NAME), "{err}");
        }
    }

    #[test]
    fn open_on_a_file_names_the_path() {
        let dir = TempDir::new().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = RedbEngine::open(&not_a_dir).unwrap_err().to_string();
        assert!(err.contains(&not_a_dir.display().to_string()), "{err}");
    }

    #[test]
    fn garbage_file_is_an_error_naming_the_path() {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0xAB; 8192]).unwrap();
        let err = RedbEngine::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }

    /// A backend whose writes fail with ENOSPC while `full` is set, over memory that
    /// outlives it (so the database can be opened again on the same bytes).
    #[derive(Debug)]
    struct DiskThatFills {
        bytes: Arc<redb::backends::InMemoryBackend>,
        full: Arc<AtomicBool>,
    }

    impl redb::StorageBackend for DiskThatFills {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.bytes.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.bytes.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.space()?;
            self.bytes.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.bytes.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.space()?;
            self.bytes.write(offset, data)
        }
    }

    impl DiskThatFills {
        fn space(&self) -> Result<(), std::io::Error> {
            match self.full.load(Ordering::SeqCst) {
                true => Err(std::io::Error::from_raw_os_error(28)), // ENOSPC
                false => Ok(()),
            }
        }
    }

    /// An engine over [`DiskThatFills`], and the switch that fills its disk.
    fn engine_on_a_disk_that_fills() -> (RedbEngine, Arc<AtomicBool>) {
        let bytes = Arc::new(redb::backends::InMemoryBackend::new());
        let full = Arc::new(AtomicBool::new(false));
        let open = {
            let (bytes, full) = (Arc::clone(&bytes), Arc::clone(&full));
            move || {
                Database::builder()
                    .set_check_integrity_on_open(true)
                    .create_with_backend(DiskThatFills {
                        bytes: Arc::clone(&bytes),
                        full: Arc::clone(&full),
                    })
                    .map_err(|e| EngineError(e.to_string()))
            }
        };
        let db = open().unwrap();
        let engine = RedbEngine::over(db, Box::new(open), PathBuf::from("memory")).unwrap();
        (engine, full)
    }

    #[test]
    fn after_a_full_disk_the_store_takes_writes_again_and_keeps_only_what_was_durable() {
        let (engine, full) = engine_on_a_disk_that_fills();
        engine.commit(&[rec("kept", 1, 1, Some(b"1"))], 1).unwrap();

        full.store(true, Ordering::SeqCst);
        let err = engine
            .commit(&[rec("refused", 1, 2, Some(b"2"))], 2)
            .unwrap_err();
        assert!(err.to_string().contains("os error 28"), "{err}");
        // Still full: the re-open (or the write after it) fails too, with the reason.
        let err = engine
            .commit(&[rec("refused", 1, 3, Some(b"3"))], 3)
            .unwrap_err();
        assert!(err.to_string().contains("os error 28"), "{err}");

        full.store(false, Ordering::SeqCst);
        engine.commit(&[rec("after", 1, 4, Some(b"4"))], 4).unwrap();
        engine.commit(&[rec("kept", 2, 5, Some(b"5"))], 5).unwrap();
        let loaded = sorted(engine.load().unwrap());
        let topics: Vec<_> = loaded
            .topics
            .iter()
            .map(|t| (t.topic.as_str(), t.rev, t.state.as_deref()))
            .collect();
        assert_eq!(
            topics,
            [("after", 1, Some(&b"4"[..])), ("kept", 2, Some(&b"5"[..]))]
        );
        assert_eq!(loaded.seq, 5);
    }

    #[test]
    fn an_empty_file_is_refused_naming_it_and_what_to_do() {
        let dir = TempDir::new().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(&file, b"").unwrap();
        let err = RedbEngine::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("empty"), "{err}");
        assert!(err.contains("--reset-broken-store"), "{err}");
        // Left as it was.
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_naming_what_to_do() {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0xAB; 8192]).unwrap();
        let err = RedbEngine::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a statecast store"), "{err}");
        assert!(err.contains("--reset-broken-store"), "{err}");
    }

    #[test]
    fn setting_aside_moves_a_broken_file_and_starts_empty() {
        for broken in [&b""[..], &[0xAB; 8192][..]] {
            let dir = TempDir::new().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), broken).unwrap();
            let (engine, moved) = RedbEngine::open_setting_aside(dir.path()).unwrap();
            let moved = moved.expect("moved aside");
            let name = moved.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("statecast.redb.broken-"), "{name}");
            assert_eq!(std::fs::read(&moved).unwrap(), broken);
            assert!(engine.load().unwrap().topics.is_empty());
        }
    }

    #[test]
    fn setting_aside_leaves_a_good_store_alone() {
        let dir = TempDir::new().unwrap();
        RedbEngine::open(dir.path())
            .unwrap()
            .commit(&[rec("t", 1, 1, Some(b"1"))], 1)
            .unwrap();
        let (engine, moved) = RedbEngine::open_setting_aside(dir.path()).unwrap();
        assert_eq!(moved, None);
        assert_eq!(engine.load().unwrap().topics.len(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
