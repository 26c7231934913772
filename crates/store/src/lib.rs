//! statecast's embedded durable store: an [`Engine`] that keeps topic state, revs, sequence
//! numbers and tombstones in a [redb] file, `<data dir>/statecast.redb`, and the durable
//! history in another, `<data dir>/history.redb` (`history_db.rs` says why two).
//!
//! The hub loads everything once at start-up ([`Engine::load`]) and then hands each batch of
//! changes to [`Engine::commit`], which writes the whole batch in one redb write transaction
//! with [`Durability::Immediate`]: when `commit` returns the batch is on disk, and a crash
//! leaves either all of it or none of it.
//!
//! # Layout
//!
//! Three tables for the state, and the history's pending log (`history_pending.rs`; the
//! history's own tables are in `history.redb`, described in `history.rs`):
//!
//! * `topics`: topic name (`&str`) → encoded record (`&[u8]`), one row per topic, tombstones
//!   included (a removed topic keeps its rev so revs never go back).
//! * `meta`: `"seq"` → the highest committed sequence number (8 bytes, little-endian `u64`)
//!   and `"epoch"` → a random 16-hex-digit string (UTF-8) written on first open and never
//!   changed, which identifies this store's history.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, TableDefinition,
};
use statecast_core::engine::{Engine, EngineError, Loaded, Record, StoredTopic, Touch};
use statecast_core::history::{At, ChangesQuery, Page, Point};

mod history;
mod history_db;
mod history_mover;
mod history_pending;
mod history_read;

use history_db::HistoryDb;
use history_mover::Mover;

pub use history::DEFAULT_MAX_BYTES as DEFAULT_HISTORY_MAX_BYTES;
pub use history_db::FILE_NAME as HISTORY_FILE_NAME;

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
/// What the history held, in a store from before `history.redb` (see `history_db.rs`).
const META_HISTORY_BYTES: &str = "history_bytes";

/// Length of the fixed part of an encoded record: rev, seq and kind.
const HEADER_LEN: usize = 8 + 8 + 1;
const KIND_TOMBSTONE: u8 = 0;
const KIND_STATE: u8 = 1;

/// Opens the database again, after a failed write.
type OpenDb = Box<dyn Fn() -> Result<Database, EngineError> + Send + Sync>;

/// The embedded durable store: an [`Engine`] backed by two redb files in a data directory,
/// `statecast.redb` (the state) and `history.redb` (the history, see `history_db.rs`), and
/// a thread that records the history (`history_mover.rs`).
///
/// Holds redb's file locks for as long as it lives, so only one process (and one
/// `RedbEngine`) can have a data directory open at a time. Dropping it stops its thread and
/// closes the files.
///
/// # After a failed commit
///
/// Once a write transaction fails (a full disk, an I/O error), redb refuses every later
/// one until the database is closed and opened again. So the engine re-opens it at the
/// start of the next [`Engine::commit`]: redb then recovers the file to its last durable
/// commit (nothing acknowledged is lost; the refused batch is not there). If the disk is
/// still full the re-open fails, that commit fails with the reason, and the next one tries
/// again. How often commits are attempted meanwhile is the hub's choice (it backs off).
/// The history's file is re-opened the same way by the next move.
pub struct RedbEngine {
    inner: Arc<Inner>,
    mover: Option<JoinHandle<()>>,
}

/// What the engine and its mover thread share.
struct Inner {
    db: Mutex<Handle>,
    open_db: OpenDb,
    /// The database file, for error messages.
    path: PathBuf,
    history: HistoryDb,
    mover: Mover,
}

/// The open state database, and whether it must be opened again before its next write.
struct Handle {
    /// `None` only after a re-open failed.
    db: Option<Database>,
    reopen: bool,
    /// The key of the next row of the history's pending log.
    next_key: u64,
}

impl fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbEngine")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Drop for RedbEngine {
    fn drop(&mut self) {
        self.inner.mover.stop();
        if let Some(thread) = self.mover.take() {
            // It ends after the move it may be in; a panic there has nothing left to say.
            let _ = thread.join();
        }
    }
}

impl RedbEngine {
    /// Opens the store in `dir`, creating the directory and `dir/statecast.redb` (and
    /// `dir/history.redb`) if needed.
    ///
    /// On first open this also creates the tables and a fresh random epoch. Fails with an
    /// error saying the data directory is in use if another statecast process (or another
    /// `RedbEngine` in this one) has it open, with an error naming the file and what to do
    /// if a file exists but is empty or not a store (see [`RedbEngine::open_setting_aside`]),
    /// and with an error naming the path for anything else (permissions, an incompatible
    /// file, ...).
    pub fn open(dir: &Path) -> Result<RedbEngine, EngineError> {
        let path = data_file(dir)?;
        match open_store(dir, &path)? {
            Opened::Store(db) => Ok(RedbEngine::start(db, dir, path, false)?.0),
            Opened::Broken(why) => Err(broken_error(&path, &why)),
        }
    }

    /// Like [`RedbEngine::open`], but a file that is empty or not a store is first moved
    /// aside to `<file>.broken-<UTC time>` in the same directory (never deleted) and an
    /// empty one is started instead. Returns where the files went, if any was moved. A good
    /// store is opened as it is.
    pub fn open_setting_aside(dir: &Path) -> Result<(RedbEngine, Vec<PathBuf>), EngineError> {
        let path = data_file(dir)?;
        let mut moved = Vec::new();
        let db = match open_store(dir, &path)? {
            Opened::Store(db) => db,
            Opened::Broken(_) => {
                moved.push(set_aside(&path)?);
                match open_store(dir, &path)? {
                    Opened::Store(db) => db,
                    Opened::Broken(why) => return Err(broken_error(&path, &why)),
                }
            }
        };
        let (engine, history_aside) = RedbEngine::start(db, dir, path, true)?;
        moved.extend(history_aside);
        Ok((engine, moved))
    }

    /// Over an opened database: creates what a new store lacks.
    fn start(
        db: Database,
        dir: &Path,
        path: PathBuf,
        set_aside: bool,
    ) -> Result<(RedbEngine, Option<PathBuf>), EngineError> {
        let (dir, file) = (dir.to_owned(), path.clone());
        let open_db: OpenDb = Box::new(move || match open_store(&dir, &file)? {
            Opened::Store(db) => Ok(db),
            Opened::Broken(why) => Err(broken_error(&file, &why)),
        });
        let history_dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        RedbEngine::over(db, open_db, path, &history_dir, set_aside)
    }

    /// Over an opened database, which `open_db` opens again when needed, with the history's
    /// file in `history_dir`.
    fn over(
        db: Database,
        open_db: OpenDb,
        path: PathBuf,
        history_dir: &Path,
        set_aside: bool,
    ) -> Result<(RedbEngine, Option<PathBuf>), EngineError> {
        let opened = HistoryDb::open(history_dir, set_aside)?;
        let mut inner = Inner {
            db: Mutex::new(Handle {
                db: Some(db),
                reopen: false,
                next_key: 0,
            }),
            open_db,
            path,
            history: opened.db,
            mover: Mover::new(0, 0),
        };
        inner.init(opened.moved)?;
        let inner = Arc::new(inner);
        let thread = history_mover::spawn(inner.clone())
            .map_err(|e| EngineError(format!("cannot start the history's thread: {e}")))?;
        let engine = RedbEngine {
            inner,
            mover: Some(thread),
        };
        Ok((engine, opened.aside))
    }

    /// Bounds what all topics' history holds, in bytes: over it, the oldest changes go
    /// first (`history_max_bytes`; default [`DEFAULT_HISTORY_MAX_BYTES`]).
    pub fn with_history_max_bytes(self, max: u64) -> RedbEngine {
        self.inner.history.set_max_bytes(max);
        self
    }

    /// The database file this engine has open (`<dir>/statecast.redb`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Handle> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the tables and the epoch if this is a new file (leaves an existing epoch
    /// alone), takes over history tables of a store from before `history.redb`, and finds
    /// where the history's pending log stands, given the history's `moved`.
    fn init(&mut self, moved: u64) -> Result<(), EngineError> {
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
        self.history.take_over(db)?;
        let log = self.read_log(&handle)?;
        // Rows below the history's `moved` were moved already (see `history_db.rs`).
        let moved = moved.max(log.first);
        handle.next_key = log.end.max(moved);
        let end = handle.next_key;
        drop(handle);
        self.mover = Mover::new(moved, end);
        Ok(())
    }

    /// Where the pending log stands in the file.
    fn read_log(&self, handle: &Handle) -> Result<history_pending::LogState, EngineError> {
        let txn = self
            .opened(handle)?
            .begin_read()
            .map_err(|e| self.error("cannot begin read transaction", e))?;
        history_pending::LogState::read(&txn).map_err(|e| self.error("history", e))
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
        // The file is back at its last durable commit: its log's end with it.
        let log = self.read_log(handle)?;
        handle.next_key = log.end.max(self.mover.moved());
        self.mover.reset_end(handle.next_key);
        Ok(())
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

    /// Moves up to `max` changes from the pending log into the history's file (see
    /// `history_db.rs`), syncing it when a sync is due (and then deleting what it synced
    /// from the log); returns how many. One move runs at a time.
    fn move_history(&self, max: u64) -> Result<u64, EngineError> {
        let _one = self.mover.moving();
        let from = self.mover.moved();
        let (rows, end) = self.pending_rows(from, max)?;
        let sync = self.mover.sync_due();
        if rows.is_empty() && !(sync && from > self.mover.synced()) {
            return Ok(0);
        }
        if let Err(e) = self.history.record(&rows, end, now_ms(), sync) {
            self.mover.rewind();
            return Err(e);
        }
        self.mover.did_move(end, sync);
        if sync {
            self.drop_moved(end);
        }
        Ok(rows.len() as u64)
    }

    /// Up to `max` rows of the log from key `from` on, and the key after the last.
    fn pending_rows(&self, from: u64, max: u64) -> Result<(Vec<Vec<u8>>, u64), EngineError> {
        let txn = {
            let handle = self.lock();
            self.opened(&handle)?
                .begin_read()
                .map_err(|e| self.error("cannot begin read transaction", e))?
        };
        let e = |e: redb::StorageError| self.error("cannot read the history's log", e);
        let log = match txn.open_table(history_pending::PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), from)),
            Err(err) => return Err(self.error("cannot open the history's log", err)),
        };
        let mut rows = Vec::new();
        let mut end = from;
        for row in log.range(from..).map_err(e)? {
            if rows.len() as u64 >= max {
                break;
            }
            let (key, value) = row.map_err(e)?;
            rows.push(value.value().to_vec());
            end = key.value() + 1;
        }
        Ok((rows, end))
    }

    /// Deletes the log's rows below `moved`, in a transaction the next commit makes durable.
    /// A failure leaves them for the next move to delete.
    fn drop_moved(&self, moved: u64) {
        let mut handle = self.lock();
        let Some(db) = handle.db.as_ref().filter(|_| !handle.reopen) else {
            return;
        };
        let result = (|| -> Result<(), String> {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.set_durability(Durability::None)
                .map_err(|e| e.to_string())?;
            {
                let mut log = txn
                    .open_table(history_pending::PENDING)
                    .map_err(|e| e.to_string())?;
                log.retain_in(..moved, |_, _| false)
                    .map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })();
        handle.reopen = result.is_err();
    }

    /// Moves the whole pending log, so that a read sees every acknowledged change.
    fn move_all(&self) -> Result<(), EngineError> {
        while self.move_history(history_mover::MOVE_BATCH)? > 0 {}
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
        path.file_name()
            .map_or(FILE_NAME.into(), |n| n.to_string_lossy())
    ))
}

/// Moves a broken file aside (see [`aside_name`]); where it went.
fn set_aside(path: &Path) -> Result<PathBuf, EngineError> {
    let aside = aside_name(path);
    std::fs::rename(path, &aside).map_err(|e| {
        EngineError(format!(
            "cannot move {} aside to {}: {e}",
            path.display(),
            aside.display()
        ))
    })?;
    Ok(aside)
}

/// What `meta` says the history held, in a store from before `history.redb`.
fn history_bytes_before(txn: &redb::ReadTransaction) -> Result<u64, String> {
    let meta = txn
        .open_table(META)
        .map_err(|e| format!("cannot open meta table: {e}"))?;
    Ok(meta
        .get(META_HISTORY_BYTES)
        .map_err(|e| format!("cannot read the history's size: {e}"))?
        .and_then(|g| <[u8; 8]>::try_from(g.value()).ok())
        .map_or(0, u64::from_le_bytes))
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
    fn load(&self) -> Result<Loaded, EngineError> {
        self.inner.load()
    }

    fn touch(&self, touches: &[Touch<'_>]) -> Result<(), EngineError> {
        self.inner.touch(touches)
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn history_bytes(&self) -> u64 {
        self.inner.history.bytes()
    }

    fn changes(&self, query: &ChangesQuery<'_>) -> Result<Page, EngineError> {
        self.inner.move_all()?;
        history_read::changes(&self.inner.history.read()?, query)
            .map_err(|e| self.inner.error("history", e))
    }

    fn state_at(&self, topic: &str, kept_since_ms: u64, at_ms: u64) -> Result<At, EngineError> {
        self.inner.move_all()?;
        history_read::state_at(&self.inner.history.read()?, topic, kept_since_ms, at_ms)
            .map_err(|e| self.inner.error("history", e))
    }

    fn field_points(
        &self,
        topic: &str,
        pointer: &str,
        _kept_since_ms: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Point>, EngineError> {
        self.inner.move_all()?;
        history_read::field_points(&self.inner.history.read()?, topic, pointer, from_ms, to_ms)
            .map_err(|e| self.inner.error("history", e))
    }

    /// Writes `records` and `seq` in one write transaction with immediate durability: on
    /// `Ok` all of it is on disk, on `Err` none of it is. After a failed commit, first opens
    /// the database again (see [`RedbEngine`]). The history's changes go to its pending log
    /// in the same transaction; the mover thread is told.
    fn commit(&self, records: &[Record<'_>], seq: u64) -> Result<(), EngineError> {
        let inner = &self.inner;
        let mut handle = inner.lock();
        if handle.reopen {
            inner.reopen(&mut handle)?;
        }
        let result = inner.write(inner.opened(&handle)?, records, seq, handle.next_key);
        // Whatever failed, redb may refuse every later write until it is opened again.
        handle.reopen = result.is_err();
        let logged = result?;
        if logged > 0 {
            handle.next_key += logged;
            inner.mover.logged(handle.next_key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
