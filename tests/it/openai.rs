//! The OpenAI-compatible embedder end to end, against a fake server on loopback that this
//! test starts: lorec embeds chunks through it, the embedding cache spares repeat requests,
//! and lore embeds questions through the same provider.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;

const DIMS: usize = 64;

/// A deterministic "embedding": hashed bag of lowercase words, so texts sharing words are close.
fn fake_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        v[(h % DIMS as u64) as usize] += 1.0;
    }
    v
}

struct FakeOpenAi {
    base_url: String,
    texts: Arc<AtomicUsize>,
}

impl FakeOpenAi {
    fn start() -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let texts = Arc::new(AtomicUsize::new(0));
        let counter = texts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut len = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).expect("body");
                    let req: serde_json::Value = serde_json::from_slice(&body).expect("json body");
                    let inputs: Vec<String> = req["input"]
                        .as_array()
                        .expect("input")
                        .iter()
                        .map(|t| t.as_str().unwrap_or("").to_string())
                        .collect();
                    counter.fetch_add(inputs.len(), Ordering::SeqCst);
                    let data: Vec<_> = inputs
                        .iter()
                        .enumerate()
                        .map(|(i, t)| serde_json::json!({"index": i, "embedding": fake_embedding(t)}))
                        .collect();
                    let reply = serde_json::json!({"object": "list", "data": data, "model": req["model"]}).to_string();
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                });
            }
        });
        FakeOpenAi { base_url, texts }
    }
}

#[test]
fn openai_compatible_embedder_builds_caches_and_answers() {
    let fake = FakeOpenAi::start();
    let tmp = TempDir::new("openai");
    tmp.write("kb/jobs.yaml", "jobs:\n  - title: Lighthouse keeper\n    duties: kept the lamp burning through winter storms\n  - title: Harbour baker\n    duties: baked rye bread for the fishing fleet at dawn\n");
    let out = tmp.path().join("kb.lore");
    let cache = tmp.path().join("cache");
    let build = || {
        run(lorec()
            .arg("build")
            .arg(tmp.path().join("kb"))
            .arg("-o")
            .arg(&out)
            .args(["--embedder", "openai:fake-embed-1"])
            .arg("--cache-dir")
            .arg(&cache)
            .env("OPENAI_BASE_URL", &fake.base_url)
            .env("LORE_KEY", TEST_KEY))
    };
    let first = build();
    assert_eq!(first.code, 0, "{}", first.stderr);
    let after_first = fake.texts.load(Ordering::SeqCst);
    assert!(after_first > 2, "chunks and background questions go through the provider");
    let info: serde_json::Value =
        serde_json::from_str(&run(lorec().arg("inspect").arg(&out).arg("--json")).stdout).expect("json");
    assert_eq!(info["embedder"]["id"], "fake-embed-1");
    assert_eq!(info["embedder"]["dims"], DIMS);

    // A rebuild only sends the dimension probe: every text comes from the cache.
    let second = build();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(fake.texts.load(Ordering::SeqCst), after_first + 1);

    // The runtime embeds questions through the same provider.
    // The same question twice costs one request: the runtime caches question vectors.
    let before = fake.texts.load(Ordering::SeqCst);
    let mut child = lore()
        .arg("serve")
        .arg(&out)
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("LORE_KEY", TEST_KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let line =
        serde_json::json!({"q": "who baked rye bread for the fleet?", "k": 2, "include_off_topic": true}).to_string();
    child.stdin.take().expect("stdin").write_all(format!("{line}\n{line}\n").as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["hits"][0]["id"], "jobs.yaml#/jobs/1", "{}", answers[0]);
    assert_eq!(answers[1]["hits"][0]["id"], "jobs.yaml#/jobs/1");
    assert_eq!(fake.texts.load(Ordering::SeqCst), before + 1);
}

#[test]
fn openai_embedder_without_a_reachable_server_fails_clearly() {
    let tmp = TempDir::new("openai-down");
    tmp.write("kb/a.yaml", "a: b\n");
    // Bind and drop a listener to get a loopback port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let r = run(lorec()
        .arg("build")
        .arg(tmp.path().join("kb"))
        .arg("-o")
        .arg(tmp.path().join("x.lore"))
        .args(["--embedder", "openai:m"])
        .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .env("LORE_OPENAI_RETRIES", "1")
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot load the embedder"), "{}", r.stderr);
    assert!(!tmp.path().join("x.lore").exists());
    let r = run(lorec()
        .arg("build")
        .arg(tmp.path().join("kb"))
        .arg("-o")
        .arg(tmp.path().join("x.lore"))
        .args(["--embedder", "openai:m"])
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("OPENAI_API_KEY"), "{}", r.stderr);
}

#[test]
fn http_answers_503_when_the_embedding_provider_is_down() {
    let fake = FakeOpenAi::start();
    let tmp = TempDir::new("openai-503");
    tmp.write("kb/a.yaml", "notes:\n  - title: Tide tables\n    text: High water at noon\n");
    let out = tmp.path().join("kb.lore");
    let r = run(lorec()
        .arg("build")
        .arg(tmp.path().join("kb"))
        .arg("-o")
        .arg(&out)
        .args(["--embedder", "openai:fake-embed-1", "--no-cache"])
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Serve it against a provider address where nothing listens.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = lore()
        .arg("serve")
        .arg(&out)
        .args(["--http", "127.0.0.1:0"])
        .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .env("LORE_OPENAI_RETRIES", "0")
        .env("LORE_KEY", TEST_KEY)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("stderr") > 0, "lore exited before listening");
        if let Some(rest) = line.trim().strip_prefix("lore: listening on http://") {
            break rest.to_string();
        }
    };
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    write!(s, "GET /v1/query?q=tides HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("embedder_unavailable"), "{reply}");
}
