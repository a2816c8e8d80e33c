//! Project automation, reached as `cargo xtask <task>`: model fetch, tests, the demo,
//! benchmarks and evaluation. Kept free of heavy dependencies so it builds in seconds.
#![forbid(unsafe_code)]

mod abuse;
mod bench;
mod bench_chat;
mod bench_container;
mod bench_lifecycle;
mod bench_service;
mod container;
mod eval;
mod fuzz;
mod model;
mod scifact;
mod soak;
mod synth;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  fetch-model   download potion-base-8M and all-MiniLM-L6-v2 (pinned, sha256-checked) into artifacts/models/
  test          fetch the model, format check, clippy -D warnings, build, every test, fuzz briefly (what CI runs)
  demo          compile data/, answer one question, then serve it over HTTP [ADDR]
  container     the Containerfile's context in target/container/ (static lore, data/ with potion);
                --full adds the oci and postgres features (Kubernetes replicas sharing memory)
  soak          one million requests at concurrency 64, RSS sampled every second; --swaps also
                hot-swaps once a second; --requests N for a shorter run; --abuse: 2,000 idle and
                100 slow connections while normal requests go on (direct, nginx, container)
  bench         benchmarks (see BENCHMARKS.md); --quick for the CI smoke run, --service for
                only the service-layer table (swap time, throughput while swapping, RSS),
                --container for the image's size and start to first answer (needs podman),
                --lifecycle for publish/fetch through an OCI registry and lorec diff at 100k chunks
  eval persona  retrieval and topic-detection quality on the persona sets (see EVALUATION.md);
                --split dev|holdout|dev+holdout|tune|v3|v4 for the larger sets (tune on dev or tune; a holdout once, at the end)
  eval scifact  BEIR SciFact nDCG@10 / Recall@100, train and test; --tune grid-searches on train
  synth N DIR   write the deterministic synthetic knowledge base of N chunks that bench uses into DIR
  fuzz TARGET|all [--secs N] [--engine auto|libfuzzer|stable]
                fuzz a target (artifact, yaml, resume_json, jsonl, markdown, request; see FUZZING.md);
                `fuzz corpus` regenerates the seed corpus from the repository's files
";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("fetch-model") => model::fetch(&root).and_then(|_| model::fetch_spec(&root, &model::MINILM)).map(|_| ()),
        Some("test") => test(&root),
        Some("container") => {
            run_checked(cargo().args(["build", "--release", "--package", "compiler", "--bin", "lorec"]))?;
            let full = args.iter().any(|a| a == "--full");
            container::context(&root, &root.join("target/release/lorec"), full).map(|_| ())
        }
        Some("demo") => demo(&root, args.get(1).map(String::as_str).unwrap_or("127.0.0.1:8080")),
        Some("bench") if args.iter().any(|a| a == "--container") => bench_container::run(&root),
        Some("bench") if args.iter().any(|a| a == "--lifecycle") => bench_lifecycle::run(&root),
        Some("bench") if args.iter().any(|a| a == "--chat") => {
            bench::run_chat(&root, args.iter().any(|a| a == "--quick"))
        }
        Some("bench") => bench::run(&root, args.iter().any(|a| a == "--quick"), args.iter().any(|a| a == "--service")),
        Some("eval") => {
            let split = args.iter().position(|a| a == "--split").and_then(|i| args.get(i + 1)).map(String::as_str);
            eval::run(
                &root,
                args.get(1).map(String::as_str).unwrap_or("persona"),
                args.iter().any(|a| a == "--tune"),
                split,
            )
        }
        Some("soak") if args.iter().any(|a| a == "--abuse") => abuse::run(&root),
        Some("soak") => {
            let requests = args.iter().position(|a| a == "--requests").and_then(|i| args.get(i + 1)?.parse().ok());
            soak::run(&root, requests.unwrap_or(1_000_000), args.iter().any(|a| a == "--swaps"))
        }
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("synth") => match (args.get(1).and_then(|n| n.parse().ok()), args.get(2)) {
            (Some(n), Some(dir)) => synth::generate(Path::new(dir), n),
            _ => bail!("usage: cargo xtask synth N DIR"),
        },
        _ => {
            eprint!("{USAGE}");
            bail!("unknown or missing task")
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the root").to_path_buf()
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A child process killed and reaped when this goes out of scope (servers a bench starts).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    model::fetch(root)?;
    // The minilm tests read the sentence-transformers model from LORE_MINILM_DIR.
    let minilm = model::fetch_spec(root, &model::MINILM)?;
    if cargo().args(["fmt", "--version"]).output().is_ok_and(|o| o.status.success()) {
        run_checked(cargo().args(["fmt", "--all", "--", "--check"]))?;
    } else {
        eprintln!("rustfmt is not installed; skipping the format check");
    }
    // The lints of `[workspace.lints]` are enforced: any warning fails the run.
    run_checked(cargo().args(["clippy", "--workspace", "--all-features", "--all-targets", "--", "-D", "warnings"]))?;
    // The integration tests drive the real binaries, so build them first.
    run_checked(cargo().args(["build", "--workspace", "--bins", "--all-features"]))?;
    browser_deps(root)?;
    // The container test builds the image from target/container/.
    container::context(root, &root.join("target/debug/lorec"), false)?;
    let python = openai_client_venv(root)?;
    let (passed, failed) = run_tests(&minilm, &python)?;
    run_checked(cargo().args(["run", "--quiet", "--package", "xtask", "--", "bench", "--quick"]))?;
    // Every fuzz target for a few seconds (FUZZING.md); a crash fails CI like a test does.
    let fuzzed = fuzz::ci(root);
    // One closing line for the whole suite, so CI reads the total, not the last binary's.
    println!("tests: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    fuzzed
}

/// The npm package the browser test drives chromium with (`tests/browser`), installed from its
/// lock file when missing.
fn browser_deps(root: &Path) -> Result<()> {
    let dir = root.join("tests/browser");
    if dir.join("node_modules/playwright-core/package.json").exists() {
        return Ok(());
    }
    run_checked(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir))
        .context("installing playwright-core for the browser test (needs node and npm)")
}

/// A venv with the official `openai` Python package (`tests/openai-client/requirements.txt`),
/// made once under `target/`; returns its interpreter.
fn openai_client_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/openai-client-venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/openai-client/requirements.txt");
    let stamp = venv.join("lore-requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).context("tests/openai-client/requirements.txt")?;
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(python);
    }
    run_checked(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))
        .context("making a venv for the openai client test (needs python3 with venv)")?;
    run_checked(Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r"]).arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// Run every test (no doctests: there are none), echoing cargo's output and totting up the
/// `test result:` lines.
fn run_tests(minilm: &Path, openai_python: &Path) -> Result<(usize, usize)> {
    use std::io::{BufRead, BufReader};
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-features", "--all-targets", "--no-fail-fast"])
        .env("LORE_MINILM_DIR", minilm)
        .env("LORE_OPENAI_PYTHON", openai_python)
        .stdout(std::process::Stdio::piped());
    eprintln!("$ {cmd:?}");
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';').find_map(|part| {
                    part.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse::<usize>().ok())
                })
            };
            passed += count("passed").unwrap_or(0);
            failed += count("failed").unwrap_or(0);
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed with {status}");
    }
    Ok((passed, failed))
}

fn demo(root: &Path, addr: &str) -> Result<()> {
    // The default configuration: lorec embeds with all-MiniLM-L6-v2 unless told otherwise.
    model::fetch_spec(root, &model::MINILM)?;
    run_checked(cargo().args(["build", "--release", "--bins"]))?;
    let bin = root.join("target/release");
    let key_file = container::demo_key(root, &bin.join("lorec"))?;
    // What the Containerfile copies, so `podman build` works right after the set-up.
    container::context(root, &bin.join("lorec"), false)?;
    let artifact = root.join("artifacts/data.lore");
    run_checked(
        Command::new(bin.join("lorec"))
            .args(["build", "data", "-o"])
            .arg(&artifact)
            .args(["--artifact-version", "demo"])
            .env("LORE_KEY_FILE", &key_file),
    )?;
    run_checked(
        Command::new(bin.join("lore"))
            .arg("query")
            .arg(&artifact)
            .arg("What kind of robots do you build?")
            .env("LORE_KEY_FILE", &key_file),
    )?;
    eprintln!(
        "\nserving {} — open http://{addr}/ to chat, or try:\n  curl -s 'http://{addr}/v1/query?q=what+music+do+you+like'\n  curl -s http://{addr}/v1/chat -H 'content-type: application/json' -d '{{\"message\": \"What do you play in the orchestra?\"}}'\n",
        artifact.display()
    );
    run_checked(
        Command::new(bin.join("lore"))
            .arg("serve")
            .arg(&artifact)
            .args(["--http", addr])
            .env("LORE_KEY_FILE", &key_file),
    )
}
