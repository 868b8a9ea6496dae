//! Raft storage on sled: the log, the vote, the committed index and snapshots.
//!
//! Invariant: the only module that names sled. It implements openraft's storage traits
//! (`RaftLogStorage`, `RaftStateMachine`) for the cluster module.
//!
//! The state machine itself lives in memory (`Engine`): applying is the hot path and stays
//! fast and deterministic. It is made durable by the log (flushed before an append is
//! acknowledged) and by snapshots (written to sled whole); a restarting node loads its last
//! snapshot and openraft replays the log after it.
//!
//! Layout: tree `log` (key = index, big-endian u64, so byte order is numeric order; value =
//! JSON entry), tree `meta` (`vote`, `committed`, `last_purged`), tree `snapshot` (`meta`,
//! `data` of the current snapshot).

mod recent;
pub mod types;

use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::state::{Entry as SmEntry, StateMachine};
use crate::store::types::{
    Entry, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

type IoResult<T> = Result<T, io::Error>;

/// A sled error, or anything else the store cannot do, as the I/O error openraft takes,
/// saying what was being done.
fn io_err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("raft types serialise")
}

fn from_json<T: DeserializeOwned>(b: &[u8], what: &str) -> IoResult<T> {
    serde_json::from_slice(b).map_err(|e| io_err(what, e))
}

/// The opened sled database of a node.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    snapshot: sled::Tree,
    /// sled's data file, fsync'ed after its own flush (sled uses sync_file_range, which does
    /// not flush the disk cache).
    db_file: Option<Arc<std::fs::File>>,
    /// Flushes running now.
    flushing: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. The directory is locked by one process at a
    /// time; while a previous holder (an exiting process, or a node being restarted in the
    /// same process) releases it, opening is retried for up to 5 s.
    pub async fn open(dir: &Path, cache_bytes: u64) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let res = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .flush_every_ms(Some(1000))
                .open();
            match res {
                // sled reports a held lock as a plain I/O error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        let db_file = std::fs::File::open(dir.join("db")).ok().map(Arc::new);
        Ok(Store {
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
            snapshot: db.open_tree("snapshot")?,
            db,
            db_file,
            flushing: Default::default(),
        })
    }

    /// Whether the node has never been part of a cluster (no vote, no log, no snapshot).
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.meta.is_empty() && self.snapshot.is_empty()
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Makes everything written so far durable: sled's flush, then an fsync of its data file,
    /// both on one blocking thread of the runtime the store runs on (the Raft runtime), which
    /// carries that runtime's scheduling priority (`cluster.realtime_priority`). sled's own
    /// `flush_async` would hop to its thread pool first: one more thread to wake per commit.
    async fn flush(&self, what: &str) -> IoResult<()> {
        let (db, file) = (self.db.clone(), self.db_file.clone());
        let started = std::time::Instant::now();
        let _running = Running::start(&self.flushing);
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            db.flush().map_err(std::io::Error::other)?;
            match file {
                Some(f) => f.sync_data(),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| io_err(what, e));
        let res = res?;
        slow_flush(started.elapsed());
        res.map_err(|e| io_err(what, e))
    }

    /// Whether a flush is running now. On a follower, a slow one delays its answers to the
    /// leader (openraft answers an append once it is on disk), so the silence that follows is
    /// this node's own.
    pub fn flushing(&self) -> bool {
        self.flushing.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Flushes everything to disk (shutdown).
    pub async fn close(&self) {
        if let Err(e) = self.flush("flush at shutdown").await {
            tracing::warn!(error = %e, "store flush at shutdown failed");
        }
    }

    /// The log storage half. Starts its flusher ([`flush_appends`]), which ends (releasing
    /// the database) once every clone of the returned store is dropped.
    pub fn log_store(&self) -> LogStore {
        let (flushes, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush_appends(self.clone(), rx));
        LogStore {
            store: self.clone(),
            flushes,
            recent: Default::default(),
        }
    }

    /// The state-machine half, restoring `engine` from the last snapshot if there is one.
    pub fn state_machine(&self, engine: Arc<Engine>) -> anyhow::Result<StateMachineStore> {
        let mut sm = StateMachineStore {
            store: self.clone(),
            engine,
            last_applied: None,
            membership: StoredMembership::default(),
        };
        if let Some(snap) = sm.read_snapshot()? {
            let state: StateMachine = serde_json::from_slice(&snap.1)?;
            sm.engine.install(state);
            sm.last_applied = snap.0.last_log_id;
            sm.membership = snap.0.last_membership;
        }
        Ok(sm)
    }
}

/// Counts one running flush while it lives.
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Running<'a> {
    fn start(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running(n)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// openraft's log storage on sled.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    /// Appended batches waiting to be acknowledged by [`flush_appends`].
    flushes: mpsc::UnboundedSender<IOFlushed<TypeConfig>>,
    /// The newest entries, read back from memory (replication, apply).
    recent: Arc<recent::Recent>,
}

/// Most appended batches acknowledged by one flush.
const FLUSH_GROUP: usize = 1024;

/// Tells Raft an appended batch is on disk (or why not).
fn acknowledge(callback: IOFlushed<TypeConfig>, res: &IoResult<()>) {
    callback.io_completed(match res {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    });
}

/// A flush longer than this is logged: a follower's answers to its leader wait for it, and
/// commits too when it is a majority's slowest.
const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_millis(250);

/// Counts a flush's time; a slow one is a warning, at most one every ten seconds (with how
/// many there were since the last), so a disk that stays slow is visible but not a flood.
fn slow_flush(took: std::time::Duration) {
    static SINCE_WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static LAST_WARNED: parking_lot::Mutex<Option<std::time::Instant>> =
        parking_lot::Mutex::new(None);
    metrics::histogram!(crate::metrics::STORE_FLUSH_DURATION).record(took.as_secs_f64());
    if took < SLOW_FLUSH {
        return;
    }
    let slow = SINCE_WARNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let mut last = LAST_WARNED.lock();
    if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    SINCE_WARNED.store(0, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        took_ms = took.as_millis() as u64,
        slow_flushes = slow,
        "slow disk: a store flush (sled flush and fsync) took longer than 250 ms; this node's acknowledgements of appends wait for it"
    );
}

/// The flush behind `append`: `append` writes a batch into sled and queues its callback
/// here; this task flushes once for everything queued and then acknowledges those batches in
/// append order, so nothing is acknowledged before it is on disk. openraft does not wait for
/// the callback before its next command (a leader replicates an entry while its own flush
/// runs), so batches appended during a flush share the next one; a follower answers an append
/// once its callback came.
async fn flush_appends(store: Store, mut rx: mpsc::UnboundedReceiver<IOFlushed<TypeConfig>>) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, FLUSH_GROUP).await > 0 {
        let res = store.flush("flush appended entries").await;
        for callback in waiting.drain(..) {
            acknowledge(callback, &res);
        }
    }
}

impl LogStore {
    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> IoResult<Option<T>> {
        match self.store.meta.get(key).map_err(|e| io_err(key, e))? {
            Some(v) => Ok(Some(from_json(&v, key)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &str, v: &T) -> IoResult<()> {
        self.store
            .meta
            .insert(key, to_json(v))
            .map_err(|e| io_err(key, e))?;
        Ok(())
    }
}

fn bound_key(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> IoResult<Vec<Entry>> {
        if let Some(entries) = self.recent.get(range.clone()) {
            return Ok(entries);
        }
        let r = (bound_key(range.start_bound()), bound_key(range.end_bound()));
        let mut out = Vec::new();
        for kv in self.store.log.range::<[u8; 8], _>(r) {
            let (_, v) = kv.map_err(|e| io_err("read log", e))?;
            out.push(from_json(&v, "log entry")?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> IoResult<Option<Vote>> {
        self.get_meta("vote")
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> IoResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_meta("last_purged")?;
        let last = match self.store.log.last().map_err(|e| io_err("read log", e))? {
            Some((_, v)) => Some(from_json::<Entry>(&v, "log entry")?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> IoResult<()> {
        self.put_meta("vote", vote)?;
        self.store.flush("flush vote").await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> IoResult<()> {
        // Not flushed on its own: losing it only means re-learning the commit index.
        self.put_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> IoResult<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> IoResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One insert per entry, not a `sled::Batch`: sled writes a batch by first writing out
        // the I/O buffer in progress and then a buffer holding only the batch's manifest, each
        // with its own waited `sync_file_range`, so a batch cost every append two more disk
        // writes in a row before its flush. Atomicity is not needed: sled recovers its log in
        // order up to the first incomplete write, so a crash leaves a prefix of the entries,
        // which Raft handles (the append was not acknowledged).
        for e in entries {
            let json = to_json(&e);
            let size = json.len();
            self.store
                .log
                .insert(e.log_id.index.to_be_bytes(), json)
                .map_err(|err| io_err("append to log", err))?;
            self.recent.push(e, size);
        }
        // Acknowledged by the flusher once on disk (shared by the batches queued with it).
        if let Err(mpsc::error::SendError(callback)) = self.flushes.send(callback) {
            // The flusher is gone (only if it panicked): flush here.
            let res = self.store.flush("flush appended entries").await;
            acknowledge(callback, &res);
            return res;
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> IoResult<()> {
        // The one sled batch left: removed one by one from the lowest, a crash part-way
        // would leave a gap in the log. Truncation is rare (a follower's conflicting tail).
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.recent.truncate_from(from);
        let mut batch = sled::Batch::default();
        for kv in self.store.log.range(from.to_be_bytes()..) {
            let (k, _) = kv.map_err(|e| io_err("truncate log", e))?;
            batch.remove(k);
        }
        self.store
            .log
            .apply_batch(batch)
            .map_err(|e| io_err("truncate log", e))?;
        self.store.flush("flush truncated log").await
    }

    async fn purge(&mut self, log_id: LogId) -> IoResult<()> {
        self.put_meta("last_purged", &log_id)?;
        self.recent.purge_to(log_id.index);
        // Single removes, not a `sled::Batch` (see `append`; and one batch removing thousands
        // of entries made sled buffer all of it at once, with a heap it did not return). In
        // order from the oldest, so a crash part-way leaves a suffix, which the next purge
        // removes. The Raft core is yielded to between chunks.
        let end = log_id.index.to_be_bytes();
        loop {
            let mut n = 0;
            for k in self.store.log.range(..=end).keys().take(PURGE_CHUNK) {
                let k = k.map_err(|e| io_err("purge log", e))?;
                self.store
                    .log
                    .remove(k)
                    .map_err(|e| io_err("purge log", e))?;
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Log entries removed between two yields to the Raft core when purging.
const PURGE_CHUNK: usize = 256;

/// openraft's state machine: applies entries to the [`Engine`], keeps snapshots in sled.
pub struct StateMachineStore {
    store: Store,
    engine: Arc<Engine>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl StateMachineStore {
    fn read_snapshot(&self) -> IoResult<Option<(SnapshotMeta, Vec<u8>)>> {
        let get = |k: &str| {
            self.store
                .snapshot
                .get(k)
                .map_err(|e| io_err("read snapshot", e))
        };
        match (get("meta")?, get("data")?) {
            (Some(m), Some(d)) => Ok(Some((from_json(&m, "snapshot meta")?, d.to_vec()))),
            _ => Ok(None),
        }
    }

    async fn write_snapshot(store: &Store, meta: &SnapshotMeta, data: &[u8]) -> IoResult<()> {
        let mut batch = sled::Batch::default();
        batch.insert("meta", to_json(meta));
        batch.insert("data", data);
        store
            .snapshot
            .apply_batch(batch)
            .map_err(|e| io_err("write snapshot", e))?;
        store.flush("flush snapshot").await
    }
}

/// Builds a snapshot from state captured when openraft asked for a builder (applies pause
/// while the state is serialised, so the data and `last_applied` match).
pub struct SnapshotBuilder {
    store: Store,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> IoResult<Snapshot> {
        StateMachineStore::write_snapshot(&self.store, &self.meta, &self.data).await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Cursor::new(std::mem::take(&mut self.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> IoResult<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> IoResult<()>
    where
        Strm: Stream<Item = IoResult<openraft::storage::EntryResponder<TypeConfig>>>
            + Unpin
            + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (e, responder) = next?;
            let results = match e.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => self.engine.apply(&SmEntry {
                    index: e.log_id.index,
                    time_ms: batch.time_ms,
                    ops: batch.ops,
                }),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Vec::new()
                }
            };
            self.last_applied = Some(e.log_id);
            if let Some(r) = responder {
                r.send(results);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            data: self.engine.read(to_json),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> IoResult<()> {
        let data = snapshot.into_inner();
        let state: StateMachine = from_json(&data, "received snapshot")?;
        Self::write_snapshot(&self.store, meta, &data).await?;
        self.engine.install(state);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> IoResult<Option<Snapshot>> {
        Ok(self.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Cursor::new(data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::vote::RaftLeaderIdExt;

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<
            (tempfile::TempDir, LogStore, StateMachineStore),
            openraft::StorageError<TypeConfig>,
        > {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), 4 << 20).await.expect("open store");
            let sm = store
                .state_machine(Arc::new(Engine::default()))
                .expect("state machine");
            Ok((dir, store.log_store(), sm))
        }
    }

    /// The whole openraft storage contract, against sled.
    #[tokio::test]
    async fn openraft_storage_suite() {
        Suite::test_all(Builder).await.unwrap();
    }

    /// Appends are acknowledged by the flusher (blocking_append waits for the callback) and
    /// are readable; once the log store is dropped the flusher ends and lets go of the
    /// database, so the directory opens again (a node restarting in the same process).
    #[tokio::test]
    async fn appends_are_acknowledged_and_the_flusher_releases_the_database() {
        use openraft::storage::RaftLogStorageExt;
        let dir = tempfile::tempdir().unwrap();
        let entry = |i: u64| Entry {
            log_id: LogId::new(LeaderId::new_committed(1, 1), i),
            payload: EntryPayload::Blank,
        };
        {
            let store = Store::open(dir.path(), 4 << 20).await.unwrap();
            let mut log = store.log_store();
            for i in 1..=3 {
                log.blocking_append([entry(i)]).await.unwrap();
            }
            log.blocking_append((4..=10).map(entry)).await.unwrap();
            let got = log.try_get_log_entries(0..=10).await.unwrap();
            assert_eq!(got.len(), 10);
        }
        let store = Store::open(dir.path(), 4 << 20).await.expect("released");
        let state = store.log_store().get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(10));
    }

    /// Reads of the newest entries are served from memory and give exactly what sled holds,
    /// through appends, a truncated tail appended again in a new term, and a purge.
    #[tokio::test]
    async fn the_in_memory_tail_matches_the_log_on_disk() {
        use openraft::storage::RaftLogStorageExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4 << 20).await.unwrap();
        let entry = |term: u64, i: u64| Entry {
            log_id: LogId::new(LeaderId::new_committed(term, 1), i),
            payload: EntryPayload::Normal(types::Batch {
                time_ms: i,
                ops: vec![crate::state::Op::EnsureStream {
                    channel: format!("c{term}-{i}"),
                    history: crate::state::HistoryPolicy::NONE,
                    new_epoch: "e".into(),
                }]
                .into(),
            }),
        };
        let mut log = store.log_store();
        log.blocking_append((1..=20).map(|i| entry(1, i)))
            .await
            .unwrap();
        log.truncate_after(Some(entry(1, 15).log_id)).await.unwrap();
        log.blocking_append((16..=18).map(|i| entry(2, i)))
            .await
            .unwrap();
        log.purge(entry(1, 5).log_id).await.unwrap();
        assert!(
            log.recent.get(6..19).is_some(),
            "the tail is held in memory"
        );
        let from_memory = log.try_get_log_entries(6..=18).await.unwrap();
        // A second log store over the same database holds nothing yet: it reads sled.
        let from_disk = store.log_store().try_get_log_entries(6..=18).await.unwrap();
        assert_eq!(to_json(&from_memory), to_json(&from_disk));
        let indexes: Vec<u64> = from_disk.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (6..=18).collect::<Vec<_>>());
        assert_eq!(
            from_disk[12].log_id.leader_id.term, 2,
            "the re-appended tail"
        );
        assert!(log.recent.get(5..6).is_none(), "purged");
        assert!(log.recent.get(18..20).is_none(), "truncated");
    }

    /// A purge far larger than one chunk removes exactly the entries up to the purged index.
    #[tokio::test]
    async fn purge_in_chunks_removes_exactly_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 4 << 20).await.unwrap();
        let entry = |i: u64| Entry {
            log_id: LogId::new(LeaderId::new_committed(1, 1), i),
            payload: EntryPayload::Blank,
        };
        let total = PURGE_CHUNK as u64 * 4 + 10;
        for i in 1..=total {
            store
                .log
                .insert(i.to_be_bytes(), to_json(&entry(i)))
                .unwrap();
        }
        let mut log = store.log_store();
        let upto = PURGE_CHUNK as u64 * 3 + 7;
        log.purge(entry(upto).log_id).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(upto));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(total));
        let left = log.try_get_log_entries(0..=total).await.unwrap();
        let indexes: Vec<u64> = left.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, ((upto + 1)..=total).collect::<Vec<_>>());
    }
}
