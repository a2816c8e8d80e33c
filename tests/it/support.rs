//! Helpers for driving the real `lorec` and `lore` binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The fixed key of every test artifact. Never use it for real data.
pub const TEST_KEY: &str = "dGVzdC1rZXktZm9yLWxvcmUtdGVzdHMtb25seS0wMDA=";
pub const OTHER_KEY: &str = "b3RoZXIta2V5LWZvci1sb3JlLXRlc3RzLW9ubHktMDA=";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is one level down").to_path_buf()
}

pub fn shared() -> PathBuf {
    workspace().join("../shared")
}

pub fn model_dir() -> PathBuf {
    let dir = workspace().join("artifacts/models/potion-base-8M");
    assert!(
        dir.join("model.safetensors").exists(),
        "the embedding model is missing: run `cargo xtask fetch-model` (or `cargo xtask test`)"
    );
    dir
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/it-*");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --bins` first (`cargo xtask test` does)", path.display());
    path
}

/// `lorec` with a clean environment. Tests embed with potion (the fastest embedder; their
/// `--model` is potion's) unless they say otherwise or remove `LORE_EMBEDDER`.
pub fn lorec() -> Command {
    let mut c = Command::new(bin("lorec"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LORE_EMBEDDER", "potion")
        .env("LORE_LOG", "warn")
        .env("LORE_COLOR", "never");
    c
}

pub fn lore() -> Command {
    let mut c = Command::new(bin("lore"));
    c.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("LORE_LOG", "warn");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output { status, stdout, stderr } = cmd.output().expect("binary runs");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
    };
    assert!(!run.stderr.contains("panicked"), "the binary panicked:\n{}", run.stderr);
    run
}

/// A scratch folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lore-it-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, contents).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `lorec build DIR -o OUT` with the test key and model; panics unless it succeeds.
pub fn build(dir: &Path, out: &Path, extra: &[&str]) -> Run {
    let r = run(lorec()
        .arg("build")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .arg("--model")
        .arg(model_dir())
        .arg("--no-cache")
        .args(extra)
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "lorec build failed:\n{}", r.stderr);
    r
}

/// `lorec build DIR -o OUT --no-encrypt` with the test model; panics unless it succeeds.
pub fn build_plain(dir: &Path, out: &Path) -> Run {
    let r = run(lorec().arg("build").arg(dir).arg("-o").arg(out).arg("--model").arg(model_dir()).arg("--no-encrypt"));
    assert_eq!(r.code, 0, "lorec build --no-encrypt failed:\n{}", r.stderr);
    r
}

/// Where a section's stored bytes lie in an artifact, as `lorec inspect --json` reports them.
pub fn section_range(artifact: &Path, kind: &str) -> std::ops::Range<usize> {
    let r = run(lorec().arg("inspect").arg(artifact).arg("--json"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect --json");
    let section = info["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} section: {info}"));
    let offset = section["offset"].as_u64().expect("offset") as usize;
    offset..offset + section["stored_len"].as_u64().expect("stored_len") as usize
}

/// Ask one question; returns the parsed JSON answer.
pub fn ask(artifact: &Path, question: &str, k: usize) -> serde_json::Value {
    let r = run(lore()
        .arg("query")
        .arg(artifact)
        .arg(question)
        .arg("--json")
        .arg("-k")
        .arg(k.to_string())
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "lore query failed:\n{}", r.stderr);
    serde_json::from_str(&r.stdout).expect("answer is JSON")
}

/// Ask over the stdin protocol with `include_off_topic`, so hits come back whatever the topic
/// detector says.
pub fn ask_ranked(artifact: &Path, question: &str, k: usize) -> serde_json::Value {
    use std::io::Write as _;
    let mut child = lore()
        .arg("serve")
        .arg(artifact)
        .env("LORE_KEY", TEST_KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lore");
    let line = serde_json::json!({"q": question, "k": k, "include_off_topic": true}).to_string();
    child.stdin.take().expect("stdin").write_all(line.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON answer")
}

pub fn hit_ids(answer: &serde_json::Value) -> Vec<String> {
    answer["hits"]
        .as_array()
        .map(|h| h.iter().map(|x| x["id"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

/// A copy of seed-kb with its known defects repaired (the job that lost its `- `, and the
/// empty list item beside it).
pub fn fixed_seed_kb(into: &TempDir) -> PathBuf {
    let dst = into.path().join("seed-kb");
    copy_dir(&shared().join("fixtures/seed-kb"), &dst);
    let file = dst.join("career/work_experience.yaml");
    let text = std::fs::read_to_string(&file).expect("read");
    let fixed = text.replacen("\n  id: autodesk\n", "\n- id: autodesk\n", 1).replacen("\n  - \n", "\n", 1);
    assert_ne!(fixed, text, "seed-kb changed: update fixed_seed_kb");
    std::fs::write(&file, fixed).expect("write");
    dst
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::write(&to, std::fs::read(entry.path()).expect("read")).expect("write");
        }
    }
}

/// One HTTP response: status, head (status line and headers) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().to_ascii_lowercase() == name).then(|| v.trim().to_string())
        })
    }
}

/// Read exactly one response (by its Content-Length) from `s`, so a kept-alive connection can
/// carry the next one.
pub fn read_reply(s: &mut std::net::TcpStream) -> std::io::Result<Reply> {
    use std::io::{ErrorKind, Read as _};
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed before a whole response head"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while raw.len() < head_end + len {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed before a whole response body"));
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..head_end + len]).into_owned();
    Ok(Reply { status, head, body })
}

/// The format version this build writes (`format::FORMAT_VERSION`), read from the source so the
/// tests need not depend on the format crate.
pub fn format_version_now() -> u64 {
    let lib = std::fs::read_to_string(workspace().join("format/src/lib.rs")).expect("format/src/lib.rs");
    lib.lines()
        .find_map(|l| l.strip_prefix("pub const FORMAT_VERSION: u32 = ")?.strip_suffix(';')?.parse().ok())
        .expect("FORMAT_VERSION in format/src/lib.rs")
}

/// Standard base64, written out to keep the tests free of a base64 crate.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
