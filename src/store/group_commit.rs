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
//! lane): a step-up's entries are never inside a batch of SCIM creates.
//!
//! The task owns each write from the moment it is queued, so a client that goes away cannot cut
//! one in half (the standing rule of issue 13). The batch holds the writer for its duration, so
//! `BATCH_TIME` bounds what a step-up write waits behind.
//!
//! Postgres has a pool and several instances: a write there is a transaction of its own.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::SqlitePool;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use super::db::{db_run, sqlite_begin, On, Tx};
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

/// A write's statements, run on the shared transaction.
pub(super) type Work<T> = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T>> + Send>;

/// What the task calls once the batch's commit has ended: sends the write its answer.
type Answer = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A queued write: runs on the batch's transaction, says whether its changes are kept, and
/// leaves its answer for after the commit.
type Job = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, (bool, Answer)> + Send>;

pub(super) struct GroupCommit {
    writer: SqlitePool,
    /// Started on first use, inside the runtime.
    sender: OnceLock<mpsc::Sender<Job>>,
}

impl GroupCommit {
    pub(super) fn new(writer: SqlitePool) -> GroupCommit {
        GroupCommit {
            writer,
            sender: OnceLock::new(),
        }
    }

    /// Runs `work` in the next batch; answers once that batch has committed (or failed to).
    pub(super) async fn write<T>(&self, work: Work<T>) -> Result<T>
    where
        T: Outcome + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx: &mut Tx| {
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
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run_batches(self.writer.clone(), rx));
            tx
        });
        if sender.send(job).await.is_err() {
            return Err(StoreError::Unavailable(
                "the batch writer has stopped".into(),
            ));
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the batch writer dropped a write".into()))?
    }
}

async fn run_batches(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut answers = Vec::new();
        let committed = run_batch(&writer, first, &mut rx, &mut answers).await;
        for answer in answers {
            answer(committed.clone());
        }
    }
}

/// One transaction: `first`, then whatever else has queued, while the batch is under `BATCH`
/// writes and `BATCH_TIME` old. Each write runs inside `SAVEPOINT w`; the answer of every write
/// that ran is pushed to `answers`. A write taken but never run is dropped, and its caller hears
/// that the writer is unavailable.
///
/// Each savepoint statement is a round trip to the connection's thread, so the end of one
/// write's savepoint and the start of the next go in one (`RELEASE w; SAVEPOINT w`), and the
/// last is ended by the COMMIT itself.
async fn run_batch(
    writer: &SqlitePool,
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    answers: &mut Vec<Answer>,
) -> std::result::Result<(), String> {
    let failed = |e: StoreError| format!("a write batch failed and was rolled back: {e}");
    let mut tx = On::Sqlite(
        sqlite_begin(writer, Some("BEGIN IMMEDIATE"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let started = Instant::now();
    execute(&mut tx, "SAVEPOINT w").await.map_err(failed)?;
    let mut job = first;
    loop {
        // A panicking write fails its batch, not the task every later write needs.
        let Ok((keep, answer)) = AssertUnwindSafe(job(&mut tx)).catch_unwind().await else {
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
            // Dropped on error: the whole transaction rolls back.
            execute(&mut tx, sql).await.map_err(failed)?;
        }
        match next {
            Some(n) => job = n,
            None => break,
        }
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// One or more statements without arguments (sqlx-sqlite runs each in turn).
async fn execute(tx: &mut Tx, sql: &'static str) -> Result<()> {
    db_run!(tx.conn(), |c| sqlx::query(sql).execute(c).await.map(|_| ()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;
    use std::sync::Arc;

    async fn writer() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        (dir, pool)
    }

    /// Inserts `keys` one statement each, then ends as `outcome`.
    fn insert(keys: &'static [&'static str], outcome: Deleted) -> Work<Deleted> {
        Box::new(move |tx: &mut Tx| {
            Box::pin(async move {
                for k in keys {
                    db_run!(tx.conn(), |c| sqlx::query("INSERT INTO t (k) VALUES ($1)")
                        .bind(*k)
                        .execute(c)
                        .await
                        .map(|_| ()))?;
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
        let (_dir, pool) = writer().await;
        let commit = Arc::new(GroupCommit::new(pool.clone()));
        // The writer's one connection held: the first write's batch waits to begin, and the
        // other five queue behind it and make the next batch together.
        let held = pool.acquire().await.unwrap();
        let mut writes = Vec::new();
        const FRESH: [&[&str]; 6] = [&["a"], &["b"], &["c"], &["d"], &["e"], &["f"]];
        for (i, keys) in FRESH.into_iter().enumerate() {
            let c = commit.clone();
            writes.push(tokio::spawn(async move {
                match i {
                    // Inserts "x", then fails inserting it again.
                    2 => c
                        .write(insert(&["x", "x"], Deleted::Done))
                        .await
                        .err()
                        .map(|_| "failed"),
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

    /// A write whose caller has gone still runs to its end (issue 13's rule).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_outlives_its_caller() {
        let (_dir, pool) = writer().await;
        let commit = Arc::new(GroupCommit::new(pool.clone()));
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
            // The abort came before the write was queued at all: nothing was cut half-way.
            return;
        }
        assert_eq!(got, vec!["after", "kept"]);
    }
}
