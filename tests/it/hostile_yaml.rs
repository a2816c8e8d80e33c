//! Hostile input (issue 7): files built to exhaust memory or the stack, characters YAML forbids,
//! things in the knowledge base that are not files, and names a megabyte long. Each is refused
//! with a diagnostic, quickly, within bounded memory, and never hangs or crashes `lorec`.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Address space `lorec` may use here: far more than these inputs need once refused, far less
/// than expanding them would take.
const ADDRESS_SPACE_KIB: u64 = 2 << 20;

/// Run `cmd` with at most [`ADDRESS_SPACE_KIB`] of address space (`ulimit -v`), killing it after
/// `limit`; `None` when it had to be killed. A regression then fails the test instead of taking
/// the machine down or hanging it.
fn run_bounded(cmd: &Command, limit: Duration) -> Option<Run> {
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    let mut child = wrapped.spawn().expect("spawn lorec");
    // Drain both pipes on their own threads, so a flood of output cannot block the child.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status?.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    };
    assert!(!run.stderr.contains("panicked"), "lorec panicked:\n{}", run.stderr);
    Some(run)
}

fn check_bounded(kb: &Path, limit: Duration) -> Run {
    run_bounded(lorec().arg("check").arg(kb), limit)
        .unwrap_or_else(|| panic!("lorec check did not finish within {limit:?}"))
}

/// The rendered diagnostics, without the closing summary line.
fn diagnostics(r: &Run) -> &str {
    r.stderr.rsplit_once("\nerror: knowledge base rejected").map_or(&r.stderr, |(d, _)| d)
}

#[test]
fn yaml_billion_laughs_is_refused_with_a_diagnostic_not_oom() {
    let kb = TempDir::new("laughs");
    let mut text = String::from("a0: &a0 x\n");
    for i in 1..10 {
        text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    kb.write("laughs.yaml", &text);
    let start = Instant::now();
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    // One error, nothing compiled: no flood of warnings about the copies.
    assert!(r.stderr.contains("1 error(s), 0 warning(s)"), "{}", r.stderr);
    insta::assert_snapshot!("billion_laughs", diagnostics(&r));

    // `build` checks first, so it is refused the same way before it embeds anything.
    let out = kb.path().join("out.lore");
    let mut build = lorec();
    build.arg("build").arg(kb.path()).arg("-o").arg(&out).arg("--model").arg(model_dir()).env("LORE_KEY", TEST_KEY);
    let r = run_bounded(&build, Duration::from_secs(60)).expect("lorec build finishes");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("error[alias-limit]"), "{}", r.stderr);
    assert!(!out.exists());
}

#[test]
fn deep_block_nesting_is_a_diagnostic_not_a_stack_overflow() {
    let kb = TempDir::new("deep");
    kb.write("lists.yaml", format!("{}v\n", "- ".repeat(10_000)));
    // 10,000 nested block mappings, one space of indentation per level (50 MB).
    let mut maps = String::with_capacity(10_000 * 5_004);
    for i in 0..10_000 {
        maps.push_str(&" ".repeat(i));
        maps.push_str("a:\n");
    }
    kb.write("maps.yaml", &maps);
    drop(maps);
    // Several files, so they are checked on worker threads (2 MiB stacks), not the main thread.
    kb.write("ok.yaml", "a: b\n");
    let r = check_bounded(kb.path(), Duration::from_secs(60));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("2 error(s), 0 warning(s)"), "{}", r.stderr);
    assert!(r.stderr.contains("--> lists.yaml:1:257\n"), "{}", r.stderr);
    assert!(r.stderr.contains("--> maps.yaml:129:129\n"), "{}", r.stderr);
    let lists = diagnostics(&r).split("\n\n").find(|d| d.contains("lists.yaml")).expect("lists.yaml");
    insta::assert_snapshot!("deep_block_nesting", lists);
}

#[test]
fn nul_byte_in_yaml_is_an_error() {
    let kb = TempDir::new("nul");
    // saphyr takes a NUL for the end of input: `b` and `c` used to vanish without a word.
    kb.write("a.yaml", b"a: x\x00y\nb: 2\nc: \x07\n");
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.stderr);
    insta::assert_snapshot!("nul_byte", diagnostics(&r));
    // Another control character alone is an error too.
    kb.write("a.yaml", b"a: ring\x07\n");
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("error[forbidden-character]: control character U+0007 in YAML"), "{}", r.stderr);
    assert!(r.stderr.contains("--> a.yaml:1:8\n"), "{}", r.stderr);
}

#[test]
fn merge_keys_are_resolved() {
    let kb = TempDir::new("merge");
    kb.write(
        "jobs.yaml",
        "defaults: &defaults\n  company: Lighthouse Board\n  city: Brest\n  tags: [coast]\n\
         jobs:\n  - <<: *defaults\n    id: keeper\n    title: Lighthouse keeper\n    city: Ouessant\n\
         \x20 - <<: [*defaults, {shift: night}]\n    id: lamp\n    title: Lamp engineer\n    shift: day\n",
    );
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "no duplicate-key or other diagnostic expected:\n{}", r.stderr);

    let out = kb.path().join("out/kb.lore");
    build(kb.path(), &out, &[]);
    let answer = ask(&out, "lighthouse keeper Ouessant", 10);
    let text = |id: &str| {
        answer["hits"]
            .as_array()
            .and_then(|hits| hits.iter().find(|h| h["id"] == id))
            .and_then(|h| h["text"].as_str())
            .unwrap_or_else(|| panic!("no hit {id}: {answer}"))
            .to_string()
    };
    let keeper = text("jobs.yaml#/jobs/0");
    assert!(!keeper.contains("<<"), "{keeper}");
    assert!(keeper.contains("Company: Lighthouse Board"), "{keeper}");
    assert!(keeper.contains("City: Ouessant") && !keeper.contains("Brest"), "explicit keys win:\n{keeper}");
    let lamp = text("jobs.yaml#/jobs/1");
    assert!(lamp.contains("City: Brest") && lamp.contains("Shift: day"), "{lamp}");
    assert!(!lamp.contains("<<") && !lamp.contains("night"), "{lamp}");

    // Merging anything but mappings is an error.
    kb.write("bad.yaml", "base: &b [1, 2]\njob:\n  <<: *b\n  title: x\n");
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.stderr);
    insta::assert_snapshot!("invalid_merge", diagnostics(&r));
}

#[test]
fn symlinked_folder_is_skipped_with_a_warning() {
    let tmp = TempDir::new("symdir");
    tmp.write("kb/a.yaml", "a: b\n");
    tmp.write("kb/real/c.yaml", "e: f\n");
    // Each file outside says (with a warning) whether it was read.
    tmp.write("outside/b.yaml", "hobbies: [chess, chess]\n");
    tmp.write("outside/c.yaml", "hobbies: [go, go]\n");
    let kb = tmp.path().join("kb");
    std::os::unix::fs::symlink("../outside", kb.join("linked")).expect("symlink");
    // A cycle, which following folder links would walk forever.
    std::os::unix::fs::symlink("..", kb.join("real/up")).expect("symlink");
    // Links to files are still followed.
    std::os::unix::fs::symlink("../outside/b.yaml", kb.join("b.yaml")).expect("symlink");
    let r = check_bounded(&kb, Duration::from_secs(30));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("b.yaml:1:18"), "the linked file is read:\n{}", r.stderr);
    assert!(!r.stderr.contains("c.yaml"), "the linked folder is not:\n{}", r.stderr);
    insta::assert_snapshot!("symlinked_folder", r.stderr);
    let denied = run_bounded(lorec().arg("check").arg(&kb).args(["--deny", "warnings"]), Duration::from_secs(30))
        .expect("finishes");
    assert_eq!(denied.code, 2, "{}", denied.stderr);
}

#[test]
fn fifo_source_is_refused_not_hung() {
    let kb = TempDir::new("fifo");
    kb.write("a.yaml", "a: b\n");
    let made = Command::new("mkfifo").arg(kb.path().join("pipe.yaml")).status().expect("mkfifo");
    assert!(made.success());
    let r = check_bounded(kb.path(), Duration::from_secs(10));
    assert_eq!(r.code, 2, "{}", r.stderr);
    insta::assert_snapshot!("fifo", diagnostics(&r));
}

#[test]
fn dev_zero_symlink_is_refused_not_read() {
    let kb = TempDir::new("zero");
    kb.write("a.yaml", "a: b\n");
    std::os::unix::fs::symlink("/dev/zero", kb.path().join("zero.yaml")).expect("symlink");
    let start = Instant::now();
    let r = check_bounded(kb.path(), Duration::from_secs(10));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    insta::assert_snapshot!("dev_zero", diagnostics(&r));
}

#[test]
fn unreadable_file_is_reported_without_a_fake_position() {
    let kb = TempDir::new("unreadable");
    kb.write("ok.yaml", "a: b\n");
    std::os::unix::fs::symlink(kb.path().join("missing-target"), kb.path().join("broken.yaml")).expect("symlink");
    let r = check_bounded(kb.path(), Duration::from_secs(10));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("error[unreadable]"), "{}", r.stderr);
    assert!(r.stderr.contains("\n --> broken.yaml\n"), "{}", r.stderr);
    assert!(!r.stderr.contains(":0:0"), "{}", r.stderr);
}

#[test]
fn a_huge_key_is_truncated_in_the_diagnostic() {
    let kb = TempDir::new("hugekey");
    let key = "k".repeat(1_000_000);
    // An explicit key (`? `) may be any length: a duplicate key a megabyte long.
    kb.write("dup.yaml", format!("? {key}\n: 1\n? {key}\n: 2\n"));
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.len() < 4_000, "{} bytes of diagnostics", r.stderr.len());
    insta::assert_snapshot!("huge_duplicate_key", diagnostics(&r));

    // A plain key that long is a syntax error at its end: the line is shown around the caret.
    std::fs::remove_file(kb.path().join("dup.yaml")).expect("rm");
    kb.write("plain.yaml", format!("{key}: 1\n"));
    let r = check_bounded(kb.path(), Duration::from_secs(30));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.len() < 4_000, "{} bytes of diagnostics", r.stderr.len());
    insta::assert_snapshot!("huge_plain_key", diagnostics(&r));
}
