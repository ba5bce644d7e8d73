//! Following a challenge from the session that asked: what it is shown at once and at every
//! change, until there is nothing more to wait for. One set of waiting rules, shared by the
//! console's and support's event streams (`http/challenges.rs` only renders it as SSE).

use futures_util::stream::Stream;
use std::sync::Arc;

use crate::app::App;
use crate::bus::Subscription;
use crate::domain::challenge::{Challenge, Status};
use crate::error::{ApiError, ApiResult};

/// What the waiting session is shown of its challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub status: Status,
    /// `second_approval` while the two-person rule waits for its second person.
    pub awaiting: Option<&'static str>,
}

impl Seen {
    pub fn of(c: &Challenge) -> Self {
        Self {
            status: c.shown_status(),
            awaiting: c.awaiting(),
        }
    }
}

/// How long a watch waits before reading an unavailable challenge store again, unless woken.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// What one watch keeps between changes: small on purpose, a browser may wait minutes.
struct Watch {
    app: Arc<App>,
    id: String,
    session_hash: String,
    subscription: Subscription,
    last: Option<Seen>,
    done: bool,
}

impl Watch {
    /// The challenge as its session sees it, read in a task of its own: the read may expire it
    /// (a transition, its announcement and its audit entry), which a browser that goes away at
    /// that moment must not cut in half.
    async fn read(&self) -> ApiResult<Challenge> {
        let (app, id, hash) = (self.app.clone(), self.id.clone(), self.session_hash.clone());
        tokio::spawn(async move { app.challenge_of_session(&id, &hash).await })
            .await
            .map_err(|_| ApiError::Internal)?
    }

    /// The next thing to show: the current state if it changed, else wait for the bus or the
    /// expiry. None once the challenge has ended (or the bus went away: the client reconnects).
    async fn next(mut self) -> Option<(Seen, Self)> {
        if self.done {
            return None;
        }
        loop {
            let c = match self.read().await {
                Ok(c) => c,
                // The challenge store (Redis) is away for a moment. Ending the watch would not
                // help: the browser's reconnect would get a 503, which makes EventSource give up
                // for good. Read again when the bus reconnects (it wakes every waiter) or after a
                // pause; the stream's keep-alives go on meanwhile.
                Err(ApiError::Unavailable(_)) => {
                    tokio::select! {
                        changed = self.subscription.changed() => { changed?; }
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                    }
                    continue;
                }
                Err(_) => return None,
            };
            let seen = Seen::of(&c);
            if self.last != Some(seen) {
                self.last = Some(seen);
                self.done = seen.status.ends_the_wait();
                return Some((seen, self));
            }
            let until_expiry = (c.expires_at - self.app.now()).max(time::Duration::ZERO);
            let sleep = std::time::Duration::try_from(until_expiry).unwrap_or_default();
            tokio::select! {
                changed = self.subscription.changed() => {
                    // The bus went away: end the watch; the client reconnects.
                    changed?;
                }
                _ = tokio::time::sleep(sleep + std::time::Duration::from_millis(50)) => {}
            }
        }
    }
}

impl App {
    /// Follows a challenge of this session (anything else is "not found"): its state at once,
    /// then at every change, ending after a state with nothing more to wait for. Subscribes before
    /// the first read, so no change between the two is missed; works whichever instance the
    /// change reached.
    pub async fn watch(
        self: &Arc<Self>,
        id: &str,
        session_hash: &str,
    ) -> ApiResult<impl Stream<Item = Seen> + Send + 'static> {
        let subscription = self.bus.subscribe(id).await?;
        self.challenge_of_session(id, session_hash).await?;
        let watch = Watch {
            app: self.clone(),
            id: id.to_owned(),
            session_hash: session_hash.to_owned(),
            subscription,
            last: None,
            done: false,
        };
        Ok(futures_util::stream::unfold(watch, Watch::next))
    }
}
