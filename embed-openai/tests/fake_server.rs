//! Tests of the embeddings client against a fake OpenAI-compatible server on 127.0.0.1,
//! built from std only; its vectors are deterministic functions of the input text.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use embed_openai::{Client, Config, DEFAULT_BASE_URL, Error, QueryCache};
use serde_json::{Value, json};

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn inputs(&self) -> Vec<String> {
        let input = self.body["input"].as_array().expect("input is an array");
        input.iter().map(|v| v.as_str().expect("input is text").to_owned()).collect()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: vec![], body: body.to_string(), delay: Duration::ZERO }
    }
}

/// Decides the reply to the n-th request (0-based).
type Handler = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

struct FakeServer {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl FakeServer {
    fn start(handler: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen, handler) = (Arc::clone(&seen2), Arc::clone(&handler));
                thread::spawn(move || serve(stream, &seen, &*handler));
            }
        });
        FakeServer { base_url: format!("http://{addr}/v1/"), seen, stop, addr }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads one HTTP/1.1 request (request line, headers, Content-Length body), logs it, replies.
fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return; // the shutdown wake-up, or a client that gave up
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header has a colon");
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse::<usize>().expect("numeric content-length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let request = Seen { request_line: request_line.trim_end().to_owned(), headers, body };
    let n = {
        let mut log = seen.lock().expect("log");
        log.push(request.clone());
        log.len() - 1
    };
    let reply = handler(n, &request);
    thread::sleep(reply.delay);
    let mut out = format!("HTTP/1.1 {} Fake\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Content-Type: application/json\r\nConnection: close\r\n");
    out.push_str(&format!("Content-Length: {}\r\n\r\n{}", reply.body.len(), reply.body));
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes()); // the client may have timed out already
}

/// The fake model: a hashed, weighted bag of characters in 8 dimensions (not normalised).
fn fake_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    for c in text.chars() {
        let h = (c as u32).wrapping_mul(2_654_435_761);
        v[(h >> 29) as usize] += 1.0 + (c as u32 % 3) as f32;
    }
    v
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// A 200 reply embedding every input, with items listed in reversed `index` order.
fn embeddings_reply(request: &Seen) -> Reply {
    let mut data: Vec<Value> = request
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": fake_embedding(t)}))
        .collect();
    data.reverse();
    Reply::json(200, json!({"object": "list", "data": data, "model": request.body["model"]}))
}

fn config(server: &FakeServer) -> Config {
    Config {
        base_url: server.base_url.clone(),
        api_key: Some("test-key".to_owned()),
        model: "fake-embed".to_owned(),
        timeout: Duration::from_secs(5),
        max_retries: 3,
        batch_size: 96,
        initial_backoff: Duration::from_millis(10),
    }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} != {want:?}");
    }
}

#[test]
fn batches_and_restores_input_order() {
    let server = FakeServer::start(|_, r| embeddings_reply(r));
    let client = Client::new(Config { batch_size: 4, ..config(&server) }).expect("client");
    let texts: Vec<String> = (0..10).map(|i| format!("text number {i}: {}", "xyz".repeat(i))).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let vectors = client.embed(&refs).expect("embed");

    assert_eq!(vectors.len(), 10);
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_close(vector, &unit(fake_embedding(text)));
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    let requests = server.requests();
    assert_eq!(requests.iter().map(|r| r.inputs().len()).collect::<Vec<_>>(), [4, 4, 2]);
    let sent: Vec<String> = requests.iter().flat_map(Seen::inputs).collect();
    assert_eq!(sent, texts);
    for r in &requests {
        assert_eq!(r.request_line, "POST /v1/embeddings HTTP/1.1");
        assert_eq!(r.body["model"], "fake-embed");
        assert_eq!(r.header("authorization"), Some("Bearer test-key"));
    }
    assert!(client.embed(&[]).expect("empty").is_empty());
    assert_eq!(server.requests().len(), 3, "empty input makes no request");
}

#[test]
fn retries_after_429_honouring_retry_after() {
    let server = FakeServer::start(|n, r| match n {
        0 => Reply {
            headers: vec![("Retry-After", "0".to_owned())],
            ..Reply::json(429, json!({"error": {"message": "slow down"}}))
        },
        _ => embeddings_reply(r),
    });
    // A 5 s backoff would show if Retry-After: 0 were ignored.
    let client = Client::new(Config { initial_backoff: Duration::from_secs(5), ..config(&server) }).expect("client");
    let start = Instant::now();
    let vectors = client.embed(&["hello"]).expect("embed after a 429");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    assert_close(&vectors[0], &unit(fake_embedding("hello")));
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn unauthorized_mentions_the_variable_but_never_the_key() {
    let key = "sk-very-secret-123";
    let server = FakeServer::start(move |_, _| {
        let message = format!("Incorrect API key provided: {key}.");
        Reply::json(401, json!({"error": {"message": message, "type": "invalid_request_error"}}))
    });
    let client = Client::new(Config { api_key: Some(key.to_owned()), ..config(&server) }).expect("client");
    let err = client.embed(&["hello"]).expect_err("401");
    assert!(matches!(err, Error::Unauthorized { status: 401, .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    assert!(shown.contains("Incorrect API key provided"), "{shown}");
    assert!(!shown.contains(key) && !format!("{err:?}").contains(key), "{shown}");
    assert!(!format!("{:?}", client.config()).contains(key));
    assert_eq!(server.requests().len(), 1, "401 is not retried");
}

#[test]
fn slow_server_times_out() {
    let server = FakeServer::start(|_, r| Reply { delay: Duration::from_secs(3), ..embeddings_reply(r) });
    let client =
        Client::new(Config { timeout: Duration::from_millis(300), max_retries: 1, ..config(&server) }).expect("client");
    let start = Instant::now();
    let err = client.embed(&["hello"]).expect_err("timeout");
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Timeout { after } if after == Duration::from_millis(300)), "{err:?}");
    assert!(elapsed < Duration::from_millis(2000), "took {elapsed:?}");
    assert_eq!(server.requests().len(), 2, "a timeout is retried once");
}

#[test]
fn server_errors_exhaust_retries() {
    let server = FakeServer::start(|_, _| Reply::json(500, json!({"error": {"message": "boom"}})));
    let client = Client::new(Config { max_retries: 2, ..config(&server) }).expect("client");
    let err = client.embed(&["hello"]).expect_err("500");
    match &err {
        Error::Server { status: 500, message, attempts: 3 } => assert_eq!(message, "boom"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let server = FakeServer::start(|_, _| Reply::json(400, json!({"error": "model not found"})));
    let err = Client::new(config(&server)).expect("client").embed(&["x"]).expect_err("400");
    assert!(matches!(&err, Error::Request { status: 400, message } if message == "model not found"), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn wrong_count_is_a_bad_response() {
    let server = FakeServer::start(|_, _| Reply::json(200, json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}]})));
    let err = Client::new(config(&server)).expect("client").embed(&["a", "b"]).expect_err("count");
    assert!(matches!(err, Error::BadResponse(_)), "{err:?}");
}

#[test]
fn default_base_url_without_key_is_refused_offline() {
    for base_url in [DEFAULT_BASE_URL.to_owned(), format!("{DEFAULT_BASE_URL}/")] {
        let config = Config { base_url, api_key: None, ..Config::from_env("text-embedding-3-small") };
        let err = Client::new(config).expect_err("missing key");
        assert!(matches!(err, Error::MissingKey), "{err:?}");
        assert!(err.to_string().contains("OPENAI_API_KEY") && err.to_string().contains("OPENAI_BASE_URL"));
    }
}

#[test]
fn cache_answers_repeated_questions_without_requests() {
    let server = FakeServer::start(|_, r| embeddings_reply(r));
    // A local server needs no key, and then no Authorization header is sent.
    let client = Client::new(Config { api_key: None, ..config(&server) }).expect("client");
    let cache = Arc::new(QueryCache::with_capacity(client, 2));

    let first = cache.embed_one("how do I reset my password?").expect("first");
    let again = cache.embed_one("how do I reset my password?").expect("again");
    assert_eq!(first, again);
    assert_close(&first, &unit(fake_embedding("how do I reset my password?")));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].header("authorization"), None);

    // Least-recently-used eviction at capacity 2; shared across threads.
    let c = Arc::clone(&cache);
    thread::spawn(move || c.embed_one("b").expect("b")).join().expect("thread");
    cache.embed_one("how do I reset my password?").expect("hit");
    cache.embed_one("c").expect("c evicts b");
    assert_eq!(server.requests().len(), 3);
    cache.embed_one("how do I reset my password?").expect("still cached");
    assert_eq!(server.requests().len(), 3);
    cache.embed_one("b").expect("b again");
    assert_eq!(server.requests().len(), 4);
    assert_eq!(cache.len(), 2);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = Config {
        base_url: format!("http://{closed}/v1"),
        api_key: None,
        model: "fake-embed".to_owned(),
        timeout: Duration::from_secs(2),
        max_retries: 2,
        batch_size: 8,
        initial_backoff: Duration::from_millis(50),
    };
    let start = Instant::now();
    let err = Client::new(config).expect("client").embed(&["x"]).expect_err("refused");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    // Two retries waited 50 ms + 100 ms.
    assert!(start.elapsed() >= Duration::from_millis(150), "took {:?}", start.elapsed());
}
