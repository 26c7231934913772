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
            let handle = engine.inner.lock();
            let txn = engine.inner.opened(&handle).unwrap().begin_write().unwrap();
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

/// An engine over [`DiskThatFills`] (its history in a directory of its own), and the
/// switch that fills its disk.
fn engine_on_a_disk_that_fills() -> (RedbEngine, Arc<AtomicBool>, TempDir) {
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
    let history = TempDir::new().unwrap();
    let (engine, _) = RedbEngine::over(
        db,
        Box::new(open),
        PathBuf::from("memory"),
        history.path(),
        false,
    )
    .unwrap();
    (engine, full, history)
}

#[test]
fn after_a_full_disk_the_store_takes_writes_again_and_keeps_only_what_was_durable() {
    let (engine, full, _history) = engine_on_a_disk_that_fills();
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
        let [moved] = moved.as_slice() else {
            panic!("one file moved aside: {moved:?}")
        };
        let name = moved.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("statecast.redb.broken-"), "{name}");
        assert_eq!(std::fs::read(moved).unwrap(), broken);
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
    assert_eq!(moved, Vec::<PathBuf>::new());
    assert_eq!(engine.load().unwrap().topics.len(), 1);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [HISTORY_FILE_NAME, FILE_NAME]);
}

/// The changes `engine` has recorded of topic `t`: their revs.
pub(crate) fn history_revs(engine: &RedbEngine) -> Vec<u64> {
    use statecast_core::history::{ChangesQuery, Start};
    let page = engine
        .changes(&ChangesQuery {
            topic: "t",
            kept_since_ms: 0,
            start: Start::Rev(0),
            to_ms: u64::MAX,
            limit: 1000,
        })
        .unwrap();
    page.changes.iter().map(|c| c.rev).collect()
}

#[test]
fn a_broken_history_file_is_refused_naming_it_and_set_aside_on_request_keeping_the_state() {
    let dir = TempDir::new().unwrap();
    RedbEngine::open(dir.path())
        .unwrap()
        .commit(&[rec("t", 1, 1, Some(b"1"))], 1)
        .unwrap();
    std::fs::write(dir.path().join(HISTORY_FILE_NAME), [0xAB; 8192]).unwrap();
    let err = RedbEngine::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains(HISTORY_FILE_NAME), "{err}");
    assert!(err.contains("--reset-broken-store"), "{err}");
    let (engine, moved) = RedbEngine::open_setting_aside(dir.path()).unwrap();
    let [moved] = moved.as_slice() else {
        panic!("one file moved aside: {moved:?}")
    };
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("history.redb.broken-"), "{name}");
    assert_eq!(engine.load().unwrap().topics.len(), 1);
}

#[test]
fn history_kept_in_the_state_file_by_an_older_store_is_taken_over_whole() {
    use crate::history::Recorder;
    use crate::history_pending::PendingChange;
    let dir = TempDir::new().unwrap();
    let now = now_ms();
    let bytes = {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let total = {
            let mut recorder = Recorder::open(&txn, 0).unwrap();
            for rev in 1..=3u32 {
                let state = format!("{{\"n\":{rev}}}");
                recorder
                    .record(&PendingChange {
                        topic: "t",
                        rev: u64::from(rev),
                        time_ms: now + u64::from(rev),
                        keep_ms: 86_400_000,
                        state: Some(state.as_bytes()),
                        patch: None,
                        fields: vec![("/n", f64::from(rev))],
                    })
                    .unwrap();
            }
            recorder.finish().unwrap();
            recorder.total()
        };
        txn.open_table(META)
            .unwrap()
            .insert(META_HISTORY_BYTES, total.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        total
    };
    assert!(bytes > 0);
    let engine = RedbEngine::open(dir.path()).unwrap();
    assert_eq!(history_revs(&engine), [1, 2, 3]);
    assert_eq!(engine.history_bytes(), bytes);
    let points = engine.field_points("t", "/n", 0, 0, u64::MAX).unwrap();
    assert_eq!(points.len(), 3);
    drop(engine);
    let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(matches!(
        txn.open_table(crate::history::ENTRIES),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
}

#[test]
fn the_history_thread_moves_a_full_batch_with_no_read_asking() {
    let dir = TempDir::new().unwrap();
    let engine = RedbEngine::open(dir.path()).unwrap();
    let states: Vec<String> = (1..=history_mover::MOVE_BATCH)
        .map(|n| format!("{{\"n\":{n}}}"))
        .collect();
    let records: Vec<Record<'_>> = states
        .iter()
        .zip(1..)
        .map(|(state, rev)| Record {
            time_ms: now_ms(),
            keep_ms: 86_400_000,
            ..rec("t", rev, rev, Some(state.as_bytes()))
        })
        .collect();
    engine.commit(&records, history_mover::MOVE_BATCH).unwrap();
    // Waits for the thread (bounded; no read may move it meanwhile, as reads move first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.inner.mover.moved() < history_mover::MOVE_BATCH {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread never moved the batch"
        );
        drop(engine.inner.mover.moving());
        std::thread::yield_now();
    }
    assert!(engine.history_bytes() > 0);
    assert_eq!(history_revs(&engine)[..3], [1, 2, 3]);
}
