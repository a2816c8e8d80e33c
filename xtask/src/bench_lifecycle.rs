//! `cargo xtask bench --lifecycle`: publishing to and fetching from an OCI registry on
//! loopback (Debian's `docker-registry`, started here), for the seed-kb artifact and a
//! 100k-chunk one, and `lorec diff` of two 100k-chunk builds that differ in one chunk. Fetch
//! is timed as `lore query oci://…@DIGEST` with an empty cache, next to the same query from
//! the local file (the baseline, same run). Medians of three rounds.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const KEY: &str = "bGlmZWN5Y2xlLWJlbmNoLWtleS1ub3QtZm9yLXVzZTA=";
const ROUNDS: usize = 3;

fn start_registry(work: &Path) -> Result<(crate::KillOnDrop, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let host = format!("127.0.0.1:{port}");
    let config = work.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n  secret: bench\n",
            work.join("registry").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry (apt-get install docker-registry)")?;
    let registry = crate::KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&host).is_err() {
        if Instant::now() > deadline {
            bail!("the registry did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((registry, host))
}

fn timed(cmd: &mut Command) -> Result<(Duration, String)> {
    let t = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output()?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(root: &Path) -> Result<()> {
    let model = crate::model::fetch(root)?;
    crate::run_checked(crate::cargo().args(["build", "--release", "--bins", "--quiet"]))?;
    let bin = root.join("target/release");
    let work = root.join("target/bench-lifecycle");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (_registry, host) = start_registry(&work)?;

    let seed = crate::bench::fixed_seed_kb(root, &work)?;
    let synth = work.join("synth-100k");
    crate::synth::generate(&synth, 100_000)?;
    let mut artifacts = Vec::new();
    for (name, dir) in [("seed-kb", &seed), ("100k chunks", &synth)] {
        let out = work.join(format!("{}.lore", name.replace(' ', "-")));
        let (_, chunks) = crate::bench::lorec_build(&bin, &model, dir, &out, None, KEY)?;
        artifacts.push((name, out, chunks));
    }
    println!("| artifact | bytes | publish | fetch + open + answer | open + answer from the file (baseline) |");
    println!("|---|---|---|---|---|");
    for (name, file, chunks) in &artifacts {
        let reference = format!("oci://{host}/bench/{}", name.replace(' ', "-"));
        let mut publish = Vec::new();
        let mut digest = String::new();
        for round in 0..ROUNDS {
            let (t, out) = timed(
                Command::new(bin.join("lorec"))
                    .arg("publish")
                    .arg(file)
                    .arg(format!("{reference}:r{round}"))
                    .env("LORE_KEY", KEY),
            )?;
            digest = out.lines().last().unwrap_or_default().to_string();
            publish.push(t);
        }
        let question = "what does the team work on";
        let (mut fetch, mut local) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let cache = work.join(format!("cache-{round}-{}", name.replace(' ', "-")));
            let (t, _) = timed(
                Command::new(bin.join("lore"))
                    .args(["query", &format!("{reference}@{digest}"), question])
                    .env("LORE_KEY", KEY)
                    .env("LORE_CACHE_DIR", &cache),
            )?;
            fetch.push(t);
            let (t, _) =
                timed(Command::new(bin.join("lore")).arg("query").arg(file).arg(question).env("LORE_KEY", KEY))?;
            local.push(t);
        }
        let bytes = std::fs::metadata(file)?.len();
        println!(
            "| {name} ({chunks} chunks) | {bytes} | {} | {} | {} |",
            ms(median(publish)),
            ms(median(fetch)),
            ms(median(local))
        );
    }

    // Two 100k-chunk builds that differ in one chunk's text.
    let (_, big, _) = &artifacts[1];
    crate::synth::touch_one(&synth, 1)?;
    let edited = work.join("100k-chunks-edited.lore");
    crate::bench::lorec_build(&bin, &model, &synth, &edited, None, KEY)?;
    let mut diffs = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = Command::new(bin.join("lorec")).arg("diff").arg(big).arg(&edited).env("LORE_KEY", KEY).output()?;
        diffs.push(t.elapsed());
        if out.status.code() != Some(1) {
            bail!(
                "lorec diff should find one change (exit 1): {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut same = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = Command::new(bin.join("lorec")).arg("diff").arg(big).arg(big).env("LORE_KEY", KEY).output()?;
        same.push(t.elapsed());
        if out.status.code() != Some(0) {
            bail!("lorec diff of a file with itself should exit 0");
        }
    }
    println!();
    println!("| `lorec diff`, two 100k-chunk artifacts | median of {ROUNDS} |");
    println!("|---|---|");
    println!("| one chunk changed (exit 1) | {} |", ms(median(diffs)));
    println!("| identical (exit 0) | {} |", ms(median(same)));
    Ok(())
}
