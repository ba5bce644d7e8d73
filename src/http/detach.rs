//! Work that must finish does not belong to the request (issue 13, STYLE.md habit 14). hyper drops
//! a request's future when its client goes away, and every await point in a handler can be the
//! last: a transaction cut between BEGIN and its guard, a rotation written but never marked, an
//! action done but not audited. Every handler therefore runs in a task of its own that the request
//! only awaits: a client that leaves stops waiting, and the handler still runs to its end.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn detach(request: Request, next: Next) -> Response {
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(e) => {
            // A panicking handler: the task is gone, the client gets a plain 500.
            tracing::error!(error = %e, "a request handler panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
