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
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub provider: &'static str,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub challenges: Family<ChallengeLabels, Counter>,
    pub decision_seconds: Histogram,
    pub sse_streams_open: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub pushes: Family<PushLabels, Counter>,
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
        Self {
            registry,
            challenges,
            decision_seconds,
            sse_streams_open,
            http_requests,
            http_duration,
            pushes,
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
