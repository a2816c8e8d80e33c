//! OpenAI-compatible embeddings client (OpenAI, Ollama, vLLM, LM Studio): the compiler embeds
//! chunks with [`Client::embed`], the runtime embeds questions through [`QueryCache`].
//!
//! Blocking HTTP via `ureq`, no async runtime. Every request is `POST {base_url}/embeddings`
//! with `{"model": ..., "input": [...]}`; 429, 5xx, timeouts and connection failures are
//! retried with exponential backoff. Returned vectors are L2-normalised and in input order.
//! The API key never appears in an [`Error`] or in `Debug` output.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use serde::Deserialize;

/// The OpenAI endpoint, used when `OPENAI_BASE_URL` is unset. It requires a key.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Upper bound of any single wait between attempts, `Retry-After` included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Largest response body accepted (a batch of 96 × 3072-dim vectors is ≈ 6 MB of JSON).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// Longest server message kept in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// Where and how to ask for embeddings. Build with [`Config::from_env`] and adjust fields.
#[derive(Clone)]
pub struct Config {
    /// API root, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`; a trailing
    /// slash is tolerated.
    pub base_url: String,
    /// Sent as `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// Model name sent with every request.
    pub model: String,
    /// End-to-end limit for one HTTP attempt (connect, send, read the whole body).
    pub timeout: Duration,
    /// Retries after the first attempt for 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// Texts per request (values below 1 are treated as 1).
    pub batch_size: usize,
    /// Wait before the first retry; doubles each retry, capped at [`MAX_BACKOFF`].
    pub initial_backoff: Duration,
}

impl Config {
    /// Defaults (30 s timeout, 5 retries, batches of 96, 500 ms initial backoff) with the key
    /// from `OPENAI_API_KEY` and the endpoint from `OPENAI_BASE_URL`; `LORE_OPENAI_TIMEOUT_SECS`
    /// and `LORE_OPENAI_RETRIES` override the timeout and retries. Empty values count as unset.
    pub fn from_env(model: &str) -> Config {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        let number = |name| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        Config {
            base_url: var("OPENAI_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            api_key: var("OPENAI_API_KEY"),
            model: model.to_owned(),
            timeout: Duration::from_secs(number("LORE_OPENAI_TIMEOUT_SECS").unwrap_or(30)),
            max_retries: number("LORE_OPENAI_RETRIES").map_or(5, |n| n.min(20) as u32),
            batch_size: 96,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

/// `{base_url}/embeddings`, tolerating surrounding spaces and a trailing slash.
fn endpoint(base_url: &str) -> String {
    format!("{}/embeddings", base_url.trim().trim_end_matches('/'))
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("batch_size", &self.batch_size)
            .field("initial_backoff", &self.initial_backoff)
            .finish()
    }
}

/// Why embedding failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no API key for {DEFAULT_BASE_URL}: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server such as Ollama"
    )]
    MissingKey,
    #[error("embedding server rejected the credentials (HTTP {status}): {message}; check OPENAI_API_KEY")]
    Unauthorized { status: u16, message: String },
    #[error("embedding server still rate-limiting (HTTP 429) after {attempts} attempts")]
    RateLimited { attempts: u32 },
    #[error("embedding server error (HTTP {status}) after {attempts} attempts: {message}")]
    Server { status: u16, message: String, attempts: u32 },
    #[error("embedding request timed out after {after:?}")]
    Timeout { after: Duration },
    #[error("could not talk to the embedding server: {0}")]
    Transport(String),
    #[error("unexpected response from the embedding server: {0}")]
    BadResponse(String),
    #[error("embedding request rejected (HTTP {status}): {message}")]
    Request { status: u16, message: String },
}

/// A blocking embeddings client; cheap to share between threads (`&Client` is enough).
pub struct Client {
    config: Config,
    endpoint: String,
    agent: ureq::Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Outcome of one HTTP attempt: done, or an error plus whether (and after what) to retry.
enum Attempt {
    Done(String),
    Fail { error: Error, retry: bool, retry_after: Option<Duration> },
}

impl Client {
    /// Checks the configuration and builds the HTTP agent. Fails with [`Error::MissingKey`]
    /// when talking to OpenAI without a key; other endpoints may be used without one.
    pub fn new(mut config: Config) -> Result<Client, Error> {
        config.api_key = config.api_key.filter(|key| !key.trim().is_empty());
        let url = endpoint(&config.base_url);
        if config.api_key.is_none() && url == endpoint(DEFAULT_BASE_URL) {
            return Err(Error::MissingKey);
        }
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("lore-embed-openai/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&url) {
            // A local server (Ollama, LM Studio, tests) must not be sent through HTTP_PROXY.
            builder = builder.proxy(None);
        }
        Ok(Client { config, endpoint: url, agent: builder.build().into() })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Embeds `texts` in batches of `batch_size`; one L2-normalised vector per text, in input
    /// order, all of one dimension. No request is made for an empty slice.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let mut out: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.batch_size.max(1)) {
            let body = serde_json::json!({ "model": self.config.model, "input": batch }).to_string();
            let response = self.post_with_retries(&body)?;
            let vectors = parse_response(&response, batch.len())?;
            match (out.first(), vectors.first()) {
                (Some(a), Some(b)) if a.len() != b.len() => {
                    let msg = format!("dimension {} in one batch, {} in another", a.len(), b.len());
                    return Err(Error::BadResponse(msg));
                }
                _ => {}
            }
            out.extend(vectors);
        }
        Ok(out)
    }

    fn post_with_retries(&self, body: &str) -> Result<String, Error> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.attempt(body, attempts) {
                Attempt::Done(text) => return Ok(text),
                Attempt::Fail { error, retry, retry_after } => {
                    if !retry || attempts > self.config.max_retries {
                        return Err(error);
                    }
                    let doubling = 2u32.saturating_pow(attempts - 1);
                    let backoff = self.config.initial_backoff.saturating_mul(doubling);
                    thread::sleep(retry_after.unwrap_or(backoff).min(MAX_BACKOFF));
                }
            }
        }
    }

    fn attempt(&self, body: &str, attempts: u32) -> Attempt {
        let mut request = self.agent.post(&self.endpoint).header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = match request.send(body) {
            Ok(response) => response,
            Err(e) => return self.transport_failure(e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.body_mut().with_config().limit(MAX_RESPONSE_BYTES).read_to_string();
        if (200..300).contains(&status) {
            return match text {
                Ok(text) => Attempt::Done(text),
                Err(e) => self.transport_failure(e),
            };
        }
        let message = self.server_message(&text.unwrap_or_default(), status);
        let (error, retry) = match status {
            401 | 403 => (Error::Unauthorized { status, message }, false),
            429 => (Error::RateLimited { attempts }, true),
            500..=599 => (Error::Server { status, message, attempts }, true),
            _ => (Error::Request { status, message }, false),
        };
        Attempt::Fail { error, retry, retry_after }
    }

    fn transport_failure(&self, e: ureq::Error) -> Attempt {
        use ureq::Error as U;
        let (error, retry) = match e {
            U::Timeout(_) => (Error::Timeout { after: self.config.timeout }, true),
            U::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                (Error::Timeout { after: self.config.timeout }, true)
            }
            U::Io(_) | U::ConnectionFailed | U::HostNotFound | U::Protocol(_) => {
                (Error::Transport(self.redact(&e.to_string())), true)
            }
            other => (Error::Transport(self.redact(&other.to_string())), false),
        };
        Attempt::Fail { error, retry, retry_after: None }
    }

    /// The server's `error.message` (or `error` string, as Ollama sends), else the raw body,
    /// shortened and with the key removed.
    fn server_message(&self, body: &str, status: u16) -> String {
        let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error = json.as_ref().and_then(|j| j.get("error"));
        let from_json = error.and_then(|e| e.get("message").and_then(|m| m.as_str()).or(e.as_str())).map(str::to_owned);
        let message = from_json.unwrap_or_else(|| body.trim().to_owned());
        if message.is_empty() {
            return format!("HTTP {status} with an empty body");
        }
        let mut short: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        if short.len() < message.len() {
            short.push('…');
        }
        self.redact(&short)
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_owned(),
        }
    }
}

/// Whether the URL's host is `localhost` or a loopback IP address.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    /// Position of the input this vector belongs to; servers may reorder items.
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// Parses one batch's response: exactly `expected` items, indices a permutation of
/// `0..expected`, one non-empty dimension, finite values. Returns normalised vectors in order.
fn parse_response(body: &str, expected: usize) -> Result<Vec<Vec<f32>>, Error> {
    let bad = |m: String| Error::BadResponse(m);
    let parsed: EmbeddingResponse =
        serde_json::from_str(body).map_err(|e| bad(format!("not an embeddings response: {e}")))?;
    if parsed.data.len() != expected {
        return Err(bad(format!("{} embeddings for {expected} inputs", parsed.data.len())));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (position, item) in parsed.data.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        let slot = slots.get_mut(index).ok_or_else(|| bad(format!("index {index} out of range")))?;
        if slot.replace(item.embedding).is_some() {
            return Err(bad(format!("index {index} appears twice")));
        }
    }
    let vectors: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
    let dim = vectors.first().map_or(0, Vec::len);
    if dim == 0 && expected > 0 {
        return Err(bad("empty embedding".to_owned()));
    }
    if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
        return Err(bad(format!("mixed dimensions {dim} and {}", v.len())));
    }
    vectors.into_iter().map(normalise).collect()
}

/// Scales `v` to unit length. A zero vector is returned unchanged (its scores are all 0).
fn normalise(mut v: Vec<f32>) -> Result<Vec<f32>, Error> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::BadResponse("non-finite value in an embedding".to_owned()));
    }
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
    }
    Ok(v)
}

/// A [`Client`] with a bounded in-memory cache keyed by the exact text, for the runtime's
/// repeated questions. Eviction is least-recently-used (a linear scan, only when full).
/// Thread-safe: the lock is not held during requests, so two threads missing on the same
/// text at once may both ask the server; both get the same answer.
pub struct QueryCache {
    client: Client,
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    clock: u64,
    entries: HashMap<String, (u64, Vec<f32>)>,
}

impl QueryCache {
    /// Default number of cached texts.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// Wraps `client` with a cache of [`Self::DEFAULT_CAPACITY`] entries.
    pub fn new(client: Client) -> QueryCache {
        QueryCache::with_capacity(client, Self::DEFAULT_CAPACITY)
    }

    /// Wraps `client` with a cache holding at most `capacity` texts (at least 1).
    pub fn with_capacity(client: Client, capacity: usize) -> QueryCache {
        QueryCache { client, capacity: capacity.max(1), state: Mutex::default() }
    }

    /// The wrapped client, e.g. for uncached batch calls.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Number of cached texts.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The normalised embedding of `text`, from the cache or from one request.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, Error> {
        {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            if let Some((used, vector)) = state.entries.get_mut(text) {
                *used = now;
                return Ok(vector.clone());
            }
        }
        let vector =
            self.client.embed(&[text])?.pop().ok_or_else(|| Error::BadResponse("no embedding returned".to_owned()))?;
        let mut state = self.lock();
        if state.entries.len() >= self.capacity && !state.entries.contains_key(text) {
            let oldest = state.entries.iter().min_by_key(|(_, (used, _))| *used);
            if let Some(oldest) = oldest.map(|(k, _)| k.clone()) {
                state.entries.remove(&oldest);
            }
        }
        let now = state.clock;
        state.entries.insert(text.to_owned(), (now, vector.clone()));
        Ok(vector)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding the lock cannot leave the map inconsistent; keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for url in
            ["http://localhost:11434/v1/embeddings", "http://127.0.0.1:8000/x", "http://[::1]:1/", "http://u@LOCALHOST"]
        {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["https://api.openai.com/v1/embeddings", "http://localhost.example.com/", "http://10.0.0.1/"] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn response_checks() {
        let ok = parse_response(r#"{"data":[{"index":1,"embedding":[0,2]},{"index":0,"embedding":[3,4]}]}"#, 2);
        assert_eq!(ok.expect("valid"), [vec![0.6, 0.8], vec![0.0, 1.0]]);
        let no_index = parse_response(r#"{"data":[{"embedding":[1,0]},{"embedding":[0,0]}]}"#, 2);
        assert_eq!(no_index.expect("valid"), [vec![1.0, 0.0], vec![0.0, 0.0]]);
        for bad in [
            r#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}]}"#,
            r#"{"data":[{"index":0,"embedding":[1]},{"index":2,"embedding":[1]}]}"#,
            r#"{"data":[{"index":0,"embedding":[1]},{"index":1,"embedding":[1,2]}]}"#,
            r#"{"data":[{"index":0,"embedding":[]},{"index":1,"embedding":[]}]}"#,
            r#"{"data":[{"index":0,"embedding":[1]}]}"#,
            r#"<html>bad gateway</html>"#,
        ] {
            assert!(matches!(parse_response(bad, 2), Err(Error::BadResponse(_))), "{bad}");
        }
    }

    #[test]
    fn defaults_and_redacted_debug() {
        let mut config = Config::from_env("m");
        assert_eq!((config.timeout, config.max_retries, config.batch_size), (Duration::from_secs(30), 5, 96));
        assert_eq!(config.initial_backoff, Duration::from_millis(500));
        config.api_key = Some("sk-hidden".to_owned());
        assert!(!format!("{config:?}").contains("sk-hidden"));
        assert_eq!(endpoint("http://h/v1/"), endpoint("http://h/v1"));
    }
}
