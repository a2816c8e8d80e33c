//! One call to an OpenAI-compatible chat API (OpenAI, Ollama, vLLM, llama.cpp's server), streamed
//! token by token: blocking `ureq`, no async runtime, a deadline for the whole message, retries
//! of 429 and 5xx before the first token, and the key kept out of every error.

use std::io::{BufRead as _, BufReader, Read};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Longest line of the event stream, and most bytes read from one response.
const MAX_LINE_BYTES: usize = 1024 * 1024;
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Where and how to call the model.
#[derive(Clone)]
pub struct LlmConfig {
    /// `OPENAI_BASE_URL`, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// `OPENAI_API_KEY`; never logged.
    pub api_key: Option<String>,
    /// `LORE_LLM_MODEL`.
    pub model: String,
    /// The whole call, retries included, must finish within this.
    pub deadline: Duration,
    pub max_retries: u32,
    pub temperature: f32,
    pub max_tokens: u32,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model API kept answering {status} after {attempts} attempts: {message}")]
    Unavailable { status: u16, attempts: u32, message: String },
    #[error("the model API refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the model API sent a malformed response: {0}")]
    Malformed(String),
    #[error("cannot reach the model API: {0}")]
    Transport(String),
    #[error("the client went away")]
    Cancelled,
}

impl LlmError {
    /// A short machine-readable reason, for answers marked as degraded and for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "llm_timeout",
            LlmError::Unavailable { .. } => "llm_unavailable",
            LlmError::Refused { .. } => "llm_refused",
            LlmError::Malformed(_) => "llm_malformed",
            LlmError::Transport(_) => "llm_unreachable",
            LlmError::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// What the model said, with the token counts the server reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

#[derive(Debug)]
pub struct Llm {
    config: LlmConfig,
    endpoint: String,
}

enum Attempt {
    Done(Completion),
    Retry { error: LlmError, after: Option<Duration> },
    Fail(LlmError),
}

impl Llm {
    pub fn new(config: LlmConfig) -> Llm {
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Llm { config, endpoint }
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_owned(),
        }
    }

    /// Ask the model; each piece of text is passed to `on_token` as it arrives, and a `false`
    /// from it stops reading (the connection is dropped, so the server stops generating).
    /// Retries happen only before the first token reached `on_token`.
    pub fn complete(
        &self,
        messages: &[Message],
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let deadline = self.config.deadline;
        let body = serde_json::json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        })
        .to_string();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(LlmError::Timeout(deadline));
            }
            match self.attempt(&body, left, attempts, on_token) {
                Attempt::Done(c) => return Ok(c),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { error, after } => {
                    if attempts > self.config.max_retries {
                        return Err(error);
                    }
                    // A server's Retry-After is honoured only within the deadline.
                    let backoff =
                        after.unwrap_or(FIRST_BACKOFF.saturating_mul(1 << (attempts - 1).min(8))).min(deadline);
                    if started.elapsed().saturating_add(backoff) >= deadline {
                        return Err(match error {
                            LlmError::Timeout(_) => LlmError::Timeout(deadline),
                            e => e,
                        });
                    }
                    std::thread::sleep(backoff);
                }
            }
        }
    }

    fn attempt(&self, body: &str, left: Duration, attempts: u32, on_token: &mut dyn FnMut(&str) -> bool) -> Attempt {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(left))
            .http_status_as_error(false)
            .user_agent(concat!("lore/", env!("CARGO_PKG_VERSION")));
        if format::text::is_loopback_url(&self.endpoint) {
            config = config.proxy(None);
        }
        let agent: ureq::Agent = config.build().into();
        let mut request = agent.post(&self.endpoint).header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = match request.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Attempt::Retry { error: LlmError::Timeout(left), after: None },
            Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Attempt::Retry { error: LlmError::Timeout(left), after: None };
            }
            Err(e) => return Attempt::Retry { error: LlmError::Transport(self.redact(&e.to_string())), after: None },
        };
        let status = response.status().as_u16();
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut reader = response.into_body().into_reader().take(MAX_RESPONSE_BYTES as u64);
        if !(200..300).contains(&status) {
            let mut text = String::new();
            let _ = (&mut reader).take(64 * 1024).read_to_string(&mut text);
            let message = self.redact(&error_message(&text, status));
            return match status {
                429 | 500..=599 => Attempt::Retry { error: LlmError::Unavailable { status, attempts, message }, after },
                _ => Attempt::Fail(LlmError::Refused { status, message }),
            };
        }
        match read_stream(BufReader::new(reader), on_token) {
            Ok(c) => Attempt::Done(c),
            Err(StreamError::Io(e)) if is_timeout(&e) => Attempt::Fail(LlmError::Timeout(self.config.deadline)),
            Err(StreamError::Io(e)) => Attempt::Fail(LlmError::Transport(self.redact(&e.to_string()))),
            Err(StreamError::Malformed(m)) => Attempt::Fail(LlmError::Malformed(self.redact(&m))),
            Err(StreamError::Cancelled) => Attempt::Fail(LlmError::Cancelled),
        }
    }
}

/// A read that ran past the deadline: ureq's body reader reports its own `Timeout` inside an
/// `io::Error` of kind `Other`.
fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()).is_some_and(|u| {
            matches!(u, ureq::Error::Timeout(_))
                || matches!(u, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
        })
}

fn error_message(body: &str, status: u16) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = json.as_ref().and_then(|j| j.get("error"));
    let message = error
        .and_then(|e| e.get("message").and_then(|m| m.as_str()).or(e.as_str()))
        .map_or_else(|| body.trim().to_string(), str::to_string);
    if message.is_empty() {
        return format!("HTTP {status} with an empty body");
    }
    message.chars().take(300).collect()
}

enum StreamError {
    Io(std::io::Error),
    Malformed(String),
    Cancelled,
}

/// Read a `text/event-stream` of `chat.completion.chunk`s, or, from servers that ignore
/// `stream`, one `chat.completion` object.
fn read_stream(
    mut reader: impl std::io::BufRead,
    on_token: &mut dyn FnMut(&str) -> bool,
) -> Result<Completion, StreamError> {
    let mut completion = Completion::default();
    let mut line = Vec::new();
    let mut saw_event = false;
    let mut whole = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line).map_err(StreamError::Io)?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(StreamError::Malformed("a line longer than 1 MiB".into()));
        }
        let text = std::str::from_utf8(&line).map_err(|_| StreamError::Malformed("invalid UTF-8".into()))?;
        let text = text.trim_end_matches(['\r', '\n']);
        let Some(data) = text.strip_prefix("data:") else {
            if !saw_event {
                whole.extend_from_slice(&line);
            }
            continue;
        };
        saw_event = true;
        let data = data.trim_start();
        if data == "[DONE]" {
            return Ok(completion);
        }
        let chunk: serde_json::Value =
            serde_json::from_str(data).map_err(|e| StreamError::Malformed(format!("an event is not JSON ({e})")))?;
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            completion.prompt_tokens = usage.get("prompt_tokens").and_then(serde_json::Value::as_u64);
            completion.completion_tokens = usage.get("completion_tokens").and_then(serde_json::Value::as_u64);
        }
        let choices = chunk.get("choices").and_then(serde_json::Value::as_array);
        let Some(choices) = choices else {
            if chunk.get("usage").is_some() {
                continue;
            }
            return Err(StreamError::Malformed("an event without `choices`".into()));
        };
        if let Some(piece) =
            choices.first().and_then(|c| c.pointer("/delta/content")).and_then(serde_json::Value::as_str)
            && !piece.is_empty()
        {
            completion.text.push_str(piece);
            if !on_token(piece) {
                return Err(StreamError::Cancelled);
            }
        }
    }
    if saw_event {
        // The stream ended without `[DONE]`: keep what came only if something did.
        return if completion.text.is_empty() {
            Err(StreamError::Malformed("the event stream ended before any text".into()))
        } else {
            Ok(completion)
        };
    }
    let json: serde_json::Value = serde_json::from_slice(&whole)
        .map_err(|e| StreamError::Malformed(format!("neither an event stream nor JSON ({e})")))?;
    let text = json
        .pointer("/choices/0/message/content")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| StreamError::Malformed("no `choices[0].message.content`".into()))?;
    completion.text = text.to_string();
    completion.prompt_tokens = json.pointer("/usage/prompt_tokens").and_then(serde_json::Value::as_u64);
    completion.completion_tokens = json.pointer("/usage/completion_tokens").and_then(serde_json::Value::as_u64);
    if !text.is_empty() && !on_token(text) {
        return Err(StreamError::Cancelled);
    }
    Ok(completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<(Completion, Vec<String>), String> {
        let mut pieces = Vec::new();
        let r = read_stream(body.as_bytes(), &mut |p| {
            pieces.push(p.to_string());
            true
        });
        match r {
            Ok(c) => Ok((c, pieces)),
            Err(StreamError::Malformed(m)) => Err(m),
            Err(_) => Err("other".into()),
        }
    }

    #[test]
    fn an_event_stream_is_read_piece_by_piece() {
        let body = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"lo [1]\"}}]}\n\n\
                    data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n\
                    data: [DONE]\n\n";
        let (c, pieces) = read(body).expect("read");
        assert_eq!(c.text, "Hello [1]");
        assert_eq!(pieces, ["Hel", "lo [1]"]);
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(12), Some(3)));
    }

    #[test]
    fn a_plain_json_completion_is_accepted() {
        let (c, _) = read("{\"choices\":[{\"message\":{\"content\":\"Hi\"}}]}").expect("read");
        assert_eq!(c.text, "Hi");
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(read("data: {not json}\n\n").is_err());
        assert!(read("<html>oops</html>").is_err());
        assert!(read("data: {\"nothing\": 1}\n\n").is_err());
    }
}
