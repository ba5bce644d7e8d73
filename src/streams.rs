//! The SSE streams this instance holds open, and the caps on them: per session
//! (`ASSENT_MAX_SSE_PER_SESSION`) and in all (`ASSENT_MAX_SSE_STREAMS`). A stream lives on the
//! instance that serves it, so the counts are this process's own (no Redis round trip).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use crate::error::ApiError;

/// A refused stream may try again once one ends: a challenge's stream ends with it (at most
/// `ASSENT_CHALLENGE_TTL_SECS`), or when its browser tab closes.
const RETRY_AFTER_SECS: u64 = 10;

pub struct StreamSlots {
    per_instance: usize,
    per_session: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Open streams by session id hash; a session with none has no entry.
    by_session: HashMap<String, usize>,
}

impl StreamSlots {
    pub fn new(per_instance: usize, per_session: usize) -> Self {
        Self {
            per_instance,
            per_session,
            open: Mutex::new(Open::default()),
        }
    }

    /// Takes a place for one more stream of this session, or refuses with 429 when the session or
    /// the instance has all it may.
    fn take(&self, session_hash: &str) -> Result<(), ApiError> {
        let mut open = self.open.lock().expect("stream slots lock");
        let of_session = open.by_session.get(session_hash).copied().unwrap_or(0);
        let detail = if of_session >= self.per_session {
            "this session has as many event streams open as it may; close one (another tab)"
        } else if open.total >= self.per_instance {
            "the server has as many event streams open as it may; try again shortly"
        } else {
            open.total += 1;
            *open.by_session.entry(session_hash.to_owned()).or_default() += 1;
            return Ok(());
        };
        Err(ApiError::TooManyRequests {
            detail: detail.to_owned(),
            retry_after_secs: RETRY_AFTER_SECS,
        })
    }

    fn give_back(&self, session_hash: &str) {
        let mut open = self.open.lock().expect("stream slots lock");
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_session.get_mut(session_hash) {
            *n -= 1;
            if *n == 0 {
                open.by_session.remove(session_hash);
            }
        }
    }
}

/// One open stream: its place under both caps and in the `sse_streams_open` gauge, for as long
/// as it lives.
pub struct OpenStream {
    slots: Arc<StreamSlots>,
    gauge: Gauge,
    session_hash: String,
}

impl OpenStream {
    pub fn new(
        slots: Arc<StreamSlots>,
        gauge: Gauge,
        session_hash: &str,
    ) -> Result<Self, ApiError> {
        slots.take(session_hash)?;
        gauge.inc();
        Ok(Self {
            slots,
            gauge,
            session_hash: session_hash.to_owned(),
        })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
        self.slots.give_back(&self.session_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(slots: &StreamSlots, session: &str) -> bool {
        matches!(
            slots.take(session),
            Err(ApiError::TooManyRequests {
                retry_after_secs: RETRY_AFTER_SECS,
                ..
            })
        )
    }

    #[test]
    fn a_session_and_the_instance_each_have_a_cap_and_a_closed_stream_frees_its_place() {
        let slots = StreamSlots::new(3, 2);
        assert!(slots.take("a").is_ok());
        assert!(slots.take("a").is_ok());
        assert!(refused(&slots, "a"), "a session's third stream");
        assert!(slots.take("b").is_ok());
        assert!(refused(&slots, "c"), "the instance's fourth stream");

        slots.give_back("a");
        assert!(slots.take("c").is_ok(), "a closed stream frees a place");
        assert!(refused(&slots, "c"));
        slots.give_back("b");
        slots.give_back("c");
        assert!(
            !slots.open.lock().unwrap().by_session.contains_key("b"),
            "a session without streams leaves no entry behind"
        );
        assert!(slots.take("a").is_ok());
        assert!(refused(&slots, "a"));
    }
}
