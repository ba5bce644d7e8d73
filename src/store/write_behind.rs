//! Records written behind their callers, in batches: the provisioning log (every SCIM request
//! adds a record) and the embedded replay cache's device JWS ids. A caller queues its record and
//! goes on; one task drains whatever has queued into one write. When idle, a record is written
//! at once; with a `linger`, under load the task begins at most one write every `linger`, and the
//! batches grow (issue 18: at 16,000 filters a second, a transaction for every few log records
//! cost the SQLite writer a sixth of the machine).
//!
//! With a `gather`, a record that finds the task idle waits up to that long for others to join its
//! write (a flush does not wait): the replay cache's ids, two for every step-up, each their own
//! transaction on sqlx's writer when written at once, cost a paced step-up a third of its context
//! switches and a fifth of its CPU (issue 18).
//!
//! A full queue makes callers wait (backpressure): a record is never dropped for load. A write
//! that fails is logged with the number of records it lost.

use futures_util::future::BoxFuture;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One batch's write; Err says why it failed.
type Write<T> = Arc<dyn Fn(Vec<T>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

enum Message<T> {
    Record(T),
    /// Answered once every record queued before it is written (or failed to be).
    Flush(oneshot::Sender<()>),
}

pub struct WriteBehind<T> {
    /// What the records are, for the log ("the provisioning log").
    what: &'static str,
    queue: usize,
    batch: usize,
    linger: Duration,
    /// How long a write waits for more records once it has one (zero: not at all).
    gather: Duration,
    write: Write<T>,
    /// Started on first use, inside the runtime.
    sender: OnceLock<mpsc::Sender<Message<T>>>,
}

impl<T: Send + 'static> WriteBehind<T> {
    /// `queue` records wait before callers do; a write takes `batch` at most; `linger` is the
    /// least time between the starts of two writes (zero: none).
    pub fn new(
        what: &'static str,
        queue: usize,
        batch: usize,
        linger: Duration,
        write: impl Fn(Vec<T>) -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            what,
            queue,
            batch,
            linger,
            gather: Duration::ZERO,
            write: Arc::new(write),
            sender: OnceLock::new(),
        }
    }

    /// Each write waits up to `gather` after its first record for more to join it, unless a flush
    /// asks for it or the batch is full. What a crash can lose grows by as much.
    pub fn gathering(mut self, gather: Duration) -> Self {
        self.gather = gather;
        self
    }

    fn sender(&self) -> &mpsc::Sender<Message<T>> {
        self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.queue);
            tokio::spawn(drain(
                self.what,
                self.batch,
                self.linger,
                self.gather,
                self.write.clone(),
                rx,
            ));
            tx
        })
    }

    pub async fn record(&self, record: T) {
        if self.sender().send(Message::Record(record)).await.is_err() {
            tracing::error!(
                what = self.what,
                "a write-behind task has stopped; a record is lost"
            );
        }
    }

    /// Returns once every record queued before the call is written (or failed to be).
    pub async fn flush(&self) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        let (ack, done) = oneshot::channel();
        if sender.send(Message::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn drain<T>(
    what: &'static str,
    batch: usize,
    linger: Duration,
    gather: Duration,
    write: Write<T>,
    mut rx: mpsc::Receiver<Message<T>>,
) {
    let mut acks = Vec::new();
    let mut last = tokio::time::Instant::now() - linger;
    while let Some(first) = rx.recv().await {
        if !linger.is_zero() {
            tokio::time::sleep_until(last + linger).await;
            last = tokio::time::Instant::now();
        }
        let mut records = Vec::new();
        keep(first, &mut records, &mut acks);
        let gathered_until = tokio::time::Instant::now() + gather;
        while records.len() < batch {
            let next = match rx.try_recv() {
                Ok(message) => Some(message),
                // Nothing queued: wait for more while the gather lasts, and no flush is waiting.
                Err(mpsc::error::TryRecvError::Empty) if !gather.is_zero() && acks.is_empty() => {
                    tokio::time::timeout_at(gathered_until, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            match next {
                Some(message) => keep(message, &mut records, &mut acks),
                None => break,
            }
        }
        if !records.is_empty() {
            let n = records.len();
            if let Err(e) = write(records).await {
                tracing::error!(what, error = %e, records = n, "a batch of records could not be written");
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

fn keep<T>(message: Message<T>, records: &mut Vec<T>, acks: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Record(r) => records.push(r),
        Message::Flush(ack) => acks.push(ack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records written in order, in batches no larger than `batch`; a flush waits for every one
    /// queued before it, and a failed write loses only its own batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_arrive_in_order_in_bounded_batches_and_flush_waits_for_them() {
        let written: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let seen = written.clone();
        let behind = Arc::new(WriteBehind::new(
            "numbers",
            8,
            3,
            Duration::from_millis(5),
            move |batch: Vec<u32>| {
                let seen = seen.clone();
                Box::pin(async move {
                    if batch.contains(&13) {
                        return Err("unlucky".into());
                    }
                    seen.lock().unwrap().push(batch);
                    Ok(())
                })
            },
        ));
        for i in 0..20 {
            behind.record(i).await;
        }
        behind.flush().await;
        let batches = written.lock().unwrap().clone();
        assert!(
            batches.iter().all(|b| !b.is_empty() && b.len() <= 3),
            "{batches:?}"
        );
        let all: Vec<u32> = batches.concat();
        let lost: Vec<u32> = (0..20).filter(|i| !all.contains(i)).collect();
        assert!(lost.contains(&13) && lost.len() <= 3, "lost {lost:?}");
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted, "in the order queued");
    }

    type Batches = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A write that keeps each batch it is given.
    fn collector() -> (
        Batches,
        impl Fn(Vec<u32>) -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    ) {
        let written: Batches = Arc::default();
        let seen = written.clone();
        (written, move |batch: Vec<u32>| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().unwrap().push(batch);
                Ok(())
            })
        })
    }

    /// With a gather, records that arrive while the first waits share its write; the write
    /// happens without anyone flushing once the gather is over. (Paused time: the wait is the
    /// runtime's clock, not the machine's.)
    #[tokio::test(start_paused = true)]
    async fn records_within_the_gather_share_one_write() {
        let (written, write) = collector();
        let behind = WriteBehind::new("numbers", 64, 16, Duration::ZERO, write)
            .gathering(Duration::from_millis(100));
        behind.record(1).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        behind.record(2).await;
        behind.record(3).await;
        assert!(
            written.lock().unwrap().is_empty(),
            "written before the gather ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*written.lock().unwrap(), vec![vec![1, 2, 3]]);
        // The next record starts a gather of its own.
        behind.record(4).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*written.lock().unwrap(), vec![vec![1, 2, 3], vec![4]]);
    }

    /// A flush does not wait for the gather (a server stopping writes what it has), and a full
    /// batch is written without waiting either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_or_a_full_batch_cuts_the_gather_short() {
        let (written, write) = collector();
        let hour = Duration::from_secs(3600);
        let behind = WriteBehind::new("numbers", 64, 4, Duration::ZERO, write).gathering(hour);
        for i in 0..6 {
            behind.record(i).await;
        }
        tokio::time::timeout(Duration::from_secs(60), behind.flush())
            .await
            .expect("the flush waited for the gather");
        assert_eq!(*written.lock().unwrap(), vec![vec![0, 1, 2, 3], vec![4, 5]]);
    }
}
