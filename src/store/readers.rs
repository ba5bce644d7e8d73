//! SQLite's readers for the hot reads (issue 18): SCIM point reads, filters and pages.
//!
//! sqlx runs each SQLite connection on a thread of its own and sends it every statement through a
//! channel, so each read costs at least two thread switches; the filter's profile showed the
//! kernel's scheduler as the largest single cost. These connections are plain `rusqlite` ones
//! (the same linked SQLite as sqlx's), each behind a mutex, and a read runs on the thread that
//! asks for it: no hand-off at all.
//!
//! A read must not hold a runtime worker for long, and nothing about a filter's SQL says how long
//! it takes (`userName eq` is one index probe, `title co` walks the workspace). So a read on the
//! calling thread runs under a budget of SQLite VM steps (its progress handler): one that spends
//! it is stopped and run again, whole, on tokio's blocking pool, where it may take what it needs.
//! A read that finds every reader taken, or the file busy, goes to the blocking pool at once.
//!
//! The readers open the file read-only; every write still goes through sqlx's single writer.

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OpenFlags, Row, ToSql};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Result, StoreError};

/// SQLite VM steps between two calls of the progress handler.
const STEPS_PER_TICK: i32 = 1_000;
/// Ticks a read may take on the calling thread: 20,000 VM steps, a fraction of a millisecond. An
/// indexed filter with its JSON and manager columns takes a few hundred.
const INLINE_TICKS: u32 = 20;
/// Connections: one for each runtime worker reading inline, and as many for the blocking pool.
const READERS: usize = 4;
/// How long a read on the blocking pool waits for a busy file.
const BLOCKING_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection (one per distinct SQL text: filter shapes, pages).
const STATEMENT_CACHE: usize = 64;

/// One value bound to a `$N` placeholder, on the readers, the writer's own connection
/// (`WriteTx`) and Postgres alike. A NULL keeps its type: Postgres types every parameter.
#[derive(Clone, Debug)]
pub enum Arg {
    Int(i64),
    Text(String),
    Bool(bool),
    OptInt(Option<i64>),
    OptText(Option<String>),
    OptBool(Option<bool>),
    /// JSON as its text: TEXT on SQLite, `jsonb` on Postgres (`db::JsonText`).
    Json(String),
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => v.to_sql(),
            Arg::Text(v) | Arg::Json(v) => v.to_sql(),
            Arg::Bool(v) => v.to_sql(),
            Arg::OptInt(v) => v.to_sql(),
            Arg::OptText(v) => v.to_sql(),
            Arg::OptBool(v) => v.to_sql(),
        }
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Bool(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_owned())
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(v.clone())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::OptInt(v)
    }
}

impl From<Option<bool>> for Arg {
    fn from(v: Option<bool>) -> Arg {
        Arg::OptBool(v)
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::OptText(v.map(str::to_owned))
    }
}

impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Arg {
        Arg::OptText(v.clone())
    }
}

/// `args![a, b, …]`: the values of `$1, $2, …`, each through `Arg::from`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::store::readers::Arg::from($value)),*]
    };
}
pub(crate) use args;

/// Whether the read on a connection is on the calling thread (limited) and the ticks it has
/// taken; read by the progress handler.
#[derive(Default)]
struct Budget {
    limited: AtomicBool,
    ticks: AtomicU32,
}

struct Reader {
    conn: Connection,
    budget: Arc<Budget>,
}

pub struct Readers {
    readers: Vec<Mutex<Reader>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("connections", &self.readers.len())
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether a read on the calling thread should go again on the blocking pool: it spent its
/// budget, or the file was busy (a reader in WAL mode rarely is, during recovery; on the calling
/// thread it does not wait for it).
fn go_again(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::OperationInterrupted
            | rusqlite::ErrorCode::DatabaseBusy))
}

impl Readers {
    /// Opens the readers of an existing, migrated file. They read it with `pread`, not a
    /// mapping: after every commit to the file, each mapped reader unmapped and mapped it again
    /// (munmap, page faults and cross-CPU TLB flushes were a tenth of the filter's profile while
    /// the provisioning log shared the file). They do not attach the log's file (`db::log_file_of`):
    /// its commits are what must leave their page caches alone.
    pub fn open(path: &Path) -> anyhow::Result<Readers> {
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            // No waiting on the calling thread; the blocking pool waits (`read`).
            conn.busy_timeout(Duration::ZERO)?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            let budget = Arc::new(Budget::default());
            let seen = budget.clone();
            conn.progress_handler(
                STEPS_PER_TICK,
                Some(move || {
                    seen.limited.load(Ordering::Relaxed)
                        && seen.ticks.fetch_add(1, Ordering::Relaxed) >= INLINE_TICKS
                }),
            );
            readers.push(Mutex::new(Reader { conn, budget }));
        }
        Ok(Readers {
            readers,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `read` on a reader: on this thread within the budget, else on the blocking pool.
    pub async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + Sync + 'static,
        T: Send + 'static,
    {
        for reader in &self.readers {
            let Ok(reader) = reader.try_lock() else {
                continue;
            };
            reader.budget.ticks.store(0, Ordering::Relaxed);
            reader.budget.limited.store(true, Ordering::Relaxed);
            let result = read(&reader.conn);
            reader.budget.limited.store(false, Ordering::Relaxed);
            match result {
                Err(e) if go_again(&e) => break,
                other => return other.map_err(unavailable),
            }
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let reader = this.any();
            reader.conn.busy_timeout(BLOCKING_BUSY_TIMEOUT)?;
            let result = read(&reader.conn);
            reader.conn.busy_timeout(Duration::ZERO)?;
            result
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    /// The next reader in turn, waited for.
    fn any(&self) -> MutexGuard<'_, Reader> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rows of `sql`, its `$N` placeholders bound to `args[N - 1]`, each made by `row`.
    pub async fn rows<T>(
        self: &Arc<Self>,
        sql: String,
        args: Vec<Arg>,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>>
    where
        T: Send + 'static,
    {
        self.read(move |conn| query_rows(conn, &sql, &args, row))
            .await
    }
}

/// The rows of a statement on a rusqlite connection (a reader, or the group commit's writer),
/// each made by `row`.
pub(super) fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    row: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, args)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(r)?);
    }
    Ok(out)
}

/// Binds each `$N` of a statement to `args[N - 1]`, wherever and however often it appears (as
/// sqlx does, so one SQL text serves both).
pub(super) fn bind(
    statement: &mut rusqlite::CachedStatement<'_>,
    args: &[Arg],
) -> rusqlite::Result<()> {
    for index in 1..=statement.parameter_count() {
        let n = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or(rusqlite::Error::InvalidParameterCount(index, args.len()))?;
        statement.raw_bind_parameter(index, &args[n - 1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `n` rows in `t(i)`, and its readers.
    fn readers_of(n: i64) -> (tempfile::TempDir, Arc<Readers>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let w = Connection::open(&path).unwrap();
        w.pragma_update(None, "journal_mode", "wal").unwrap();
        w.execute_batch("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT)")
            .unwrap();
        w.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
             INSERT INTO t SELECT x, 'row ' || x FROM c",
            [n],
        )
        .unwrap();
        let readers = Arc::new(Readers::open(&path).unwrap());
        (dir, readers)
    }

    #[tokio::test]
    async fn placeholders_bind_by_their_number_wherever_they_appear() {
        let (_dir, readers) = readers_of(10);
        let rows = readers
            .rows(
                "SELECT i, s FROM t WHERE s = $2 OR i = $1 OR i = $1 + 1 ORDER BY i".into(),
                vec![Arg::Int(7), Arg::Text("row 2".into())],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (2, "row 2".into()),
                (7, "row 7".into()),
                (8, "row 8".into())
            ]
        );
        // A placeholder without its argument is an error, not a NULL.
        let missing = readers
            .rows(
                "SELECT i FROM t WHERE i = $3".into(),
                vec![Arg::Int(1)],
                |r| r.get::<_, i64>(0),
            )
            .await;
        assert!(matches!(missing, Err(StoreError::Unavailable(_))));
    }

    /// A read too long for the calling thread is stopped there and finished on the blocking pool:
    /// the answer is whole either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_leaves_the_calling_thread_and_still_answers() {
        let (_dir, readers) = readers_of(200_000);
        let runtime_thread = std::thread::current().id();
        let (count, on) = readers
            .read(|conn| {
                let n: i64 =
                    conn.query_row("SELECT count(*) FROM t WHERE s LIKE '%9%'", [], |r| {
                        r.get(0)
                    })?;
                Ok((n, std::thread::current().id()))
            })
            .await
            .unwrap();
        let expected = (1..=200_000)
            .filter(|i: &i64| i.to_string().contains('9'))
            .count();
        assert_eq!(count as usize, expected);
        assert_ne!(on, runtime_thread, "the scan ran on the caller's thread");
        // A short one stays on the caller's thread.
        let on = readers
            .read(|conn| {
                conn.query_row("SELECT s FROM t WHERE i = 5", [], |r| r.get::<_, String>(0))?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_eq!(on, std::thread::current().id());
    }

    #[tokio::test]
    async fn readers_cannot_write() {
        let (_dir, readers) = readers_of(1);
        let err = readers
            .read(|conn| conn.execute("DELETE FROM t", []))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)));
    }

    /// The bundled SQLite is built (`.cargo/config.toml`'s `LIBSQLITE3_FLAGS`) without the
    /// process-wide page cache group and memory statistics: each is a mutex that every
    /// connection in the process takes, the first on every page it reads, and the readers on
    /// both runtime workers contended for them.
    #[test]
    fn sqlite_is_built_without_process_wide_mutexes() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut pragma = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = pragma
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }
}
