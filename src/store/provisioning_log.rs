//! The provisioning log's writer, and the count of requests refused for their token (they belong
//! to no workspace's log; the sweep puts the count on the audit log). The writer: requests record
//! into a channel; one task drains whatever has queued into a single transaction, so a SCIM
//! request never waits for the log's write. When idle, a record is written at once; under load
//! the writer begins at most one transaction every `LINGER`, and the batches grow (issue 18: at
//! 16,000 filters a second, a transaction for every few records cost the SQLite writer a sixth of
//! the machine).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::scim::{LogRecord, ScimStore};

/// Records queued before requests wait for the writer (backpressure, never a dropped record).
const QUEUE: usize = 16_384;
/// Records per transaction at most.
const BATCH: usize = 1_024;
/// The least time between the starts of two of the writer's transactions.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

enum Message {
    Record(LogRecord),
    Flush(oneshot::Sender<()>),
}

pub struct LogWriter {
    store: Arc<dyn ScimStore>,
    /// Started on first use, inside the runtime.
    sender: OnceLock<mpsc::Sender<Message>>,
}

impl LogWriter {
    pub fn new(store: Arc<dyn ScimStore>) -> Self {
        Self {
            store,
            sender: OnceLock::new(),
        }
    }

    fn sender(&self) -> &mpsc::Sender<Message> {
        self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_batches(self.store.clone(), rx));
            tx
        })
    }

    pub async fn record(&self, record: LogRecord) {
        if self.sender().send(Message::Record(record)).await.is_err() {
            tracing::error!("the provisioning log writer has stopped; a record is lost");
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

async fn write_batches(store: Arc<dyn ScimStore>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::new();
    let mut acks = Vec::new();
    let mut last = tokio::time::Instant::now() - LINGER;
    while let Some(first) = rx.recv().await {
        tokio::time::sleep_until(last + LINGER).await;
        last = tokio::time::Instant::now();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Record(r) => batch.push(r),
                Message::Flush(ack) => acks.push(ack),
            }
            next = if batch.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(e) = store.append_log(&batch).await {
            tracing::error!(error = %e, records = batch.len(), "could not write the provisioning log");
        }
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Addresses told apart in one sweep's count; beyond, requests are only counted in the total.
const MAX_REFUSING_IPS: usize = 1000;

#[derive(Default)]
pub(crate) struct Refused {
    pub(crate) total: u64,
    pub(crate) by_ip: HashMap<String, u64>,
}

pub struct ProvisioningLog {
    writer: LogWriter,
    /// SCIM requests whose token opened no workspace since the last sweep, by source address.
    refused: Mutex<Refused>,
}

impl ProvisioningLog {
    pub fn new(store: Arc<dyn ScimStore>) -> Self {
        Self {
            writer: LogWriter::new(store),
            refused: Mutex::default(),
        }
    }

    pub async fn record(&self, record: LogRecord) {
        self.writer.record(record).await
    }

    /// Returns once every record queued before the call is written (or failed to be).
    pub async fn flush(&self) {
        self.writer.flush().await
    }

    /// Counts a SCIM request refused for its token; it belongs to no workspace's log.
    pub fn count_refused(&self, ip: &str) {
        let mut refused = self.refused.lock().expect("refusal counter lock");
        refused.total += 1;
        if let Some(n) = refused.by_ip.get_mut(ip) {
            *n += 1;
        } else if refused.by_ip.len() < MAX_REFUSING_IPS {
            refused.by_ip.insert(ip.to_owned(), 1);
        }
    }

    /// The refused requests counted since the last call.
    pub(crate) fn take_refused(&self) -> Refused {
        std::mem::take(&mut *self.refused.lock().expect("refusal counter lock"))
    }
}
