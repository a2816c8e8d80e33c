//! `cargo xtask bench`, the service-layer part: swap time (trigger to the first answer from
//! the new artifact), HTTP throughput steady and while swapping once a second, and peak RSS
//! with two variants loaded. Each figure is paired with a baseline taken in the same run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const ADMIN_TOKEN: &str = "bench-admin-token-not-secret-0000";

/// A `lore serve --http` child.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// `lore serve ARGS --http 127.0.0.1:0`, quiet, with `key` and the admin token.
    pub fn start(lore: &Path, args: &[&str], key: &str) -> Result<Server> {
        Server::start_with_env(lore, args, key, &[])
    }

    /// `start` with more environment variables.
    pub fn start_with_env(lore: &Path, args: &[&str], key: &str, env: &[(&str, &str)]) -> Result<Server> {
        let mut child = Command::new(lore)
            .arg("serve")
            .args(args)
            .args(["--http", "127.0.0.1:0"])
            .env("LORE_KEY", key)
            .env("LORE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("LORE_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("lore serve exited before listening");
            }
            if let Some(rest) = line.trim().strip_prefix("lore: listening on http://") {
                break rest.to_string();
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Server { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request over a fresh connection; returns (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: lore\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

pub fn reload(addr: &str) -> Result<()> {
    let (status, body) = http(addr, "POST", "/admin/reload", &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))])?;
    if status != 200 {
        bail!("POST /admin/reload answered {status}: {body}");
    }
    Ok(())
}

pub fn rename_over(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_extension("incoming");
    std::fs::copy(src, &tmp)?;
    std::fs::rename(&tmp, dst)?;
    Ok(())
}

/// Build the same knowledge base twice, as two artifact versions, so every swap changes it.
pub fn two_builds(bin: &Path, model: &Path, kb: &Path, work: &Path, slug: &str, key: &str) -> Result<[PathBuf; 2]> {
    let mut out = Vec::new();
    for version in ["1.0.0", "1.0.1"] {
        let path = work.join(format!("{slug}-{version}.lore"));
        let built = Command::new(bin.join("lorec"))
            .arg("build")
            .arg(kb)
            .arg("-o")
            .arg(&path)
            .arg("--model")
            .arg(model)
            .args(["--embedder", crate::model::embedder_of(model)])
            .args(["--artifact-version", version, "--no-cache"])
            .env("LORE_KEY", key)
            .env("LORE_LOG", "warn")
            .output()?;
        if !built.status.success() {
            bail!("lorec build {} failed:\n{}", kb.display(), String::from_utf8_lossy(&built.stderr));
        }
        out.push(path);
    }
    Ok([out[0].clone(), out[1].clone()])
}

/// Median time from renaming the other build over the served path and calling
/// `POST /admin/reload`, to the first answer that comes from the new build.
fn swap_time(
    lore: &Path,
    builds: &[PathBuf; 2],
    work: &Path,
    slug: &str,
    key: &str,
    rounds: usize,
) -> Result<Duration> {
    let live = work.join(format!("{slug}-live.lore"));
    rename_over(&builds[0], &live)?;
    let server = Server::start(lore, &[live.to_str().context("utf8")?, "--watch-ms", "0"], key)?;
    let mut times = Vec::new();
    for round in 1..=rounds {
        let next = &builds[round % 2];
        let want = if round % 2 == 0 { "1.0.0" } else { "1.0.1" };
        // Staging the file is the deploy's work, not the swap's: it is renamed in before the clock starts.
        let staged = live.with_extension("staged");
        std::fs::copy(next, &staged)?;
        let t = Instant::now();
        std::fs::rename(&staged, &live)?;
        reload(&server.addr)?;
        loop {
            let (status, body) = http(&server.addr, "GET", "/v1/query?q=what%20do%20you%20do&k=1", &[])?;
            if status != 200 {
                bail!("a query failed during the swap: {status} {body}");
            }
            let v: serde_json::Value = serde_json::from_str(&body)?;
            if v["artifact"]["version"] == want {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the swap to {want} never showed");
            }
        }
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// wrk against one server for `secs`; with `swap_every`, a thread renames the other build over
/// the served path and reloads at that period meanwhile. Returns (req/s, swaps done).
fn throughput(
    lore: &Path,
    builds: &[PathBuf; 2],
    work: &Path,
    key: &str,
    swap_every: Option<Duration>,
) -> Result<(f64, usize)> {
    let live = work.join("throughput-live.lore");
    rename_over(&builds[0], &live)?;
    let server = Server::start(lore, &[live.to_str().context("utf8")?, "--watch-ms", "0"], key)?;
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = swap_every.map(|every| {
        let (stop, swaps, addr, builds, live) =
            (stop.clone(), swaps.clone(), server.addr.clone(), builds.clone(), live.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut round = 1;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                rename_over(&builds[round % 2], &live)?;
                reload(&addr)?;
                swaps.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
            Ok(())
        })
    });
    let url = format!("http://{}/v1/query?q=what%20do%20you%20like%20to%20read&k=5", server.addr);
    let out = Command::new("wrk").args(["-t2", "-c64", "-d10s", &url]).output()?;
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = swapper {
        s.join().map_err(|_| anyhow::anyhow!("the swap thread panicked"))??;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw failed requests:\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    Ok((rps, swaps.load(Ordering::Relaxed)))
}

/// Peak RSS of one process serving two variants of a knowledge base, after questions to each.
fn two_variant_rss(lore: &Path, builds: &[PathBuf; 2], work: &Path, key: &str) -> Result<u64> {
    let config = work.join("two-variants.toml");
    std::fs::write(
        &config,
        format!(
            "[[kb]]\nname = \"kb\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"{}\"\nweight = 50\n[[kb.variant]]\nname = \"b\"\nartifact = \"{}\"\nweight = 50\n",
            builds[0].display(),
            builds[1].display()
        ),
    )?;
    let server = Server::start(lore, &["--config", config.to_str().context("utf8")?, "--watch-ms", "0"], key)?;
    for i in 0..200 {
        let variant = if i % 2 == 0 { "a" } else { "b" };
        let (status, body) = http(
            &server.addr,
            "GET",
            "/v1/query?q=which%20book%20changed%20how%20you%20think&k=5",
            &[("X-Lore-Variant", variant)],
        )?;
        if status != 200 {
            bail!("{status} {body}");
        }
    }
    Ok(server.rss_peak_kib())
}

/// The service-layer table: seed-kb and the 100k-chunk knowledge base.
pub fn run(bin: &Path, model: &Path, work: &Path, kbs: &[(String, PathBuf)], key: &str, wrk: bool) -> Result<()> {
    let lore = bin.join("lore");
    println!("\nservice layer (`lore serve --http`, swaps by rename + POST /admin/reload):\n");
    println!(
        "| knowledge base | swap p50 (trigger → first new answer) | HTTP req/s steady | HTTP req/s swapping 1/s | ratio | swaps during run | peak RSS, 2 variants |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, dir) in kbs {
        let slug: String = name.chars().filter(|c| c.is_alphanumeric()).collect();
        let builds = two_builds(bin, model, dir, work, &slug, key)?;
        let swap = swap_time(&lore, &builds, work, &slug, key, 21)?;
        let (steady, swapping, swaps) = if wrk {
            let (steady, _) = throughput(&lore, &builds, work, key, None)?;
            let (swapping, swaps) = throughput(&lore, &builds, work, key, Some(Duration::from_secs(1)))?;
            (Some(steady), Some(swapping), swaps)
        } else {
            (None, None, 0)
        };
        let rss = two_variant_rss(&lore, &builds, work, key)?;
        let fmt = |v: Option<f64>| v.map_or("–".to_string(), |r| format!("{r:.0}"));
        println!(
            "| {name} | {:.2} ms | {} | {} | {} | {swaps} | {:.1} MiB |",
            swap.as_secs_f64() * 1000.0,
            fmt(steady),
            fmt(swapping),
            match (steady, swapping) {
                (Some(a), Some(b)) => format!("{:.0}%", 100.0 * b / a),
                _ => "–".into(),
            },
            rss as f64 / 1024.0
        );
    }
    Ok(())
}
