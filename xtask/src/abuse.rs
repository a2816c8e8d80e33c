//! `cargo xtask soak --abuse`: 2,000 idle connections and 100 slow clients (one header byte
//! a second) held open against lore, while 2,000 normal requests are made from 8 threads; the
//! same normal requests without the abuse are the baseline (same run). Against lore directly,
//! behind nginx, and in the container when podman and `target/container/` are there.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const KEY: &str = "YWJ1c2Uta2V5LW5vdC1mb3ItcmVhbC11c2UtMDAwMDA=";
const IDLE: usize = 2000;
const SLOW: usize = 100;
const NORMAL: usize = 2000;
const THREADS: usize = 8;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !normal_request(port).is_ok_and(|ok| ok) {
        if Instant::now() > deadline {
            bail!("nothing answered on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn normal_request(port: u16) -> Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /v1/query?q=what+robots+do+you+build&k=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(raw.starts_with(b"HTTP/1.1 200"))
}

/// `NORMAL` requests from `THREADS` threads: (successes, p50, p99).
fn normal_load(port: u16) -> (usize, Duration, Duration) {
    let ok = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let mut times: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < NORMAL {
                        let t = Instant::now();
                        if normal_request(port).is_ok_and(|good| good) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push(t.elapsed());
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    times.sort();
    let at = |q: f64| times.get(((times.len().saturating_sub(1)) as f64 * q) as usize).copied().unwrap_or_default();
    (ok.load(Ordering::Relaxed), at(0.5), at(0.99))
}

/// Hold `IDLE` idle connections (half with a partial request line) and `SLOW` slow clients
/// while `f` runs; returns `f`'s result and how many abusive connections were still open.
fn under_abuse<T>(port: u16, f: impl FnOnce() -> T) -> Result<(T, usize)> {
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(("127.0.0.1", port)).context("an idle connection")?;
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /v1/query?q=");
        }
        idle.push(s);
    }
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|scope| -> Result<T> {
        let slow = scope.spawn(|| -> Result<()> {
            let mut clients = Vec::with_capacity(SLOW);
            for _ in 0..SLOW {
                clients.push(TcpStream::connect(("127.0.0.1", port))?);
            }
            let request =
                b"GET /v1/query?q=slow HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let mut at = 0;
            while !stop.load(Ordering::Relaxed) {
                for c in &mut clients {
                    let _ = c.write_all(&request[at % request.len()..at % request.len() + 1]);
                }
                at += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        });
        let value = f();
        stop.store(true, Ordering::Relaxed);
        slow.join().map_err(|_| anyhow::anyhow!("the slow clients' thread panicked"))??;
        Ok(value)
    })?;
    // How many idle connections the server still holds open (a read that would block).
    let open = idle
        .iter_mut()
        .map(|s| {
            let _ = s.set_nonblocking(true);
            matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .filter(|still_open| *still_open)
        .count();
    Ok((result, open))
}

fn row(label: &str, port: u16) -> Result<()> {
    let (base_ok, base_p50, base_p99) = normal_load(port);
    let ((ok, p50, p99), open) = under_abuse(port, || normal_load(port))?;
    println!(
        "| {label} | {base_ok}/{NORMAL} · p50 {:.1} ms · p99 {:.1} ms | {ok}/{NORMAL} · p50 {:.1} ms · p99 {:.1} ms | {open} |",
        base_p50.as_secs_f64() * 1e3,
        base_p99.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    if ok < NORMAL {
        bail!("{label}: {} normal requests failed under abuse", NORMAL - ok);
    }
    Ok(())
}

pub fn run(root: &Path) -> Result<()> {
    let model = crate::model::fetch(root)?;
    crate::run_checked(crate::cargo().args(["build", "--release", "--bins", "--quiet"]))?;
    let bin = root.join("target/release");
    let work = root.join("target/abuse");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let artifact = work.join("data.lore");
    crate::bench::lorec_build(&bin, &model, &root.join("data"), &artifact, None, KEY)?;
    println!(
        "| target | normal requests alone | with {IDLE} idle + {SLOW} slow connections | abusive connections still open after |"
    );
    println!("|---|---|---|---|");

    let lore = |port: u16| -> Result<crate::KillOnDrop> {
        Ok(crate::KillOnDrop(
            Command::new(bin.join("lore"))
                .arg("serve")
                .arg(&artifact)
                .args(["--http", &format!("127.0.0.1:{port}"), "--max-connections", "4096"])
                .env("LORE_KEY", KEY)
                .env("LORE_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    };
    let direct = free_port()?;
    let _direct = lore(direct)?;
    wait_for(direct)?;
    row("lore directly (`--max-connections 4096`)", direct)?;

    // nginx in front of a second lore: nginx holds the abusive connections.
    let upstream = free_port()?;
    let _upstream = lore(upstream)?;
    wait_for(upstream)?;
    let front = free_port()?;
    let prefix = work.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {}/{t};\n", prefix.display()))
        .collect();
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "worker_processes 1;\nworker_rlimit_nofile 16384;\nerror_log stderr crit;\npid {}/nginx.pid;\nevents {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n{temp}  client_header_timeout 10s;\n  upstream lore {{ server 127.0.0.1:{upstream}; keepalive 32; }}\n  server {{\n    listen 127.0.0.1:{front} backlog=4096;\n    location / {{ proxy_pass http://lore; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
            prefix.display()
        ),
    )?;
    let _nginx = crate::KillOnDrop(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .args(["-e", "stderr", "-c"])
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nginx (apt-get install nginx)")?,
    );
    wait_for(front)?;
    row("behind nginx", front)?;

    // The image, when it has been built.
    let context = root.join("target/container");
    let podman = Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success());
    if podman && context.join("lore").exists() {
        let key = std::fs::read_to_string(root.join("artifacts/demo.key"))?.trim().to_string();
        let tag = "localhost/lore-abuse:latest";
        crate::run_checked(
            Command::new("podman").args(["build", "-q", "-f", "Containerfile", "-t", tag, "."]).current_dir(root),
        )?;
        let port = free_port()?;
        let name = "lore-abuse";
        let _ = Command::new("podman").args(["rm", "-f", name]).output();
        crate::run_checked(
            Command::new("podman")
                .args([
                    "run",
                    "-d",
                    "--read-only",
                    "--name",
                    name,
                    "-p",
                    &format!("127.0.0.1:{port}:7860"),
                    // The key goes through the environment, not the command line that run_checked prints.
                    "-e",
                    "LORE_KEY",
                    "-e",
                    "LORE_MAX_CONNECTIONS=4096",
                    "-e",
                    "LORE_LOG=error",
                    tag,
                ])
                .env("LORE_KEY", &key),
        )?;
        let result = wait_for(port).and_then(|()| row("the container (`LORE_MAX_CONNECTIONS=4096`)", port));
        let _ = Command::new("podman").args(["rm", "-f", name]).output();
        let _ = Command::new("podman").args(["rmi", "-f", tag]).output();
        result?;
    } else {
        println!("| the container | not measured: needs podman and `cargo xtask container` | | |");
    }
    Ok(())
}
