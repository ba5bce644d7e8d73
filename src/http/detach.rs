//! Work that must finish does not belong to the request (issue 13, STYLE.md habit 14). hyper drops
//! a request's future when its client goes away, and every await point in a handler can be the
//! last: a transaction cut between BEGIN and its guard, a rotation written but never marked, an
//! action done but not audited. Every handler therefore runs in a task of its own that the request
//! only awaits: a client that leaves stops waiting, and the handler still runs to its end. The
//! task is told when its client has gone (`cancel::client_left`), so that work which has not
//! begun writing is not started for nobody.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::cancel::{for_client, Watchman};

pub async fn detach(request: Request, next: Next) -> Response {
    // Dropped with this future: when the request completes (too late to matter) or when its
    // client goes away.
    let (_watchman, left) = Watchman::new();
    match tokio::spawn(for_client(left, next.run(request))).await {
        Ok(response) => response,
        Err(e) => {
            // A panicking handler: the task is gone, the client gets a plain 500.
            tracing::error!(error = %e, "a request handler panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
