//! Phones: the enrollment codes that add them, the devices, and the JWS ids they used (the replay
//! cache): `Store`'s `mod devices`.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::db::{db_run, ts, value_rows, Db, JsonText, On};
use super::readers::Arg;
use super::{Device, Enrollment, NewDevice, Platform, Result, UsedJti};
use crate::clock::from_unix;
use crate::domain::crypto::Sealed;

#[derive(FromRow)]
struct DeviceRow {
    id: String,
    user_id: i64,
    name: String,
    platform: String,
    apns_environment: Option<String>,
    public_key: JsonText,
    push_key_id: Option<String>,
    push_nonce: Option<Vec<u8>>,
    push_ciphertext: Option<Vec<u8>>,
    push_token_invalid: bool,
    created_at: i64,
    last_seen_at: Option<i64>,
}

impl From<DeviceRow> for Device {
    fn from(row: DeviceRow) -> Device {
        let push_token = match (row.push_key_id, row.push_nonce, row.push_ciphertext) {
            (Some(key_id), Some(nonce), Some(ciphertext)) => Some(Sealed {
                key_id,
                nonce,
                ciphertext,
            }),
            _ => None,
        };
        Device {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            platform: Platform::parse(&row.platform).unwrap_or(Platform::Fcm),
            apns_environment: row.apns_environment,
            public_key: serde_json::from_str(&row.public_key.0).unwrap_or_default(),
            push_token,
            push_token_invalid: row.push_token_invalid,
            created_at: from_unix(row.created_at),
            last_seen_at: row.last_seen_at.map(from_unix),
        }
    }
}

/// A sealed push token as its three columns (all NULL without one).
fn push_columns(token: Option<Sealed>) -> (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) {
    match token {
        Some(s) => (Some(s.key_id), Some(s.nonce), Some(s.ciphertext)),
        None => (None, None, None),
    }
}

pub(super) async fn create_enrollment(
    db: &Db,
    code_hash: &str,
    user_id: i64,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    first_device: bool,
) -> Result<()> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query(
            "INSERT INTO enrollment_codes (code_hash, user_id, created_at, expires_at, first_device)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(code_hash)
        .bind(user_id)
        .bind(ts(now))
        .bind(ts(expires_at))
        .bind(first_device)
        .execute(c)
        .await
        .map(|_| ())
    })?)
}

pub(super) async fn enroll_device(
    db: &Db,
    code_hash: &str,
    d: NewDevice,
    now: OffsetDateTime,
) -> Result<Enrollment> {
    let mut tx = db.begin().await?;
    // Spend the code only if it is unspent and unexpired: the UPDATE is the single winner. (On
    // Postgres a concurrent UPDATE of the same row waits for this transaction and then re-checks
    // `used_at IS NULL` (READ COMMITTED), so it finds nothing to spend.)
    let spent: Option<(i64, bool)> = db_run!(tx.conn(), |c| {
        sqlx::query_as(
            "UPDATE enrollment_codes SET used_at = $1
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING user_id, first_device",
        )
        .bind(ts(now))
        .bind(code_hash)
        .fetch_optional(c)
        .await
    })?;
    let Some((user_id, first_device)) = spent else {
        let used_at: Option<Option<i64>> = db_run!(tx.conn(), |c| {
            sqlx::query_scalar("SELECT used_at FROM enrollment_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(c)
                .await
        })?;
        return Ok(match used_at {
            None => Enrollment::Unknown,
            Some(Some(_)) => Enrollment::Spent,
            Some(None) => Enrollment::Expired,
        });
    };
    if first_device {
        if let On::Postgres(c) = tx.conn() {
            // Two first-phone codes of one person redeemed at once: the second waits here and
            // then sees the first one's phone. (SQLite's one writer runs them one after the other.)
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(user_id)
                .execute(c)
                .await?;
        }
        let has_one: bool = db_run!(tx.conn(), |c| {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = $1)")
                .bind(user_id)
                .fetch_one(c)
                .await
        })?;
        if has_one {
            // A code given without any phone's approval adds only a first phone.
            tx.commit().await?;
            return Ok(Enrollment::NotFirst);
        }
    }
    let (key_id, nonce, ciphertext) = push_columns(d.push_token);
    db_run!(tx.conn(), |c| {
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, platform, apns_environment, public_key,
               push_key_id, push_nonce, push_ciphertext, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&d.id)
        .bind(user_id)
        .bind(&d.name)
        .bind(d.platform.as_str())
        .bind(&d.apns_environment)
        .bind(JsonText(d.public_key.to_string()))
        .bind(&key_id)
        .bind(&nonce)
        .bind(&ciphertext)
        .bind(ts(now))
        .execute(c)
        .await
        .map(|_| ())
    })?;
    tx.commit().await?;
    Ok(Enrollment::Enrolled { user_id })
}

/// `DEVICE`'s columns, in the order `DeviceRow::from_reader` reads them.
const DEVICE: &str = "SELECT id, user_id, name, platform, apns_environment, public_key,
       push_key_id, push_nonce, push_ciphertext, push_token_invalid, created_at, last_seen_at
     FROM devices";

impl DeviceRow {
    fn from_reader(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
        Ok(DeviceRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            name: r.get(2)?,
            platform: r.get(3)?,
            apns_environment: r.get(4)?,
            public_key: JsonText(r.get(5)?),
            push_key_id: r.get(6)?,
            push_nonce: r.get(7)?,
            push_ciphertext: r.get(8)?,
            push_token_invalid: r.get(9)?,
            created_at: r.get(10)?,
            last_seen_at: r.get(11)?,
        })
    }
}

/// Read by every call a phone makes (`Authorization: Device`).
pub(super) async fn device(db: &Db, id: &str) -> Result<Option<Device>> {
    let row = db
        .hot_row(
            format!("{DEVICE} WHERE id = $1"),
            vec![Arg::Text(id.to_owned())],
            DeviceRow::from_reader,
        )
        .await?;
    Ok(row.map(Device::from))
}

/// Read by every step-up (the phones to push to).
pub(super) async fn devices_of_user(db: &Db, user_id: i64) -> Result<Vec<Device>> {
    let rows = db
        .hot_rows(
            format!("{DEVICE} WHERE user_id = $1 ORDER BY created_at, id"),
            vec![Arg::Int(user_id)],
            DeviceRow::from_reader,
        )
        .await?;
    Ok(rows.into_iter().map(Device::from).collect())
}

pub(super) async fn count_devices_of_user(db: &Db, user_id: i64) -> Result<i64> {
    Ok(db_run!(db.read(), |c| {
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(c)
            .await
    })?)
}

pub(super) async fn delete_device(db: &Db, user_id: i64, id: &str) -> Result<bool> {
    let deleted = db_run!(db.write().await?.on(), |c| {
        sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(deleted == 1)
}

pub(super) async fn delete_devices_of_user(db: &Db, user_id: i64) -> Result<u64> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(user_id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?)
}

pub(super) async fn set_push_token(db: &Db, id: &str, token: Option<Sealed>) -> Result<()> {
    let (key_id, nonce, ciphertext) = push_columns(token);
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query(
            "UPDATE devices SET push_key_id = $1, push_nonce = $2, push_ciphertext = $3,
               push_token_invalid = FALSE WHERE id = $4",
        )
        .bind(&key_id)
        .bind(&nonce)
        .bind(&ciphertext)
        .bind(id)
        .execute(c)
        .await
        .map(|_| ())
    })?)
}

pub(super) async fn mark_push_token_invalid(db: &Db, id: &str) -> Result<()> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query("UPDATE devices SET push_token_invalid = TRUE WHERE id = $1")
            .bind(id)
            .execute(c)
            .await
            .map(|_| ())
    })?)
}

pub(super) async fn touch_device(db: &Db, id: &str, now: OffsetDateTime) -> Result<()> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
            .bind(ts(now))
            .bind(id)
            .execute(c)
            .await
            .map(|_| ())
    })?)
}

pub(super) async fn record_jtis(db: &Db, used: &[UsedJti]) -> Result<()> {
    for chunk in used.chunks(300) {
        let sql = format!(
            "INSERT INTO used_jtis (device_id, jti, expires_at) VALUES {}
             ON CONFLICT DO NOTHING",
            value_rows(db, 3, chunk.len())
        );
        db_run!(db.write().await?.on(), |c| {
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = q
                    .bind(u.device_id.as_str())
                    .bind(u.jti.as_str())
                    .bind(ts(u.keep_until));
            }
            q.execute(c).await.map(|_| ())
        })?;
    }
    Ok(())
}

pub(super) async fn used_jtis(db: &Db) -> Result<Vec<UsedJti>> {
    let rows: Vec<(String, String, i64)> = db_run!(db.read(), |c| {
        sqlx::query_as("SELECT device_id, jti, expires_at FROM used_jtis")
            .fetch_all(c)
            .await
    })?;
    Ok(rows
        .into_iter()
        .map(|(device_id, jti, at)| UsedJti {
            device_id,
            jti,
            keep_until: from_unix(at),
        })
        .collect())
}
