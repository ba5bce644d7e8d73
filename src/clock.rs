//! Time is a parameter: everything that expires asks a `Clock`, so tests move time instead of sleeping.

use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().expect("clock lock")
    }
}

/// RFC 3339 UTC with whole seconds, the one format every JSON body uses (CONTRACT.md section 2).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times always format")
}

/// Serde helper: `#[serde(serialize_with = "crate::clock::ser_rfc3339")]`.
pub fn ser_rfc3339<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

pub fn ser_opt_rfc3339<S: serde::Serializer>(
    t: &Option<OffsetDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

pub fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_utc_with_whole_seconds() {
        assert_eq!(
            rfc3339(datetime!(2026-11-28 12:00:00.75 UTC)),
            "2026-11-28T12:00:00Z"
        );
        assert_eq!(
            rfc3339(datetime!(2026-11-28 13:00:00 +1)),
            "2026-11-28T12:00:00Z"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(datetime!(2026-11-28 12:00 UTC));
        clock.advance(Duration::seconds(121));
        assert_eq!(clock.now(), datetime!(2026-11-28 12:02:01 UTC));
    }
}
