//! Prometheus metrics (`prometheus-client`): requests, latency, on-topic rate, swaps, and what
//! is loaded. Label values are only names from the configuration and artifact headers, never
//! anything a client sends, so a client cannot grow the label sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kb: String,
    pub variant: String,
    pub version: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub kb: String,
    pub variant: String,
    pub version: String,
    /// `on` or `off`.
    pub topic: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabels {
    pub kb: String,
    pub variant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwapLabels {
    pub kb: String,
    pub variant: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub kb: String,
    pub variant: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub kb: String,
    pub variant: String,
    pub version: String,
    pub build_id: String,
    pub digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChatLabels {
    pub kb: String,
    pub variant: String,
    /// `llm`, `extractive`, `degraded` (the LLM failed) or `refusal` (off topic).
    pub origin: &'static str,
}

/// Every metric of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub answers: Family<AnswerLabels, Counter>,
    pub latency: Family<VariantLabels, Histogram, fn() -> Histogram>,
    pub swaps: Family<SwapLabels, Counter>,
    pub swaps_rejected: Family<RejectLabels, Counter>,
    pub rollbacks: Family<VariantLabels, Counter>,
    pub artifact_info: Family<InfoLabels, Gauge>,
    pub weights: Family<VariantLabels, Gauge>,
    pub chat_answers: Family<ChatLabels, Counter>,
    pub chat_answer_chars: Family<ChatLabels, Counter>,
    pub chat_latency: Family<VariantLabels, Histogram, fn() -> Histogram>,
    pub chat_cache: Family<CacheLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub kb: String,
    pub variant: String,
    /// `hit` or `miss`.
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 25 µs to ~1.6 s: a table-embedded query takes tens of microseconds, a remote one seconds.
    Histogram::new(exponential_buckets(25e-6, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let answers = Family::<AnswerLabels, Counter>::default();
        let latency = Family::<VariantLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let swaps = Family::<SwapLabels, Counter>::default();
        let swaps_rejected = Family::<RejectLabels, Counter>::default();
        let rollbacks = Family::<VariantLabels, Counter>::default();
        let artifact_info = Family::<InfoLabels, Gauge>::default();
        let weights = Family::<VariantLabels, Gauge>::default();
        let chat_answers = Family::<ChatLabels, Counter>::default();
        let chat_answer_chars = Family::<ChatLabels, Counter>::default();
        let chat_latency =
            Family::<VariantLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "lore_chat_answers",
            "Chat answers by knowledge base, variant and origin (llm, extractive, degraded, refusal)",
            chat_answers.clone(),
        );
        registry.register(
            "lore_chat_answer_chars",
            "Characters of chat answers, by knowledge base, variant and origin (divide by lore_chat_answers for the mean length)",
            chat_answer_chars.clone(),
        );
        let chat_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "lore_chat_cache",
            "Chat response cache look-ups by result (hit or miss); the hit rate is hits over all",
            chat_cache.clone(),
        );
        registry.register(
            "lore_chat_duration_seconds",
            "Time to answer a chat message, the LLM included",
            chat_latency.clone(),
        );
        registry.register(
            "lore_requests",
            "Queries by knowledge base, variant, artifact version and outcome (ok or an error code)",
            requests.clone(),
        );
        registry.register(
            "lore_answers",
            "Answers by knowledge base, variant, artifact version and whether the question was on topic",
            answers.clone(),
        );
        registry.register(
            "lore_request_duration_seconds",
            "Time to answer a query, from choosing the engine to the answer",
            latency.clone(),
        );
        registry.register("lore_swaps", "Artifacts swapped in, by trigger", swaps.clone());
        registry.register(
            "lore_swaps_rejected",
            "Artifacts offered for a swap and refused (the old one kept serving), by reason",
            swaps_rejected.clone(),
        );
        registry.register("lore_rollbacks", "Rollbacks to the previous artifact", rollbacks.clone());
        registry.register(
            "lore_artifact_info",
            "The artifact each variant serves (value 1): version, build id and header digest",
            artifact_info.clone(),
        );
        registry.register("lore_variant_weight", "Each variant's share of assignments, in percent", weights.clone());
        Metrics {
            registry,
            requests,
            answers,
            latency,
            swaps,
            swaps_rejected,
            rollbacks,
            artifact_info,
            weights,
            chat_answers,
            chat_answer_chars,
            chat_latency,
            chat_cache,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count one chat answer: refusal rates, answer lengths and latencies per variant, for A/B tests.
    pub fn chat_answered(
        &self,
        kb: &str,
        variant: &str,
        origin: &'static str,
        cached: bool,
        chars: usize,
        seconds: f64,
    ) {
        let result = if cached { "hit" } else { "miss" };
        self.chat_cache.get_or_create(&CacheLabels { kb: kb.to_string(), variant: variant.to_string(), result }).inc();
        let labels = ChatLabels { kb: kb.to_string(), variant: variant.to_string(), origin };
        self.chat_answers.get_or_create(&labels).inc();
        self.chat_answer_chars.get_or_create(&labels).inc_by(chars as u64);
        self.chat_latency
            .get_or_create(&VariantLabels { kb: kb.to_string(), variant: variant.to_string() })
            .observe(seconds);
    }

    /// Count a refused request that never reached a variant.
    pub fn refused(&self, kb: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                kb: kb.to_string(),
                variant: String::new(),
                version: String::new(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// The counters of one loaded artifact, taken once at load so a request only touches atomics.
#[derive(Debug, Clone)]
pub struct LoadedMetrics {
    pub ok: Counter,
    pub on_topic: Counter,
    pub off_topic: Counter,
    pub latency: Histogram,
    labels: RequestLabels,
}

impl LoadedMetrics {
    pub fn new(metrics: &Metrics, kb: &str, variant: &str, version: &str) -> LoadedMetrics {
        let labels = RequestLabels {
            kb: kb.to_string(),
            variant: variant.to_string(),
            version: version.to_string(),
            outcome: "ok".to_string(),
        };
        let answer = |topic| AnswerLabels {
            kb: kb.to_string(),
            variant: variant.to_string(),
            version: version.to_string(),
            topic,
        };
        // One statement each: `get_or_create` returns a read guard that lives to the end of
        // its statement, and a second `get_or_create` on the same family may need the write
        // lock.
        let ok = metrics.requests.get_or_create(&labels).clone();
        let on_topic = metrics.answers.get_or_create(&answer("on")).clone();
        let off_topic = metrics.answers.get_or_create(&answer("off")).clone();
        let latency =
            metrics.latency.get_or_create(&VariantLabels { kb: kb.to_string(), variant: variant.to_string() }).clone();
        LoadedMetrics { ok, on_topic, off_topic, latency, labels }
    }

    /// Count a request this artifact failed with `code`.
    pub fn failed(&self, metrics: &Metrics, code: &str) {
        metrics.requests.get_or_create(&RequestLabels { outcome: code.to_string(), ..self.labels.clone() }).inc();
    }
}
