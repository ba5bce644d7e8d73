//! Whether the client a piece of work is for is still there. Handlers run detached
//! (`http/detach.rs`) so that work which has begun writing always finishes; the price is that a
//! client which hangs up no longer stops work that has not begun. Use cases ask `client_left()`
//! before their first write, and waits for a scarce resource (a password hash's turn) end with
//! `left()`: nobody is waiting for the answer, and an attacker who sends and hangs up must not
//! queue work (issue 13).

use std::future::Future;
use tokio::sync::watch;

tokio::task_local! {
    static LEFT: watch::Receiver<bool>;
}

/// Runs `work` for the client whose `Watchman` gave `left`.
pub async fn for_client<F: Future>(left: watch::Receiver<bool>, work: F) -> F::Output {
    LEFT.scope(left, work).await
}

/// True once the client this work is for has gone away; outside a request (the CLI, the
/// sweeper), never.
pub fn client_left() -> bool {
    LEFT.try_with(|left| *left.borrow()).unwrap_or(false)
}

/// Resolves once the client this work is for has gone away; outside a request, never.
pub async fn left() {
    let Ok(mut left) = LEFT.try_with(|left| left.clone()) else {
        return std::future::pending().await;
    };
    if left.wait_for(|gone| *gone).await.is_err() {
        // The watchman is gone without saying so: the request ended normally.
        std::future::pending::<()>().await;
    }
}

/// Says "gone" when dropped: held by the request's own future, it drops when hyper drops the
/// request because its client went away (or when the request is answered: too late to matter).
pub struct Watchman(watch::Sender<bool>);

impl Watchman {
    pub fn new() -> (Watchman, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Watchman(tx), rx)
    }
}

impl Watchman {
    /// Says "gone" now, before this drops: for a handler about to be moved into a task of its own
    /// (`http/detach.rs`), which must not begin work for nobody in the meantime.
    pub fn say_gone(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for Watchman {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_flag_is_seen_inside_the_work_and_nowhere_else() {
        assert!(!client_left());
        let (watchman, left) = Watchman::new();
        assert!(!for_client(left.clone(), async { client_left() }).await);
        let waiting = tokio::spawn(for_client(left.clone(), async { left_then_true().await }));
        drop(watchman);
        assert!(waiting.await.unwrap());
        assert!(for_client(left, async { client_left() }).await);
    }

    async fn left_then_true() -> bool {
        super::left().await;
        true
    }
}
