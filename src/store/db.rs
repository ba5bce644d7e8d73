//! The seam between the stores and the two databases: the pools of the configured backend, opened
//! once, and `db_run!`, which writes a statement once for both.
//!
//! Statements use `$N` placeholders: Postgres requires them, and sqlx's SQLite driver maps `$N` to
//! argument N (sqlx-sqlite 0.8.6 `src/arguments.rs`), so one string serves both. Where the dialects
//! really differ (row locks, arrays), the two branches stand side by side in the one function.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::checkpoint::{self, Checkpoints, BACKSTOP_PAGES};
use super::group_commit::{open_writer, GroupCommit, Outcome, When, Work};
use super::readers::{bind, query_rows, Arg, Readers};
use super::Database;
use super::{Result, StoreError};

/// How long a Postgres request waits for a connection before it answers 503: when Postgres is
/// down, the pool keeps trying to connect for this long, then gives up, so requests fail fast, not
/// hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a pooled Postgres connection may sit idle before it is pinged on its next use.
const PING_WHEN_IDLE: Duration = Duration::from_secs(1);

/// How long `/readyz` waits for Postgres.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a SQLite write waits for the process's write lock before it fails (503), as it waited
/// for sqlx's one writing connection (its default acquire timeout) when that was the lock. Held
/// this long, the lock is stuck: an error says so where a hang would hide it.
const WRITE_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite's write lock inside the process. Every write to the file holds it: a statement or a
/// transaction on sqlx's writing connection (`Db::write`, `Db::begin`) and each group commit
/// batch (`group_commit.rs`), which writes on a connection of its own. So writers queue here, in
/// order, instead of meeting SQLite's busy handler, which sleeps in steps of milliseconds; only
/// another process on the file (the CLI) meets it.
///
/// It was sqlx's writing connection itself, held by a batch for its duration (issue 18). But
/// sqlx-core 0.8.6 pings a connection every time it goes back to its pool (a hand-off to the
/// connection's thread and back), and the next batch waited for that ping: three or four audit
/// appends a step-up, each a batch, each paying it. A batch now touches no sqlx connection.
#[derive(Clone, Default)]
pub(super) struct WriteLock(Arc<Mutex<()>>);

impl WriteLock {
    /// The lock if it is free now, and nobody is queued for it (tokio's mutex is fair).
    pub(super) fn try_take(&self) -> Option<OwnedMutexGuard<()>> {
        self.0.clone().try_lock_owned().ok()
    }

    /// Waits for the lock (`WRITE_LOCK_TIMEOUT` at most); it is held until the guard drops.
    pub(super) async fn take(&self) -> Result<OwnedMutexGuard<()>> {
        tokio::time::timeout(WRITE_LOCK_TIMEOUT, self.0.clone().lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the database's write lock was not free within {WRITE_LOCK_TIMEOUT:?}"
                ))
            })
    }
}

/// Where a write's statements go, with the write lock held until it is dropped (`Db::write`):
/// a temporary in `db_run!(db.write().await?.on(), …)` lives to the end of its statement.
pub(super) struct Writing<'a> {
    on: On<&'a SqlitePool, &'a PgPool>,
    _held: Option<OwnedMutexGuard<()>>,
}

impl<'a> Writing<'a> {
    /// SQLite's one writing connection, or the Postgres pool.
    pub(super) fn on(&self) -> On<&'a SqlitePool, &'a PgPool> {
        match self.on {
            On::Sqlite(pool) => On::Sqlite(pool),
            On::Postgres(pool) => On::Postgres(pool),
        }
    }
}

/// The database every store works on. It implements `Store`, `ScimStore` and `SealedStore`.
pub enum Db {
    /// One file in WAL mode, shared safely by the server and CLI commands. Every write holds
    /// `lock`, the process's write lock (`WriteLock`), so writers queue in order inside the
    /// process instead of meeting SQLite's busy handler (which sleeps in steps of milliseconds);
    /// reads run concurrently on the read-only `read` (WAL lets them).
    ///
    /// `write` is sqlx's one writing connection. `bulk` runs SCIM writes in shared
    /// transactions, and `prompt` audit appends, in batches of their own (`group_commit.rs`),
    /// each batch on a connection of their own: an Entra initial cycle sends thousands of POSTs
    /// a minute, and a step-up's writes wait behind at most one batch of them, not behind every
    /// one (nor in a batch with them). An audit append that finds the writer free runs at once,
    /// on its caller's thread, as a batch of one (`When::FreeAtOnce`).
    ///
    /// `readers` serve the SCIM hot reads on the calling thread (`readers.rs`).
    Sqlite {
        write: SqlitePool,
        lock: WriteLock,
        read: SqlitePool,
        readers: Arc<Readers>,
        bulk: Arc<GroupCommit>,
        prompt: Arc<GroupCommit>,
        /// The WAL checkpoint thread, running while the database is open (`checkpoint.rs`).
        _checkpoints: Checkpoints,
    },
    /// The shared database of several instances.
    Postgres(PgPool),
}

/// Which batches a grouped write joins (`Db::grouped_write`).
pub(super) enum Lane {
    /// SCIM's writes, many at a time.
    Bulk,
    /// Writes someone is waiting on (the step-up's audit entries).
    Prompt,
}

/// One value per backend: a pool, a connection or a transaction of the one the database is on.
/// `db_run!` takes it apart.
pub enum On<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// A transaction on the writer.
pub struct Tx {
    tx: On<sqlx::Transaction<'static, Sqlite>, sqlx::Transaction<'static, Postgres>>,
    /// On SQLite, the write lock (`WriteLock`) for as long as the transaction: declared after
    /// it, so a transaction dropped unfinished queues its rollback before the lock is free.
    _held: Option<OwnedMutexGuard<()>>,
}

/// The transaction a write's statements run on, as a grouped write (`Db::grouped_write`) and an
/// audit append see it. On SQLite, a grouped write runs on the group commit's own connection to
/// the file (`group_commit.rs`), inside its `BEGIN IMMEDIATE`, on a thread of its own: each
/// statement is a call there, where a statement on sqlx's connection is a hand-off to its thread
/// and back. Elsewhere it is a transaction of sqlx's: Postgres, or a SQLite transaction begun by
/// `begin_immediate` (the members' changes, whose entry it appends). A statement is written once,
/// with `$N` placeholders bound to `Arg`s, and runs on either.
pub enum WriteTx<'a> {
    Sqlx(&'a mut Tx),
    Direct(&'a mut rusqlite::Connection),
}

/// Binds `args` to a sqlx query of either driver, `$N` to `args[N - 1]`.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Bool(v) => q.bind(*v),
                Arg::OptInt(v) => q.bind(*v),
                Arg::OptText(s) => q.bind(s.as_deref()),
                Arg::OptBool(v) => q.bind(*v),
                Arg::Json(s) => q.bind(JsonText(s.clone())),
            };
        }
        q
    }};
}

/// A rusqlite error as the store's: a unique or primary key violation is a conflict, as sqlx
/// reports it.
pub(super) fn direct_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(
            f.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        ) {
            return StoreError::Conflict;
        }
    }
    StoreError::Unavailable(e.to_string())
}

impl WriteTx<'_> {
    /// Runs a statement; the rows it changed.
    pub(super) async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        match self {
            WriteTx::Direct(conn) => {
                let mut statement = conn.prepare_cached(sql).map_err(direct_error)?;
                bind(&mut statement, &args).map_err(direct_error)?;
                Ok(statement.raw_execute().map_err(direct_error)? as u64)
            }
            WriteTx::Sqlx(tx) => Ok(db_run!(tx.conn(), |c| bind_args!(sqlx::query(sql), &args)
                .execute(c)
                .await
                .map(|done| done.rows_affected()))?),
        }
    }

    /// The rows of a query, each made by `from_reader` (in the select list's order) on the
    /// writer's own connection, by the row type's `FromRow` on sqlx's.
    pub(super) async fn rows<T>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        from_reader: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        match self {
            WriteTx::Direct(conn) => {
                query_rows(conn, sql, &args, from_reader).map_err(direct_error)
            }
            WriteTx::Sqlx(tx) => Ok(db_run!(tx.conn(), |c| bind_args!(
                sqlx::query_as::<_, T>(sql),
                &args
            )
            .fetch_all(c)
            .await)?),
        }
    }

    /// The first row of a query, if any (`rows`).
    pub(super) async fn optional<T>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        from_reader: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        Ok(self.rows(sql, args, from_reader).await?.into_iter().next())
    }

    /// The Postgres connection, for a statement only Postgres has (arrays, advisory locks).
    pub(super) fn postgres(&mut self) -> Option<&mut PgConnection> {
        match self {
            WriteTx::Sqlx(Tx {
                tx: On::Postgres(tx),
                ..
            }) => Some(&mut **tx),
            _ => None,
        }
    }

    /// `lock` on Postgres, nothing on SQLite (`Tx::row_lock`).
    pub(super) fn row_lock(&self, lock: &'static str) -> &'static str {
        match self {
            WriteTx::Sqlx(Tx {
                tx: On::Postgres(_),
                ..
            }) => lock,
            _ => "",
        }
    }
}

/// Runs `$body` with `$c` the pool or connection of the backend `$on` (an [`On`]) is on. The
/// body is written once and compiled once per driver, so a statement, its binds and its row type
/// serve both (in the manner of vaultwarden's `db_run!`). It yields the body's
/// `Result<_, sqlx::Error>`.
macro_rules! db_run {
    ($on:expr, |$c:ident| $body:expr) => {
        match $on {
            $crate::store::db::On::Sqlite($c) => $body,
            $crate::store::db::On::Postgres($c) => $body,
        }
    };
}
pub(crate) use db_run;

/// Declares a store trait whose methods live in files by table group, and implements it for
/// [`Db`]: each method calls the function of its name in the module its group names. Rust wants
/// a trait implemented in one block; this keeps each signature written once, and a method whose
/// function is missing does not compile.
macro_rules! store_trait {
    (
        $(#[$doc:meta])*
        pub trait $trait:ident {
            $(
                mod $module:ident {
                    $(
                        $(#[$attr:meta])*
                        async fn $method:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
                    )*
                }
            )*
        }
    ) => {
        $(#[$doc])*
        #[async_trait::async_trait]
        pub trait $trait: Send + Sync + 'static {
            $($(
                $(#[$attr])*
                async fn $method(&self $(, $arg: $ty)*) -> $ret;
            )*)*
        }

        #[async_trait::async_trait]
        impl $trait for $crate::store::db::Db {
            $($(
                async fn $method(&self $(, $arg: $ty)*) -> $ret {
                    $module::$method(self $(, $arg)*).await
                }
            )*)*
        }
    };
}
pub(crate) use store_trait;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict;
            }
        }
        StoreError::Unavailable(e.to_string())
    }
}

/// Times are Unix seconds on both backends.
pub(super) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl Db {
    /// Runs a write (a SCIM write, an audit append): on SQLite in the next shared transaction
    /// (`group_commit.rs`), which takes the write lock before it reads anything, as
    /// `begin_immediate`; on Postgres in a transaction of its own. Its changes are kept only when
    /// it did what it was asked (`Outcome`).
    pub(super) async fn grouped_write<T>(&self, lane: Lane, work: Work<T>) -> Result<T>
    where
        T: Outcome + Send + 'static,
    {
        match self {
            Db::Sqlite { bulk, prompt, .. } => match lane {
                Lane::Bulk => bulk.write(work).await,
                Lane::Prompt => prompt.write(work).await,
            },
            Db::Postgres(_) => {
                let mut tx = self.begin().await?;
                let out = work(WriteTx::Sqlx(&mut tx)).await?;
                if out.keep() {
                    tx.commit().await?;
                }
                Ok(out)
            }
        }
    }

    /// Opens the configured database (creating a SQLite file if missing) and runs its migrations.
    pub async fn open(database: &Database) -> anyhow::Result<Db> {
        Ok(match database {
            Database::Sqlite { url, .. } => open_sqlite(url).await?,
            Database::Postgres { url } => Db::Postgres(postgres_pool(url).await?),
        })
    }

    /// The rows of a read on a hot path: on SQLite from the readers, on the calling thread
    /// (`readers.rs`), each made by `from_reader` (in the select list's order); on Postgres from
    /// its pool, by the row type's `FromRow`. `$N` is bound to `args[N - 1]` on both.
    pub(super) async fn hot_rows<T>(
        &self,
        sql: String,
        args: Vec<Arg>,
        from_reader: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + 'static,
    {
        match self {
            Db::Sqlite { readers, .. } => readers.rows(sql, args, from_reader).await,
            Db::Postgres(pool) => Ok(bind_args!(sqlx::query_as::<_, T>(&sql), &args)
                .fetch_all(pool)
                .await?),
        }
    }

    /// The first row of a hot read, if any (`hot_rows`).
    pub(super) async fn hot_row<T>(
        &self,
        sql: String,
        args: Vec<Arg>,
        from_reader: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + 'static,
    {
        Ok(self
            .hot_rows(sql, args, from_reader)
            .await?
            .into_iter()
            .next())
    }

    /// Where reads go: SQLite's read-only pool, or the Postgres pool.
    pub(super) fn read(&self) -> On<&SqlitePool, &PgPool> {
        match self {
            Db::Sqlite { read, .. } => On::Sqlite(read),
            Db::Postgres(pool) => On::Postgres(pool),
        }
    }

    /// Where writes go: SQLite's one writing connection, with the write lock held while the
    /// `Writing` lives, or the Postgres pool.
    pub(super) async fn write(&self) -> Result<Writing<'_>> {
        Ok(match self {
            Db::Sqlite { write, lock, .. } => Writing {
                on: On::Sqlite(write),
                _held: Some(lock.take().await?),
            },
            Db::Postgres(pool) => Writing {
                on: On::Postgres(pool),
                _held: None,
            },
        })
    }

    /// A transaction on the writer.
    pub(super) async fn begin(&self) -> Result<Tx> {
        self.begin_with(None).await
    }

    /// A transaction for a read-check-write. On SQLite it is `BEGIN IMMEDIATE`: it takes the
    /// write lock before it reads anything, so what it reads stays true until it commits, even
    /// against another process on the file (the CLI) waiting on the busy timeout. On Postgres it
    /// is a plain transaction: its statements lock the rows they read.
    pub(super) async fn begin_immediate(&self) -> Result<Tx> {
        self.begin_with(Some("BEGIN IMMEDIATE")).await
    }

    /// A transaction begun by `statement` on SQLite (sqlx's `BEGIN` when None), holding the
    /// write lock until it ends; a plain transaction on Postgres.
    async fn begin_with(&self, statement: Option<&'static str>) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite { write, lock, .. } => {
                let held = lock.take().await?;
                Tx {
                    tx: On::Sqlite(sqlite_begin(write, statement).await?),
                    _held: Some(held),
                }
            }
            Db::Postgres(pool) => Tx {
                tx: On::Postgres(pool.begin().await?),
                _held: None,
            },
        })
    }
}

impl Tx {
    pub(super) fn conn(&mut self) -> On<&mut SqliteConnection, &mut PgConnection> {
        match &mut self.tx {
            On::Sqlite(tx) => On::Sqlite(&mut **tx),
            On::Postgres(tx) => On::Postgres(&mut **tx),
        }
    }

    /// `lock` on Postgres, nothing on SQLite: the row-locking clause (`FOR UPDATE`, `FOR KEY
    /// SHARE`) of a statement written once. A SQLite transaction on the writer already excludes
    /// every other writer (`begin_immediate`).
    pub(super) fn row_lock(&self, lock: &'static str) -> &'static str {
        match self.tx {
            On::Sqlite(_) => "",
            On::Postgres(_) => lock,
        }
    }

    /// Commits; the write lock is free once the commit has ended.
    pub(super) async fn commit(self) -> Result<()> {
        let Tx { tx, _held } = self;
        match tx {
            On::Sqlite(tx) => tx.commit().await?,
            On::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// The provisioning log's own file beside the database (`<database>.provisioning-log`), attached
/// to every sqlx connection as `log` (migrations/sqlite/0010): its batches, one every few
/// milliseconds under SCIM load, then leave the page caches of the file's readers alone.
pub fn log_file_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".provisioning-log");
    PathBuf::from(name)
}

/// `ATTACH`es the provisioning log's file (`log_file_of`) as `log`; on the writer (`writable`)
/// also puts that file in WAL mode (persistent, a no-op once done) and sets its `synchronous` as
/// the main one's.
async fn attach_log(
    conn: &mut SqliteConnection,
    log: &str,
    writable: bool,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query("ATTACH DATABASE $1 AS log")
        .bind(log)
        .execute(&mut *conn)
        .await?;
    if writable {
        sqlx::query("PRAGMA log.journal_mode = WAL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("PRAGMA log.synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The options of one of sqlx's SQLite pools: `max` connections, each attaching the provisioning
/// log's file (`attach_log`, `writable` on the writer). A connection to a file in this process
/// cannot have dropped: no ping before each use (sqlx's default costs a round trip to the
/// connection's thread on every query).
fn sqlite_pool(max: u32, log: &Arc<str>, writable: bool) -> SqlitePoolOptions {
    let log = log.clone();
    SqlitePoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            let log = log.clone();
            Box::pin(async move { attach_log(conn, &log, writable).await })
        })
}

/// A SQLite file (created if missing), migrated: sqlx's writer (one connection) and read pool,
/// the readers, the group commit's connection and the checkpoint thread; and the provisioning
/// log's file (`log_file_of`).
pub(super) async fn open_sqlite(url: &str) -> anyhow::Result<Db> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // Checkpoints are `checkpoint.rs`'s thread's; this is its backstop.
        .pragma("wal_autocheckpoint", BACKSTOP_PAGES.to_string())
        // The CLI and a running server write the same file: wait for the lock, do not fail.
        .busy_timeout(Duration::from_secs(10));
    let file = options.get_filename().to_owned();
    // As text: `ATTACH` takes the file's name as a string.
    let log: Arc<str> = log_file_of(&file)
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the database path is not UTF-8"))?
        .into();
    let write = sqlite_pool(1, &log, true)
        .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&write).await?;
    // Not mapped (issue 18): every commit to the file makes each mapped reader unmap it and map
    // it again (munmap, page faults and cross-CPU TLB flushes in the profiles of both benches).
    let read = sqlite_pool(8, &log, false)
        .connect_with(options.read_only(true).create_if_missing(false))
        .await?;
    let batches = Arc::new(std::sync::Mutex::new(open_writer(&file)?));
    let lock = WriteLock::default();
    Ok(Db::Sqlite {
        bulk: Arc::new(GroupCommit::new(
            lock.clone(),
            batches.clone(),
            When::Queued,
        )),
        prompt: Arc::new(GroupCommit::new(lock.clone(), batches, When::FreeAtOnce)),
        lock,
        _checkpoints: checkpoint::start(&file, &log)?,
        readers: Arc::new(Readers::open(&file)?),
        write,
        read,
    })
}

/// Begins a transaction on SQLite's writer in a task of its own (issue 13). sqlx-sqlite's `begin`
/// has no guard between sending BEGIN to the connection's worker and the `Transaction` existing:
/// a caller dropped in between would leave the connection inside a transaction nobody ends, and
/// every later write would fail or never commit. Spawned, the begin always finishes; if nobody
/// awaits it any more, its `Transaction` is dropped and rolls back like any other.
pub(super) async fn sqlite_begin(
    pool: &SqlitePool,
    statement: Option<&'static str>,
) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move {
        match statement {
            Some(statement) => pool.begin_with(statement).await,
            None => pool.begin().await,
        }
    })
    .await
    .map_err(|e| sqlx::Error::Protocol(format!("the begin task failed: {e}")))?
}

/// Whether the SQLite writer may go back to its pool: never inside a transaction. With every
/// begin spawned (`sqlite_begin`) and every handler detached, this only catches what slips past
/// both (a `Transaction` whose rollback is still queued is discarded too: harmless, the pool
/// opens a fresh connection). A check of the depth counter, no round trip to the connection's
/// thread: it runs after every write.
async fn release_outside_transaction(
    conn: &mut SqliteConnection,
) -> std::result::Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        tracing::warn!("a database connection came back inside a transaction: discarded");
        return Ok(false);
    }
    Ok(true)
}

/// One statement on the Postgres pool, in no transaction of ours (a statement is atomic on its
/// own), and its rows: a write that is one statement costs one round trip, where `grouped_write`
/// adds a `BEGIN` and a `COMMIT` around it (issue 18).
pub(super) async fn postgres_rows<T>(pool: &PgPool, sql: &str, args: Vec<Arg>) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    Ok(bind_args!(sqlx::query_as::<_, T>(sql), &args)
        .fetch_all(pool)
        .await?)
}

/// Connects to Postgres and runs the migrations (under Postgres' advisory lock, so instances
/// starting together migrate once). Errors never repeat the URL: it may hold a password.
async fn postgres_pool(url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| anyhow::anyhow!("ASSENT_DATABASE_URL: not a valid postgres:// URL"))?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection that died with the server (a Postgres restart) is noticed before use and
        // replaced: pinged when it has sat idle for `PING_WHEN_IDLE` (issue 18: sqlx's default
        // pings before every use, a round trip in front of every statement under load). One
        // used within that time before a restart fails its next statement instead (503 for
        // that request, as for one in flight during the restart) and is then discarded: sqlx
        // pings every connection coming back to the pool.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .idle_timeout(Duration::from_secs(300))
        // A connection must never come back inside a transaction (issue 13): sqlx rolls back
        // a dropped `Transaction`, and this discards anything that still slipped through.
        .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the Postgres database: {e}"))?;
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("Postgres migrations failed: {e}"))?;
    Ok(pool)
}

/// `$first, $first+1, …`: `n` placeholders, for a list of values where Postgres would take an
/// array and SQLite has none.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VALUES of a multi-row INSERT: `rows` rows of `width` placeholders, anonymous `?`s on
/// SQLite (it finds a `$N` by a walk of the statement's list of names, so binding 1,000 numbered
/// ones costs half a million steps), `$1, $2, …` on Postgres.
pub(super) fn value_rows(db: &Db, width: usize, rows: usize) -> String {
    (0..rows)
        .map(|i| match db {
            Db::Sqlite { .. } => format!("({})", vec!["?"; width].join(", ")),
            Db::Postgres(_) => format!("({})", placeholders(width * i + 1, width)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the database answers (`/readyz`), within `PING_TIMEOUT` whatever holds it up: a
/// health checker has a timeout of its own, and an answer it never gets says less than a 503.
/// On Postgres, the pool waits out ACQUIRE_TIMEOUT for a database that is down. On SQLite, the
/// write lock is taken too: a writer stuck on it would leave every write to fail after
/// `WRITE_LOCK_TIMEOUT`, and the read pool can be held by long reads.
pub(super) async fn ping(db: &Db) -> Result<()> {
    let ping = async {
        db_run!(db.read(), |c| sqlx::query("SELECT 1")
            .execute(c)
            .await
            .map(|_| ()))?;
        if let Db::Sqlite { lock, .. } = db {
            drop(lock.take().await?);
        }
        Ok(())
    };
    match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(done) => done,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {PING_TIMEOUT:?}"
        ))),
    }
}

/// Deletes what has expired: replay-cache entries, sessions, old enrollment codes, replaced SCIM
/// tokens past their grace.
pub(super) async fn prune(db: &Db, now: OffsetDateTime) -> Result<()> {
    let mut tx = db.begin().await?;
    for sql in [
        "DELETE FROM used_jtis WHERE expires_at < $1",
        "DELETE FROM sessions WHERE expires_at < $1",
        "DELETE FROM enrollment_codes WHERE expires_at < $1 - 86400",
        "DELETE FROM scim_token_grace WHERE expires_at <= $1",
    ] {
        db_run!(tx.conn(), |c| sqlx::query(sql)
            .bind(ts(now))
            .execute(c)
            .await
            .map(|_| ()))?;
    }
    tx.commit().await
}

/// JSON kept as text: a TEXT column on SQLite, JSONB on Postgres (where a text would need a cast
/// on the way in and out). Read and written as its text, so sqlx needs no JSON feature.
pub(super) struct JsonText(pub String);

impl sqlx::Type<Sqlite> for JsonText {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <String as sqlx::Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, Sqlite> for JsonText {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, Sqlite>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for JsonText {
    fn decode(
        value: sqlx::sqlite::SqliteValueRef<'r>,
    ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        <String as sqlx::Decode<'r, Sqlite>>::decode(value).map(JsonText)
    }
}

/// Postgres' type id of `jsonb` (a built-in, the same in every database).
const JSONB: sqlx::postgres::types::Oid = sqlx::postgres::types::Oid(3802);

impl sqlx::Type<Postgres> for JsonText {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(JSONB)
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        ty.oid() == Some(JSONB)
    }
}

/// `jsonb`'s binary format is a version byte (1) before the text.
impl sqlx::Encode<'_, Postgres> for JsonText {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(sqlx::encode::IsNull::No)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for JsonText {
    fn decode(
        value: sqlx::postgres::PgValueRef<'r>,
    ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        let binary = value.format() == sqlx::postgres::PgValueFormat::Binary;
        let text = match value.as_bytes()? {
            [1, text @ ..] if binary => text,
            _ if binary => return Err("an unknown jsonb format version".into()),
            text => text,
        };
        Ok(JsonText(std::str::from_utf8(text)?.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::TestDb;

    fn unanswered(r: Result<()>) -> bool {
        matches!(r, Err(StoreError::Unavailable(m)) if m.starts_with("no answer within"))
    }

    /// `/readyz` answers within its timeout, 503, while the SQLite write lock is stuck or every
    /// read connection is taken, and is ready again once they are free.
    #[tokio::test]
    async fn a_ping_answers_in_time_while_the_file_is_held() {
        let test = TestDb::sqlite().await;
        let db = Db::open(&test.config(&[]).database).await.unwrap();
        ping(&db).await.unwrap();
        let Db::Sqlite { lock, read, .. } = &db else {
            unreachable!("a SQLite test database")
        };
        let held = lock.take().await.unwrap();
        assert!(unanswered(ping(&db).await));
        drop(held);
        ping(&db).await.unwrap();
        let mut taken = Vec::new();
        for _ in 0..read.options().get_max_connections() {
            taken.push(read.acquire().await.unwrap());
        }
        assert!(unanswered(ping(&db).await));
        drop(taken);
        ping(&db).await.unwrap();
    }
}
