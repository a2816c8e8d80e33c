//! `lore serve --http` under slow, silent and surplus clients (issue 7, item 5): the header
//! read timeout, the idle timeout, the connection cap, and 500 bodies that name no server path.
//!
//! Every socket here has a timeout or is non-blocking, and every wait has a deadline, so a
//! server that never closes a connection fails a test instead of hanging it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

fn artifact(tmp: &TempDir) -> PathBuf {
    tmp.write("kb/jobs.yaml", "jobs:\n  - id: keeper\n    title: Lighthouse keeper\n    company: Northern Lights Board\n    achievements:\n      - Kept the lamp lit through the storm of 1987\n  - id: baker\n    title: Night baker at the harbour bakery\n");
    let out = tmp.path().join("kb.lore");
    build(&tmp.path().join("kb"), &out, &[]);
    out
}

/// A `lore serve --http 127.0.0.1:0` child, its stderr collected.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(art: &Path, key: Option<&str>, args: &[&str]) -> Server {
        let mut cmd = lore();
        cmd.arg("serve").arg(art).args(["--http", "127.0.0.1:0"]).args(args).env("LORE_LOG", "info");
        if let Some(key) = key {
            cmd.env("LORE_KEY", key);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn lore");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let log = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line).expect("stderr") == 0 {
                panic!("server exited before listening:\n{}", log.lock().expect("log"));
            }
            log.lock().expect("log").push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("lore: listening on http://") {
                break rest.to_string();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(stderr.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock().expect("log").push_str(&line);
                line.clear();
            }
        });
        Server { child, addr, log }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s
    }

    /// One GET over a fresh connection that asks to be closed.
    fn get(&self, path: &str) -> std::io::Result<Reply> {
        let mut s = self.connect();
        exchange(&mut s, "GET", path, "", true)
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one request on `s` and read exactly one response (by its Content-Length), so the
/// connection can carry the next one.
fn exchange(s: &mut TcpStream, method: &str, path: &str, body: &str, close: bool) -> std::io::Result<Reply> {
    let connection = if close { "close" } else { "keep-alive" };
    let ct = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: lore\r\nConnection: {connection}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    read_reply(s)
}

/// A client that sends nothing, or one header byte per tick, and watches for the server to
/// close its connection.
struct Slow {
    stream: TcpStream,
    trickles: bool,
    opened: Instant,
    sent: usize,
    received: Vec<u8>,
    closed: Option<Instant>,
}

/// A request head that never ends: one byte of it is sent per tick.
const ENDLESS_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: lore\r\nX-Slow: ";

impl Slow {
    fn open(server: &Server, trickles: bool) -> Slow {
        let stream = TcpStream::connect(&server.addr).expect("connect");
        stream.set_nonblocking(true).expect("non-blocking");
        Slow { stream, trickles, opened: Instant::now(), sent: 0, received: Vec::new(), closed: None }
    }

    /// Read whatever the server sent; notes the close (EOF or reset).
    fn poll(&mut self) {
        let mut buf = [0u8; 1024];
        while self.closed.is_none() {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = Some(Instant::now()),
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = Some(Instant::now()),
            }
        }
    }

    fn trickle(&mut self) {
        if self.closed.is_some() || !self.trickles {
            return;
        }
        let byte = ENDLESS_HEAD.get(self.sent).copied().unwrap_or(b'a');
        match self.stream.write(&[byte]) {
            Ok(_) => self.sent += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => self.poll_after_write_error(),
        }
    }

    fn poll_after_write_error(&mut self) {
        self.poll();
        if self.closed.is_none() {
            self.closed = Some(Instant::now());
        }
    }

    /// How long the connection lived, if the server has closed it.
    fn lived(&self) -> Option<Duration> {
        self.closed.map(|c| c.duration_since(self.opened))
    }

    fn got_503(&self) -> bool {
        let text = String::from_utf8_lossy(&self.received);
        text.starts_with("HTTP/1.1 503") && text.contains("\"overloaded\"")
    }
}

/// Drive `slow` (one header byte every 300 ms from each trickler, a look for closes every
/// 20 ms) until the server has closed them all or `deadline` passes.
fn drive(slow: &mut [Slow], deadline: Duration) {
    let started = Instant::now();
    let mut last_tick: Option<Instant> = None;
    while started.elapsed() < deadline && slow.iter().any(|s| s.closed.is_none()) {
        for s in slow.iter_mut() {
            s.poll();
        }
        if last_tick.is_none_or(|t| t.elapsed() >= Duration::from_millis(300)) {
            last_tick = Some(Instant::now());
            for s in slow.iter_mut() {
                s.trickle();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Header read timeout 1 s; 35 connections trickle a header byte every 300 ms and 5 send
/// nothing, all under the cap of 50. The server must close every one of them between 1 s
/// and 1 s plus a margin after it was opened, and answer normal requests, on fresh and on
/// kept-alive connections, all the while.
#[test]
fn slow_header_clients_are_cut_off_and_normal_requests_keep_succeeding() {
    let tmp = TempDir::new("slow");
    let art = artifact(&tmp);
    let server = Server::start(
        &art,
        Some(TEST_KEY),
        &["--header-read-timeout-secs", "1", "--idle-timeout-secs", "30", "--max-connections", "50"],
    );
    assert_eq!(server.get("/healthz").expect("healthz").status, 200);

    let slow = std::thread::scope(|scope| {
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let server = &server;
        let driver = scope.spawn(move || {
            let mut slow: Vec<Slow> = (0..40).map(|i| Slow::open(server, i >= 5)).collect();
            opened_tx.send(()).expect("signal");
            drive(&mut slow, Duration::from_secs(8));
            slow
        });
        opened_rx.recv().expect("the slow clients are connected");
        // Normal traffic while the slow clients hold 40 of the 50 connections.
        let mut kept = server.connect();
        let mut answered = 0;
        while !driver.is_finished() {
            let fresh = server.get("/v1/query?q=who+kept+the+lamp+lit&k=1").expect("a fresh connection is answered");
            assert_eq!(fresh.status, 200, "{fresh:?}");
            assert_eq!(fresh.json()["hits"][0]["id"], "jobs.yaml#/jobs/0");
            let again = exchange(&mut kept, "POST", "/v1/query", r#"{"q": "night baker", "k": 1}"#, false)
                .expect("the kept-alive connection is answered");
            assert_eq!(again.status, 200, "{again:?}");
            answered += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(answered >= 3, "only {answered} rounds of normal requests while the slow clients were connected");
        driver.join().expect("driver")
    });

    for (i, s) in slow.iter().enumerate() {
        let what = if s.trickles { "trickling" } else { "silent" };
        let lived = s.lived().unwrap_or_else(|| panic!("the {what} connection {i} was still open after 8 s"));
        assert!(
            lived >= Duration::from_millis(900) && lived <= Duration::from_secs(4),
            "the {what} connection {i} was closed after {lived:?}, not after the 1 s header read timeout"
        );
        if s.trickles {
            assert!(s.sent >= 2, "connection {i} trickled only {} bytes", s.sent);
        }
        assert!(s.received.is_empty(), "a timed-out connection is closed without a response");
    }
    for _ in 0..20 {
        let r = server.get("/v1/query?q=bakery&k=1").expect("answered");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// The issue's scenario with more slow clients than the cap: 5 silent and 60 trickling
/// connections against a cap of 50. The 15 over the cap are refused at once (a 503 or a close),
/// the 50 held are cut off at the 2 s header read timeout, normal requests get 200 or a 503
/// (never a hang) while the cap is full, and only 200s once the slow clients are gone.
#[test]
fn connections_beyond_the_cap_are_refused_at_once_and_service_recovers_after_the_header_timeout() {
    let tmp = TempDir::new("cap");
    let art = artifact(&tmp);
    let server = Server::start(&art, Some(TEST_KEY), &["--header-read-timeout-secs", "2", "--max-connections", "50"]);
    assert_eq!(server.get("/healthz").expect("healthz").status, 200);
    // The server closes that connection right after its response; let it free its slot.
    std::thread::sleep(Duration::from_millis(200));

    let slow = std::thread::scope(|scope| {
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let server = &server;
        let driver = scope.spawn(move || {
            let mut slow: Vec<Slow> = (0..65).map(|i| Slow::open(server, i >= 5)).collect();
            opened_tx.send(()).expect("signal");
            drive(&mut slow, Duration::from_secs(10));
            slow
        });
        opened_rx.recv().expect("the slow clients are connected");
        while !driver.is_finished() {
            match server.get("/v1/query?q=lamp&k=1") {
                Ok(r) => assert!(r.status == 200 || r.status == 503, "{r:?}"),
                // A refused connection may be reset when our request reaches the closed socket.
                Err(e) => assert!(
                    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe),
                    "a normal request neither answered nor refused: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        driver.join().expect("driver")
    });

    let (held, over) = slow.split_at(50);
    for (i, s) in held.iter().enumerate() {
        let lived = s.lived().unwrap_or_else(|| panic!("held connection {i} was still open after 10 s"));
        assert!(
            lived >= Duration::from_millis(1900) && lived <= Duration::from_secs(6),
            "held connection {i} was closed after {lived:?}, not after the 2 s header read timeout"
        );
    }
    for (i, s) in over.iter().enumerate() {
        let lived = s.lived().unwrap_or_else(|| panic!("connection {} over the cap was never closed", 50 + i));
        assert!(lived < Duration::from_millis(1500), "connection {} over the cap lived {lived:?}", 50 + i);
    }
    assert!(
        over.iter().any(Slow::got_503),
        "no refused connection read the 503: {:?}",
        over.iter().map(|s| String::from_utf8_lossy(&s.received).into_owned()).collect::<Vec<_>>()
    );

    let mut kept = server.connect();
    for _ in 0..20 {
        let r = server.get("/v1/query?q=lamp&k=1").expect("answered");
        assert_eq!(r.status, 200, "{r:?}");
        let r = exchange(&mut kept, "GET", "/v1/query?q=bakery&k=1", "", false).expect("answered");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// With the cap full (silent connections, long timeouts), a new connection is told so at once:
/// a 503 with a JSON error and `Connection: close`; once a slot is free, requests are served.
#[test]
fn a_connection_over_the_cap_gets_a_503_json_error_and_close() {
    let tmp = TempDir::new("cap503");
    let art = artifact(&tmp);
    let server = Server::start(&art, Some(TEST_KEY), &["--header-read-timeout-secs", "60", "--max-connections", "3"]);
    let held: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    // The server accepts in order: these three hold every slot once a fourth is answered.
    let mut extra = server.connect();
    let reply = read_reply(&mut extra).expect("the refusal is sent without waiting for a request");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.head.to_ascii_lowercase().contains("connection: close"), "{}", reply.head);
    assert_eq!(reply.json()["error"]["code"], "overloaded");
    let mut rest = Vec::new();
    assert_eq!(extra.read_to_end(&mut rest).map(|_| rest.len()).ok(), Some(0), "closed after the 503");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match server.get("/v1/query?q=lamp&k=1") {
            Ok(r) if r.status == 200 => break,
            other => assert!(Instant::now() < deadline, "still refused after the slots were freed: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Logged too (stderr is collected by another thread: give it time).
    while !server.log().contains("connection cap reached") {
        assert!(Instant::now() < deadline + Duration::from_secs(5), "the refusal was not logged:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Header read timeout 1 s, idle timeout 3 s: a kept-alive connection outlives the header
/// timeout between requests (so keep-alive works), and is closed once idle for 3 s.
#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_not_the_header_timeout() {
    let tmp = TempDir::new("idle");
    let art = artifact(&tmp);
    let server = Server::start(&art, Some(TEST_KEY), &["--header-read-timeout-secs", "1", "--idle-timeout-secs", "3"]);
    let mut s = server.connect();
    let r = exchange(&mut s, "GET", "/v1/query?q=lamp&k=1", "", false).expect("first request");
    assert_eq!(r.status, 200, "{r:?}");
    std::thread::sleep(Duration::from_millis(1800));
    let r =
        exchange(&mut s, "GET", "/v1/query?q=bakery&k=1", "", false).expect("second request on the same connection");
    assert_eq!(r.status, 200, "{r:?}");
    let answered = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(8))).expect("timeout");
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes: {}", String::from_utf8_lossy(&rest)),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle connection was not closed within 8 s: {e}"),
    }
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(2800) && idle <= Duration::from_secs(6),
        "closed after {idle:?} idle, not after the 3 s idle timeout"
    );
}

/// A query that fails inside the engine (a corrupted text block of a plaintext artifact, only
/// opened when a hit needs it) is a 500 whose body names no server path; the log has the detail.
#[test]
fn a_500_body_names_no_server_path() {
    let tmp = TempDir::new("500");
    tmp.write("kb/a.yaml", "notes:\n  - title: Harbour\n    text: The harbour freezes in February\n");
    let out = tmp.path().join("plain.lore");
    build_plain(&tmp.path().join("kb"), &out);
    let texts = section_range(&out, "texts");
    let mut bytes = std::fs::read(&out).expect("read");
    bytes[texts].fill(0xff);
    std::fs::write(&out, bytes).expect("write");

    let server = Server::start(&out, None, &[]);
    let mut s = server.connect();
    let reply =
        exchange(&mut s, "POST", "/v1/query", r#"{"q": "harbour freezes", "k": 1, "include_off_topic": true}"#, true)
            .expect("answered");
    assert_eq!(reply.status, 500, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["error"]["code"], "artifact_damaged");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("see the server log")), "{body}");
    let dir = tmp.path().to_string_lossy().into_owned();
    for leak in [dir.as_str(), "plain.lore", "/"] {
        assert!(!reply.body.contains(leak), "the 500 body reveals {leak:?}: {}", reply.body);
    }
    // The detail is in the server's log instead.
    let deadline = Instant::now() + Duration::from_secs(5);
    let logged = |log: &str| log.lines().any(|l| l.contains("query failed") && l.contains("plain.lore"));
    while !logged(&server.log()) {
        assert!(Instant::now() < deadline, "the failure's detail was not logged:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On SIGTERM, connections that have not sent a whole request (silent or trickling) are closed
/// at once, not kept until their header read timeout, while a request in flight (its body half
/// sent) is still answered; then the server exits, well within the grace period.
#[test]
fn sigterm_closes_connections_without_a_request_at_once_and_drains_the_one_in_flight() {
    let tmp = TempDir::new("term");
    let art = artifact(&tmp);
    let mut server = Server::start(&art, Some(TEST_KEY), &["--header-read-timeout-secs", "30", "--grace-secs", "10"]);
    let mut waiting: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    let mut trickler = server.connect();
    trickler.write_all(b"GET /healthz HTTP/1.1\r\nHost: lo").expect("part of a head");
    waiting.push(trickler);
    let body = r#"{"q": "who kept the lamp lit", "k": 1}"#;
    let mut in_flight = server.connect();
    write!(
        in_flight,
        "POST /v1/query HTTP/1.1\r\nHost: lore\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .expect("head and half the body");
    std::thread::sleep(Duration::from_millis(300));

    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let signalled = Instant::now();
    for (i, s) in waiting.iter_mut().enumerate() {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "connection {i} got {}", String::from_utf8_lossy(&rest)),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connection {i} was not closed within 5 s of SIGTERM: {e}"),
        }
    }
    assert!(signalled.elapsed() < Duration::from_secs(3), "closed only after {:?}", signalled.elapsed());

    in_flight.write_all(&body.as_bytes()[10..]).expect("the rest of the body");
    let reply = read_reply(&mut in_flight).expect("the request in flight is answered");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["hits"][0]["id"], "jobs.yaml#/jobs/0");
    assert!(reply.head.to_ascii_lowercase().contains("connection: close"), "{}", reply.head);

    let deadline = signalled + Duration::from_secs(5);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not exit within 5 s of SIGTERM:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}
