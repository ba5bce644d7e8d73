//! SCIM writes and audit appends share transactions on SQLite's single writer (group commit,
//! issue 18).
//!
//! An Entra ID initial cycle sends thousands of creates a minute from many connections. One
//! transaction each costs each create a `BEGIN IMMEDIATE`, a `COMMIT` that appends every page it
//! touched to the WAL, and a place in the writer's queue; 16 clients got about 1,000 users/s. Here
//! a SCIM write is handed to one task, which runs whatever has queued (up to `BATCH`) in one
//! transaction, each write inside a savepoint of its own: a write that fails, or ends in
//! anything but `Done` (not found, a missing member, a refused PATCH), is rolled back to its
//! savepoint alone, and the others commit. Nobody hears "done" before the commit: each answer is
//! sent after it, and if the commit fails, every write of the batch answers that error.
//!
//! Audit appends go the same way, through a `GroupCommit` of their own (`Db::Sqlite`'s `prompt`
//! lane): a step-up's entries are never inside a batch of SCIM creates. They come one at a time,
//! so when the writer is free an append runs at once on its caller's thread, as a batch of one
//! (`When::FreeAtOnce`), and is queued only when it would have to wait.
//!
//! A batch runs on a connection of its own (`open_writer`), on a thread of its own, while it holds
//! the process's write lock (`WriteLock`): its statements are calls there. On sqlx's connection
//! each statement was a hand-off to the connection's thread and back; the POST profile had 40% of
//! the server's samples on that thread and a third of all time in the kernel switching threads
//! (16 clients: 2,240 users/s before, 7,618 after, at 100,000 users).
//!
//! The task owns each write from the moment it is queued, so a client that goes away cannot cut
//! one in half (the standing rule of issue 13). The batch holds the writer for its duration, so
//! `BATCH_TIME` bounds what a step-up write waits behind.
//!
//! Postgres has a pool and several instances: a write there is a transaction of its own.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::{Connection, OpenFlags};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::BACKSTOP_PAGES;
use super::db::{WriteLock, WriteTx};
use super::scim::{Deleted, Written};
use super::{Result, StoreError};

/// Writes per transaction at most.
const BATCH: usize = 64;
/// No write joins a batch that has run this long: what a step-up's write waits behind on the
/// writer. With 32 writes and no time limit, 16 clients creating users made 1,800 users/s and
/// the step-up's paced round trip p50 26 ms (11 ms with the old one-place semaphore).
const BATCH_TIME: Duration = Duration::from_millis(1);
/// Writes waiting for the task before callers wait to queue.
const QUEUE: usize = 1_024;
/// How long a batch waits for another process's write (the CLI) to end, as sqlx's writer does.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a write's changes are kept: only when it did what it was asked.
pub(super) trait Outcome {
    fn keep(&self) -> bool;
}

impl Outcome for Written {
    fn keep(&self) -> bool {
        matches!(self, Written::Done(_))
    }
}

/// An audit append: kept whenever it did not fail.
impl Outcome for () {
    fn keep(&self) -> bool {
        true
    }
}

impl Outcome for Deleted {
    fn keep(&self) -> bool {
        matches!(self, Deleted::Done)
    }
}

/// A write's statements, run on the shared transaction. They use only `WriteTx`: the batch holds
/// the write lock, so a write that reached for the `Db`'s own writer would wait for itself.
pub(super) type Work<T> = Box<dyn for<'t> FnOnce(WriteTx<'t>) -> BoxFuture<'t, Result<T>> + Send>;

/// What the task calls once the batch's commit has ended: sends the write its answer.
type Answer = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A queued write: runs on the batch's transaction, says whether its changes are kept, and
/// leaves its answer for after the commit.
type Job = Box<dyn for<'t> FnOnce(WriteTx<'t>) -> BoxFuture<'t, (bool, Answer)> + Send>;

/// The connection the batches write on: the file's second writing connection, beside sqlx's.
/// The two never write at once: both write only under the process's write lock (`WriteLock`), so
/// inside the process writers queue in order, and only another process (the CLI) meets the busy
/// timeout.
pub(super) fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Per connection, as sqlx sets them on its own (`db::open_sqlite`).
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
    Ok(conn)
}

/// When a lane's write runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    /// Always in a batch on the writer's thread: SCIM's writes, which come many at a time and
    /// gain from sharing a commit.
    Queued,
    /// At once on the caller's thread, as a batch of one, when the write lock and the file are
    /// both free; otherwise queued. A step-up's audit append comes alone, and the lock is
    /// almost always free then: queued, it woke the writer's thread and then the caller's, two
    /// of the paced step-up's context switches per append (issue 18).
    FreeAtOnce,
}

pub(super) struct GroupCommit {
    /// The process's write lock, held by a batch for its duration.
    lock: WriteLock,
    /// Shared by the lanes; used by whichever holds `lock`.
    conn: Arc<Mutex<Connection>>,
    when: When,
    /// Started on first use, inside the runtime.
    sender: OnceLock<mpsc::Sender<Job>>,
}

impl GroupCommit {
    pub(super) fn new(lock: WriteLock, conn: Arc<Mutex<Connection>>, when: When) -> GroupCommit {
        GroupCommit {
            lock,
            conn,
            when,
            sender: OnceLock::new(),
        }
    }

    /// Runs `work` in the next batch; answers once that batch has committed (or failed to).
    pub(super) async fn write<T>(&self, work: Work<T>) -> Result<T>
    where
        T: Outcome + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx: WriteTx<'_>| {
            Box::pin(async move {
                let out = work(tx).await;
                let keep = matches!(&out, Ok(r) if r.keep());
                let answer: Answer = Box::new(move |committed| {
                    let _ = reply.send(match committed {
                        Ok(()) => out,
                        Err(e) => out.and(Err(StoreError::Unavailable(e))),
                    });
                });
                (keep, answer)
            })
        });
        let job = match self.when {
            When::FreeAtOnce => {
                // What the caller has just woken runs first: a decision announces itself to the
                // browser's stream, then appends its entry; run at once without this, the
                // append held the stream's task, which waits on this thread, for its length.
                // A caller dropped here loses its write, as one dropped while `queue` waits for
                // room would: every append is made from a detached handler (issue 13: moved into a
                // task of its own, not dropped, when its client leaves) or a background task.
                tokio::task::yield_now().await;
                self.run_at_once(job)
            }
            When::Queued => Err(job),
        };
        if let Err(job) = job {
            self.queue(job).await?;
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the batch writer dropped a write".into()))?
    }

    /// Runs `job` on this thread as a batch of one, if the write lock and the file are free now;
    /// gives it back otherwise. Nothing here awaits: from the lock taken to the answer sent, a
    /// caller that goes away cannot stop it half-way. It holds the thread for the write's few
    /// statements and its commit, which in WAL mode with `synchronous = NORMAL` syncs nothing.
    /// Nothing here waits either: not for another process on the file (the busy handler), and
    /// not for SQLite's own backstop checkpoint, which copies pages and syncs two files when the
    /// WAL is long (`checkpoint.rs`): both are left to the writer's thread and sqlx's writer.
    fn run_at_once(&self, job: Job) -> std::result::Result<(), Job> {
        let Some(held) = self.lock.try_take() else {
            return Err(job);
        };
        let mut conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(p)) => recovered(&self.conn, p),
            Err(TryLockError::WouldBlock) => return Err(job),
        };
        // `BEGIN IMMEDIATE` fails at once, rather than sleeping in the busy handler, while the
        // CLI writes the file; the commit does not checkpoint.
        let began = conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .and_then(|()| conn.busy_timeout(Duration::ZERO))
            .and_then(|()| conn.execute_batch("BEGIN IMMEDIATE"));
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::error!(error = %e, "the writer's busy timeout could not be set back");
        }
        if began.is_err() {
            checkpoint_again(&conn);
            return Err(job);
        }
        // Statements on `WriteTx::Direct` are calls, so the write's future is ready on its first
        // poll (audit appends are: their tests would hear every one refused otherwise). One that
        // is not, or that panics, is dropped with its reply: its caller hears that the writer
        // dropped it, and its changes are rolled back.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            job(WriteTx::Direct(&mut conn)).now_or_never()
        }));
        let (keep, answer) = match ran {
            Ok(Some(done)) => done,
            failed => {
                if failed.is_err() {
                    tracing::error!("a write run at once panicked; it is rolled back");
                } else {
                    tracing::error!("a write run at once awaited something; it is rolled back");
                }
                roll_back_if_open(&conn);
                checkpoint_again(&conn);
                return Ok(());
            }
        };
        let ended = conn
            .execute_batch(if keep { "COMMIT" } else { "ROLLBACK" })
            .map_err(|e| format!("a write failed to commit and was rolled back: {e}"));
        if ended.is_err() {
            roll_back_if_open(&conn);
        }
        checkpoint_again(&conn);
        drop(conn);
        drop(held);
        if let Err(e) = &ended {
            tracing::error!(error = %e, "a write run at once failed");
        }
        answer(ended);
        Ok(())
    }

    /// Hands `job` to the writer's thread, started on first use.
    async fn queue(&self, job: Job) -> Result<()> {
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (lock, conn, handle) = (self.lock.clone(), self.conn.clone(), Handle::current());
            let started = std::thread::Builder::new()
                .name("sqlite-batches".into())
                .spawn(move || run_batches(lock, conn, handle, rx));
            if let Err(e) = started {
                // `rx` went with the closure: every write hears that the writer has stopped.
                tracing::error!(error = %e, "the batch writer's thread could not start");
            }
            tx
        });
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the batch writer has stopped".into()))
    }
}

/// The batch writer's thread, until its `GroupCommit` is dropped: takes the process's write lock
/// for each batch and runs the batch. A write queued wakes this thread, and its answer the
/// caller's task: where a statement on sqlx's connection is two hand-offs, a batch is two. A
/// write taken but never run is dropped, and its caller hears that the writer is unavailable.
fn run_batches(
    lock: WriteLock,
    conn: Arc<Mutex<Connection>>,
    handle: Handle,
    mut rx: mpsc::Receiver<Job>,
) {
    // The lock's timeout is a timer of the runtime's.
    let _runtime = handle.enter();
    while let Some(first) = rx.blocking_recv() {
        let held = match handle.block_on(lock.take()) {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "the writer is unavailable; a batched write is dropped");
                continue;
            }
        };
        let mut answers = Vec::new();
        let committed = {
            let mut conn = conn.lock().unwrap_or_else(|p| recovered(&conn, p));
            run_batch(&mut conn, &handle, first, &mut rx, &mut answers)
        };
        drop(held);
        if let Err(e) = &committed {
            tracing::error!(error = %e, writes = answers.len(), "a write batch failed");
        }
        for answer in answers {
            answer(committed.clone());
        }
    }
}

/// The writer's connection back from a mutex a panic poisoned: the panic may have come inside a
/// transaction, which is rolled back, so that the next batch can begin.
fn recovered<'m>(
    mutex: &'m Mutex<Connection>,
    poisoned: PoisonError<MutexGuard<'m, Connection>>,
) -> MutexGuard<'m, Connection> {
    let conn = poisoned.into_inner();
    roll_back_if_open(&conn);
    mutex.clear_poison();
    conn
}

/// Rolls back the transaction `conn` is still in, if any: after a write or a commit that
/// failed, a write dropped half-way, or a panic that poisoned the writer.
fn roll_back_if_open(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "the writer's open transaction could not be rolled back");
        }
    }
}

/// The writer's backstop checkpoint back on, after a write run at once (`open_writer`).
fn checkpoint_again(conn: &Connection) {
    if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES) {
        tracing::error!(error = %e, "the writer's backstop checkpoint could not be set back");
    }
}

/// One transaction: `first`, then whatever else has queued, while the batch is under `BATCH`
/// writes and `BATCH_TIME` old. Each write runs inside `SAVEPOINT w`; the answer of every write
/// that ran is pushed to `answers`. The connection is outside any transaction when it returns.
fn run_batch(
    conn: &mut Connection,
    handle: &Handle,
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    answers: &mut Vec<Answer>,
) -> std::result::Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("a write batch could not begin: {e}"))?;
    let ran = run_writes(conn, handle, first, rx, answers);
    let ended = ran.and_then(|()| {
        conn.execute_batch("COMMIT")
            .map_err(|e| format!("a write batch failed to commit and was rolled back: {e}"))
    });
    if ended.is_err() {
        roll_back_if_open(conn);
    }
    ended
}

/// The writes of a batch, each kept or rolled back to its savepoint alone; Err ends the batch.
fn run_writes(
    conn: &mut Connection,
    handle: &Handle,
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    answers: &mut Vec<Answer>,
) -> std::result::Result<(), String> {
    let failed = |e: rusqlite::Error| format!("a write batch failed and was rolled back: {e}");
    let started = Instant::now();
    conn.execute_batch("SAVEPOINT w").map_err(failed)?;
    let mut job = first;
    loop {
        // The write's future never waits on this connection (each statement is a call), so
        // `block_on` only polls it; a panic fails its batch, not the thread every later write
        // needs.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            handle.block_on(job(WriteTx::Direct(&mut *conn)))
        }));
        let Ok((keep, answer)) = ran else {
            tracing::error!("a batched write panicked; its batch is rolled back");
            return Err("a batched write panicked; its batch was rolled back".into());
        };
        answers.push(answer);
        let next = if answers.len() < BATCH && started.elapsed() < BATCH_TIME {
            rx.try_recv().ok()
        } else {
            None
        };
        let sql = match (keep, next.is_some()) {
            (true, false) => None,
            (true, true) => Some("RELEASE w; SAVEPOINT w"),
            (false, false) => Some("ROLLBACK TO w"),
            (false, true) => Some("ROLLBACK TO w; RELEASE w; SAVEPOINT w"),
        };
        if let Some(sql) = sql {
            conn.execute_batch(sql).map_err(failed)?;
        }
        match next {
            Some(n) => job = n,
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::readers::args;
    use sqlx::sqlite::SqlitePoolOptions;
    use sqlx::SqlitePool;

    async fn writer(when: When) -> (tempfile::TempDir, SqlitePool, WriteLock, GroupCommit) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let conn = Arc::new(Mutex::new(open_writer(&path).unwrap()));
        let lock = WriteLock::default();
        let commit = GroupCommit::new(lock.clone(), conn, when);
        (dir, pool, lock, commit)
    }

    /// Inserts `keys` one statement each, then ends as `outcome`.
    fn insert(keys: &'static [&'static str], outcome: Deleted) -> Work<Deleted> {
        Box::new(move |mut tx: WriteTx<'_>| {
            Box::pin(async move {
                for k in keys {
                    tx.execute("INSERT INTO t (k) VALUES ($1)", args![*k])
                        .await?;
                }
                Ok(outcome)
            })
        })
    }

    async fn keys(pool: &SqlitePool) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// Writes queued together share transactions, and each keeps or loses only its own changes:
    /// one that fails half-way (a key it has just inserted, again) and one that ends other than
    /// `Done` leave nothing, and every other commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_write_in_a_batch_keeps_or_loses_only_its_own_changes() {
        for when in [When::Queued, When::FreeAtOnce] {
            writes_keep_or_lose_only_their_own_changes(when).await;
        }
    }

    async fn writes_keep_or_lose_only_their_own_changes(when: When) {
        let (_dir, pool, lock, commit) = writer(when).await;
        let commit = Arc::new(commit);
        // The write lock held: the first write's batch waits to begin, and the other five queue
        // behind it and make the next batch together.
        let held = lock.take().await.unwrap();
        let mut writes = Vec::new();
        const FRESH: [&[&str]; 6] = [&["a"], &["b"], &["c"], &["d"], &["e"], &["f"]];
        for (i, keys) in FRESH.into_iter().enumerate() {
            let c = commit.clone();
            writes.push(tokio::spawn(async move {
                match i {
                    // Inserts "x", then fails inserting it again.
                    2 => match c.write(insert(&["x", "x"], Deleted::Done)).await {
                        Err(StoreError::Conflict) => Some("failed"),
                        _ => None,
                    },
                    // Inserts "y", then ends NotFound: rolled back.
                    4 => c
                        .write(insert(&["y"], Deleted::NotFound))
                        .await
                        .ok()
                        .map(|_| "not found"),
                    _ => c
                        .write(insert(keys, Deleted::Done))
                        .await
                        .ok()
                        .map(|_| "done"),
                }
            }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(held);
        let outcomes: Vec<_> = futures_util::future::join_all(writes)
            .await
            .into_iter()
            .map(|joined| joined.unwrap())
            .collect();
        assert_eq!(
            outcomes,
            vec![
                Some("done"),
                Some("done"),
                Some("failed"),
                Some("done"),
                Some("not found"),
                Some("done")
            ]
        );
        assert_eq!(keys(&pool).await, vec!["a", "b", "d", "f"]);
        // The writer is outside any transaction again, and usable.
        commit.write(insert(&["z"], Deleted::Done)).await.unwrap();
        assert_eq!(keys(&pool).await, vec!["a", "b", "d", "f", "z"]);
    }

    /// A batch writes only under the process's write lock, as sqlx's writer does (`Db::write`,
    /// `Db::begin`): held elsewhere, the write waits for it, then commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_waits_for_the_write_lock() {
        for when in [When::Queued, When::FreeAtOnce] {
            waits_for_the_write_lock(when).await;
        }
    }

    async fn waits_for_the_write_lock(when: When) {
        let (_dir, pool, lock, commit) = writer(when).await;
        let commit = Arc::new(commit);
        let held = lock.take().await.unwrap();
        let c = commit.clone();
        let write = tokio::spawn(async move { c.write(insert(&["late"], Deleted::Done)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!write.is_finished(), "the batch ran without the lock");
        assert!(keys(&pool).await.is_empty());
        drop(held);
        write.await.unwrap().unwrap();
        assert_eq!(keys(&pool).await, vec!["late"]);
    }

    /// A write whose caller has gone still runs to its end (issue 13's rule).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_outlives_its_caller() {
        for when in [When::Queued, When::FreeAtOnce] {
            outlives_its_caller(when).await;
        }
    }

    async fn outlives_its_caller(when: When) {
        let (_dir, pool, _lock, commit) = writer(when).await;
        let commit = Arc::new(commit);
        let c = commit.clone();
        let caller = tokio::spawn(async move { c.write(insert(&["kept"], Deleted::Done)).await });
        tokio::task::yield_now().await;
        caller.abort();
        // Queued behind it: when this one is answered, the first has been committed.
        commit
            .write(insert(&["after"], Deleted::Done))
            .await
            .unwrap();
        let got = keys(&pool).await;
        assert!(got.contains(&"after".to_owned()), "{got:?}");
        if got.len() == 1 {
            // The abort came before the write was queued (or run) at all: nothing was cut
            // half-way.
            return;
        }
        assert_eq!(got, vec!["after", "kept"]);
    }

    /// Another process on the file (the CLI) holding the write lock: the batch waits for it on
    /// its own thread, then commits; nothing is lost and the runtime is not held up meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_waits_out_another_process_holding_the_file() {
        for when in [When::Queued, When::FreeAtOnce] {
            waits_out_another_process_holding_the_file(when).await;
        }
    }

    async fn waits_out_another_process_holding_the_file(when: When) {
        let (dir, pool, _lock, commit) = writer(when).await;
        let commit = Arc::new(commit);
        let other = Connection::open(dir.path().join("g.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (k) VALUES ('cli');")
            .unwrap();
        let c = commit.clone();
        let write = tokio::spawn(async move { c.write(insert(&["server"], Deleted::Done)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !write.is_finished(),
            "the batch cannot commit while the CLI holds the file"
        );
        // The runtime still runs other work meanwhile.
        tokio::time::timeout(Duration::from_millis(100), tokio::task::yield_now())
            .await
            .unwrap();
        other.execute_batch("COMMIT").unwrap();
        write.await.unwrap().unwrap();
        assert_eq!(keys(&pool).await, vec!["cli", "server"]);
    }

    /// The prompt lane with the writer free: the write runs on the caller's thread, before its
    /// call returns, and the writer's thread is never started. A write that ends other than
    /// `Done`, or fails half-way, leaves nothing and the connection outside any transaction.
    #[tokio::test]
    async fn a_write_runs_at_once_when_the_writer_is_free() {
        let (_dir, pool, _lock, commit) = writer(When::FreeAtOnce).await;
        let caller = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(None));
        let seen = ran_on.clone();
        let work: Work<Deleted> = Box::new(move |mut tx: WriteTx<'_>| {
            *seen.lock().unwrap() = Some(std::thread::current().id());
            Box::pin(async move {
                tx.execute("INSERT INTO t (k) VALUES ($1)", args!["now"])
                    .await?;
                // Its commit will not checkpoint on this thread.
                let backstop: Option<(i64,)> = tx
                    .optional("PRAGMA wal_autocheckpoint", args![], |r| Ok((r.get(0)?,)))
                    .await?;
                assert_eq!(backstop, Some((0,)));
                Ok(Deleted::Done)
            })
        });
        assert!(matches!(commit.write(work).await, Ok(Deleted::Done)));
        assert_eq!(*ran_on.lock().unwrap(), Some(caller));
        assert!(commit.sender.get().is_none(), "the write was queued");
        assert_eq!(settings(&commit), BATCH_SETTINGS);
        assert!(matches!(
            commit.write(insert(&["gone"], Deleted::NotFound)).await,
            Ok(Deleted::NotFound)
        ));
        assert!(matches!(
            commit.write(insert(&["x", "x"], Deleted::Done)).await,
            Err(StoreError::Conflict)
        ));
        commit
            .write(insert(&["later"], Deleted::Done))
            .await
            .unwrap();
        assert_eq!(keys(&pool).await, vec!["later", "now"]);
        assert!(commit.sender.get().is_none());
    }

    /// Another process holding the file: a write of the prompt lane does not wait for it on the
    /// runtime's thread (here the only one), but on the writer's, with the busy timeout it had
    /// before, and then commits.
    #[tokio::test]
    async fn a_write_at_once_never_waits_for_the_file_on_the_callers_thread() {
        let (dir, pool, _lock, commit) = writer(When::FreeAtOnce).await;
        let commit = Arc::new(commit);
        let other = Connection::open(dir.path().join("g.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (k) VALUES ('cli');")
            .unwrap();
        let started = Instant::now();
        let c = commit.clone();
        let write = tokio::spawn(async move { c.write(insert(&["server"], Deleted::Done)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Waiting in the busy handler, the spawned write would have held this thread for
        // `BUSY_TIMEOUT` before the sleep could end.
        assert!(started.elapsed() < BUSY_TIMEOUT / 2);
        assert!(!write.is_finished());
        assert!(commit.sender.get().is_some(), "the write was not queued");
        other.execute_batch("COMMIT").unwrap();
        write.await.unwrap().unwrap();
        assert_eq!(keys(&pool).await, vec!["cli", "server"]);
    }

    /// The writer's settings as the batches need them: the busy timeout, and the backstop
    /// checkpoint on.
    fn settings(commit: &GroupCommit) -> (i64, i64) {
        let conn = commit.conn.lock().unwrap();
        let get = |pragma: &str| {
            conn.pragma_query_value(None, pragma, |r| r.get::<_, i64>(0))
                .unwrap()
        };
        (get("busy_timeout"), get("wal_autocheckpoint"))
    }

    const BATCH_SETTINGS: (i64, i64) = (BUSY_TIMEOUT.as_millis() as i64, BACKSTOP_PAGES as i64);

    /// A write run at once that awaits something, or panics, after a statement: its caller hears
    /// that the writer dropped it, its statement is rolled back, and the writer is as usable, and
    /// as set, as before.
    #[tokio::test]
    async fn a_write_at_once_that_awaits_or_panics_leaves_nothing() {
        let (_dir, pool, _lock, commit) = writer(When::FreeAtOnce).await;
        assert_eq!(settings(&commit), BATCH_SETTINGS);
        let awaits: Work<Deleted> = Box::new(|mut tx: WriteTx<'_>| {
            Box::pin(async move {
                tx.execute("INSERT INTO t (k) VALUES ($1)", args!["awaited"])
                    .await?;
                tokio::task::yield_now().await;
                Ok(Deleted::Done)
            })
        });
        let panics: Work<Deleted> = Box::new(|mut tx: WriteTx<'_>| {
            Box::pin(async move {
                tx.execute("INSERT INTO t (k) VALUES ($1)", args!["panicked"])
                    .await?;
                panic!("a write's bug");
            })
        });
        for work in [awaits, panics] {
            assert!(matches!(
                commit.write(work).await,
                Err(StoreError::Unavailable(_))
            ));
            assert!(keys(&pool).await.is_empty());
            assert_eq!(settings(&commit), BATCH_SETTINGS);
        }
        commit
            .write(insert(&["after"], Deleted::Done))
            .await
            .unwrap();
        assert_eq!(keys(&pool).await, vec!["after"]);
        assert!(commit.sender.get().is_none());
    }

    /// A write run at once never goes before a writer already waiting for the lock: tokio's
    /// mutex hands the lock to its first waiter, so `try_take` finds it taken.
    #[tokio::test]
    async fn a_write_at_once_does_not_overtake_a_waiting_writer() {
        let (_dir, pool, lock, commit) = writer(When::FreeAtOnce).await;
        let held = lock.take().await.unwrap();
        let waited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, w) = (lock.clone(), waited.clone());
        let waiter = tokio::spawn(async move {
            let _held = l.take().await.unwrap();
            w.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // The waiter queues for the lock; then the lock is free, but promised to it.
        tokio::task::yield_now().await;
        drop(held);
        assert!(lock.try_take().is_none(), "the lock went past its waiter");
        let seen = waited.clone();
        let work: Work<Deleted> = Box::new(move |mut tx: WriteTx<'_>| {
            let after_the_waiter = seen.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                assert!(after_the_waiter, "the write went before the waiting writer");
                tx.execute("INSERT INTO t (k) VALUES ($1)", args!["second"])
                    .await?;
                Ok(Deleted::Done)
            })
        });
        commit.write(work).await.unwrap();
        waiter.await.unwrap();
        assert_eq!(keys(&pool).await, vec!["second"]);
    }

    /// A panic that poisoned the writer's mutex inside a transaction: the next write rolls that
    /// transaction back, and goes on; so does the next batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poisoned_writer_is_rolled_back_and_used_again() {
        for when in [When::FreeAtOnce, When::Queued] {
            let (_dir, pool, _lock, commit) = writer(when).await;
            let conn = commit.conn.clone();
            let _ = std::thread::spawn(move || {
                let c = conn.lock().unwrap();
                c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (k) VALUES ('orphan');")
                    .unwrap();
                panic!("a panic with the writer in a transaction");
            })
            .join();
            assert!(commit.conn.is_poisoned());
            commit
                .write(insert(&["next"], Deleted::Done))
                .await
                .unwrap();
            assert_eq!(keys(&pool).await, vec!["next"]);
            assert!(!commit.conn.is_poisoned());
        }
    }

    /// A write run at once lets what its caller has just woken run first (a decision wakes the
    /// browser's stream, then appends its entry).
    #[tokio::test]
    async fn a_write_at_once_lets_the_tasks_its_caller_woke_run_first() {
        let (_dir, _pool, _lock, commit) = writer(When::FreeAtOnce).await;
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = woken.clone();
        let stream =
            tokio::spawn(async move { w.store(true, std::sync::atomic::Ordering::SeqCst) });
        let seen = woken.clone();
        let work: Work<Deleted> = Box::new(move |_tx: WriteTx<'_>| {
            let ran_first = seen.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                assert!(ran_first, "the append ran before the task its caller woke");
                Ok(Deleted::Done)
            })
        });
        commit.write(work).await.unwrap();
        stream.await.unwrap();
        assert!(commit.sender.get().is_none(), "the write was queued");
    }
}
