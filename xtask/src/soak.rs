//! `cargo xtask soak`: one million requests (`--requests N`) on loopback at concurrency 64
//! from a keep-alive load generator in this process, against a release `lore serve` of data/
//! (potion), with its RSS sampled every second. `--swaps` also renames the other build over
//! the served file and reloads once a second for the whole run. Passes with 0 errors and a
//! peak RSS at the end within 5% of the peak after the first 100k requests.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench_service::{Server, reload, rename_over, two_builds};

const KEY: &str = "c29hay1rZXktbm90LWZvci1yZWFsLXVzZS0wMDAwMDA=";
const CONCURRENCY: usize = 64;
const WARM: u64 = 100_000;
const QUESTIONS: [&str; 4] = [
    "what%20do%20you%20like%20to%20read",
    "what%20kind%20of%20robots%20do%20you%20build",
    "where%20did%20you%20study",
    "what%20is%20the%20capital%20of%20peru",
];

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One keep-alive connection asking questions until `remaining` runs out; counts errors.
fn client(addr: &str, worker: usize, remaining: &AtomicU64, done: &AtomicU64, errors: &AtomicU64) -> Result<()> {
    let connect = || -> Result<(TcpStream, BufReader<TcpStream>)> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = BufReader::new(s.try_clone()?);
        Ok((s, r))
    };
    let (mut stream, mut reader) = connect()?;
    let mut i = worker;
    let mut line = String::new();
    let mut body = Vec::new();
    while remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
        i += 1;
        let q = QUESTIONS[i % QUESTIONS.len()];
        let ok = (|| -> Result<bool> {
            write!(stream, "GET /v1/query?q={q}&k=5 HTTP/1.1\r\nHost: lore\r\n\r\n")?;
            line.clear();
            reader.read_line(&mut line)?;
            let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let mut length = 0usize;
            let mut close = false;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    bail!("the connection closed mid-response");
                }
                if line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                close |= lower.starts_with("connection: close");
            }
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
            if close {
                (stream, reader) = connect()?;
            }
            Ok(status == 200)
        })();
        match ok {
            Ok(true) => {}
            Ok(false) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                (stream, reader) = connect()?;
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

pub fn run(root: &Path, requests: u64, swaps: bool) -> Result<()> {
    let model = crate::model::fetch(root)?;
    crate::run_checked(crate::cargo().args(["build", "--release", "--bins", "--quiet"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let bin = target.join("release");
    let work = root.join("target/soak");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let builds = two_builds(&bin, &model, &root.join("data"), &work, "soak", KEY)?;
    let live = work.join("live.lore");
    rename_over(&builds[0], &live)?;
    let server = Server::start(&bin.join("lore"), &[live.to_str().context("utf8")?, "--watch-ms", "0"], KEY)?;
    let pid = server.pid();
    let (remaining, done, errors) = (AtomicU64::new(requests), AtomicU64::new(0), AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let swapped = AtomicU64::new(0);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    let mut warm_peak = None;
    std::thread::scope(|scope| -> Result<()> {
        let mut workers = Vec::new();
        for w in 0..CONCURRENCY {
            let (addr, remaining, done, errors) = (&server.addr, &remaining, &done, &errors);
            workers.push(scope.spawn(move || client(addr, w, remaining, done, errors)));
        }
        let swapper = swaps.then(|| {
            let (stop, addr, builds, live, swapped) = (stop.clone(), &server.addr, &builds, &live, &swapped);
            scope.spawn(move || -> Result<()> {
                let mut round = 1;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    rename_over(&builds[round % 2], live)?;
                    reload(addr)?;
                    swapped.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
                Ok(())
            })
        });
        while workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_secs(1));
            let n = done.load(Ordering::Relaxed);
            samples.push((n, rss_kib(pid, "VmRSS:")));
            if warm_peak.is_none() && n >= WARM.min(requests) {
                warm_peak = Some(rss_kib(pid, "VmHWM:"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        if let Some(s) = swapper {
            s.join().map_err(|_| anyhow::anyhow!("the swap thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let end_peak = rss_kib(pid, "VmHWM:");
    let warm_peak = warm_peak.unwrap_or(end_peak);
    drop(server);
    let n = done.load(Ordering::Relaxed);
    let e = errors.load(Ordering::Relaxed);
    let growth = (end_peak as f64 / warm_peak.max(1) as f64 - 1.0) * 100.0;
    let rss: Vec<u64> = samples.iter().map(|s| s.1).collect();
    let pick = |q: f64| rss.get(((rss.len().saturating_sub(1)) as f64 * q) as usize).copied().unwrap_or(0);
    println!(
        "soak: {} s, {:.0} requests/s, concurrency {CONCURRENCY}{}",
        elapsed.as_secs(),
        n as f64 / elapsed.as_secs_f64(),
        if swaps { format!(", {} hot swaps", swapped.load(Ordering::Relaxed)) } else { String::new() }
    );
    println!(
        "rss curve (KiB, sampled each second): start {} · 25% {} · 50% {} · 75% {} · end {}",
        pick(0.0),
        pick(0.25),
        pick(0.5),
        pick(0.75),
        pick(1.0)
    );
    println!("requests: {n}");
    println!("errors: {e}");
    println!(
        "rss peak after {} requests: {warm_peak} KiB; at the end: {end_peak} KiB ({growth:+.1}%)",
        WARM.min(requests)
    );
    if e > 0 || n < requests {
        bail!("{e} errors, {n} of {requests} requests done");
    }
    if growth > 5.0 {
        bail!("peak RSS grew {growth:.1}% after the first {WARM} requests");
    }
    Ok(())
}
