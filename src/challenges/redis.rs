//! The challenge store on Redis, shared by every instance of a deployment (`ASSENT_REDIS_URL`).
//!
//! Keys, all under `assent:`, each expiring by itself:
//!
//! | key | holds | expires |
//! | --- | --- | --- |
//! | `challenge:{id}` | hash `v` (version), `c` (the challenge as JSON) | at `retain_until` |
//! | `current:{user}:{action}` | id of the person's pending challenge for the action | with it |
//! | `pending:{user}` | sorted set: id → `expires_at`, the pending challenges the person may decide (their own; a colleague's awaiting a second approval) | a minute after the last |
//! | `issued:{user}` | sorted set: id → creation (unix ms), the person's challenges of the last hour (the hourly limit) | an hour after the last |
//! | `due` | sorted set: id → `expires_at`, challenges still waiting (pending or approved) | never (entries leave on transition) |
//! | `blocked:{user}` | the not-me block's end, unix ms | then |
//! | `login:{key}` | hash `n`, `first`, `last` (unix ms): failed logins of the window | with the window |
//! | `jti:{device}:{jti}` | a used device JWS id | when that JWS could no longer be valid |
//!
//! Every change is one Lua script, so it is atomic and one round trip. `swap` writes only while
//! the stored `v` is the expected version. `insert` writes only while the person's slot holds no
//! pending challenge; otherwise it hands that one back, the caller supersedes it with the domain's
//! own `Challenge::supersede`, and inserts again naming the version it superseded. The scripts never
//! parse JSON and hold no domain rule: the version sits beside the JSON, and Rust says which
//! indexes a challenge belongs in.
//!
//! Scripts read challenge keys named by ids they find in an index, so this needs one Redis (alone,
//! with replicas, or under Sentinel), not Redis Cluster.

use async_trait::async_trait;
use prometheus_client::metrics::{counter::Counter, family::Family};
use redis::aio::ConnectionManager;
use redis::Script;
use std::sync::LazyLock;
use time::OffsetDateTime;

use super::{slot, ChallengeStore, Inserted, LiveError, Result, ISSUE_WINDOW, LOGIN_WINDOW};
use crate::domain::challenge::{Challenge, Status};
use crate::metrics::RedisLabels;
use crate::redis_link::connection_manager;

const PREFIX: &str = "assent:";
const CHALLENGE: &str = "assent:challenge:";
const DUE: &str = "assent:due";
/// At most this many due challenges per sweep (the sweeper runs every second).
const DUE_BATCH: i64 = 1000;

/// KEYS: slot, new challenge, pending:{user}, due, issued:{user}.
/// ARGV: new id, new version, new JSON, new retain (unix s), new expires_at (unix s), challenge
/// key prefix, superseded id ('' when the caller found none), its expected version, its new
/// version, its new JSON, its retain, the hourly limit ('0': none), now (unix ms), the start of
/// the hour's window (unix ms, exclusive).
/// Returns {0} inserted, {1, json} the slot's pending challenge must be superseded first, {2} the
/// slot changed since the caller looked: look again, {3, ms} the person is at the hourly limit
/// until ms.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[14])
local limit = tonumber(ARGV[12])
if limit > 0 then
  local n = redis.call('ZCARD', KEYS[5])
  if n >= limit then
    local oldest = redis.call('ZRANGE', KEYS[5], n - limit, n - limit, 'WITHSCORES')
    return {3, oldest[2]}
  end
end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[7] then
  local pending = redis.call('HGET', ARGV[6] .. current, 'c')
  if pending then return {1, pending} end
elseif current then
  local old = ARGV[6] .. current
  if redis.call('HGET', old, 'v') ~= ARGV[8] then return {2, false} end
  redis.call('HSET', old, 'v', ARGV[9], 'c', ARGV[10])
  redis.call('EXPIREAT', old, ARGV[11])
  redis.call('ZREM', KEYS[3], current)
  redis.call('ZREM', KEYS[4], current)
elseif ARGV[7] ~= '' then
  return {2, false}
end
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'c', ARGV[3])
redis.call('EXPIREAT', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[3], last[2] + 60)
redis.call('ZADD', KEYS[5], ARGV[13], ARGV[1])
redis.call('PEXPIREAT', KEYS[5], ARGV[13] + 3600000)
return {0, false}
",
    )
});

/// KEYS: challenge, due, slot, then the pending:{user} indexes to add the id to (ARGV[9] of
/// them: the people who may decide it now), then those to remove it from.
/// ARGV: expected version, new version, JSON, retain (unix s), id, expires_at (unix s),
/// '1' if still waiting (due index), '1' if still pending (keeps the slot), how many indexes to
/// add to.
/// Returns 1 when written, 0 when the stored version was not the expected one.
static SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'c', ARGV[3])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
local adds = tonumber(ARGV[9])
for i = 4, #KEYS do
  if i < 4 + adds then
    redis.call('ZADD', KEYS[i], ARGV[6], ARGV[5])
    local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    redis.call('EXPIREAT', KEYS[i], last[2] + 60)
  else
    redis.call('ZREM', KEYS[i], ARGV[5])
  end
end
if ARGV[8] ~= '1' then
  if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
end
return 1
",
    )
});

/// KEYS: a sorted set of ids. ARGV: the highest score to read ('+inf' for all), lowest score kept
/// ('-inf' for all), challenge key prefix, how many at most (-1 for all).
/// Returns the JSON of the challenges listed between the two scores; entries below the lowest
/// score, or whose challenge is gone, are dropped from the set.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] ~= '-inf' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[1], 'LIMIT', 0, ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  local c = redis.call('HGET', ARGV[3] .. id, 'c')
  if c then out[#out + 1] = c else redis.call('ZREM', KEYS[1], id) end
end
return out
",
    )
});

/// KEYS: blocked:{user}. ARGV: until (unix ms). Keeps the later of the two ends.
static BLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1])
return 1
",
    )
});

/// KEYS: login:{key}. ARGV: now (unix ms), window (ms), end of a window opened now (unix ms).
/// Returns the failures of the window, this one included.
static LOGIN_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local first = tonumber(redis.call('HGET', KEYS[1], 'first'))
if not first or first + tonumber(ARGV[2]) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'first', ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
redis.call('HSET', KEYS[1], 'last', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'n', 1)
",
    )
});

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_unix_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map_err(|e| LiveError::Unavailable(format!("unreadable time in Redis: {e}")))
}

fn unavailable(e: redis::RedisError) -> LiveError {
    LiveError::Unavailable(format!("redis: {e}"))
}

fn decode(json: &str) -> Result<Challenge> {
    serde_json::from_str(json)
        .map_err(|e| LiveError::Unavailable(format!("unreadable challenge in Redis: {e}")))
}

fn encode(c: &Challenge) -> Result<String> {
    serde_json::to_string(c).map_err(|e| LiveError::Unavailable(e.to_string()))
}

fn challenge_key(id: &str) -> String {
    format!("{CHALLENGE}{id}")
}

fn slot_key(c: &Challenge) -> String {
    format!("{PREFIX}current:{}", slot(c.user_id, c.action))
}

fn pending_key(user_id: i64) -> String {
    format!("{PREFIX}pending:{user_id}")
}

fn issued_key(user_id: i64) -> String {
    format!("{PREFIX}issued:{user_id}")
}

fn login_key(key: &str) -> String {
    format!("{PREFIX}login:{key}")
}

/// Still waiting for the phone or the release: the sweepers must expire it on time.
fn waits(c: &Challenge) -> bool {
    matches!(c.status, Status::Pending | Status::Approved)
}

/// What `insert`'s script answered.
enum Attempt {
    Done,
    SupersedeFirst(Box<Challenge>),
    LookAgain,
    Limited(OffsetDateTime),
}

pub struct RedisChallenges {
    conn: ConnectionManager,
    round_trips: Family<RedisLabels, Counter>,
}

impl RedisChallenges {
    /// Connects lazily: a Redis that is not up yet makes `/readyz` answer 503, not start-up fail.
    pub fn open(url: &str, round_trips: Family<RedisLabels, Counter>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            conn: connection_manager(client)?,
            round_trips,
        })
    }

    /// A connection handle for one request, counted as one round trip of `op`.
    fn conn(&self, op: &'static str) -> ConnectionManager {
        self.round_trips.get_or_create(&RedisLabels { op }).inc();
        self.conn.clone()
    }

    async fn try_insert(
        &self,
        new: &Challenge,
        superseded: Option<(&Challenge, u64)>,
        now: OffsetDateTime,
        per_hour: u32,
    ) -> Result<Attempt> {
        let mut invocation = INSERT.prepare_invoke();
        invocation
            .key(slot_key(new))
            .key(challenge_key(&new.id))
            .key(pending_key(new.user_id))
            .key(DUE)
            .key(issued_key(new.user_id))
            .arg(&new.id)
            .arg(new.version)
            .arg(encode(new)?)
            .arg(new.retain_until().unix_timestamp())
            .arg(new.expires_at.unix_timestamp())
            .arg(CHALLENGE);
        match superseded {
            Some((old, expected)) => invocation
                .arg(&old.id)
                .arg(expected)
                .arg(old.version)
                .arg(encode(old)?)
                .arg(old.retain_until().unix_timestamp()),
            None => invocation.arg("").arg("").arg("").arg("").arg(""),
        };
        invocation
            .arg(per_hour)
            .arg(unix_ms(now))
            .arg(unix_ms(now - ISSUE_WINDOW));
        let (code, pending): (i64, Option<String>) = invocation
            .invoke_async(&mut self.conn("insert"))
            .await
            .map_err(unavailable)?;
        Ok(match (code, pending) {
            (0, _) => Attempt::Done,
            (1, Some(json)) => Attempt::SupersedeFirst(Box::new(decode(&json)?)),
            (3, Some(oldest)) => {
                let ms = oldest.parse::<f64>().map_err(|_| {
                    LiveError::Unavailable("unreadable challenge count in Redis".into())
                })?;
                Attempt::Limited(from_unix_ms(ms as i64)? + ISSUE_WINDOW)
            }
            _ => Attempt::LookAgain,
        })
    }

    /// Runs LIST on `key` and decodes what it returns.
    async fn list(
        &self,
        op: &'static str,
        key: &str,
        max_score: &str,
        min_score: &str,
        limit: i64,
    ) -> Result<Vec<Challenge>> {
        let found: Vec<String> = LIST
            .key(key)
            .arg(max_score)
            .arg(min_score)
            .arg(CHALLENGE)
            .arg(limit)
            .invoke_async(&mut self.conn(op))
            .await
            .map_err(unavailable)?;
        found.iter().map(|json| decode(json)).collect()
    }
}

#[async_trait]
impl ChallengeStore for RedisChallenges {
    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn("ping"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert(
        &self,
        challenge: &Challenge,
        now: OffsetDateTime,
        per_hour: u32,
    ) -> Result<Inserted> {
        // Usually one round trip; two when a pending challenge of the same person and action is
        // superseded; more only while other requests change that slot at the same moment.
        let mut superseding: Option<(Challenge, u64)> = None;
        loop {
            let attempt = superseding.as_ref().map(|(c, v)| (c, *v));
            match self.try_insert(challenge, attempt, now, per_hour).await? {
                Attempt::Done => {
                    return Ok(Inserted::Stored {
                        superseded: superseding.map(|(c, _)| Box::new(c)),
                    })
                }
                Attempt::Limited(retry_at) => return Ok(Inserted::Limited { retry_at }),
                Attempt::SupersedeFirst(old) => {
                    let mut old = *old;
                    let expected = old.version;
                    // The slot only ever names a pending challenge, so this always applies.
                    old.supersede(now);
                    superseding = Some((old, expected));
                }
                Attempt::LookAgain => superseding = None,
            }
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Challenge>> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(challenge_key(id))
            .arg("c")
            .query_async(&mut self.conn("get"))
            .await
            .map_err(unavailable)?;
        json.as_deref().map(decode).transpose()
    }

    async fn pending_for_user(&self, user_id: i64, now: OffsetDateTime) -> Result<Vec<Challenge>> {
        // Scores are whole seconds (the stored times are); `expires_at > now` is still pending.
        let lowest = (now.unix_timestamp() + 1).to_string();
        let mut pending: Vec<Challenge> = self
            .list("pending", &pending_key(user_id), "+inf", &lowest, -1)
            .await?
            .into_iter()
            .filter(|c| {
                c.status == Status::Pending && !c.is_due(now) && c.deciders().contains(&user_id)
            })
            .collect();
        pending.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(pending)
    }

    async fn swap(&self, challenge: &Challenge, expected_version: u64) -> Result<bool> {
        let c = challenge;
        let pending = c.status == Status::Pending;
        let add: Vec<i64> = if pending { c.deciders() } else { Vec::new() };
        let mut remove: Vec<i64> = std::iter::once(c.user_id)
            .chain(c.second_approvers.iter().copied())
            .filter(|u| !add.contains(u))
            .collect();
        remove.dedup();
        let mut invocation = SWAP.prepare_invoke();
        invocation
            .key(challenge_key(&c.id))
            .key(DUE)
            .key(slot_key(c));
        for user in add.iter().chain(&remove) {
            invocation.key(pending_key(*user));
        }
        let written: i64 = invocation
            .arg(expected_version)
            .arg(c.version)
            .arg(encode(c)?)
            .arg(c.retain_until().unix_timestamp())
            .arg(&c.id)
            .arg(c.expires_at.unix_timestamp())
            .arg(if waits(c) { "1" } else { "0" })
            .arg(if pending { "1" } else { "0" })
            .arg(add.len())
            .invoke_async(&mut self.conn("swap"))
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    async fn due(&self, now: OffsetDateTime) -> Result<Vec<Challenge>> {
        let due = self
            .list(
                "due",
                DUE,
                &now.unix_timestamp().to_string(),
                "-inf",
                DUE_BATCH,
            )
            .await?;
        Ok(due.into_iter().filter(|c| c.is_due(now)).collect())
    }

    async fn purge(&self, _now: OffsetDateTime) -> Result<()> {
        // Nothing to do: every key expires by itself (see the table above), and index entries
        // whose challenge is gone are dropped by the scripts that read them.
        Ok(())
    }

    async fn block_user(&self, user_id: i64, until: OffsetDateTime) -> Result<()> {
        let _: i64 = BLOCK
            .key(format!("{PREFIX}blocked:{user_id}"))
            .arg(unix_ms(until))
            .invoke_async(&mut self.conn("block_user"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn blocked_until(
        &self,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        let until: Option<i64> = redis::cmd("GET")
            .arg(format!("{PREFIX}blocked:{user_id}"))
            .query_async(&mut self.conn("blocked_until"))
            .await
            .map_err(unavailable)?;
        Ok(until
            .map(from_unix_ms)
            .transpose()?
            .filter(|until| *until > now))
    }

    async fn login_failed(&self, key: &str, now: OffsetDateTime) -> Result<u32> {
        let window = LOGIN_WINDOW.whole_milliseconds() as i64;
        let failures: u32 = LOGIN_FAILED
            .key(login_key(key))
            .arg(unix_ms(now))
            .arg(window)
            .arg(unix_ms(now) + window)
            .invoke_async(&mut self.conn("login_failed"))
            .await
            .map_err(unavailable)?;
        Ok(failures)
    }

    async fn login_failures(
        &self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)> {
        let (count, first, last): (Option<u32>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(login_key(key))
            .arg("n")
            .arg("first")
            .arg("last")
            .query_async(&mut self.conn("login_failures"))
            .await
            .map_err(unavailable)?;
        match (count, first, last) {
            (Some(count), Some(first), Some(last)) if from_unix_ms(first)? + LOGIN_WINDOW > now => {
                Ok((count, Some(from_unix_ms(last)?)))
            }
            _ => Ok((0, None)),
        }
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        let _: i64 = redis::cmd("DEL")
            .arg(login_key(key))
            .query_async(&mut self.conn("login_succeeded"))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remember_jti(
        &self,
        device_id: &str,
        jti: &str,
        keep_until: OffsetDateTime,
    ) -> Result<bool> {
        // SET NX: only the first use of the id writes, and the key goes when the JWS could no
        // longer be valid anyway.
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{PREFIX}jti:{device_id}:{jti}"))
            .arg(1)
            .arg("NX")
            .arg("EXAT")
            .arg(keep_until.unix_timestamp())
            .query_async(&mut self.conn("remember_jti"))
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
}
