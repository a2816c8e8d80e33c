//! A loopback HTTP/1.1 server for the tests: fixed answers by method and path, every request
//! recorded, so the hub and index clients are tested against real sockets. Built for this
//! crate's tests and, with the `test-server` feature, for the integration tests.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One canned answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Announce this Content-Length but send `body` only (a cut connection).
    pub claimed_length: Option<usize>,
}

impl Answer {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Answer { status: 200, headers: Vec::new(), body: body.into(), claimed_length: None }
    }

    pub fn status(status: u16) -> Self {
        Answer { status, headers: Vec::new(), body: Vec::new(), claimed_length: None }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A request as the server saw it: method, path, and the Authorization header.
pub type Seen = (String, String, Option<String>);

pub struct Server {
    pub base: String,
    routes: Arc<Mutex<HashMap<(String, String), Answer>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<Mutex<HashMap<(String, String), Answer>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (routes, seen) = (r.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut stream = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let (method, path) =
                            (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                        let mut auth = None;
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("authorization")
                            {
                                auth = Some(value.trim().to_string());
                            }
                        }
                        seen.lock().expect("seen").push((method.clone(), path.clone(), auth));
                        let answer = routes
                            .lock()
                            .expect("routes")
                            .get(&(method.clone(), path.clone()))
                            .cloned()
                            .unwrap_or_else(|| Answer::status(404));
                        let length = answer.claimed_length.unwrap_or(answer.body.len());
                        let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: {length}\r\n", answer.status);
                        for (name, value) in &answer.headers {
                            head.push_str(&format!("{name}: {value}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = stream.write_all(head.as_bytes());
                        if method != "HEAD" {
                            let _ = stream.write_all(&answer.body);
                        }
                        if answer.claimed_length.is_some() {
                            return;
                        }
                    }
                });
            }
        });
        Server { base, routes, seen }
    }

    pub fn route(&self, method: &str, path: &str, answer: Answer) {
        self.routes.lock().expect("routes").insert((method.to_string(), path.to_string()), answer);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}
