//! The history's own database file, `<data dir>/history.redb`: the history's tables
//! (`history.rs`) and where the pending log (`history_pending.rs`) has been moved to.
//!
//! Why a file of its own: a redb database takes one write transaction at a time, and a
//! commit holds it through its fsync. With the history in the state's file, moving the log
//! waited for commits, commits waited for the move, and the commit after a move wrote that
//! move's pages (the durable write rate fell by a quarter, its p99 grew). In a file of its
//! own the history is written and synced by its own thread (`history_mover.rs`) while the
//! commit thread writes and syncs the state.
//!
//! The rule: a change is in the history once this file's `moved` (the next key of the log
//! still to move) has passed its key, written in the same transaction as the change itself.
//! Most moves are not synced (redb's `Durability::None`: readers see them, a crash loses
//! them); one at least every [`crate::history_mover::SYNC_EVERY`] is. The state's file
//! deletes the log's rows only below the last synced `moved`, so a crash loses no change:
//! whatever the history's file lost is still in the log, moved again at the next start
//! (`moved` starts at the greater of this file's and the log's first key), and a change
//! moved twice is recorded once (`Recorder::record` skips a rev it has).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, TableDefinition, TableError,
    WriteTransaction,
};
use statecast_core::engine::EngineError;

use crate::history::{self, Recorder};
use crate::history_pending;

/// The name of the history's file inside the data directory.
pub const FILE_NAME: &str = "history.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("history_meta");
/// The next key of the pending log still to move.
const META_MOVED: &str = "moved";
/// What the history holds, as counted against `history_max_bytes` (see `history.rs`).
const META_BYTES: &str = "bytes";

/// The history's database, opened again after a failed write (as redb asks).
pub(crate) struct HistoryDb {
    handle: Mutex<Handle>,
    path: PathBuf,
    /// What the history holds (as last committed; only a move changes it).
    bytes: AtomicU64,
    /// What it may hold (`history_max_bytes`).
    max_bytes: AtomicU64,
}

struct Handle {
    /// `None` only after a re-open failed.
    db: Option<Database>,
    reopen: bool,
}

/// What the history's file says when it is opened.
pub(crate) struct Opened {
    pub db: HistoryDb,
    /// Its `moved` (0 for a new file).
    pub moved: u64,
    /// Where a broken file was moved, when it was set aside.
    pub aside: Option<PathBuf>,
}

impl HistoryDb {
    /// Opens (or creates) `dir/history.redb`. A file there that is not a store is refused
    /// naming it, or with `set_aside` moved aside and started anew.
    pub(crate) fn open(dir: &Path, set_aside: bool) -> Result<Opened, EngineError> {
        let path = dir.join(FILE_NAME);
        let mut aside = None;
        let db = match crate::open_store(dir, &path)? {
            crate::Opened::Store(db) => db,
            crate::Opened::Broken(why) if !set_aside => {
                return Err(crate::broken_error(&path, &why));
            }
            crate::Opened::Broken(_) => {
                let to = crate::set_aside(&path)?;
                aside = Some(to);
                match crate::open_store(dir, &path)? {
                    crate::Opened::Store(db) => db,
                    crate::Opened::Broken(why) => return Err(crate::broken_error(&path, &why)),
                }
            }
        };
        let history = HistoryDb {
            handle: Mutex::new(Handle {
                db: Some(db),
                reopen: false,
            }),
            path,
            bytes: AtomicU64::new(0),
            max_bytes: AtomicU64::new(history::DEFAULT_MAX_BYTES),
        };
        let moved = history.load_meta()?;
        Ok(Opened {
            db: history,
            moved,
            aside,
        })
    }

    pub(crate) fn set_max_bytes(&self, max: u64) {
        self.max_bytes.store(max, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Handle> {
        self.handle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `moved` and the size, and keeps the size.
    fn load_meta(&self) -> Result<u64, EngineError> {
        let txn = self.read()?;
        let (moved, bytes) = match txn.open_table(META) {
            Ok(meta) => {
                let get = |key| {
                    meta.get(key)
                        .map(|g| g.map_or(0, |v| v.value()))
                        .map_err(|e| self.error("cannot read the history's meta", e))
                };
                (get(META_MOVED)?, get(META_BYTES)?)
            }
            Err(TableError::TableDoesNotExist(_)) => (0, 0),
            Err(e) => return Err(self.error("cannot open the history's meta", e)),
        };
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(moved)
    }

    /// Begins a read transaction (the history's queries, `history_read.rs`).
    pub(crate) fn read(&self) -> Result<ReadTransaction, EngineError> {
        let handle = self.lock();
        handle
            .db
            .as_ref()
            .ok_or_else(|| self.error("the history is closed", "re-opening it failed"))?
            .begin_read()
            .map_err(|e| self.error("cannot begin read transaction", e))
    }

    /// Records the log's `rows` (encoded by `history_pending.rs`), lets retention drop what
    /// it may, and sets `moved`, all in one durable transaction.
    pub(crate) fn record(
        &self,
        rows: &[Vec<u8>],
        moved: u64,
        now_ms: u64,
        durable: bool,
    ) -> Result<(), EngineError> {
        let mut handle = self.lock();
        if handle.reopen {
            handle.db = None;
            handle.db = Some(self.reopen_db()?);
            handle.reopen = false;
        }
        let db = handle
            .db
            .as_ref()
            .ok_or_else(|| self.error("the history is closed", "re-opening it failed"))?;
        let result = self.write(db, rows, moved, now_ms, durable);
        // Whatever failed, redb may refuse every later write until it is opened again.
        handle.reopen = result.is_err();
        self.bytes.store(result?, Ordering::Relaxed);
        Ok(())
    }

    fn reopen_db(&self) -> Result<Database, EngineError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match crate::open_store(dir, &self.path)? {
            crate::Opened::Store(db) => Ok(db),
            crate::Opened::Broken(why) => Err(crate::broken_error(&self.path, &why)),
        }
    }

    fn write(
        &self,
        db: &Database,
        rows: &[Vec<u8>],
        moved: u64,
        now_ms: u64,
        durable: bool,
    ) -> Result<u64, EngineError> {
        let e = |what: &str, err: String| self.error(what, err);
        let mut txn = db
            .begin_write()
            .map_err(|err| self.error("cannot begin write transaction", err))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(|err| self.error("cannot set durability", err))?;
        let total = {
            let mut recorder =
                Recorder::open(&txn, self.bytes()).map_err(|err| e("history", err))?;
            for row in rows {
                let change = history_pending::decode(row)
                    .ok_or_else(|| e("history", "a row of the history's log is damaged".into()))?;
                recorder.record(&change).map_err(|err| e("history", err))?;
            }
            // Retention deletes at least as much as came in, so it keeps pace with writes.
            let budget = rows.len().saturating_mul(2);
            let max = self.max_bytes.load(Ordering::Relaxed);
            recorder
                .sweep(now_ms, max, budget)
                .map_err(|err| e("history", err))?;
            recorder.total()
        };
        write_meta(&txn, moved, total).map_err(|err| e("cannot write the history's meta", err))?;
        // Dropping an uncommitted transaction aborts it, so an error above writes nothing.
        txn.commit()
            .map_err(|err| self.error("cannot commit", err))?;
        Ok(total)
    }

    /// Takes over history tables that a store from before this file kept in the state's
    /// file (`main`): copies them here in one transaction, then deletes them there. A crash
    /// in between copies them again, which writes the same rows.
    pub(crate) fn take_over(&self, main: &Database) -> Result<(), EngineError> {
        let read = main
            .begin_read()
            .map_err(|e| self.error("cannot begin read transaction", e))?;
        if !has_table(&read, history::ENTRIES).map_err(|e| self.error("history", e))? {
            return Ok(());
        }
        let bytes = crate::history_bytes_before(&read).map_err(|e| self.error("history", e))?;
        {
            let handle = self.lock();
            let db = handle
                .db
                .as_ref()
                .ok_or_else(|| self.error("the history is closed", "re-opening it failed"))?;
            let txn = db
                .begin_write()
                .map_err(|e| self.error("cannot begin write transaction", e))?;
            history::copy_tables(&read, &txn).map_err(|e| self.error("history", e))?;
            write_meta(&txn, 0, bytes).map_err(|e| self.error("history", e))?;
            txn.commit().map_err(|e| self.error("cannot commit", e))?;
        }
        drop(read);
        let txn = main
            .begin_write()
            .map_err(|e| self.error("cannot begin write transaction", e))?;
        history::delete_tables(&txn).map_err(|e| self.error("history", e))?;
        txn.commit().map_err(|e| self.error("cannot commit", e))?;
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// An error about the history's file: `"{what} in {path}: {err}"`.
    fn error(&self, what: &str, err: impl std::fmt::Display) -> EngineError {
        EngineError(format!("{what} in {}: {err}", self.path.display()))
    }
}

fn write_meta(txn: &WriteTransaction, moved: u64, bytes: u64) -> Result<(), String> {
    let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
    meta.insert(META_MOVED, moved).map_err(|e| e.to_string())?;
    meta.insert(META_BYTES, bytes).map_err(|e| e.to_string())?;
    Ok(())
}

fn has_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<bool, String> {
    match txn.open_table(def) {
        Ok(_) => Ok(true),
        Err(TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}
