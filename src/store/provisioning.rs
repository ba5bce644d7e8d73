//! The provisioning page's figures (issue 16): how many SCIM requests a workspace's token made
//! since a time. `Store`'s `mod provisioning`; the log itself is written, paged and summed up
//! (its last request, its failures) by `scim_log.rs`.

use time::OffsetDateTime;

use super::db::{db_run, ts, Db};
use super::Result;

pub(super) async fn provisioning_requests(
    db: &Db,
    workspace_id: i64,
    since: OffsetDateTime,
) -> Result<i64> {
    Ok(db_run!(db.read(), |c| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM scim_provisioning_log WHERE workspace_id = $1 AND at >= $2",
        )
        .bind(workspace_id)
        .bind(ts(since))
        .fetch_one(c)
        .await
    })?)
}
