//! Prometheus metrics, rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChallengeLabels {
    pub action: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// A standard method or `other` (`http::method_label`): never what the client wrote.
    pub method: &'static str,
    /// The matched route template or `other`: never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// A refusal of an unauthenticated request that names no workspace (issue 13): counted here
/// instead of written to the audit log, where a flood would be one write each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `sign_in` (no such workspace or account) or `enrollment_code` (unknown, spent or expired).
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisLabels {
    /// The adapter operation (`insert`, `swap`, `publish`, …): each call is one round trip.
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub provider: &'static str,
    /// `delivered`, `not_configured`, `no_token`, `invalid_token:<provider code>` or
    /// `failed:<code>`: codes from a short fixed list, so the label stays low-cardinality.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SsoRefusalLabels {
    /// A `domain::sso::Failure` code: a fixed list, so the label stays low-cardinality.
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub challenges: Family<ChallengeLabels, Counter>,
    pub decision_seconds: Histogram,
    pub sse_streams_open: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub pushes: Family<PushLabels, Counter>,
    pub push_seconds: Family<ProviderLabels, Histogram>,
    pub push_tokens_invalidated: Counter,
    pub redis_round_trips: Family<RedisLabels, Counter>,
    pub unattributed_refusals: Family<RefusalLabels, Counter>,
    /// Single sign-on refusals by reason, audited or not (a flood's are counted here only).
    pub sso_refusals: Family<SsoRefusalLabels, Counter>,
    pub http_connections_open: Gauge,
    pub http_connection_cap_waits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("assent");
        let challenges = Family::<ChallengeLabels, Counter>::default();
        registry.register(
            "challenges",
            "Step-up challenges by action and outcome",
            challenges.clone(),
        );
        let decision_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 10));
        registry.register(
            "challenge_decision_seconds",
            "Time from a challenge's creation to the phone's decision",
            decision_seconds.clone(),
        );
        let sse_streams_open = Gauge::default();
        registry.register(
            "sse_streams_open",
            "Browser streams waiting on a challenge",
            sse_streams_open.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 1.5, 26))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "Push notifications by provider and result",
            pushes.clone(),
        );
        let push_seconds = Family::<ProviderLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "push_seconds",
            "Time to deliver one push, retries included",
            push_seconds.clone(),
        );
        let push_tokens_invalidated = Counter::default();
        registry.register(
            "push_tokens_invalidated",
            "Device push tokens the providers refused as dead",
            push_tokens_invalidated.clone(),
        );
        let redis_round_trips = Family::<RedisLabels, Counter>::default();
        registry.register(
            "redis_round_trips",
            "Requests sent to Redis by operation (a command or a script: one round trip each)",
            redis_round_trips.clone(),
        );
        let unattributed_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "unattributed_refusals",
            "Refused unauthenticated requests that name no workspace (counted, not audited)",
            unattributed_refusals.clone(),
        );
        let sso_refusals = Family::<SsoRefusalLabels, Counter>::default();
        // Every reason from the start, at 0: a dashboard sees the series before the first refusal.
        for failure in crate::domain::sso::Failure::ALL {
            let _series = sso_refusals.get_or_create(&SsoRefusalLabels {
                reason: failure.as_str(),
            });
        }
        registry.register(
            "sso_refusals",
            "Single sign-on starts and callbacks refused, by reason",
            sso_refusals.clone(),
        );
        let http_connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "TCP connections being served (at most ASSENT_MAX_CONNECTIONS)",
            http_connections_open.clone(),
        );
        let http_connection_cap_waits = Counter::default();
        registry.register(
            "http_connection_cap_waits",
            "Times every connection slot was taken and accepting waited for one to close",
            http_connection_cap_waits.clone(),
        );
        Self {
            registry,
            challenges,
            decision_seconds,
            sse_streams_open,
            http_requests,
            http_duration,
            pushes,
            push_seconds,
            push_tokens_invalidated,
            redis_round_trips,
            unattributed_refusals,
            sso_refusals,
            http_connections_open,
            http_connection_cap_waits,
        }
    }
}

impl Metrics {
    pub fn challenge(&self, action: crate::domain::challenge::Action, outcome: &'static str) {
        self.challenges
            .get_or_create(&ChallengeLabels {
                action: action.as_str(),
                outcome,
            })
            .inc();
    }

    pub fn refused(&self, what: &'static str) {
        self.unattributed_refusals
            .get_or_create(&RefusalLabels { what })
            .inc();
    }

    pub fn sso_refused(&self, failure: crate::domain::sso::Failure) {
        self.sso_refusals
            .get_or_create(&SsoRefusalLabels {
                reason: failure.as_str(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
