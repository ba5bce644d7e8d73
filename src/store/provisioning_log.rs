//! The provisioning log's writer (records written behind the requests, in batches:
//! `write_behind.rs`), and the count of requests refused for their token (they belong to no
//! workspace's log; the sweep puts the count on the audit log).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::scim::{LogRecord, ScimStore};
use super::write_behind::WriteBehind;

/// Records queued before requests wait for the writer (backpressure, never a dropped record).
const QUEUE: usize = 16_384;
/// Records per transaction at most.
const BATCH: usize = 1_024;
/// The least time between the starts of two of the writer's transactions.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// Addresses told apart in one sweep's count; beyond, requests are only counted in the total.
const MAX_REFUSING_IPS: usize = 1000;

#[derive(Default)]
pub(crate) struct Refused {
    pub(crate) total: u64,
    pub(crate) by_ip: HashMap<String, u64>,
}

pub struct ProvisioningLog {
    writer: WriteBehind<LogRecord>,
    /// SCIM requests whose token opened no workspace since the last sweep, by source address.
    refused: Mutex<Refused>,
}

impl ProvisioningLog {
    pub fn new(store: Arc<dyn ScimStore>) -> Self {
        Self {
            writer: WriteBehind::new(
                "the provisioning log",
                QUEUE,
                BATCH,
                LINGER,
                move |batch: Vec<LogRecord>| {
                    let store = store.clone();
                    Box::pin(
                        async move { store.append_log(&batch).await.map_err(|e| e.to_string()) },
                    )
                },
            ),
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
