//! The Redis connection both live-state adapters share (`challenges/redis.rs`, `bus/redis.rs`),
//! configured once.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration as StdDuration;

/// A connection manager that fails fast while Redis is away (so `/readyz` and the API answer 503
/// within about a second instead of hanging) and reconnects on the next call.
pub fn connection_manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(StdDuration::from_secs(1)))
        .set_response_timeout(Some(StdDuration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(StdDuration::from_millis(50))
        .set_max_delay(StdDuration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}
