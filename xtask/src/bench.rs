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
    name: String,
    dir: PathBuf,
    question: &'static str,
    /// The model directory it is built with (the embedder follows from it).
    model: PathBuf,
}

/// One row of the results table.
struct Row {
    name: String,
    chunks: u64,
    compile: Duration,
    incremental: Option<Duration>,
    size: u64,
    cold_start: Duration,
    baseline: Duration,
    p50: f64,
    p99: f64,
    rss_kib: u64,
    http_rps: Option<f64>,
    /// With `LORE_BENCH_BASELINE`: the same knowledge base built and served by the binaries
    /// in that folder, measured in the same run (cold start p50, query p50 in µs, HTTP req/s).
    against: Option<(Duration, f64, Option<f64>)>,
}

pub fn run(root: &Path, quick: bool, service_only: bool) -> Result<()> {
    let model = crate::model::fetch(root)?;
    let profile = if quick { "debug" } else { "release" };
    let mut build = crate::cargo();
    build.args(["build", "--bins", "--quiet"]);
    // Quick runs (CI) reuse the binaries `cargo xtask test` just built with every feature,
    // instead of linking a second set: CI machines can be short of disk.
    build.arg(if quick { "--all-features" } else { "--release" });
    crate::run_checked(&mut build)?;
    // Where cargo put the binaries: CARGO_TARGET_DIR when set, else the workspace's target/.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join(profile);
    let work = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut kbs = Vec::new();
    // The persona knowledge bases with the default configuration (all-MiniLM-L6-v2 with
    // facets) and the fastest (potion, `--embedder potion`), in the same run; the service
    // bench and the synthetic scale rows use potion.
    let configurations = if quick || service_only {
        vec![("potion", model.clone())]
    } else {
        vec![("default: minilm", crate::model::fetch_spec(root, &crate::model::MINILM)?), ("potion", model.clone())]
    };
    let seed_kb = if quick { None } else { Some(fixed_seed_kb(root, &work)?) };
    for (label, configuration) in &configurations {
        if !quick && !service_only {
            kbs.push(Kb {
                name: format!("data/, {label}"),
                dir: root.join("data"),
                question: "What kind of robots do you build?",
                model: configuration.clone(),
            });
        }
        if let Some(dir) = &seed_kb {
            kbs.push(Kb {
                name: format!("seed-kb (fixed), {label}"),
                dir: dir.clone(),
                question: "What did you do at Autodesk?",
                model: configuration.clone(),
            });
        }
    }
    let sizes: &[usize] = match (quick, service_only) {
        (true, _) => &[1_000],
        (false, true) => &[100_000],
        (false, false) => &[1_000, 10_000, 100_000],
    };
    for &n in sizes {
        let dir = work.join(format!("synthetic-{n}"));
        crate::synth::generate(&dir, n)?;
        kbs.push(Kb {
            name: format!("synthetic {n}, potion"),
            dir,
            question: "Which book about sourdough baking changed how you think?",
            model: model.clone(),
        });
    }
    let wrk = !quick && ensure_wrk();
    if service_only {
        let service_kbs: Vec<(String, PathBuf)> = kbs.iter().map(|k| (k.name.clone(), k.dir.clone())).collect();
        return crate::bench_service::run(&bin, &model, &work, &service_kbs, BENCH_KEY, wrk);
    }
    // An earlier build's `lore` and `lorec` (say, of the previous release), to state what a
    // change costs against figures taken in this same run.
    let against = std::env::var_os("LORE_BENCH_BASELINE").map(PathBuf::from);
    println!(
        "| knowledge base | chunks | full compile | incremental (1 file changed) | artifact | cold start p50 | baseline exec p50 | query p50 | query p99 | peak RSS | HTTP req/s (wrk, 64 conn, 10 s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for kb in &kbs {
        let row = measure(&bin, &kb.model, &work, kb, quick, wrk, against.as_deref())?;
        println!(
            "| {} | {} | {} | {} | {:.1} MiB | {} | {} | {:.1} µs | {:.1} µs | {:.1} MiB ({:.2}× artifact) | {} |",
            row.name,
            row.chunks,
            ms(row.compile),
            row.incremental.map_or("–".into(), |d| format!(
                "{} ({:.0}% of full)",
                ms(d),
                100.0 * d.as_secs_f64() / row.compile.as_secs_f64()
            )),
            row.size as f64 / (1024.0 * 1024.0),
            ms(row.cold_start),
            ms(row.baseline),
            row.p50,
            row.p99,
            row.rss_kib as f64 / 1024.0,
            row.rss_kib as f64 * 1024.0 / row.size as f64,
            row.http_rps.map_or("–".into(), |r| format!("{r:.0}")),
        );
        rows.push(row);
    }
    if let Some(dir) = &against {
        println!("\nagainst the binaries in {} (same run):\n", dir.display());
        println!(
            "| knowledge base | cold start p50, baseline | cold start p50, now | difference | query p50, baseline | query p50, now | HTTP req/s, baseline | HTTP req/s, now |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for row in &rows {
            if let Some((cold, p50, http)) = row.against {
                let rps = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.0}"));
                println!(
                    "| {} | {} | {} | {:+.2} ms ({:.2}×) | {:.1} µs | {:.1} µs | {} | {} |",
                    row.name,
                    ms(cold),
                    ms(row.cold_start),
                    (row.cold_start.as_secs_f64() - cold.as_secs_f64()) * 1000.0,
                    row.cold_start.as_secs_f64() / cold.as_secs_f64(),
                    p50,
                    row.p50,
                    rps(http),
                    rps(row.http_rps),
                );
            }
        }
    }
    let service_kbs: Vec<(String, PathBuf)> = kbs
        .iter()
        .filter(|k| {
            let potion = k.model == model;
            potion
                && if quick {
                    k.name.starts_with("synthetic 1000,")
                } else {
                    k.name.starts_with("seed-kb") || k.name.starts_with("synthetic 100000,")
                }
        })
        .map(|k| (k.name.clone(), k.dir.clone()))
        .collect();
    crate::bench_service::run(&bin, &model, &work, &service_kbs, BENCH_KEY, wrk)?;
    crate::bench_chat::run(&bin, &configurations, root, &work, BENCH_KEY, quick)?;
    if quick {
        println!("bench --quick: pipeline ok (timings from a debug build are not benchmark figures)");
    }
    Ok(())
}

/// `cargo xtask bench --chat`: only the chat table (data/ with the default and with potion).
pub fn run_chat(root: &Path, quick: bool) -> Result<()> {
    let model = crate::model::fetch(root)?;
    let profile = if quick { "debug" } else { "release" };
    let mut build = crate::cargo();
    build.args(["build", "--bins", "--quiet"]);
    // Quick runs (CI) reuse the binaries `cargo xtask test` just built with every feature,
    // instead of linking a second set: CI machines can be short of disk.
    build.arg(if quick { "--all-features" } else { "--release" });
    crate::run_checked(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let work = root.join("target/bench-chat");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut configurations = vec![("potion", model)];
    if !quick {
        configurations.insert(0, ("default: minilm", crate::model::fetch_spec(root, &crate::model::MINILM)?));
    }
    crate::bench_chat::run(&target.join(profile), &configurations, root, &work, BENCH_KEY, quick)
}

/// `lorec build DIR -o OUT` with the given key; returns its wall time and chunk count.
pub fn lorec_build(
    bin: &Path,
    model: &Path,
    dir: &Path,
    out: &Path,
    cache: Option<&Path>,
    key: &str,
) -> Result<(Duration, u64)> {
    let mut cmd = Command::new(bin.join("lorec"));
    cmd.arg("build")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .arg("--model")
        .arg(model)
        .args(["--embedder", crate::model::embedder_of(model)])
        .env("LORE_KEY", key)
        .env("LORE_LOG", "info")
        .env("LORE_LOG_FORMAT", "json");
    match cache {
        Some(c) => cmd.arg("--cache-dir").arg(c),
        None => cmd.arg("--no-cache"),
    };
    // Flush what earlier runs left dirty, so this build's own fsync does not pay for them.
    let _ = Command::new("sync").status();
    let t = Instant::now();
    let output = cmd.stderr(Stdio::piped()).output()?;
    let elapsed = t.elapsed();
    if !output.status.success() {
        bail!("lorec build {} failed:\n{}", dir.display(), String::from_utf8_lossy(&output.stderr));
    }
    let log = String::from_utf8_lossy(&output.stderr);
    let chunks = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["fields"]["chunks"].as_u64())
        .unwrap_or(0);
    Ok((elapsed, chunks))
}

fn measure(
    bin: &Path,
    model: &Path,
    work: &Path,
    kb: &Kb,
    quick: bool,
    wrk: bool,
    against: Option<&Path>,
) -> Result<Row> {
    let slug: String = kb.name.chars().filter(|c| c.is_alphanumeric()).collect();
    let out = work.join(format!("{slug}.lore"));
    // Builds are timed several times and the median kept: single runs on this machine vary
    // by the time the kernel takes to take in the written file.
    let builds = if quick { 1 } else { 3 };
    let mut compiles = Vec::new();
    let mut chunks = 0;
    for _ in 0..builds {
        let (t, n) = lorec_build(bin, model, &kb.dir, &out, None, BENCH_KEY)?;
        compiles.push(t);
        chunks = n;
    }
    let compile = median(&mut compiles);
    let incremental = if kb.name.starts_with("synthetic") {
        let cache = work.join(format!("{slug}-cache"));
        lorec_build(bin, model, &kb.dir, &out, Some(&cache), BENCH_KEY)?;
        let mut rebuilds = Vec::new();
        for round in 0..builds + 2 {
            crate::synth::touch_one(&kb.dir, round)?;
            rebuilds.push(lorec_build(bin, model, &kb.dir, &out, Some(&cache), BENCH_KEY)?.0);
        }
        Some(median(&mut rebuilds))
    } else {
        None
    };
    let size = std::fs::metadata(&out)?.len();
    let against_out = work.join(format!("{slug}-against.lore"));
    if let Some(dir) = against {
        lorec_build(dir, model, &kb.dir, &against_out, None, BENCH_KEY)?;
    }
    let runs = if quick { 3 } else { 30 };
    let mut starts = Vec::new();
    let mut against_starts = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..runs {
        baseline.push(time_exec(&bin.join("lore"), &["--version"])?);
        // Interleaved, so both binaries see the same machine.
        let mut pairs = vec![(bin, &out, &mut starts)];
        if let Some(dir) = against {
            pairs.push((dir, &against_out, &mut against_starts));
        }
        for (dir, artifact, times) in pairs {
            let (t, line) = cold_start(&dir.join("lore"), artifact, kb.question)?;
            let answer: serde_json::Value = serde_json::from_str(&line).context("answer is not JSON")?;
            if answer["hits"].as_array().is_none_or(|h| h.is_empty()) {
                bail!("{}: the benchmark question got no hits: {line}", kb.name);
            }
            times.push(t);
        }
    }
    let questions = if quick { 200 } else { 3000 };
    let (p50, p99, rss_kib) = in_process(&bin.join("lore"), &out, questions)?;
    let against = match against {
        Some(dir) => Some((
            median(&mut against_starts),
            in_process(&dir.join("lore"), &against_out, questions)?.0,
            if wrk { Some(http_throughput(&dir.join("lore"), &against_out)?) } else { None },
        )),
        None => None,
    };
    let http_rps = if wrk { Some(http_throughput(&bin.join("lore"), &out)?) } else { None };
    Ok(Row {
        name: kb.name.clone(),
        chunks,
        compile,
        incremental,
        size,
        cold_start: median(&mut starts),
        baseline: median(&mut baseline),
        p50,
        p99,
        rss_kib,
        http_rps,
        against,
    })
}

/// wrk is a Debian package; install it when missing (the bench needs root, as CI has).
fn ensure_wrk() -> bool {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return true;
    }
    eprintln!("installing wrk from Debian");
    let ok = Command::new("apt-get").args(["install", "-y", "-q", "wrk"]).status().is_ok_and(|s| s.success())
        || (Command::new("apt-get").args(["update", "-q"]).status().is_ok_and(|s| s.success())
            && Command::new("apt-get").args(["install", "-y", "-q", "wrk"]).status().is_ok_and(|s| s.success()));
    if !ok {
        eprintln!("wrk is unavailable; skipping the HTTP column");
    }
    ok
}

/// Requests per second that `lore serve --http` sustains on loopback, measured with wrk
/// (64 connections, 2 threads, 10 s) asking one question over GET.
fn http_throughput(lore: &Path, artifact: &Path) -> Result<f64> {
    let server = crate::bench_service::Server::start(lore, &[artifact.to_str().context("utf8")?], BENCH_KEY)?;
    let addr = &server.addr;
    let url = format!("http://{addr}/v1/query?q=what%20do%20you%20like%20to%20read&k=5");
    let out = Command::new("wrk").args(["-t2", "-c64", "-d10s", &url]).output()?;
    drop(server);
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
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

/// `lore serve ARTIFACT` on piped stdin/stdout (JSON lines), quiet, with `key`.
pub fn lore_serve(lore: &Path, artifact: &Path, key: &str) -> Command {
    let mut cmd = Command::new(lore);
    cmd.arg("serve")
        .arg(artifact)
        .env("LORE_KEY", key)
        .env("LORE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    cmd
}

/// Exec `lore serve` on stdin, send one question, and time until its answer line arrives.
fn cold_start(lore: &Path, artifact: &Path, question: &str) -> Result<(Duration, String)> {
    let t = Instant::now();
    let mut child = lore_serve(lore, artifact, BENCH_KEY).spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    writeln!(stdin, "{}", serde_json::json!({"q": question, "include_off_topic": true}))?;
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
    let mut child = lore_serve(lore, artifact, BENCH_KEY).spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut reader = BufReader::new(child.stdout.take().context("stdout")?);
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        writeln!(
            stdin,
            "{}",
            serde_json::json!({"q": questions[i % questions.len()], "k": 5, "include_off_topic": true})
        )?;
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
