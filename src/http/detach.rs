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
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::cancel::{for_client, Watchman};

/// The handlers this server moved off their requests and that are still running, for the
/// shutdown's drain (`serve.rs`) to wait for as it waits for open connections: a handler whose
/// client left is work that began, and a SIGTERM should not cut it either. `serve` puts one in
/// every request's extensions; without it (a router driven in tests) moved handlers are not
/// counted.
#[derive(Clone, Default)]
pub struct Moved(Arc<MovedState>);

#[derive(Default)]
struct MovedState {
    running: AtomicUsize,
    none_left: Notify,
}

impl Moved {
    /// Resolves once no moved handler is running.
    pub async fn none_running(&self) {
        loop {
            let none_left = self.0.none_left.notified();
            tokio::pin!(none_left);
            none_left.as_mut().enable();
            if self.0.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            none_left.await;
        }
    }

    /// Counts a handler as running until the returned guard drops (it ended, or the runtime
    /// dropped it).
    fn running(&self) -> Running {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }
}

struct Running(Moved);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0 .0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.none_left.notify_waiters();
        }
    }
}

pub async fn detach(request: Request, next: Next) -> Response {
    let (watchman, left) = Watchman::new();
    let moved = request.extensions().get::<Moved>().cloned();
    Detached {
        moved,
        work: Some(Box::pin(for_client(left, next.run(request)))),
        watchman,
        // Taken now, where a runtime surely is: the request may be dropped anywhere.
        runtime: Handle::current(),
    }
    .await
}

/// A handler's run, polled by its request while the request lasts.
struct Detached<F: Future<Output = Response> + Send + 'static> {
    /// `None` once it has answered (or panicked).
    work: Option<Pin<Box<F>>>,
    /// Says "gone" when the client goes away (or, too late to matter, after the answer).
    watchman: Watchman,
    /// Where the handler goes on if its client leaves,
    runtime: Handle,
    /// and who counts it there.
    moved: Option<Moved>,
}

impl<F: Future<Output = Response> + Send + 'static> Detached<F> {
    /// Drops the handler's future, which has answered or panicked; a panic in its drop (the
    /// locals it still held) is caught too, as a task's harness would.
    fn finish(&mut self) {
        let work = self.work.take();
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(work))) {
            tracing::error!(
                panic = why(&*panic),
                "a request handler panicked when dropped"
            );
        }
    }
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
                self.finish();
                Poll::Ready(response)
            }
            Err(panic) => {
                // Dropped where it stopped, as a task would drop it; the client gets a plain 500.
                tracing::error!(panic = why(&*panic), "a request handler panicked");
                self.finish();
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
        // The client left mid-handler. Told first, so that the handler, which may run on the other
        // worker at once, begins nothing for nobody; then it goes on in a task of its own from the
        // await where it stopped. What it waits for is given the task's waker at its next poll (a
        // future heeds the latest waker it was polled with). A runtime that is shutting down drops
        // it there, as it drops every other task.
        self.watchman.say_gone();
        let running = self.moved.as_ref().map(Moved::running);
        self.runtime.spawn(async move {
            let _running = running;
            if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
                tracing::error!(
                    panic = why(&*panic),
                    "a request handler panicked after its client left"
                );
            }
        });
    }
}

/// A panic's message, when it has one.
fn why(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    fn routes(go_on: Arc<Notify>, steps: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route("/at-once", get(|| async { "answered" }))
            .route(
                "/waits",
                get({
                    let (go_on, steps) = (go_on.clone(), steps.clone());
                    move || async move {
                        steps.fetch_add(1, Ordering::SeqCst);
                        go_on.notified().await;
                        tokio::task::yield_now().await;
                        let left = crate::cancel::client_left();
                        // Two steps, plus ten when the handler was told its client had left.
                        steps.fetch_add(if left { 11 } else { 1 }, Ordering::SeqCst);
                        left.to_string()
                    }
                }),
            )
            .route("/task", get(|| async { tokio::task::id().to_string() }))
            .route(
                "/waits-then-panics",
                get({
                    let (go_on, steps) = (go_on.clone(), steps.clone());
                    move || async move {
                        go_on.notified().await;
                        steps.fetch_add(100, Ordering::SeqCst);
                        if true {
                            panic!("a handler whose client left");
                        }
                        "never"
                    }
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
    async fn handlers_run_on_their_requests_task_and_answer_whether_they_wait_or_not() {
        let (go_on, steps) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let router = routes(go_on.clone(), steps.clone());
        assert_eq!(
            call(&router, "/at-once").await,
            (StatusCode::OK, "answered".into())
        );
        // While its client stays, a handler runs on the request's own task: no task per request.
        let (request_task, handler_task) = tokio::spawn({
            let router = router.clone();
            async move {
                (
                    tokio::task::id().to_string(),
                    call(&router, "/task").await.1,
                )
            }
        })
        .await
        .unwrap();
        assert_eq!(handler_task, request_task);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_panics_after_its_client_left_takes_nothing_down() {
        let (go_on, steps) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let router = routes(go_on.clone(), steps.clone());
        let request = Request::get("/waits-then-panics")
            .body(Body::empty())
            .unwrap();
        let mut answer = Box::pin(router.clone().oneshot(request));
        let polled = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx).is_pending()));
        assert!(polled.await);
        drop(answer);
        go_on.notify_one();
        for _ in 0..1000 {
            if steps.load(Ordering::SeqCst) >= 100 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(
            steps.load(Ordering::SeqCst),
            100,
            "the handler went on, to its panic"
        );
        assert_eq!(call(&router, "/at-once").await.0, StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_drain_waits_for_a_handler_whose_client_left() {
        let (go_on, steps) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let router = routes(go_on.clone(), steps.clone());
        let moved = Moved::default();
        // Nothing moved yet: nothing to wait for.
        tokio::time::timeout(std::time::Duration::from_secs(5), moved.none_running())
            .await
            .unwrap();
        let mut request = Request::get("/waits").body(Body::empty()).unwrap();
        request.extensions_mut().insert(moved.clone());
        let mut answer = Box::pin(router.oneshot(request));
        let polled = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx).is_pending()));
        assert!(polled.await);
        drop(answer);
        let waiting = tokio::spawn({
            let (moved, steps) = (moved.clone(), steps.clone());
            async move {
                moved.none_running().await;
                steps.load(Ordering::SeqCst)
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the handler still waits");
        go_on.notify_one();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, 12, "the drain ended after the handler did");
    }
}
