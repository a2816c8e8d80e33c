//! `cargo xtask bench --container`: the image's size, and the time from `podman run` to the
//! first answer over HTTP, next to the same static `lore` started directly on the same
//! artifact (the baseline, measured in the same run). Medians of several rounds.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const ROUNDS: usize = 7;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Poll `GET /v1/query` on `port` until it answers 200; the time since `started`.
fn first_answer(port: u16, started: Instant) -> Result<Duration> {
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let _ = write!(
                s,
                "GET /v1/query?q=what+robots+do+you+build&k=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            if raw.starts_with("HTTP/1.1 200") {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no answer on {port} within a minute");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn podman(args: &[&str]) -> Result<String> {
    let out = Command::new("podman").args(args).output().context("podman")?;
    if !out.status.success() {
        bail!("podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(root: &Path) -> Result<()> {
    crate::run_checked(crate::cargo().args(["build", "--release", "--package", "compiler", "--bin", "lorec"]))?;
    let context = crate::container::context(root, &root.join("target/release/lorec"), false)?;
    let key = std::fs::read_to_string(root.join("artifacts/demo.key"))?.trim().to_string();
    let tag = "localhost/lore-bench:latest";
    crate::run_checked(
        Command::new("podman").args(["build", "-q", "-f", "Containerfile", "-t", tag, "."]).current_dir(root),
    )?;
    let size: u64 = podman(&["image", "inspect", "--format", "{{.Size}}", tag])?.parse()?;
    let mut container = Vec::new();
    for round in 0..ROUNDS {
        let port = free_port()?;
        let name = format!("lore-bench-{round}");
        let _ = podman(&["rm", "-f", &name]);
        let started = Instant::now();
        let out = Command::new("podman")
            .args([
                "run",
                "-d",
                "--read-only",
                "--name",
                &name,
                "-p",
                &format!("127.0.0.1:{port}:7860"),
                "-e",
                "LORE_KEY",
                tag,
            ])
            .env("LORE_KEY", &key)
            .output()?;
        if !out.status.success() {
            bail!("podman run: {}", String::from_utf8_lossy(&out.stderr));
        }
        let t = first_answer(port, started);
        let _ = podman(&["rm", "-f", &name]);
        container.push(t?);
    }
    let mut direct = Vec::new();
    for _ in 0..ROUNDS {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new(context.join("lore"))
            .args(["serve"])
            .arg(context.join("data.lore"))
            .args(["--http", &format!("127.0.0.1:{port}")])
            .env("LORE_KEY", &key)
            .env("LORE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t = first_answer(port, started);
        let _ = child.kill();
        let _ = child.wait();
        direct.push(t?);
    }
    let _ = podman(&["rmi", "-f", tag]);
    let (c, d) = (median(container), median(direct));
    let lore_bytes = std::fs::metadata(context.join("lore"))?.len();
    let artifact_bytes = std::fs::metadata(context.join("data.lore"))?.len();
    println!(
        "| image size | {:.2} MB ({lore_bytes} bytes of lore, {artifact_bytes} of data.lore) |",
        size as f64 / 1e6
    );
    println!("| `podman run` to first answer, median of {ROUNDS} | {:.0} ms |", c.as_secs_f64() * 1000.0);
    println!("| the same lore started directly to first answer (baseline) | {:.1} ms |", d.as_secs_f64() * 1000.0);
    println!("| container / direct | {:.0}x |", c.as_secs_f64() / d.as_secs_f64());
    Ok(())
}
