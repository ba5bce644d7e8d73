//! Work that must finish does not belong to the request (issue 13, STYLE.md habit 14). hyper drops
//! a request's future when its client goes away, and every await point in a handler can be the
//! last: a transaction cut between BEGIN and its guard, a rotation written but never marked, an
//! action done but not audited. A handler therefore never ends with its request: when hyper drops
//! the request before the handler has answered, the handler is moved, where it stands, into a task
//! of its own and runs to its end there. It is told its client has gone (`cancel::client_left`),
//! so that work which has not begun writing is not started for nobody.
//!
//! While its client stays, the handler runs on the request's own task (issue 18). Spawning every
//! handler in a task that the request awaited cost each request a task, a hand-off and, often,
//! the wake-up of the other runtime worker from its sleep: about a tenth of the CPU of a request
//! with no work behind it (`/healthz`). A poll is synchronous, so a client cannot leave in the
//! middle of one; it can only leave between two, where `Detached`'s drop takes over.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::cancel::{for_client, Watchman};

pub async fn detach(request: Request, next: Next) -> Response {
    let (watchman, left) = Watchman::new();
    Detached {
        work: Some(Box::pin(for_client(left, next.run(request)))),
        _watchman: watchman,
    }
    .await
}

/// A handler's run, polled by its request while the request lasts.
struct Detached<F: Future<Output = Response> + Send + 'static> {
    /// `None` once it has answered (or panicked).
    work: Option<Pin<Box<F>>>,
    /// Says "gone" when this drops: when the request is answered (too late to matter) or when its
    /// client went away.
    _watchman: Watchman,
}

impl<F: Future<Output = Response> + Send + 'static> Future for Detached<F> {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let Some(work) = self.work.as_mut() else {
            // Polled after it answered: a caller's bug, not the client's.
            return Poll::Ready(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(response)) => {
                self.work = None;
                Poll::Ready(response)
            }
            Err(_) => {
                // A panicking handler: dropped where it stopped (as a task would drop it), and the
                // client gets a plain 500.
                self.work = None;
                tracing::error!("a request handler panicked");
                Poll::Ready(StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
        }
    }
}

impl<F: Future<Output = Response> + Send + 'static> Drop for Detached<F> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        // The client left mid-handler. The handler goes on in a task of its own from the await
        // where it stopped; what it waits for is given the task's waker at its next poll (a future
        // heeds the latest waker it was polled with). Outside a runtime (the runtime itself is
        // being dropped) there is nowhere to go on, as for any other task.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if AssertUnwindSafe(work).catch_unwind().await.is_err() {
                    tracing::error!("a request handler panicked after its client left");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    fn routes(go_on: Arc<Notify>, steps: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route("/at-once", get(|| async { "answered" }))
            .route(
                "/waits",
                get(move || async move {
                    steps.fetch_add(1, Ordering::SeqCst);
                    go_on.notified().await;
                    tokio::task::yield_now().await;
                    let left = crate::cancel::client_left();
                    // Two steps, plus ten when the handler was told its client had left.
                    steps.fetch_add(if left { 11 } else { 1 }, Ordering::SeqCst);
                    left.to_string()
                }),
            )
            .route(
                "/panics-at-once",
                get(|| async {
                    if true {
                        panic!("a handler's first step");
                    }
                    "never"
                }),
            )
            .route(
                "/panics-later",
                get(|| async {
                    tokio::task::yield_now().await;
                    if true {
                        panic!("a handler after it waited");
                    }
                    "never"
                }),
            )
            .layer(axum::middleware::from_fn(detach))
    }

    async fn call(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_that_answer_at_once_and_handlers_that_wait_both_answer() {
        let (go_on, steps) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let router = routes(go_on.clone(), steps.clone());
        assert_eq!(
            call(&router, "/at-once").await,
            (StatusCode::OK, "answered".into())
        );
        let waiting = tokio::spawn({
            let router = router.clone();
            async move { call(&router, "/waits").await }
        });
        while steps.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        go_on.notify_one();
        assert_eq!(waiting.await.unwrap(), (StatusCode::OK, "false".into()));
        assert_eq!(steps.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_whose_client_leaves_after_its_first_step_still_finishes() {
        let (go_on, steps) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let router = routes(go_on.clone(), steps.clone());
        let request = Request::get("/waits").body(Body::empty()).unwrap();
        let mut answer = Box::pin(router.oneshot(request));
        // The first step runs on the request's own poll, then the handler waits.
        let polled = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx).is_pending()));
        assert!(polled.await);
        assert_eq!(steps.load(Ordering::SeqCst), 1);
        // The client goes away: hyper drops the request's future.
        drop(answer);
        go_on.notify_one();
        for _ in 0..1000 {
            if steps.load(Ordering::SeqCst) > 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(
            steps.load(Ordering::SeqCst),
            12,
            "the handler went on to its end, and knew its client had left"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_panics_answers_500_before_or_after_it_waits() {
        let router = routes(Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        for path in ["/panics-at-once", "/panics-later"] {
            let (status, _) = call(&router, path).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        }
        // The router still serves.
        assert_eq!(call(&router, "/at-once").await.0, StatusCode::OK);
    }
}
