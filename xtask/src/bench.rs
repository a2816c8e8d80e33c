//! `cargo xtask bench`: compile times, cold start, query latency and peak RSS, measured with
//! the release binaries on this machine. Numbers go to stdout as a table; BENCHMARKS.md keeps
//! the latest run. `--quick` is CI's smoke run: it checks the pipeline works, not its speed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// A fixed key for benchmark artifacts (never used for real data).
const BENCH_KEY: &str = "YmVuY2htYXJrLWtleS1ub3QtZm9yLXJlYWwtdXNlLTA=";

struct Kb {
    name: &'static str,
    dir: PathBuf,
    question: &'static str,
}

pub fn run(root: &Path, quick: bool) -> Result<()> {
    let model = crate::model::fetch(root)?;
    let profile = if quick { "debug" } else { "release" };
    let mut build = crate::cargo();
    build.args(["build", "--bins", "--quiet"]);
    if !quick {
        build.arg("--release");
    }
    crate::run_checked(&mut build)?;
    let bin = root.join("target").join(profile);
    let work = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let seed = fixed_seed_kb(root, &work)?;
    let kbs = vec![
        Kb { name: "data/", dir: root.join("data"), question: "What kind of robots do you build?" },
        Kb { name: "seed-kb (fixed)", dir: seed, question: "What did you do at Autodesk?" },
    ];
    let runs = if quick { 3 } else { 60 };
    println!(
        "| knowledge base | compile (cold cache) | compile (warm cache) | artifact | cold start p50 (exec → first answer) | baseline exec p50 | query p50 | query p99 | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for kb in &kbs {
        let out = work.join(format!("{}.lore", kb.name.replace(['/', ' ', '(', ')'], "")));
        let cache = work.join("cache");
        let _ = std::fs::remove_dir_all(&cache);
        let lorec = |cache: &Path| -> Result<Duration> {
            let t = Instant::now();
            let status = Command::new(bin.join("lorec"))
                .arg("build")
                .arg(&kb.dir)
                .arg("-o")
                .arg(&out)
                .arg("--model")
                .arg(&model)
                .arg("--cache-dir")
                .arg(cache)
                .env("LORE_KEY", BENCH_KEY)
                .env("LORE_LOG", "warn")
                .status()?;
            if !status.success() {
                bail!("lorec build {} failed", kb.dir.display());
            }
            Ok(t.elapsed())
        };
        let cold = lorec(&cache)?;
        let warm = lorec(&cache)?;
        let size = std::fs::metadata(&out)?.len();

        let mut starts = Vec::new();
        let mut baseline = Vec::new();
        for _ in 0..runs {
            baseline.push(time_exec(&bin.join("lore"), &["--version"])?);
            let (t, line) = cold_start(&bin.join("lore"), &out, kb.question)?;
            let answer: serde_json::Value = serde_json::from_str(&line).context("answer is not JSON")?;
            if answer["hits"].as_array().is_none_or(|h| h.is_empty()) {
                bail!("{}: the benchmark question got no hits: {line}", kb.name);
            }
            starts.push(t);
        }
        let (p50, p99, rss) = in_process(&bin.join("lore"), &out, if quick { 200 } else { 5000 })?;
        println!(
            "| {} | {} | {} | {:.1} MiB | {} | {} | {:.1} µs | {:.1} µs | {:.1} MiB |",
            kb.name,
            ms(cold),
            ms(warm),
            size as f64 / (1024.0 * 1024.0),
            ms(median(&mut starts)),
            ms(median(&mut baseline)),
            p50,
            p99,
            rss as f64 / 1024.0
        );
    }
    if quick {
        println!("bench --quick: pipeline ok (timings from a debug build are not benchmark figures)");
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_exec(bin: &Path, args: &[&str]) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(bin).args(args).stdout(Stdio::null()).status()?;
    if !out.success() {
        bail!("{} failed", bin.display());
    }
    Ok(t.elapsed())
}

/// Exec `lore serve` on stdin, send one question, and time until its answer line arrives.
fn cold_start(lore: &Path, artifact: &Path, question: &str) -> Result<(Duration, String)> {
    let t = Instant::now();
    let mut child = Command::new(lore)
        .arg("serve")
        .arg(artifact)
        .env("LORE_KEY", BENCH_KEY)
        .env("LORE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    writeln!(stdin, "{}", serde_json::json!({"q": question}))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let elapsed = t.elapsed();
    drop(stdin);
    child.wait()?;
    Ok((elapsed, line))
}

/// Query latency as the engine reports it (`took_us`, measured inside the process around
/// `Engine::query`), over `n` questions on one warm process; plus that process's peak RSS.
fn in_process(lore: &Path, artifact: &Path, n: usize) -> Result<(f64, f64, u64)> {
    let questions = [
        "What kind of robots do you build?",
        "Where did you study?",
        "What music do you like?",
        "What are your core values?",
        "Which programming languages do you know?",
        "What is the capital of France?",
        "Tell me about your side projects",
        "What books have shaped you?",
    ];
    let mut child = Command::new(lore)
        .arg("serve")
        .arg(artifact)
        .env("LORE_KEY", BENCH_KEY)
        .env("LORE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut reader = BufReader::new(child.stdout.take().context("stdout")?);
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        writeln!(stdin, "{}", serde_json::json!({"q": questions[i % questions.len()], "k": 5}))?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        took.push(v["took_us"].as_f64().context("took_us")?);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    drop(stdin);
    child.wait()?;
    // The first few answers include decrypting text blocks; the table reports steady state.
    let mut steady: Vec<f64> = took.into_iter().skip(questions.len()).collect();
    steady.sort_by(f64::total_cmp);
    let pick = |q: f64| steady[((steady.len() - 1) as f64 * q).round() as usize];
    Ok((pick(0.5), pick(0.99), rss_kib))
}

/// A copy of seed-kb with its known defects repaired: the job entry that lost its `- ` and
/// the empty list item beside it.
pub fn fixed_seed_kb(root: &Path, work: &Path) -> Result<PathBuf> {
    let src = root.join("../shared/fixtures/seed-kb");
    let dst = work.join("seed-kb");
    copy_dir(&src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
    let file = dst.join("career/work_experience.yaml");
    let text = std::fs::read_to_string(&file)?;
    let fixed = text.replacen("\n  id: autodesk\n", "\n- id: autodesk\n", 1).replacen("\n  - \n", "\n", 1);
    if fixed == text {
        bail!("seed-kb no longer has the expected defect; update fixed_seed_kb");
    }
    std::fs::write(&file, fixed)?;
    Ok(dst)
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
            let mut perms = std::fs::metadata(&to)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&to, perms)?;
        }
    }
    Ok(())
}
