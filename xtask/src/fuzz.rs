//! `cargo xtask fuzz`: run the fuzz targets in `fuzz/` (see FUZZING.md) with libFuzzer
//! (`cargo fuzz`, nightly) when the machine can, and otherwise with the stable driver
//! (`fuzz/src/bin/fuzz-stable.rs`); `cargo xtask fuzz corpus` regenerates the seed corpus
//! entries made from the repository's own files.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use sha2::Digest as _;

use crate::{cargo, run_checked};

/// A fuzz target: its name (binary, corpus and artifacts folder), the longest input worth
/// generating, and its dictionary under `fuzz/dict/`, if any.
struct Target {
    name: &'static str,
    max_len: usize,
    dict: Option<&'static str>,
}

const TARGETS: &[Target] = &[
    Target { name: "artifact", max_len: 64 * 1024, dict: None },
    Target { name: "yaml", max_len: 16 * 1024, dict: Some("yaml.dict") },
    Target { name: "resume_json", max_len: 16 * 1024, dict: Some("resume_json.dict") },
    Target { name: "jsonl", max_len: 16 * 1024, dict: Some("jsonl.dict") },
    Target { name: "markdown", max_len: 16 * 1024, dict: Some("markdown.dict") },
    Target { name: "request", max_len: 4096, dict: Some("request.dict") },
    Target { name: "config", max_len: 8192, dict: None },
    Target { name: "oci", max_len: 8192, dict: None },
];

/// Limits for every run: an input that takes longer, or a process that holds more, is a bug.
const RSS_LIMIT_MB: u32 = 2048;
const TIMEOUT_SECS: u32 = 10;
/// Address space for a target's process where no sanitizer needs more: room for the process
/// itself, and none for a single allocation of 2 GiB.
const ADDRESS_LIMIT_MB: u32 = RSS_LIMIT_MB + 512;

/// What `cargo xtask test` runs: every target for this long.
pub const CI_SECS: u64 = 15;

const USAGE: &str = "usage: cargo xtask fuzz TARGET|all [--secs N] [--engine auto|libfuzzer|stable] [--seed N]
                            [--sanitizer address|none]
       cargo xtask fuzz ci         what `cargo xtask test` runs: every target for 15 s, built quickly
       cargo xtask fuzz corpus     regenerate the corpus entries made from the repository's files
targets: artifact, yaml, resume_json, jsonl, markdown, request";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    LibFuzzer,
    Stable,
}

/// One fuzzing session: the engine, how long per target, and how the targets are built.
struct Plan {
    engine: Engine,
    secs: u64,
    seed: Option<u64>,
    /// libFuzzer's sanitizer: `address` (the default) or `none`.
    sanitizer: String,
    /// CI builds: optimisation level 1 and a target folder of their own (`fuzz/target/ci`),
    /// which compile in about two thirds of the time; the runs are short anyway.
    quick_build: bool,
}

impl Plan {
    fn describe(&self) -> String {
        let opt = if self.quick_build { ", opt-level 1" } else { "" };
        match self.engine {
            Engine::LibFuzzer => {
                format!("libFuzzer (cargo fuzz, nightly; sanitizer {}, debug assertions{opt})", self.sanitizer)
            }
            Engine::Stable => {
                format!("stable driver (fuzz-stable: corpus replay + seeded mutation, no coverage feedback{opt})")
            }
        }
    }

    fn target_dir(&self, root: &Path) -> PathBuf {
        if self.quick_build { root.join("fuzz/target/ci") } else { root.join("fuzz/target") }
    }

    /// `cargo fuzz SUBCOMMAND` with this plan's build flags (FUZZING.md shows them for
    /// `cargo fuzz run`, which must match to reuse the build).
    fn cargo_fuzz(&self, root: &Path, subcommand: &str) -> Command {
        let mut cmd = nightly_cargo();
        cmd.args(["fuzz", subcommand, "--debug-assertions", "--sanitizer", &self.sanitizer])
            .arg("--target-dir")
            .arg(self.target_dir(root));
        if self.quick_build {
            cmd.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1");
        }
        cmd
    }
}

struct Outcome {
    target: &'static str,
    execs: Option<u64>,
    secs: f64,
    /// Where the input that failed was saved, or why there is none.
    failure: Option<String>,
}

/// `cargo xtask fuzz ARGS`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let Some(what) = args.first() else {
        eprintln!("{USAGE}");
        bail!("missing fuzz target");
    };
    if what == "corpus" {
        return regenerate_corpus(root);
    }
    if what == "ci" {
        return ci(root);
    }
    let mut secs = 60;
    let mut engine = std::env::var("LORE_FUZZ_ENGINE").unwrap_or_else(|_| "auto".into());
    let mut seed = None;
    let mut sanitizer = "address".to_string();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let mut value = || rest.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => secs = value()?.parse().context("--secs")?,
            "--engine" => engine = value()?.clone(),
            "--seed" => seed = Some(value()?.parse::<u64>().context("--seed")?),
            "--sanitizer" => sanitizer = value()?.clone(),
            other => {
                eprintln!("{USAGE}");
                bail!("unknown argument {other:?}")
            }
        }
    }
    let targets: Vec<&Target> = if what == "all" {
        TARGETS.iter().collect()
    } else {
        match TARGETS.iter().find(|t| t.name == what) {
            Some(t) => vec![t],
            None => {
                eprintln!("{USAGE}");
                bail!("no fuzz target {what:?}")
            }
        }
    };
    let engine = match engine.as_str() {
        "auto" => pick_engine(),
        "libfuzzer" => Engine::LibFuzzer,
        "stable" => Engine::Stable,
        other => bail!("unknown engine {other:?} (auto, libfuzzer or stable)"),
    };
    fuzz(root, &targets, &Plan { engine, secs, seed, sanitizer, quick_build: false })
}

/// The bounded run `cargo xtask test` ends with: every target for [`CI_SECS`], built quickly
/// and without a sanitizer (the build is most of the cost of a run this short).
pub fn ci(root: &Path) -> Result<()> {
    let targets: Vec<&Target> = TARGETS.iter().collect();
    let plan = Plan { engine: pick_engine(), secs: CI_SECS, seed: None, sanitizer: "none".into(), quick_build: true };
    fuzz(root, &targets, &plan)
}

fn fuzz(root: &Path, targets: &[&Target], plan: &Plan) -> Result<()> {
    eprintln!("fuzz: {}", plan.describe());
    let secs = plan.secs;
    let outcomes = match plan.engine {
        Engine::LibFuzzer => {
            run_checked(&mut plan.cargo_fuzz(root, "build"))?;
            let bins = plan.target_dir(root).join(nightly_host()?).join("release");
            targets.iter().map(|t| libfuzzer(root, &bins, t, plan)).collect::<Result<Vec<_>>>()?
        }
        Engine::Stable => {
            let mut build = cargo();
            build.args(STABLE_BUILD).arg("--target-dir").arg(plan.target_dir(root));
            if plan.quick_build {
                build.env("CARGO_PROFILE_FUZZ_STABLE_OPT_LEVEL", "1");
            }
            run_checked(&mut build)?;
            let seed = plan.seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
            });
            let driver = plan.target_dir(root).join("fuzz-stable/fuzz-stable");
            targets.iter().map(|t| stable(root, &driver, t, secs, seed)).collect::<Result<Vec<_>>>()?
        }
    };
    println!("fuzz: {} for {secs} s per target", plan.describe());
    let mut failed = 0;
    for o in &outcomes {
        let execs = o.execs.map_or("?".to_string(), |n| n.to_string());
        let rate = o.execs.map_or("?".to_string(), |n| format!("{:.0}", n as f64 / o.secs.max(1e-3)));
        let result = match &o.failure {
            None => "ok".to_string(),
            Some(f) => {
                failed += 1;
                format!("FAILED: {f}")
            }
        };
        println!("  {:<12} {execs:>10} execs in {:>5.1} s ({rate:>6} exec/s)  {result}", o.target, o.secs);
    }
    if failed > 0 {
        bail!(
            "{failed} fuzz target(s) found a crash, hang or memory blow-up; reproducers are listed above (see FUZZING.md)"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// choosing an engine

/// libFuzzer when a nightly toolchain exists (installing cargo-fuzz from crates.io if it is
/// missing); the stable driver otherwise.
fn pick_engine() -> Engine {
    let ok = |cmd: &mut Command| cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok(nightly_cargo().arg("--version")) {
        eprintln!("fuzz: no nightly toolchain (`rustup run nightly cargo`); using the stable driver");
        return Engine::Stable;
    }
    if ok(nightly_cargo().args(["fuzz", "--version"])) {
        return Engine::LibFuzzer;
    }
    eprintln!("fuzz: cargo-fuzz is missing; installing it from crates.io");
    if run_checked(cargo().args(["install", "cargo-fuzz", "--locked"])).is_ok()
        && ok(nightly_cargo().args(["fuzz", "--version"]))
    {
        return Engine::LibFuzzer;
    }
    eprintln!("fuzz: cargo-fuzz could not be installed; using the stable driver");
    Engine::Stable
}

/// The nightly toolchain's host triple, under which `cargo fuzz` puts the binaries.
fn nightly_host() -> Result<String> {
    let out = Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]).output().context("rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("no host triple in `rustc -vV`")
}

/// `program`, under an address-space limit of [`ADDRESS_LIMIT_MB`] when `limit` and a POSIX
/// shell can set one. The RSS limit misses a huge allocation whose pages are never touched;
/// this turns it into a failed allocation, an abort, and a saved input.
fn limited(program: &Path, limit: bool) -> Command {
    if limit && cfg!(unix) && Path::new("/bin/sh").exists() {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("ulimit -v {} && exec \"$0\" \"$@\"", ADDRESS_LIMIT_MB * 1024)).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// `cargo` of the nightly toolchain, without the environment of the stable cargo that runs
/// this xtask.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]);
    for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "RUSTC_WRAPPER", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    cmd
}

// ---------------------------------------------------------------------------------------------
// libFuzzer

/// Run one target's libFuzzer binary (built by `cargo fuzz build`) directly, as `cargo fuzz run`
/// would, but without cargo in between, so the address-space limit covers only the target.
fn libfuzzer(root: &Path, bins: &Path, t: &Target, plan: &Plan) -> Result<Outcome> {
    let work = root.join("fuzz/work").join(t.name);
    let artifacts = root.join("fuzz/artifacts").join(t.name);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&artifacts)?;
    // AddressSanitizer reserves terabytes of shadow memory, so only builds without it get the
    // limit; with it, libFuzzer's own malloc limit (the RSS limit) catches huge allocations.
    let mut cmd = limited(&bins.join(t.name), plan.sanitizer == "none");
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display())).args([
        format!("-max_total_time={}", plan.secs),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-timeout={TIMEOUT_SECS}"),
        format!("-max_len={}", t.max_len),
        "-print_final_stats=1".into(),
        // LeakSanitizer reports the handles of threads that are still being torn down when it
        // looks (the reader decrypts and checks on scoped threads): noise, not leaks.
        "-detect_leaks=0".into(),
    ]);
    if let Some(dict) = t.dict {
        cmd.arg(format!("-dict={}", root.join("fuzz/dict").join(dict).display()));
    }
    // New inputs go to the first folder (ignored by git); the committed seeds stay as they are.
    cmd.arg(&work).arg(root.join("fuzz/corpus").join(t.name));
    let started = Instant::now();
    let (status, lines) = stream(&mut cmd)?;
    let secs = fuzzing_secs(&lines).unwrap_or_else(|| started.elapsed().as_secs_f64());
    let execs = find_execs(&lines);
    let failure = (!status.success())
        .then(|| written_to(&lines).unwrap_or_else(|| format!("libFuzzer ended with {status} and saved no input")));
    Ok(Outcome { target: t.name, execs, secs, failure })
}

// ---------------------------------------------------------------------------------------------
// the stable driver

const STABLE_BUILD: &[&str] = &[
    "build",
    "--manifest-path",
    "fuzz/Cargo.toml",
    "--profile",
    "fuzz-stable",
    "--no-default-features",
    "--features",
    "stable",
    "--bin",
    "fuzz-stable",
];

fn stable(root: &Path, driver: &Path, t: &Target, secs: u64, seed: u64) -> Result<Outcome> {
    let artifacts = root.join("fuzz/artifacts").join(t.name);
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = limited(driver, true);
    cmd.arg(t.name)
        .args(["--secs", &secs.to_string(), "--seed", &seed.to_string()])
        .args(["--max-len", &t.max_len.to_string()])
        .args(["--rss-limit-mb", &RSS_LIMIT_MB.to_string(), "--timeout", &TIMEOUT_SECS.to_string()])
        .arg("--corpus")
        .arg(root.join("fuzz/corpus").join(t.name))
        .arg("--artifacts")
        .arg(&artifacts)
        .env("RUST_BACKTRACE", "1");
    // What libFuzzer found on this machine before is worth replaying too.
    let work = root.join("fuzz/work").join(t.name);
    if work.is_dir() {
        cmd.arg("--corpus").arg(work);
    }
    if let Some(dict) = t.dict {
        cmd.arg("--dict").arg(root.join("fuzz/dict").join(dict));
    }
    let started = Instant::now();
    let (status, lines) = stream(&mut cmd)?;
    let secs = fuzzing_secs(&lines).unwrap_or_else(|| started.elapsed().as_secs_f64());
    let failure = match status.code() {
        Some(0) => None,
        // A panic (1) or a timeout or memory blow-up (70): the driver saved the input.
        Some(1 | 70) => Some(written_to(&lines).unwrap_or_else(|| format!("fuzz-stable ended with {status}"))),
        // An abort (stack overflow, failed allocation): keep the input it was running.
        _ => Some(keep_current_input(&artifacts, status)),
    };
    Ok(Outcome { target: t.name, execs: find_execs(&lines), secs, failure })
}

fn keep_current_input(artifacts: &Path, status: ExitStatus) -> String {
    let current = artifacts.join("current-input");
    match std::fs::read(&current) {
        Ok(data) => {
            let digest = sha2::Sha256::digest(&data);
            let path = artifacts.join(format!("crash-{}", hex::encode(&digest[..20])));
            match std::fs::write(&path, &data) {
                Ok(()) => format!("{} (the process died: {status})", path.display()),
                Err(e) => format!("{} (the process died: {status}; cannot copy it: {e})", current.display()),
            }
        }
        Err(e) => format!("the process died ({status}) and {} is unreadable: {e}", current.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// output

/// Run `cmd`, echoing its stderr (without libFuzzer's per-input NEW/REDUCE lines and its
/// recommended dictionary) and keeping it for parsing.
fn stream(cmd: &mut Command) -> Result<(ExitStatus, Vec<String>)> {
    eprintln!("$ {cmd:?}");
    let mut child = cmd.stderr(Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let mut reader = std::io::BufReader::new(child.stderr.take().context("stderr")?);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    let mut in_dictionary = false;
    while reader.read_until(b'\n', &mut buf)? > 0 {
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        buf.clear();
        let chatter = line.starts_with("\tNEW_FUNC")
            || line.starts_with('#') && ["\tNEW ", "\tREDUCE ", "\tRELOAD "].iter().any(|w| line.contains(w));
        if line.starts_with("###### Recommended dictionary") {
            in_dictionary = true;
        }
        if line.len() > 2000 {
            // cargo fuzz prints the failing input with `Debug`: the file is what matters.
            let head: String = line.chars().take(200).collect();
            eprintln!("{head}… ({} bytes left out)", line.len() - head.len());
        } else if !chatter && !in_dictionary {
            eprintln!("{line}");
        }
        if line.starts_with("###### End of recommended dictionary") {
            in_dictionary = false;
        }
        lines.push(line);
    }
    Ok((child.wait()?, lines))
}

/// How long the fuzzer itself ran, from its closing `Done N runs in S second(s)` line.
fn fuzzing_secs(lines: &[String]) -> Option<f64> {
    lines.iter().rev().find_map(|l| l.strip_prefix("Done ")?.split(" in ").nth(1)?.split(' ').next()?.parse().ok())
}

/// Executions, from `-print_final_stats` (both engines print it), or else the last `#N` line.
fn find_execs(lines: &[String]) -> Option<u64> {
    let stat = lines.iter().rev().find_map(|l| l.strip_prefix("stat::number_of_executed_units:")?.trim().parse().ok());
    stat.or_else(|| {
        lines.iter().rev().find_map(|l| l.strip_prefix('#')?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
    })
}

fn written_to(lines: &[String]) -> Option<String> {
    let paths: Vec<&str> =
        lines.iter().filter_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim())).collect();
    (!paths.is_empty()).then(|| paths.join(", "))
}

// ---------------------------------------------------------------------------------------------
// corpus

/// Replace every `repo-*` corpus entry with fresh copies of the repository's own files (the
/// hand-written `seed-*` entries stay): the example knowledge base, the golden artifacts,
/// unsealed artifacts built with the tiny test model, the documentation as Markdown and the
/// persona questions as requests.
fn regenerate_corpus(root: &Path) -> Result<()> {
    let corpus = root.join("fuzz/corpus");
    for t in TARGETS {
        let dir = corpus.join(t.name);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("repo-") {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    let put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let path = corpus.join(target).join(format!("repo-{name}"));
        std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))
    };

    for dir in ["data", "tests/compat/kb"] {
        for path in files_under(&root.join(dir))? {
            let rel = path.strip_prefix(root)?.to_string_lossy().replace('/', "_");
            let bytes = std::fs::read(&path)?;
            if rel.ends_with(".yaml") || rel.ends_with(".yml") {
                put("yaml", &rel, &bytes)?;
            } else if rel.ends_with(".md") {
                put("markdown", &rel, &bytes)?;
            }
        }
    }
    for doc in ["README.md", "ARCHITECTURE.md", "docs/format.md", "artifacts/README.md"] {
        if let Ok(bytes) = std::fs::read(root.join(doc)) {
            put("markdown", &doc.replace('/', "_"), &bytes)?;
        }
    }

    // The persona questions: as a collection (wrong fields for one, so diagnostics) and as
    // request lines, as JSON and as HTTP GETs.
    let questions = std::fs::read_to_string(root.join("eval/persona/data.jsonl"))?;
    put("jsonl", "eval_persona_data.jsonl", questions.as_bytes())?;
    let qs: Vec<String> = questions
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("q")?.as_str().map(String::from))
        .take(20)
        .collect();
    let lines: String = qs.iter().map(|q| serde_json::json!({"q": q, "k": 5}).to_string() + "\n").collect();
    put("request", "persona.jsonl", lines.as_bytes())?;
    for (i, q) in qs.iter().take(3).enumerate() {
        let query: String = q
            .bytes()
            .map(|b| match b {
                b' ' => "+".to_string(),
                b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        put("request", &format!("persona-get-{i}"), format!("\x00/v1/query?q={query}&k=3\n").as_bytes())?;
    }

    // The chat routes: lore's own (streamed or not), the OpenAI-compatible ones, sessions.
    // The first byte picks the method (1: POST, 0: GET, 3: DELETE) and a JSON content type.
    for (name, seed) in [
        ("chat", "\x01/v1/chat\n{\"message\":\"Who kept the lighthouse lamp lit?\",\"session_id\":\"s1\"}"),
        ("chat-stream", "\x01/v1/kb/default/chat\n{\"message\":\"and before that?\",\"stream\":true}"),
        (
            "chat-completions",
            "\x01/v1/chat/completions\n{\"model\":\"default\",\"messages\":[{\"role\":\"system\",\"content\":\"hi\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Who kept the lamp lit?\"}]}],\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
        ),
        ("models", "\x00/v1/models\n"),
        ("persona", "\x00/v1/persona\n"),
        ("session-delete", "\x03/v1/sessions/s1\n"),
    ] {
        put("request", &format!("{name}.http"), seed.as_bytes())?;
    }

    // Configuration files as the README shows them, and OCI manifests as `lorec publish`
    // writes them (a reference line, then the manifest).
    put(
        "config",
        "ab.toml",
        b"default = \"maya\"\n[[kb]]\nname = \"maya\"\nkey_file = \"maya.key\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"maya-1.4.0.lore\"\nweight = 90\n[[kb.variant]]\nname = \"b\"\nartifact = \"oci://127.0.0.1:5000/lore/maya:stable\"\nweight = 10\n[[kb]]\nname = \"faq\"\nartifact = \"https://example.com/faq.lore#sha256=0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.lore.knowledge.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": format!("sha256:{}", "4".repeat(64)), "size": 2},
        "layers": [{"mediaType": "application/vnd.lore.artifact.v1", "digest": format!("sha256:{}", "9".repeat(64)), "size": 8832104,
                    "annotations": {"org.opencontainers.image.title": "data.lore"}}],
        "annotations": {"io.lore.build-id": "1fac544d5a0ea672cb76c88fc6857f1e", "org.opencontainers.image.version": "1.4.0"}
    });
    put("oci", "manifest", format!("oci://127.0.0.1:5000/lore/kb:stable\n{manifest:#}").as_bytes())?;
    put("oci", "pinned", format!("oci://registry.example.com/kb@sha256:{}\n{manifest}", "a".repeat(64)).as_bytes())?;

    // Artifacts: the sealed golden ones as they are, and unsealed builds with the tiny model.
    for entry in std::fs::read_dir(root.join("tests/compat"))?.flatten() {
        let golden = entry.path().join("golden.lore");
        if golden.is_file() {
            put("artifact", &format!("golden-{}.lore", entry.file_name().to_string_lossy()), &std::fs::read(golden)?)?;
        }
    }
    run_checked(cargo().args(["build", "--quiet", "--package", "compiler", "--bin", "lorec"]))?;
    let lorec = root.join("target/debug/lorec");
    let scratch = std::env::temp_dir().join(format!("lore-fuzz-corpus-{}", std::process::id()));
    let docs = scratch.join("docs");
    std::fs::create_dir_all(&docs)?;
    for (target, name) in [("jsonl", "seed-beir.jsonl"), ("markdown", "seed-guide.md")] {
        std::fs::copy(corpus.join(target).join(name), docs.join(name))?;
    }
    for (name, kb) in [("keeper-unsealed.lore", root.join("tests/compat/kb")), ("docs-unsealed.lore", docs)] {
        let out = scratch.join(name);
        run_checked(
            Command::new(&lorec)
                .arg("build")
                .arg(&kb)
                .arg("-o")
                .arg(&out)
                .arg("--model")
                .arg(root.join("tests/compat/tiny-model"))
                .args(["--embedder", "potion", "--no-cache", "--no-encrypt", "--artifact-version", "fuzz"])
                .env_remove("LORE_KEY")
                .env_remove("LORE_KEY_FILE"),
        )?;
        put("artifact", name, &std::fs::read(&out)?)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let total: u64 = TARGETS
        .iter()
        .flat_map(|t| std::fs::read_dir(corpus.join(t.name)).into_iter().flatten().flatten())
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    println!("fuzz corpus regenerated in {} ({} KiB in all)", corpus.display(), total / 1024);
    Ok(())
}

/// Every file below `dir`, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
