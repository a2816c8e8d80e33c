//! `lore serve`: JSON lines over stdin, and the HTTP API with its limits and shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn artifact(tmp: &TempDir) -> PathBuf {
    tmp.write("kb/jobs.yaml", "jobs:\n  - id: keeper\n    title: Lighthouse keeper\n    company: Northern Lights Board\n    achievements:\n      - Kept the lamp lit through the storm of 1987\n  - id: baker\n    title: Night baker at the harbour bakery\n");
    let out = tmp.path().join("kb.lore");
    build(&tmp.path().join("kb"), &out, &["--artifact-version", "7.1.0"]);
    out
}

#[test]
fn stdin_answers_each_line_in_order_and_survives_bad_lines() {
    let tmp = TempDir::new("stdin");
    let art = artifact(&tmp);
    let input = [
        r#"{"q": "Who kept the lamp lit?", "k": 1}"#,
        "this is not json",
        r#"{"q": ""}"#,
        r#"{"q": "bakery at night", "k": 5000}"#,
        r#"{"question": "wrong field"}"#,
        "",
        r#"{"q": "bakery at night", "k": 2}"#,
    ]
    .join("\n");
    let mut child = lore()
        .arg("serve")
        .arg(&art)
        .env("LORE_KEY", TEST_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 6, "one reply per non-empty line: {lines:?}");
    assert_eq!(lines[0]["hits"][0]["id"], "jobs.yaml#/jobs/0");
    assert_eq!(lines[0]["artifact"]["version"], "7.1.0");
    assert_eq!(lines[0]["hits"].as_array().map(Vec::len), Some(1));
    for (i, needle) in [(1, "line 2"), (2, "empty"), (3, "between 1 and 1000"), (4, "unknown field")] {
        let msg = lines[i]["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "line {i}: {msg}");
    }
    assert_eq!(lines[5]["q"], "bakery at night");
}

#[test]
fn stdin_replies_are_flushed_one_by_one() {
    let tmp = TempDir::new("flush");
    let art = artifact(&tmp);
    let mut child = lore()
        .arg("serve")
        .arg(&art)
        .env("LORE_KEY", TEST_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    for q in ["lamp", "bakery"] {
        writeln!(stdin, "{}", serde_json::json!({"q": q})).expect("write");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a reply before the next request is sent");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["q"], q);
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(art: &Path) -> Server {
        Server::start_with(art, &[])
    }

    /// Start `lore serve ART --http` with extra arguments.
    pub(crate) fn start_with(art: &Path, extra: &[&str]) -> Server {
        let mut child = lore()
            .arg("serve")
            .arg(art)
            .args(["--http", "127.0.0.1:0", "--grace-secs", "5"])
            .args(extra)
            .env("LORE_KEY", TEST_KEY)
            .env("LORE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(Instant::now() < deadline, "server did not start");
            if stderr.read_line(&mut line).expect("stderr") == 0 {
                panic!("server exited before listening");
            }
            if let Some(rest) = line.trim().strip_prefix("lore: listening on http://") {
                break rest.to_string();
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stderr.read_to_string(&mut sink);
        });
        Server { child, addr }
    }

    /// One HTTP/1.1 request over a fresh connection; returns (status, body).
    pub(crate) fn request(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let ct = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .expect("write");
        s.write_all(body).expect("body");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None, b"")
    }

    pub(crate) fn post(&self, body: &str) -> (u16, String) {
        self.request("POST", "/v1/query", Some("application/json"), body.as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn http_api_answers_and_refuses_with_the_right_status() {
    let tmp = TempDir::new("http");
    let art = artifact(&tmp);
    let server = Server::start(&art);
    assert_eq!(server.get("/healthz"), (200, "ok".into()));
    assert_eq!(server.get("/readyz"), (200, "ready".into()));
    let (status, body) = server.get("/v1/artifact");
    assert_eq!(status, 200);
    let info = json(&body);
    assert_eq!(info["version"], "7.1.0");
    assert_eq!(info["sealed"], true);
    let (status, body) = server.get("/v1/query?q=who+kept+the+lamp+lit&k=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["hits"][0]["id"], "jobs.yaml#/jobs/0");
    let (status, body) = server.post(r#"{"q": "night baker", "k": 2}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["q"], "night baker");

    let cases: Vec<(u16, (u16, String), &str)> = vec![
        (400, server.post("{not json"), "bad_request"),
        (400, server.post(r#"{"q": "x", "k": 0}"#), "bad_request"),
        (400, server.post(r#"{"q": "   "}"#), "bad_request"),
        (413, server.post(&serde_json::json!({"q": "a".repeat(3000)}).to_string()), "question_too_long"),
        (413, server.post(&format!(r#"{{"q": "x", "pad": "{}"}}"#, "a".repeat(20_000))), "body_too_large"),
        (415, server.request("POST", "/v1/query", None, br#"{"q":"x"}"#), "unsupported_media_type"),
        (400, server.get("/v1/query?k=3"), "bad_request"),
        (404, server.get("/nope"), "not_found"),
    ];
    for (want, (got, body), code) in cases {
        assert_eq!(got, want, "{body}");
        assert_eq!(json(&body)["error"]["code"], code, "{body}");
    }
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let tmp = TempDir::new("term");
    let art = artifact(&tmp);
    let mut server = Server::start(&art);
    assert_eq!(server.get("/healthz").0, 200);
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
