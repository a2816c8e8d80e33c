//! The stable fuzz driver, for machines without a nightly toolchain or cargo-fuzz: replays a
//! target's corpus, then mutates corpus entries (bit flips, byte insertions and deletions,
//! dictionary tokens, splices; seeded) for a given time. No coverage feedback, so it finds
//! less than libFuzzer, but it runs the same target bodies (`lore_fuzz::TARGETS`).
//!
//! A panic is caught and its input saved as `ARTIFACTS/crash-<sha256>`. A timeout or memory
//! blow-up is caught by a watchdog thread and saved as `timeout-…`/`oom-…`. Each input is
//! written to `ARTIFACTS/current-input` before it runs, so after an abort (stack overflow,
//! failed allocation) the caller (`cargo xtask fuzz`) can keep it; otherwise it is removed.
//! Exit codes: 0 clean, 1 a panic, 70 a timeout or memory blow-up; anything else is an abort.
#![forbid(unsafe_code)]

use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

const USAGE: &str = "usage: fuzz-stable TARGET [--secs N] [--runs N] [--corpus DIR]... [--dict FILE] \
[--artifacts DIR] [--seed N] [--max-len N] [--rss-limit-mb N] [--timeout SECS] [INPUT_FILE...]

Replays the corpus, then mutates it for --secs seconds. With INPUT_FILEs, runs just those (to
reproduce a crash).";

struct Options {
    target: String,
    secs: u64,
    runs: Option<u64>,
    corpus: Vec<PathBuf>,
    dict: Option<PathBuf>,
    artifacts: PathBuf,
    seed: u64,
    max_len: usize,
    rss_limit_mb: u64,
    timeout: u64,
    inputs: Vec<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let target = args.next().filter(|t| !t.starts_with('-')).ok_or("missing TARGET")?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut o = Options {
        artifacts: PathBuf::from("artifacts").join(&target),
        target,
        secs: 10,
        runs: None,
        corpus: Vec::new(),
        dict: None,
        seed,
        max_len: 4096,
        rss_limit_mb: 2048,
        timeout: 10,
        inputs: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--secs" => o.secs = number(value()?)?,
            "--runs" => o.runs = Some(number(value()?)?),
            "--corpus" => o.corpus.push(value()?.into()),
            "--dict" => o.dict = Some(value()?.into()),
            "--artifacts" => o.artifacts = value()?.into(),
            "--seed" => o.seed = number(value()?)?,
            "--max-len" => o.max_len = number(value()?)?.max(1) as usize,
            "--rss-limit-mb" => o.rss_limit_mb = number(value()?)?,
            "--timeout" => o.timeout = number(value()?)?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => o.inputs.push(arg.into()),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fuzz-stable: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let Some(target) = lore_fuzz::target(&opts.target).or_else(|| selftest(&opts.target)) else {
        let names: Vec<&str> = lore_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("fuzz-stable: no target {:?}; targets: {}", opts.target, names.join(", "));
        std::process::exit(2);
    };
    if let Err(e) = std::fs::create_dir_all(&opts.artifacts) {
        eprintln!("fuzz-stable: cannot create {}: {e}", opts.artifacts.display());
        std::process::exit(2);
    }
    let mut driver = Driver::new(opts, target);
    let code = driver.run();
    // Only an abort, which never gets here, leaves the input it was running behind.
    let _ = std::fs::remove_file(&driver.current_path);
    std::process::exit(code);
}

/// Targets that fail one way on every input, to check how failures are caught and saved:
/// `selftest-panic`, `-abort`, `-stack` (overflow), `-hang`, `-oom`.
fn selftest(name: &str) -> Option<fn(&[u8])> {
    fn deep(n: u64) -> u64 {
        if n == u64::MAX {
            return 0;
        }
        std::hint::black_box([n; 64]).iter().sum::<u64>().wrapping_add(deep(n + 1))
    }
    Some(match name {
        "selftest-panic" => |_| panic!("selftest: a panic"),
        "selftest-abort" => |_| std::process::abort(),
        "selftest-stack" => |_| {
            std::hint::black_box(deep(0));
        },
        "selftest-hang" => |_| loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        "selftest-oom" => |_| {
            let held = std::hint::black_box(vec![1u8; 3 << 30]);
            std::thread::sleep(Duration::from_secs(5));
            drop(held);
        },
        _ => return None,
    })
}

/// When the input now running started, in milliseconds since the driver started, plus one;
/// zero between inputs. Read by the watchdog.
static RUNNING_SINCE: AtomicU64 = AtomicU64::new(0);

struct Driver {
    opts: Options,
    target: fn(&[u8]),
    current: std::fs::File,
    current_path: PathBuf,
    started: Instant,
    execs: u64,
}

impl Driver {
    fn new(opts: Options, target: fn(&[u8])) -> Driver {
        let current_path = opts.artifacts.join("current-input");
        let current = std::fs::File::create(&current_path).unwrap_or_else(|e| {
            eprintln!("fuzz-stable: cannot create {}: {e}", current_path.display());
            std::process::exit(2);
        });
        Driver { opts, target, current, current_path, started: Instant::now(), execs: 0 }
    }

    fn run(&mut self) -> i32 {
        self.start_watchdog();
        if !self.opts.inputs.is_empty() {
            for path in self.opts.inputs.clone() {
                let data = std::fs::read(&path).unwrap_or_else(|e| {
                    eprintln!("fuzz-stable: cannot read {}: {e}", path.display());
                    std::process::exit(2);
                });
                eprintln!("Running: {}", path.display());
                if !self.exec(&data) {
                    return 1;
                }
                eprintln!("Executed {} in {} ms", path.display(), self.started.elapsed().as_millis());
            }
            return 0;
        }
        let corpus = self.load_corpus();
        let dict = self.opts.dict.as_deref().map(load_dict).unwrap_or_default();
        eprintln!(
            "fuzz-stable: target {}, seed {}, {} corpus inputs, {} dictionary tokens, max_len {}, {} s",
            self.opts.target,
            self.opts.seed,
            corpus.len(),
            dict.len(),
            self.opts.max_len,
            self.opts.secs
        );
        for data in &corpus {
            if !self.exec(data) {
                return 1;
            }
        }
        eprintln!("#{}\tINITED exec/s: {}", self.execs, self.rate());
        let deadline = self.started + Duration::from_secs(self.opts.secs);
        let mut rng = Rng(self.opts.seed);
        let mut input = Vec::new();
        let mut chain = 0;
        let mut last_report = Instant::now();
        while Instant::now() < deadline && self.opts.runs.is_none_or(|r| self.execs < r) {
            // Mostly start over from a corpus entry; sometimes keep mutating the last input,
            // to get further from the seeds.
            if chain == 0 || rng.below(4) == 0 {
                input.clear();
                input.extend_from_slice(&corpus[rng.below(corpus.len())]);
                chain = 1 + rng.below(16);
            }
            chain -= 1;
            mutate(&mut rng, &mut input, &corpus, &dict, self.opts.max_len);
            if !self.exec(&input) {
                return 1;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("#{}\tpulse exec/s: {}", self.execs, self.rate());
            }
        }
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!("#{}\tDONE exec/s: {}", self.execs, self.rate());
        eprintln!("stat::number_of_executed_units: {}", self.execs);
        eprintln!("Done {} runs in {secs:.1} second(s)", self.execs);
        0
    }

    fn rate(&self) -> u64 {
        (self.execs as f64 / self.started.elapsed().as_secs_f64().max(1e-3)) as u64
    }

    fn load_corpus(&self) -> Vec<Vec<u8>> {
        let mut files = Vec::new();
        for dir in &self.opts.corpus {
            if let Ok(entries) = std::fs::read_dir(dir) {
                files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        }
        files.sort();
        let mut corpus: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        corpus
    }

    /// Run one input; `false` when it panicked (its input is saved).
    fn exec(&mut self, data: &[u8]) -> bool {
        // Saved first, so an abort (which no handler can catch) leaves the input behind.
        let saved = self.current.rewind().and_then(|()| self.current.write_all(data)).and_then(|()| {
            self.current.set_len(data.len() as u64)?;
            self.current.flush()
        });
        if let Err(e) = saved {
            eprintln!("fuzz-stable: cannot write {}: {e}", self.current_path.display());
        }
        RUNNING_SINCE.store(self.started.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let target = self.target;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(data)));
        RUNNING_SINCE.store(0, Ordering::SeqCst);
        self.execs += 1;
        if result.is_err() {
            eprintln!("==fuzz-stable== ERROR: the target panicked (execution #{})", self.execs);
            save(&self.opts.artifacts, "crash", data);
            return false;
        }
        true
    }

    /// Reports and ends the process when one input runs longer than the timeout or the
    /// process holds more memory than the limit.
    fn start_watchdog(&self) {
        let started = self.started;
        let timeout_ms = self.opts.timeout.saturating_mul(1000);
        let rss_limit = self.opts.rss_limit_mb.saturating_mul(1 << 20);
        let artifacts = self.opts.artifacts.clone();
        let current = self.current_path.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let since = RUNNING_SINCE.load(Ordering::SeqCst);
                let now = started.elapsed().as_millis() as u64 + 1;
                let (kind, why) = if since != 0 && timeout_ms > 0 && now.saturating_sub(since) > timeout_ms {
                    ("timeout", format!("one input ran longer than {} s", timeout_ms / 1000))
                } else if rss_limit > 0 && resident_bytes().is_some_and(|r| r > rss_limit) {
                    ("oom", format!("the process holds more than {} MB", rss_limit >> 20))
                } else {
                    continue;
                };
                eprintln!("==fuzz-stable== ERROR: {kind}: {why}");
                match std::fs::read(&current) {
                    Ok(data) => save(&artifacts, kind, &data),
                    Err(e) => eprintln!("fuzz-stable: cannot read {}: {e}", current.display()),
                }
                let _ = std::fs::remove_file(&current);
                std::process::exit(70);
            }
        });
    }
}

/// Save a reproducer under its content's digest, libFuzzer-style.
fn save(dir: &Path, kind: &str, data: &[u8]) {
    let path = dir.join(format!("{kind}-{}", format::text::hex(&Sha256::digest(data)[..20])));
    match std::fs::write(&path, data) {
        Ok(()) => eprintln!("Test unit written to {}", path.display()),
        Err(e) => eprintln!("fuzz-stable: cannot write {}: {e}", path.display()),
    }
    let shown = format::text::hex(&data[..data.len().min(64)]);
    eprintln!("Input ({} bytes), first bytes as hex: {shown}", data.len());
}

/// The resident set size, where `/proc` tells it.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 12] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b' ', b'"', b'{', b'[', b':', b'-'];

/// Apply 1 to 8 stacked mutations.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 << rng.below(4) {
        let len = input.len();
        match rng.below(11) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            2 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let span = if rng.below(8) == 0 { len - at } else { (len - at).min(16) };
                let n = 1 + rng.below(span);
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                // Copy a range elsewhere: grows nesting and repetition.
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let piece = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            6 => {
                // Splice: our head, another entry's tail.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            7 if !dict.is_empty() => {
                let token = &dict[rng.below(dict.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            8 if !dict.is_empty() && len > 0 => {
                let token = &dict[rng.below(dict.len())];
                let at = rng.below(len);
                let end = (at + token.len()).min(len);
                input.splice(at..end, token.iter().copied());
            }
            9 if len >= 4 => {
                // Nudge a little-endian u32 (lengths, offsets, counts).
                let at = rng.below(len - 3);
                let v = u32::from_le_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]);
                let delta = 1 + rng.below(16) as u32;
                let v = match rng.below(3) {
                    0 => v.wrapping_add(delta),
                    1 => v.wrapping_sub(delta),
                    _ => [0, 1, u32::MAX, 1 << 31, 1 << 16][rng.below(5)],
                };
                input[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            10 if len > 0 => {
                // Repeat a short range many times: deep nesting, long runs.
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(8));
                let piece = input[from..from + n].to_vec();
                let times = 1 + rng.below(256);
                let at = rng.below(len + 1);
                input.splice(at..at, piece.iter().copied().cycle().take(n * times));
            }
            _ => {}
        }
    }
    input.truncate(max_len);
}

/// A libFuzzer dictionary: one `"token"` per line (optionally `name="token"`), with `\\`,
/// `\"` and `\xNN` escapes; `#` starts a comment line.
fn load_dict(path: &Path) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("fuzz-stable: cannot read the dictionary {}", path.display());
        return Vec::new();
    };
    let mut tokens = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('"'), line.rfind('"')) else { continue };
        if close <= open {
            continue;
        }
        let body = &line.as_bytes()[open + 1..close];
        let mut token = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\\' if body.get(i + 1) == Some(&b'x') && i + 3 < body.len() => {
                    let hex = std::str::from_utf8(&body[i + 2..i + 4]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => token.push(b),
                        None => token.extend_from_slice(&body[i..i + 4]),
                    }
                    i += 4;
                }
                b'\\' if i + 1 < body.len() => {
                    token.push(body[i + 1]);
                    i += 2;
                }
                b => {
                    token.push(b);
                    i += 1;
                }
            }
        }
        if !token.is_empty() {
            tokens.push(token);
        }
    }
    tokens
}
