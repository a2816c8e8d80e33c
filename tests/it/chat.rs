//! Chat end to end: `lore serve` answering `/v1/chat` and the OpenAI-compatible endpoints,
//! extractively and through a fake OpenAI-compatible LLM on loopback that this test starts
//! (streams, 429, 500, timeouts, malformed replies, a client that goes away), with conversation
//! memory in a real SQLite file that must hold no plaintext and survive restarts and `kill -9`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const MEMORY_KEY: &str = "bWVtb3J5LWtleS1mb3ItbG9yZS10ZXN0cy1vbmx5LTA=";
const OTHER_MEMORY_KEY: &str = "b3RoZXItbWVtb3J5LWtleS1mb3ItbG9yZS10ZXN0czA=";
const SECRET: &str = "sk-test-DO-NOT-LOG-1f2e3d4c";

/// The example persona (data/), built once per test.
fn data_artifact(tmp: &TempDir) -> PathBuf {
    let out = tmp.path().join("data.lore");
    build(&workspace().join("data"), &out, &[]);
    out
}

/// `lore serve --http` with its stderr kept, for tests that read the log.
struct ChatServer {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl ChatServer {
    fn start(art: &Path, env: &[(&str, &str)], args: &[&str]) -> ChatServer {
        let mut cmd = lore();
        cmd.arg("serve").arg(art).args(["--http", "127.0.0.1:0", "--grace-secs", "5"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        ChatServer::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> ChatServer {
        cmd.env("LORE_KEY", TEST_KEY).env("LORE_LOG", "info");
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let log = Arc::new(Mutex::new(String::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(Instant::now() < deadline, "server did not start");
            if stderr.read_line(&mut line).expect("stderr") == 0 {
                panic!("server exited before listening: {}", log.lock().expect("log"));
            }
            log.lock().expect("log").push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("lore: listening on http://") {
                break rest.to_string();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().expect("log").push_str(&line);
                line.clear();
            }
        });
        ChatServer { child, addr, log }
    }

    /// `lore serve --config FILE --http`.
    fn start_config(config: &Path) -> ChatServer {
        let mut cmd = lore();
        cmd.arg("serve").arg("--config").arg(config).args(["--http", "127.0.0.1:0", "--grace-secs", "5"]);
        ChatServer::spawn(cmd)
    }

    /// One request over a fresh connection: (status, body with any chunked encoding removed).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("write");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        (status, if chunked { dechunk(body) } else { body.to_string() })
    }

    fn chat(&self, body: Value) -> Value {
        let (status, text) = self.request("POST", "/v1/chat", Some(&body));
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn stop(mut self) -> i32 {
        // SIGTERM, then wait for the drain.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let status = self.child.wait().expect("wait");
        status.code().unwrap_or(-1)
    }
}

use std::process::Command;

impl Drop for ChatServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// The `data:` payloads of a server-sent event stream, with their event names.
fn events(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut name = String::from("message");
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
        }
        if !data.is_empty() {
            out.push((name, data.join("\n")));
        }
    }
    out
}

/// How the fake LLM answers one request.
#[derive(Clone)]
enum Script {
    /// Stream these pieces as `chat.completion.chunk`s, `delay` apart.
    Stream { pieces: Vec<String>, delay: Duration },
    /// Answer this status with this body.
    Status(u16, String),
    /// Say nothing for this long.
    Hang(Duration),
    /// A 200 whose body is not JSON.
    Garbage,
    /// Wait this long, then answer 429 with this `Retry-After`.
    RetryAfter(Duration, String),
}

/// A fake OpenAI-compatible chat server: each request takes the next script (the last one
/// repeats) and is recorded; `disconnected` counts streams whose client went away.
struct FakeLlm {
    base_url: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    disconnected: Arc<AtomicUsize>,
}

impl FakeLlm {
    fn start(scripts: Vec<Script>) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let requests: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let disconnected = Arc::new(AtomicUsize::new(0));
        let (log, gone) = (requests.clone(), disconnected.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, gone, scripts) = (log.clone(), gone.clone(), scripts.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let (mut len, mut auth, mut line) = (0, String::new(), String::new());
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("authorization:") {
                            auth = line.trim().to_string();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).expect("body");
                    let req: Value = serde_json::from_slice(&body).expect("json body");
                    let n = {
                        let mut log = log.lock().expect("log");
                        log.push((auth, req));
                        log.len()
                    };
                    let script = scripts[(n - 1).min(scripts.len() - 1)].clone();
                    let mut stream = stream;
                    match script {
                        Script::Status(code, body) => {
                            let _ = write!(
                                stream,
                                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Script::Hang(d) => std::thread::sleep(d),
                        Script::RetryAfter(wait, after) => {
                            std::thread::sleep(wait);
                            let _ = write!(
                                stream,
                                "HTTP/1.1 429 X\r\nRetry-After: {after}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                            );
                        }
                        Script::Garbage => {
                            let body = "<html>not json</html>";
                            let _ = write!(
                                stream,
                                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Script::Stream { pieces, delay } => {
                            let _ = write!(
                                stream,
                                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                            );
                            for piece in &pieces {
                                let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]});
                                if write!(stream, "data: {chunk}\n\n").and_then(|()| stream.flush()).is_err() {
                                    gone.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                std::thread::sleep(delay);
                            }
                            let usage = json!({"choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": 7}});
                            let _ = write!(stream, "data: {usage}\n\ndata: [DONE]\n\n");
                        }
                    }
                });
            }
        });
        FakeLlm { base_url, requests, disconnected }
    }

    fn calls(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }
}

fn llm_env(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![
        ("OPENAI_BASE_URL", llm.base_url.clone()),
        ("OPENAI_API_KEY", SECRET.to_string()),
        ("LORE_LLM_MODEL", "fake-model".to_string()),
        ("LORE_LLM_TIMEOUT_SECS", "3".to_string()),
    ]
}

fn start_with_llm(art: &Path, llm: &FakeLlm, extra: &[(&str, &str)]) -> ChatServer {
    let env = llm_env(llm);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    ChatServer::start(art, &all, &[])
}

fn streamed(pieces: &[&str]) -> Script {
    Script::Stream { pieces: pieces.iter().map(|p| p.to_string()).collect(), delay: Duration::from_millis(5) }
}

const ROBOTS: &str = "What kind of robots do you build?";

#[test]
fn chat_without_an_llm_answers_extractively_with_citations_and_refuses_off_topic() {
    let tmp = TempDir::new("chat-extractive");
    let art = data_artifact(&tmp);
    let server = ChatServer::start(&art, &[], &[]);
    let a = server.chat(json!({"message": ROBOTS}));
    assert_eq!(a["on_topic"], true, "{a}");
    assert_eq!(a["extractive"], true, "{a}");
    assert!(a.get("degraded").is_none(), "{a}");
    let citations = a["citations"].as_array().expect("citations");
    assert!(!citations.is_empty(), "{a}");
    assert_eq!(citations[0]["n"], 1);
    let answer = a["answer"].as_str().expect("answer");
    assert!(answer.contains("[1]") && answer.to_lowercase().contains("robot"), "{answer}");
    for c in citations {
        assert!(c["id"].as_str().expect("id").contains('#') && c["source"].is_string() && c["path"].is_string(), "{c}");
    }
    assert_eq!(a["kb"], "default");
    assert!(a["artifact"]["build_id"].is_string() && a["session_id"].as_str().expect("session").len() == 32, "{a}");

    let off = server.chat(json!({"message": "How do I bake sourdough bread at home?"}));
    assert_eq!(off["on_topic"], false, "{off}");
    assert_eq!(off["citations"], json!([]));
    assert_eq!(
        off["answer"],
        "That's outside what I can talk about here. Ask me about robots, my work, the orchestra or the tide gauges!",
        "the refusal is data/persona.yaml's: {off}"
    );

    // Bad requests get a 4xx with a JSON error.
    for (body, code) in [
        (json!({"message": ""}), 400),
        (json!({"message": "x".repeat(5000)}), 413),
        (json!({"message": "hi", "session_id": "has space"}), 400),
        (json!({"message": "hi", "surprise": 1}), 400),
        (json!({"message": "hi", "kb": "nope"}), 404),
    ] {
        let (status, text) = server.request("POST", "/v1/chat", Some(&body));
        assert_eq!(status, code, "{body} -> {text}");
        let e: Value = serde_json::from_str(&text).expect("JSON error");
        assert!(e["error"]["message"].is_string(), "{text}");
    }
}

#[test]
fn follow_ups_use_the_conversation_and_memory_survives_a_restart_without_plaintext() {
    let tmp = TempDir::new("chat-memory");
    let art = data_artifact(&tmp);
    let db = tmp.path().join("memory.sqlite3");
    let db_arg = db.to_str().expect("utf-8 path");
    let env = [("LORE_MEMORY", db_arg), ("LORE_MEMORY_KEY", MEMORY_KEY)];
    let server = ChatServer::start(&art, &env, &[]);
    let first = server.chat(json!({"session_id": "visitor-1", "message": ROBOTS}));
    assert_eq!(first["session_id"], "visitor-1");
    let follow = server.chat(json!({"session_id": "visitor-1", "message": "and before that?"}));
    assert_eq!(follow["retrieval_question"], format!("{ROBOTS} and before that?"), "{follow}");
    assert_eq!(follow["on_topic"], true, "a follow-up is on topic through its context: {follow}");
    // Another session does not see this conversation.
    let other = server.chat(json!({"session_id": "visitor-2", "message": "and before that?"}));
    assert_eq!(other["retrieval_question"], "and before that?");
    assert_eq!(server.stop(), 0);

    // No message text in the database or its write-ahead log.
    for file in ["memory.sqlite3", "memory.sqlite3-wal"] {
        if let Ok(bytes) = std::fs::read(tmp.path().join(file)) {
            let text = String::from_utf8_lossy(&bytes);
            for needle in ["robots do you build", "before that", "visitor-1", "Maren"] {
                assert!(!text.contains(needle), "{file} holds {needle:?} in plaintext");
            }
        }
    }

    // After a restart the conversation goes on.
    let server = ChatServer::start(&art, &env, &[]);
    let (status, body) = server.request("GET", "/v1/sessions/visitor-1", None);
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).expect("json");
    let turns = session["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 4, "{session}");
    assert_eq!(turns[0]["role"], "user");
    assert_eq!(turns[0]["text"], ROBOTS);
    assert_eq!(turns[1]["role"], "assistant");
    let again = server.chat(json!({"session_id": "visitor-1", "message": "what about them?"}));
    assert_eq!(again["retrieval_question"], format!("{ROBOTS} and before that? what about them?"), "{again}");

    // A visitor deletes their session.
    assert_eq!(server.request("DELETE", "/v1/sessions/visitor-1", None).0, 204);
    let (status, body) = server.request("DELETE", "/v1/sessions/visitor-1", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(server.request("GET", "/v1/sessions/visitor-1", None).0, 404);
    assert_eq!(server.stop(), 0);

    // The wrong memory key is a clear error, and the file is left alone.
    let before = std::fs::read(&db).expect("db");
    let r = run(lore()
        .arg("serve")
        .arg(&art)
        .args(["--http", "127.0.0.1:0"])
        .env("LORE_KEY", TEST_KEY)
        .env("LORE_MEMORY", db_arg)
        .env("LORE_MEMORY_KEY", OTHER_MEMORY_KEY));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("another memory key") && r.stderr.contains("memory.sqlite3"), "{}", r.stderr);
    assert_eq!(std::fs::read(&db).expect("db"), before);
}

#[test]
fn long_conversations_are_folded_into_a_summary_by_the_llm_or_by_their_questions() {
    let tmp = TempDir::new("chat-fold");
    let art = data_artifact(&tmp);
    let questions = ["What kind of robots do you build?", "Where do you live?", "What instrument do you play?"];
    // Without an LLM the summary keeps the folded questions.
    let server = ChatServer::start(&art, &[("LORE_MEMORY_MAX_TURNS", "4")], &[]);
    for q in questions {
        server.chat(json!({"session_id": "long", "message": q}));
    }
    let (status, body) = server.request("GET", "/v1/sessions/long", None);
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).expect("json");
    // Six turns over a limit of four: the oldest four are folded, two stay.
    assert_eq!(session["turns"].as_array().expect("turns").len(), 2, "{session}");
    assert_eq!(session["turns"][0]["text"], questions[2]);
    assert_eq!(session["summary"], format!("The visitor asked: {} · {}", questions[0], questions[1]), "{session}");

    // With one, the LLM writes it.
    let llm = FakeLlm::start(vec![streamed(&["The visitor asked about robots and Lisbon."])]);
    let server = start_with_llm(&art, &llm, &[("LORE_MEMORY_MAX_TURNS", "4")]);
    for q in questions {
        server.chat(json!({"session_id": "long", "message": q}));
    }
    let (_, body) = server.request("GET", "/v1/sessions/long", None);
    let session: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(session["summary"], "The visitor asked about robots and Lisbon.", "{session}");
    assert_eq!(llm.calls(), 4, "three answers and one summary");
    let summary_call = llm.requests.lock().expect("requests")[3].1.clone();
    let transcript = summary_call["messages"][1]["content"].as_str().expect("transcript");
    assert!(transcript.contains(questions[0]) && transcript.contains(questions[1]), "{transcript}");
    assert!(!transcript.contains(questions[2]), "only the folded turns are summarised: {transcript}");
}

#[test]
fn a_memory_file_without_any_key_is_refused() {
    let tmp = TempDir::new("chat-nokey");
    let art = tmp.path().join("plain.lore");
    build_plain(&workspace().join("data"), &art);
    let db = tmp.path().join("m.sqlite3");
    let r = run(lore().arg("serve").arg(&art).args(["--http", "127.0.0.1:0"]).env("LORE_MEMORY", &db));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("LORE_MEMORY_KEY"), "{}", r.stderr);
    assert!(!db.exists(), "nothing is created before the key is known");
    // A PostgreSQL URL is not taken for a file name; an unreachable server is an error that
    // names it, without its password.
    let pg = run(lore()
        .arg("serve")
        .arg(&art)
        .args(["--http", "127.0.0.1:0"])
        .env("LORE_MEMORY_KEY", MEMORY_KEY)
        .env("LORE_MEMORY", "postgres://u:pa55word@127.0.0.1:1/lore"));
    assert_ne!(pg.code, 0, "{}", pg.stderr);
    assert!(pg.stderr.contains("postgres://u:***@127.0.0.1:1/lore"), "{}", pg.stderr);
    assert!(!pg.stderr.contains("pa55word"), "{}", pg.stderr);
    assert!(!tmp.path().join("postgres:").exists(), "nothing was created on disk");
}

#[test]
fn kill_9_during_a_burst_of_writes_loses_no_acknowledged_turn() {
    let tmp = TempDir::new("chat-kill9");
    let art = data_artifact(&tmp);
    let db = tmp.path().join("memory.sqlite3");
    let db_arg = db.to_str().expect("utf-8 path");
    let env = [("LORE_MEMORY", db_arg), ("LORE_MEMORY_KEY", MEMORY_KEY), ("LORE_MEMORY_MAX_TURNS", "1000")];
    let server = ChatServer::start(&art, &env, &[]);
    let addr = server.addr.clone();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let counter = acknowledged.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..10_000 {
            let body =
                json!({"session_id": "burst", "message": format!("What is project number {i} about?")}).to_string();
            let Ok(mut s) = TcpStream::connect(&addr) else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let sent = write!(
                s,
                "POST /v1/chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut raw = String::new();
            if sent.is_err() || s.read_to_string(&mut raw).is_err() || !raw.starts_with("HTTP/1.1 200") {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    while acknowledged.load(Ordering::SeqCst) < 30 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut server = server;
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    writer.join().expect("writer");
    let acked = acknowledged.load(Ordering::SeqCst);
    drop(server);
    let server = ChatServer::start(&art, &env, &[]);
    let (status, body) = server.request("GET", "/v1/sessions/burst", None);
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).expect("json");
    let users = session["turns"].as_array().expect("turns").iter().filter(|t| t["role"] == "user").count();
    assert!(users >= acked, "{acked} messages were acknowledged but only {users} remembered");
}

#[test]
fn an_llm_answer_is_streamed_with_citations_in_one_call_and_the_key_is_never_logged() {
    let tmp = TempDir::new("chat-llm");
    let art = data_artifact(&tmp);
    let llm = FakeLlm::start(vec![streamed(&["I build ", "vineyard robots [1]", " and tide gauges [2]."])]);
    let server = start_with_llm(&art, &llm, &[]);
    let (status, body) =
        server.request("POST", "/v1/chat", Some(&json!({"message": ROBOTS, "stream": true, "session_id": "s"})));
    assert_eq!(status, 200, "{body}");
    let evs = events(&body);
    let tokens: Vec<String> = evs
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| serde_json::from_str::<Value>(d).expect("token json")["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(tokens, ["I build ", "vineyard robots [1]", " and tide gauges [2]."]);
    let (name, done) = evs.last().expect("events");
    assert_eq!(name, "done");
    let done: Value = serde_json::from_str(done).expect("done json");
    assert_eq!(done["answer"], "I build vineyard robots [1] and tide gauges [2].");
    assert_eq!(done["extractive"], false);
    let cited: Vec<u64> =
        done["citations"].as_array().expect("citations").iter().map(|c| c["n"].as_u64().expect("n")).collect();
    assert_eq!(cited, [1, 2]);
    assert_eq!(llm.calls(), 1, "one LLM call per message");
    let (auth, req) = llm.requests.lock().expect("requests")[0].clone();
    assert_eq!(auth.to_ascii_lowercase(), format!("authorization: bearer {SECRET}").to_ascii_lowercase());
    assert_eq!(req["model"], "fake-model");
    let system = req["messages"][0]["content"].as_str().expect("system prompt");
    assert!(system.contains("You are Maren Okafor-Lindqvist") && system.contains("[1] "), "{system}");
    // The persona file's voice and rules reach the model.
    assert!(
        system.contains("Voice and tone: Warm, direct") && system.contains("Do not: Guess at salaries"),
        "{system}"
    );
    assert_eq!(req["messages"].as_array().expect("messages").last().expect("last")["content"], ROBOTS);

    // The second message carries the first exchange; an off-topic one never reaches the LLM.
    server.chat(json!({"message": "and before that?", "session_id": "s"}));
    assert_eq!(llm.calls(), 2);
    let second = llm.requests.lock().expect("requests")[1].1.clone();
    let roles: Vec<&str> =
        second["messages"].as_array().expect("m").iter().map(|m| m["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    let off = server.chat(json!({"message": "What's the capital of Australia?"}));
    assert_eq!(off["on_topic"], false);
    assert_eq!(llm.calls(), 2, "off-topic questions are refused without calling the LLM");
    assert!(!server.log().contains(SECRET), "the key reached the log");
}

#[test]
fn the_response_cache_spares_the_llm_and_never_outlives_its_artifact() {
    let tmp = TempDir::new("chat-cache");
    let kb = tmp.path().join("kb");
    copy_dir(&workspace().join("data"), &kb);
    let art = tmp.path().join("kb.lore");
    build(&kb, &art, &["--artifact-version", "1.0.0"]);
    let llm = FakeLlm::start(vec![streamed(&["Vineyard robots [1]."])]);
    let server = start_with_llm(&art, &llm, &[]);
    let first = server.chat(json!({"message": ROBOTS}));
    let again = server.chat(json!({"message": "  what kind of ROBOTS do you build "}));
    assert_eq!((first["cached"].clone(), again["cached"].clone()), (json!(false), json!(true)));
    assert_eq!(again["answer"], first["answer"]);
    assert_eq!(llm.calls(), 1, "the second asking was served from the cache");
    // Within a conversation the LLM's answer depends on what came before: no hit.
    server.chat(json!({"session_id": "c", "message": "Where do you live?"}));
    let in_talk = server.chat(json!({"session_id": "c", "message": ROBOTS}));
    assert_eq!(in_talk["cached"], false);
    assert_eq!(llm.calls(), 3);
    let (_, metrics) = server.request("GET", "/metrics", None);
    assert!(metrics.contains(r#"lore_chat_cache_total{kb="default",variant="default",result="hit"} 1"#), "{metrics}");

    // A new build swapped in: the same question reaches the LLM again.
    build(&kb, &art, &["--artifact-version", "2.0.0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = server.request("GET", "/v1/artifact", None);
        if body.contains("\"2.0.0\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the new build was not swapped in: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = server.chat(json!({"message": ROBOTS}));
    assert_eq!(after["cached"], false, "{after}");
    assert_eq!(after["artifact"]["version"], "2.0.0");
    assert_eq!(llm.calls(), 4);
}

#[test]
fn llm_failures_are_retried_or_degrade_to_the_extractive_answer() {
    let tmp = TempDir::new("chat-llm-fail");
    let art = data_artifact(&tmp);
    let echo_key = format!("{{\"error\": {{\"message\": \"bad key {SECRET}\"}}}}");
    let cases: Vec<(&str, Vec<Script>, Option<&str>, usize)> = vec![
        ("429 then success", vec![Script::Status(429, "{}".into()), streamed(&["Robots [1]"])], None, 2),
        ("500 every time", vec![Script::Status(500, echo_key.clone())], Some("llm_unavailable"), 4),
        ("a timeout", vec![Script::Hang(Duration::from_secs(10))], Some("llm_timeout"), 1),
        ("malformed JSON", vec![Script::Garbage], Some("llm_malformed"), 1),
        ("401", vec![Script::Status(401, echo_key.clone())], Some("llm_refused"), 1),
        // ureq reports a deadline hit while reading the body as an `Other` I/O error.
        (
            "a timeout mid-stream",
            vec![Script::Stream { pieces: vec!["slow ".to_string(); 20], delay: Duration::from_millis(400) }],
            Some("llm_timeout"),
            1,
        ),
        // A Retry-After far beyond the deadline once panicked adding it to the elapsed time.
        (
            "a Retry-After of u64::MAX seconds",
            vec![Script::RetryAfter(Duration::from_millis(1200), u64::MAX.to_string())],
            Some("llm_unavailable"),
            1,
        ),
    ];
    for (what, scripts, degraded, calls) in cases {
        let llm = FakeLlm::start(scripts);
        let server = start_with_llm(&art, &llm, &[("LORE_LLM_RETRIES", "3")]);
        let started = Instant::now();
        let a = server.chat(json!({"message": ROBOTS}));
        assert!(started.elapsed() < Duration::from_secs(8), "{what}: took {:?}", started.elapsed());
        match degraded {
            None => {
                assert_eq!(a["answer"], "Robots [1]", "{what}: {a}");
                assert_eq!(a["extractive"], false, "{what}");
            }
            Some(reason) => {
                assert_eq!(a["extractive"], true, "{what}: {a}");
                assert_eq!(a["degraded"], reason, "{what}: {a}");
                assert!(a["answer"].as_str().expect("answer").contains("[1]"), "{what}: {a}");
            }
        }
        assert_eq!(llm.calls(), calls, "{what}: LLM calls");
        if degraded.is_some() {
            // The log line is written before the answer; its reader thread may lag a little.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !server.log().contains("answering extractively") {
                assert!(Instant::now() < deadline, "{what}: the failure is not logged:\n{}", server.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let log = server.log();
        assert!(!log.contains(SECRET), "{what}: the key reached the log:\n{log}");
    }
}

#[test]
fn a_non_streamed_llm_answer_slower_than_the_request_timeout_is_not_cut_off() {
    let tmp = TempDir::new("chat-slow");
    let art = data_artifact(&tmp);
    // About three seconds of answer against a one-second request timeout: the connection
    // watchdog once closed it after the request and header timeouts (two seconds).
    let llm = FakeLlm::start(vec![Script::Stream {
        pieces: vec!["Vineyard ".into(), "robots ".into(), "[1].".into()],
        delay: Duration::from_millis(1100),
    }]);
    let env = llm_env(&llm);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend([
        ("LORE_LLM_TIMEOUT_SECS", "20"),
        ("LORE_REQUEST_TIMEOUT_SECS", "1"),
        ("LORE_HEADER_READ_TIMEOUT_SECS", "1"),
    ]);
    let server = ChatServer::start(&art, &all, &[]);
    let a = server.chat(json!({"message": ROBOTS}));
    assert_eq!(a["answer"], "Vineyard robots [1].", "{a}");
    // Routes other than chat keep their request timeout.
    let (status, _) = server.request("GET", "/healthz", None);
    assert_eq!(status, 200);
}

#[test]
fn a_streamed_request_for_an_unknown_model_is_a_404_not_an_error_event() {
    let tmp = TempDir::new("chat-404");
    let art = data_artifact(&tmp);
    let server = ChatServer::start(&art, &[], &[]);
    let ask = json!({"model": "nope", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = server.request("POST", "/v1/chat/completions", Some(&ask));
    assert_eq!(status, 404, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["error"]["code"], "unknown_kb");
    let (status, body) =
        server.request("POST", "/v1/chat", Some(&json!({"message": "hi", "stream": true, "kb": "nope"})));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn one_knowledge_base_never_sees_another_knowledge_base_s_conversation() {
    let tmp = TempDir::new("chat-two-kbs");
    let art = data_artifact(&tmp);
    let config = tmp.write(
        "lore.toml",
        format!(
            "default = \"a\"\n[[kb]]\nname = \"a\"\nartifact = {:?}\n[[kb]]\nname = \"b\"\nartifact = {:?}\n",
            art, art
        ),
    );
    let server = ChatServer::start_config(&config);
    server.chat(json!({"session_id": "shared-id", "message": ROBOTS}));
    let b = server.request(
        "POST",
        "/v1/kb/b/chat",
        Some(&json!({"session_id": "shared-id", "message": "and before that?"})),
    );
    let b: Value = serde_json::from_str(&b.1).expect("json");
    assert_eq!(b["retrieval_question"], "and before that?", "kb b saw kb a's conversation: {b}");
    assert_eq!(server.request("GET", "/v1/sessions/shared-id", None).0, 200);
    assert_eq!(server.request("GET", "/v1/kb/a/sessions/shared-id", None).0, 200);
    let (status, body) = server.request("GET", "/v1/kb/b/sessions/shared-id", None);
    assert_eq!(status, 200, "{body}");
    let turns: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(turns["turns"].as_array().expect("turns").len(), 2, "only b's own exchange: {turns}");
}

#[test]
fn a_client_that_disconnects_mid_stream_cancels_the_llm_request() {
    let tmp = TempDir::new("chat-cancel");
    let art = data_artifact(&tmp);
    let pieces: Vec<String> = (0..200).map(|i| format!("word{i} ")).collect();
    let llm = FakeLlm::start(vec![Script::Stream { pieces, delay: Duration::from_millis(50) }]);
    let server = start_with_llm(&art, &llm, &[("LORE_LLM_TIMEOUT_SECS", "30")]);
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    let body = json!({"message": ROBOTS, "stream": true}).to_string();
    write!(
        s,
        "POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("word1") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(8);
    while llm.disconnected.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the LLM stream was not cancelled after the client left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn openai_compatible_endpoints_answer_as_openai_clients_expect() {
    let tmp = TempDir::new("chat-openai");
    let art = data_artifact(&tmp);
    let server = ChatServer::start(&art, &[], &["--kb-name", "maren"]);
    let (status, body) = server.request("GET", "/v1/models", None);
    assert_eq!(status, 200, "{body}");
    let models: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "maren");
    assert_eq!(models["data"][0]["object"], "model");

    let ask = json!({"model": "maren", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": ROBOTS}]}
    ], "temperature": 0.2});
    let (status, body) = server.request("POST", "/v1/chat/completions", Some(&ask));
    assert_eq!(status, 200, "{body}");
    let c: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "maren");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let content = c["choices"][0]["message"]["content"].as_str().expect("content");
    assert!(content.contains("\n\nSources:\n[1] "), "{content}");
    assert!(c["usage"]["total_tokens"].as_u64().expect("usage") > 0);
    assert!(!c["citations"].as_array().expect("citations").is_empty());

    let mut streaming = ask.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let (status, body) = server.request("POST", "/v1/chat/completions", Some(&streaming));
    assert_eq!(status, 200, "{body}");
    let evs = events(&body);
    assert_eq!(evs.last().expect("events").1, "[DONE]");
    let chunks: Vec<Value> =
        evs[..evs.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).expect("chunk")).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "maren"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, content, "the stream says what the whole answer says");
    let finish: Vec<&Value> = chunks.iter().filter(|c| c["choices"][0]["finish_reason"] == "stop").collect();
    assert_eq!(finish.len(), 1);
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["prompt_tokens"].as_u64().is_some(), "{usage}");

    // Errors in OpenAI's shape, with lore's codes.
    for (body, code) in [
        (json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}), 404),
        (json!({"model": "maren", "messages": []}), 400),
        (json!({"model": "maren", "messages": [{"role": "assistant", "content": "hi"}]}), 400),
        (json!({"messages": [{"role": "user", "content": "hi"}]}), 400),
    ] {
        let (status, text) = server.request("POST", "/v1/chat/completions", Some(&body));
        assert_eq!(status, code, "{body} -> {text}");
        let e: Value = serde_json::from_str(&text).expect("JSON error");
        assert!(e["error"]["message"].is_string(), "{text}");
    }
}
