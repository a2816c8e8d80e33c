//! Replicas that share conversations: a real PostgreSQL cluster (Debian's `postgresql`,
//! `initdb` into a temporary folder) and a real nginx in front of two `lore` replicas, all on
//! loopback. A conversation goes on across replicas; one replica is killed with SIGKILL and the
//! other carries on without losing an acknowledged turn; nothing readable is stored.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const MEMORY_KEY: &str = "cmVwbGljYS1tZW1vcnkta2V5LWZvci10ZXN0cy0wMDA=";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL cluster of its own, stopped on drop.
pub(crate) struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    pub(crate) port: u16,
}

impl PgCluster {
    fn bin_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("LORE_PG_BIN") {
            return PathBuf::from(dir);
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
            .unwrap_or_default();
        versions.sort();
        versions.pop().unwrap_or_else(|| {
            panic!("PostgreSQL is not installed: `apt-get install postgresql` (`.ci/run` does), or set LORE_PG_BIN")
        })
    }

    /// Run a server binary, as the `postgres` user when we are root (initdb refuses root).
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    pub(crate) fn start(tmp: &TempDir) -> PgCluster {
        let data = tmp.path().join("pg");
        std::fs::create_dir_all(&data).expect("pg dir");
        if is_root() {
            // The server runs as `postgres`: it must own its folder and reach it.
            let mut dir = data.clone();
            while let Some(parent) = dir.parent() {
                let _ = Command::new("chmod").arg("o+x").arg(parent).status();
                dir = parent.to_path_buf();
            }
            assert!(
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data).status().expect("chown").success()
            );
        }
        let cluster = PgCluster { bin: Self::bin_dir(), data: data.clone(), port: free_port() };
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(data.join("cluster"))
            .args(["-U", "lore", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", cluster.port, data.display());
        let out = cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(data.join("cluster"))
            .args(["-o", &options, "-l"])
            .arg(data.join("log"))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(data.join("log")).unwrap_or_default()
        );
        cluster
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://lore@127.0.0.1:{}/postgres", self.port)
    }

    /// Everything the database holds, as `pg_dump` writes it.
    fn dump(&self) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "lore", "postgres"])
            .output()
            .expect("pg_dump runs");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ =
            self.command("pg_ctl").arg("-D").arg(self.data.join("cluster")).args(["-m", "immediate", "stop"]).output();
    }
}

/// nginx in front of `upstreams`, round robin, passing a request on when a replica is down.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
}

impl Nginx {
    pub(crate) fn start(tmp: &TempDir, upstreams: &[String], extra_http: &str) -> Nginx {
        let binary = std::env::var("LORE_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        assert!(
            Path::new(&binary).exists(),
            "nginx is not installed: `apt-get install nginx` (`.ci/run` does), or set LORE_NGINX"
        );
        let prefix = tmp.path().join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let port = free_port();
        let servers: String =
            upstreams.iter().map(|u| format!("    server {u} max_fails=1 fail_timeout=30s;\n")).collect();
        let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("  {t}_temp_path {}/{t};\n", prefix.display()))
            .collect();
        let config = format!(
            "worker_processes 1;\nerror_log stderr warn;\npid {prefix}/nginx.pid;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n{temp}{extra_http}\n  upstream lore {{\n{servers}    keepalive 32;\n  }}\n\
               server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{\n      proxy_pass http://lore;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n\
                 proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n",
            prefix = prefix.display()
        );
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config).expect("nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        wait_for_port(port, "nginx");
        Nginx { child, port }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request over a fresh connection to `port`: (status, x-request-id, body).
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: lore\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let id = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-request-id:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    (status, id, body.to_string())
}

fn turns(port: u16, session: &str) -> Vec<(String, String)> {
    let (status, _, body) = request(port, "GET", &format!("/v1/sessions/{session}"), None);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .map(|t| {
            (t["role"].as_str().unwrap_or_default().to_string(), t["text"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn a_conversation_goes_on_across_replicas_behind_nginx_and_survives_one_being_killed() {
    let tmp = TempDir::new("replicas");
    let pg = PgCluster::start(&tmp);
    let art = tmp.path().join("data.lore");
    assert_eq!(build(&workspace().join("data"), &art, &[]).code, 0);
    let key_file = tmp.write("memory.key", MEMORY_KEY);
    let memory = pg.url();
    let extra = ["--memory", memory.as_str(), "--memory-key-file", key_file.to_str().expect("utf-8")];
    // Both start at once: the schema migration's advisory lock keeps them from racing.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| crate::serve::Server::start_with(&art, &extra));
        let b = s.spawn(|| crate::serve::Server::start_with(&art, &extra));
        (a.join().expect("replica a"), b.join().expect("replica b"))
    });
    let port_of = |server: &crate::serve::Server| -> u16 {
        server.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    };
    let (port_a, port_b) = (port_of(&a), port_of(&b));
    let nginx = Nginx::start(&tmp, &[a.addr.clone(), b.addr.clone()], "");

    let session = "replicated-visitor";
    let questions = [
        "What kind of robots do you build?",
        "And before that?",
        "Which languages do you write?",
        "Where did you study?",
        "What are you reading lately?",
        "Any favourite films?",
    ];
    let mut served_by = std::collections::BTreeSet::new();
    for q in questions {
        let (status, id, body) =
            request(nginx.port, "POST", "/v1/chat", Some(&json!({"session_id": session, "message": q})));
        assert_eq!(status, 200, "{body}");
        served_by.insert(id.split('-').next().unwrap_or_default().to_string());
    }
    assert_eq!(served_by.len(), 2, "nginx spread the conversation over both replicas: {served_by:?}");
    let expected: Vec<String> = questions.iter().map(|q| (*q).to_string()).collect();
    for port in [port_a, port_b] {
        let seen = turns(port, session);
        assert_eq!(seen.len(), 12, "{seen:?}");
        let asked: Vec<String> = seen.iter().filter(|(role, _)| role == "user").map(|(_, t)| t.clone()).collect();
        assert_eq!(asked, expected, "every replica sees the whole conversation, in order");
    }

    // Replica a dies mid-conversation; nginx passes requests on to b, and nothing acknowledged
    // is lost.
    let mut a = a;
    a.child.kill().expect("kill -9");
    let _ = a.child.wait();
    let more = ["What did you build at your first job?", "And the one after?", "Thanks!"];
    for q in more {
        let (status, _, body) =
            request(nginx.port, "POST", "/v1/chat", Some(&json!({"session_id": session, "message": q})));
        assert_eq!(status, 200, "{body}");
    }
    let seen = turns(port_b, session);
    let asked: Vec<String> = seen.iter().filter(|(role, _)| role == "user").map(|(_, t)| t.clone()).collect();
    let all: Vec<String> = questions.iter().chain(&more).map(|q| (*q).to_string()).collect();
    assert_eq!(asked, all);

    // The database holds sealed bytes only.
    let dump = pg.dump();
    assert!(dump.contains("lore_memory_turns"), "the dump has the memory tables");
    for needle in ["robots do you build", "favourite films", session] {
        assert!(!dump.contains(needle), "the database holds {needle:?} in plaintext");
    }
    drop(b);
}

#[test]
fn the_postgres_password_in_lore_memory_never_reaches_the_log() {
    let tmp = TempDir::new("replicas-log");
    let pg = PgCluster::start(&tmp);
    let art = tmp.path().join("data.lore");
    assert_eq!(build(&workspace().join("data"), &art, &[]).code, 0);
    // trust authentication ignores the password; a `/` in it once slipped past the redaction.
    let url = format!("postgres://lore:pa55/w0rd:x@127.0.0.1:{}/postgres?sslmode=disable", pg.port);
    let mut child = lore()
        .arg("serve")
        .arg(&art)
        .args(["--http", "127.0.0.1:0"])
        .env("LORE_KEY", TEST_KEY)
        .env("LORE_MEMORY", &url)
        .env("LORE_MEMORY_KEY", MEMORY_KEY)
        .env("LORE_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).expect("read") > 0 {
        log.push_str(&line);
        if line.contains("lore: listening on") {
            break;
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("lore: listening on"), "{log}");
    assert!(log.contains(&format!("postgres://lore:***@127.0.0.1:{}/postgres", pg.port)), "{log}");
    assert!(!log.contains("pa55") && !log.contains("w0rd"), "the password is in the log:\n{log}");
    let help = run(lore().args(["serve", "--help"]).env("LORE_MEMORY", &url));
    assert!(!help.stdout.contains("pa55"), "`lore serve --help` shows the password");
}
