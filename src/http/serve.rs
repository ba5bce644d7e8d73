//! The accept loop: hyper's connection builder driven by hand, because `axum::serve` sets no
//! header-read timeout, no idle timeout and no connection cap, and a client without an account
//! could hold any number of connections open forever (issue 13).
//!
//! - **Header-read timeout**: hyper's HTTP/1 timer. It also runs while a kept-alive connection
//!   waits for its next request (hyper 1.x arms it as soon as the connection goes idle:
//!   `proto/h1/conn.rs`, `State::idle`), so an idle HTTP/1.1 connection lasts at most the shorter
//!   of the two timeouts. It does not run before the protocol is known (the auto builder reads
//!   the first bytes to tell HTTP/1 from the HTTP/2 preface) nor on HTTP/2: there, a connection
//!   that has not yet sent a whole request gets the same time from our own timer below.
//! - **Idle timeout**: a connection with no request in flight (a response body still being sent,
//!   such as an SSE stream, counts as in flight) is shut down gracefully.
//! - **Connection cap**: a semaphore taken *before* `accept`. At the cap the loop stops accepting
//!   until a connection closes; new clients wait in the kernel's listen queue (and, once it is
//!   full, their SYNs are retried by their own stack). Accepting and closing at once would spend
//!   a file descriptor and a task per attempt under attack and turn a short wait into an error
//!   for every legitimate client that arrives meanwhile.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::detach::Moved;
use crate::app::App;
use crate::metrics::Metrics;

/// The largest request head (request line and headers) over HTTP/1.1, and hyper's read buffer,
/// hence what one connection can make the server hold while it reads: 64 KiB instead of hyper's
/// 400 KiB default keeps `ASSENT_MAX_CONNECTIONS` connections within a few hundred MiB.
const MAX_HEAD: usize = 64 * 1024;
/// HTTP/2 flow-control windows: what a client may send before the server reads it. 64 KiB (the
/// protocol's initial value) bounds a connection's unread request data like `MAX_HEAD` does on
/// HTTP/1.1, instead of hyper's 1 MiB per stream and per connection.
const H2_WINDOW: u32 = 64 * 1024;
/// Streams one HTTP/2 connection may have open at once (RFC 9113 §6.5.2 advises at least 100).
const H2_STREAMS: u32 = 100;
/// How often an HTTP/2 connection is pinged; one whose peer does not answer within hyper's 20 s
/// timeout is dropped (a balancer gone without a FIN).
const H2_PING: Duration = Duration::from_secs(30);
/// How long requests in flight may take to finish once SIGINT or SIGTERM arrives. SSE streams,
/// which wait for a phone, are then cut: the browser's EventSource reconnects (to another
/// instance) and hears the current status at once.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves the app on `listener` until `shutdown` resolves, then waits (at most `DRAIN`) for the
/// open connections to finish their requests, and for the handlers whose clients left.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let config = &app.config;
    let limits = Limits {
        header_read: config.header_read_timeout.unsigned_abs(),
        idle: config.idle_timeout.unsigned_abs(),
    };
    let builder = Arc::new(builder(limits.header_read));
    let router = super::router(app.clone());
    let max = config.max_connections;
    warn_if_files_run_short(max);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let moved = Moved::default();
    let mut warned_at: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                app.metrics.http_connection_cap_waits.inc();
                // Once a minute at most: under attack this happens at every freed slot.
                if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        max,
                        "ASSENT_MAX_CONNECTIONS reached: accepting again as connections close"
                    );
                    warned_at = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break, // never closed
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        app.metrics.http_connections_open.inc();
        let connection = Connection {
            router: router.clone(),
            builder: builder.clone(),
            metrics: app.metrics.clone(),
            limits,
            stop: stop_rx.clone(),
            moved: moved.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.run(stream, peer));
    }
    // New clients are refused from here on; the open connections finish what they started.
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let deadline = tokio::time::Instant::now() + DRAIN;
    if tokio::time::timeout_at(deadline, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            open = max - slots.available_permits(),
            "connections still open after the drain period are cut"
        );
    }
    // And the handlers whose clients left before their answers: work that began.
    if tokio::time::timeout_at(deadline, moved.none_running())
        .await
        .is_err()
    {
        tracing::warn!("handlers whose clients left are still running after the drain period");
    }
}

#[derive(Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
}

fn builder(header_read: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS)
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .max_header_list_size(MAX_HEAD as u32)
        .keep_alive_interval(H2_PING);
    builder
}

/// As `axum::serve` does: errors of one connection (it was reset before we took it) are skipped;
/// others, such as running out of file descriptors, are logged and retried after a pause, since
/// connections closing free what is missing.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Each connection needs a file descriptor: a cap above the process's limit would turn into
/// accept errors (and failures to open database connections) before the cap is reached.
fn warn_if_files_run_short(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    // Room for the database pool, Redis, the log and the listener.
    if let Some(soft) = soft.filter(|soft| *soft < max_connections + 128) {
        tracing::warn!(
            open_files = soft,
            max_connections,
            "the open-file limit is below ASSENT_MAX_CONNECTIONS + 128: raise it (ulimit -n, LimitNOFILE) or lower ASSENT_MAX_CONNECTIONS"
        );
    }
}

/// One accepted connection and what it needs to be served.
/// Counted in `http_connections_open` from its accept to its drop.
struct Connection {
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    metrics: Arc<Metrics>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    /// Handlers moved off requests whose clients left (`detach.rs`), which the drain waits for.
    moved: Moved,
    /// Its place under `ASSENT_MAX_CONNECTIONS`, given back when the connection ends.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        // SSE events are small writes that must leave at once: without TCP_NODELAY, Nagle's
        // algorithm holds each one until the browser's delayed ACK (40 ms on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            let moved = self.moved.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = activity.begin();
                let mut request = request.map(Body::new);
                // What `into_make_service_with_connect_info` provides: `Caller` reads the peer.
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(moved.clone());
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Tracked { body, _busy: busy }),
                    )
                }
            })
        };
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let stop = self.stop.wait_for(|stop| *stop);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.quiet(self.limits) => {}
            _ = stop => {}
        }
        // HTTP/1.1: closes an idle connection at once, or after the response in progress;
        // HTTP/2: GOAWAY, then the open streams finish; before the protocol is known: closes.
        conn.as_mut().graceful_shutdown();
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "connection ended with an error");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.metrics.http_connections_open.dec();
    }
}

/// The requests one connection has in flight, and when it last had none.
///
/// Counted with atomics, read by a timer: a request that begins or ends wakes nobody. (A watch
/// channel woke the connection's task, and with it hyper's connection future, twice per request,
/// and armed a timer at every end.)
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    /// What `quiet_since` counts from.
    opened: tokio::time::Instant,
    in_flight: AtomicUsize,
    started: AtomicBool,
    /// Microseconds from `opened` to the moment the last request in flight ended.
    quiet_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(ActivityState {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            quiet_since: AtomicU64::new(0),
        }))
    }

    fn begin(&self) -> Busy {
        self.0.started.store(true, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }

    /// Resolves once the connection has had nothing in flight for its limit: the header-read
    /// timeout before its first request, the idle timeout after.
    ///
    /// It looks once per the shorter limit while requests are in flight; once none is, it
    /// sleeps until exactly a limit after the last one ended (or that shorter step, whichever
    /// comes first: a request may begin and end meanwhile), and looks again.
    async fn quiet(&self, limits: Limits) {
        let state = &self.0;
        let step = limits.header_read.min(limits.idle);
        let mut wake = tokio::time::Instant::now() + step;
        loop {
            tokio::time::sleep_until(wake).await;
            let now = tokio::time::Instant::now();
            // `Busy` writes the time before the count: a count of 0 read here comes with the
            // time its last request ended.
            if state.in_flight.load(Ordering::Acquire) > 0 {
                wake = now + step;
                continue;
            }
            let limit = if state.started.load(Ordering::Relaxed) {
                limits.idle
            } else {
                limits.header_read
            };
            let since = Duration::from_micros(state.quiet_since.load(Ordering::Relaxed));
            let idle_for = now.duration_since(state.opened).saturating_sub(since);
            if idle_for >= limit {
                return;
            }
            wake = now + (limit - idle_for).min(step);
        }
    }
}

/// One request in flight; dropped with its response body.
struct Busy(Arc<ActivityState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let at = u64::try_from(self.0.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.0.quiet_since.fetch_max(at, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped: an SSE
/// stream is a request in flight for minutes after its handler returned.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
