//! Messages that cross processes, generated from `proto/assent/v1/bus.proto` at build time.

#![allow(clippy::all)]
include!(concat!(env!("OUT_DIR"), "/assent.v1.rs"));

use crate::domain::challenge::Status;

impl From<Status> for ChallengeStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => ChallengeStatus::Pending,
            Status::Approved => ChallengeStatus::Approved,
            Status::Denied => ChallengeStatus::Denied,
            Status::Expired => ChallengeStatus::Expired,
            Status::Released => ChallengeStatus::Released,
        }
    }
}
