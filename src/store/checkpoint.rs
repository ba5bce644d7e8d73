//! SQLite's WAL checkpoints, off the request path (issue 18).
//!
//! By default the connection whose commit takes the WAL past 1,000 pages copies it back into the
//! database file there and then, with an fsync of each: the step-up's paced p99 inside the server
//! was 5.8 ms for the routes that append to the audit log, and 1.7–2.6 ms with checkpoints turned
//! off. Here the writing connections checkpoint on their own only past `BACKSTOP_PAGES` (if this
//! thread ever fell behind), and a thread of its own runs a PASSIVE checkpoint every `EVERY`: it
//! copies what no reader still needs, never waits for a lock, and writers and readers go on
//! meanwhile.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// The WAL size, in pages, at which a writing connection checkpoints on its own commit.
pub(super) const BACKSTOP_PAGES: u32 = 16_384;

/// How often the thread checkpoints.
const EVERY: Duration = Duration::from_millis(250);

/// Keeps the checkpoint thread running; it ends when this is dropped (with its `Db`).
pub struct Checkpoints {
    _running: mpsc::Sender<()>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checkpoints")
    }
}

/// Starts the checkpoint thread of the file at `path` and of the provisioning log's file `log`
/// (`db::log_file_of`): one checkpoint covers every attached file.
pub(super) fn start(path: &Path, log: &str) -> anyhow::Result<Checkpoints> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute("ATTACH DATABASE ?1 AS log", [log])?;
    let (running, stop) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(EVERY) {
                // (busy, WAL pages, pages copied back); busy only when another checkpoint runs.
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                });
                if let Err(e) = done {
                    tracing::warn!(error = %e, "a WAL checkpoint failed; the next one tries again");
                }
            }
        })?;
    Ok(Checkpoints { _running: running })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes that never checkpoint themselves reach the database file all the same, and the
    /// provisioning log's file too.
    #[test]
    fn the_thread_copies_the_wal_back_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let log = dir.path().join("c.db.provisioning-log");
        let mut writers = Vec::new();
        for file in [&path, &log] {
            let writer = Connection::open(file).unwrap();
            writer
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                     CREATE TABLE t (b BLOB);",
                )
                .unwrap();
            writers.push(writer);
        }
        let file_size = |file: &Path| std::fs::metadata(file).unwrap().len();
        let before = [file_size(&path), file_size(&log)];
        for writer in &writers {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(1048576))", [])
                .unwrap();
        }
        assert_eq!(
            [file_size(&path), file_size(&log)],
            before,
            "the rows are in the WALs only"
        );
        let checkpoints = start(&path, log.to_str().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file_size(&path) < 1_048_576 || file_size(&log) < 1_048_576 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint came");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(checkpoints);
    }
}
