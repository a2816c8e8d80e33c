//! Hostile and careless input to the binaries: each test is named after a defect found by an
//! adversarial pass (issue 7) and fails on the code before its fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::Server;
use crate::support::*;

/// A one-file knowledge base (our own FAQ) and its artifact.
fn faq_artifact(tmp: &TempDir) -> PathBuf {
    let kb = tmp.path().join("kb");
    std::fs::create_dir_all(&kb).expect("mkdir");
    std::fs::copy(workspace().join("data/faq.yaml"), kb.join("faq.yaml")).expect("copy");
    let out = tmp.path().join("faq.lore");
    build(&kb, &out, &[]);
    out
}

/// Run a command that must finish within `limit`; a hang is killed and fails the test.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Run {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert!(!run.stderr.contains("panicked"), "the binary panicked:\n{}", run.stderr);
    run
}

const QUICK: Duration = Duration::from_secs(20);

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn dev_zero_is_refused_as_an_artifact_and_as_a_key_file_instead_of_read_forever() {
    let tmp = TempDir::new("devzero");
    let art = faq_artifact(&tmp);
    for args in [&["verify", "/dev/zero"][..], &["inspect", "/dev/zero"]] {
        let r = run_bounded(lorec().args(args), QUICK);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("character device"), "{args:?}: {}", r.stderr);
    }
    let r = run_bounded(lore().args(["query", "/dev/zero", "hello"]).env("LORE_KEY", TEST_KEY), QUICK);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("character device"), "{}", r.stderr);
    let r = run_bounded(lore().arg("query").arg(&art).arg("hello").env("LORE_KEY_FILE", "/dev/zero"), QUICK);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("key file") && r.stderr.contains("character device"), "{}", r.stderr);
}

#[test]
fn an_oversized_source_file_is_refused_before_it_is_read() {
    let tmp = TempDir::new("huge");
    let kb = tmp.path().join("kb");
    std::fs::create_dir_all(&kb).expect("mkdir");
    std::fs::copy(workspace().join("data/faq.yaml"), kb.join("faq.yaml")).expect("copy");
    // Sparse: 300 MiB on paper, nothing on disk.
    let huge = std::fs::File::create(kb.join("huge.yaml")).expect("create");
    huge.set_len(300 << 20).expect("set_len");
    let r = run_bounded(lorec().arg("check").arg(&kb), QUICK);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("huge.yaml") && r.stderr.contains("the limit for one source file"), "{}", r.stderr);
}

#[test]
fn a_fifo_artifact_is_refused_instead_of_hanging() {
    let tmp = TempDir::new("fifo");
    let fifo = tmp.path().join("p.lore");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let r = run_bounded(lore().arg("serve").arg(&fifo).env("LORE_KEY", TEST_KEY), QUICK);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    let r = run_bounded(lorec().arg("inspect").arg(&fifo), QUICK);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
}

#[test]
fn a_folder_given_as_the_artifact_is_named_as_a_folder() {
    let tmp = TempDir::new("dirart");
    let r = run_bounded(lore().arg("query").arg(tmp.path()).arg("hello"), QUICK);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    assert!(!r.stderr.contains("No such device"), "{}", r.stderr);
}

#[test]
fn build_output_inside_the_sources_is_refused_and_the_source_is_untouched() {
    let tmp = TempDir::new("overwrite");
    let kb = tmp.path().join("kb");
    std::fs::create_dir_all(&kb).expect("mkdir");
    let faq = kb.join("faq.yaml");
    std::fs::copy(workspace().join("data/faq.yaml"), &faq).expect("copy");
    let before = std::fs::read(&faq).expect("read");
    let r = run(lorec()
        .arg("build")
        .arg(&kb)
        .arg("-o")
        .arg(&faq)
        .arg("--model")
        .arg(model_dir())
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("inside the knowledge base"), "{}", r.stderr);
    assert_eq!(std::fs::read(&faq).expect("read"), before, "the source was replaced");
    // A name the source scan does not read is fine inside the folder.
    build(&kb, &kb.join("faq.lore"), &[]);
}

#[test]
fn build_refuses_to_replace_a_file_that_is_not_an_artifact_without_force() {
    let tmp = TempDir::new("notart");
    let kb = tmp.path().join("kb");
    std::fs::create_dir_all(&kb).expect("mkdir");
    std::fs::copy(workspace().join("data/faq.yaml"), kb.join("faq.yaml")).expect("copy");
    let notes = tmp.write("notes.txt", "my notes\n");
    let r = run(lorec()
        .arg("build")
        .arg(&kb)
        .arg("-o")
        .arg(&notes)
        .arg("--model")
        .arg(model_dir())
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not a lore artifact"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&notes).expect("read"), "my notes\n");
    build(&kb, &notes, &["--force"]);
    // Replacing an artifact needs no flag.
    build(&kb, &notes, &[]);
}

#[test]
fn an_invalid_utf8_stdin_line_gets_an_error_line_and_the_loop_goes_on() {
    use std::io::Write as _;
    let tmp = TempDir::new("utf8");
    let art = faq_artifact(&tmp);
    let mut child = lore()
        .arg("serve")
        .arg(&art)
        .env("LORE_KEY", TEST_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"\xff\n{\"q\": \"Do you work remotely?\"}\n").expect("write");
    input.write_all(&[b'x'; 100_000]).expect("write");
    input.write_all(b"\n{\"q\": \"Are you available for a new job?\"}\n").expect("write");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each reply is JSON"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0]["error"]["message"].as_str().is_some_and(|m| m.contains("not UTF-8")), "{}", lines[0]);
    assert!(lines[1]["hits"].is_array(), "{}", lines[1]);
    assert!(lines[2]["error"]["message"].as_str().is_some_and(|m| m.contains("longer than")), "{}", lines[2]);
    assert!(lines[3]["hits"].is_array(), "{}", lines[3]);
}

/// Write `bytes` over the file's contents in place (same inode), as `cp` and `truncate` do.
fn overwrite_in_place(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(path).expect("open");
    f.write_all(bytes).expect("write");
}

#[test]
fn an_artifact_truncated_under_a_running_server_turns_it_unready_instead_of_killing_it() {
    let tmp = TempDir::new("truncate");
    let art = faq_artifact(&tmp);
    let server = Server::start(&art);
    let (status, _) = server.post(r#"{"q": "Do you work remotely?"}"#);
    assert_eq!(status, 200);
    std::fs::OpenOptions::new().write(true).open(&art).expect("open").set_len(1_000_000).expect("truncate");
    let (status, body) = server.post(r#"{"q": "Are you available for a new job?"}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("artifact_changed"), "{body}");
    assert!(!body.contains(art.to_str().expect("utf-8 path")), "the body names a server path: {body}");
    let (status, _) = server.get("/readyz");
    assert_eq!(status, 503);
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200, "the process is still alive");
}

#[test]
fn an_artifact_copied_over_in_place_is_detected_and_a_private_copy_keeps_serving() {
    let tmp = TempDir::new("inplace");
    let art = faq_artifact(&tmp);
    let copy_mode = tmp.path().join("copy.lore");
    std::fs::copy(&art, &copy_mode).expect("copy");
    let other = tmp.path().join("other.lore");
    build(&workspace().join("tests/compat/kb"), &other, &[]);
    let mapped = Server::start(&art);
    let private = Server::start_with(&copy_mode, &["--load", "copy"]);
    overwrite_in_place(&art, &std::fs::read(&other).expect("read"));
    overwrite_in_place(&copy_mode, &std::fs::read(&other).expect("read"));
    let (status, body) = mapped.post(r#"{"q": "Do you work remotely?"}"#);
    assert_eq!(status, 503, "{body}");
    assert_eq!(mapped.get("/readyz").0, 503);
    let (status, body) = private.post(r#"{"q": "Do you work remotely?"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hybrid"), "the private copy still answers from the original: {body}");
    assert_eq!(private.get("/readyz").0, 200);
}

#[test]
fn an_unsealed_artifact_served_with_a_key_is_warned_about_and_require_sealed_refuses_it() {
    let tmp = TempDir::new("unsealed");
    let kb = tmp.path().join("kb");
    std::fs::create_dir_all(&kb).expect("mkdir");
    std::fs::copy(workspace().join("data/faq.yaml"), kb.join("faq.yaml")).expect("copy");
    let art = tmp.path().join("plain.lore");
    build_plain(&kb, &art);
    let r = run(lore().arg("query").arg(&art).arg("Do you work remotely?").env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("NOT sealed"), "no warning: {}", r.stderr);
    let r = run(lore().arg("query").arg(&art).arg("Do you work remotely?").env("LORE_REQUIRE_SEALED", "true"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("require-sealed"), "{}", r.stderr);
}

#[test]
fn a_public_artifact_does_not_reveal_the_names_of_private_files() {
    let tmp = TempDir::new("private");
    let kb = tmp.path().join("kb");
    std::fs::create_dir_all(kb.join("secret-plans")).expect("mkdir");
    std::fs::copy(workspace().join("data/faq.yaml"), kb.join("faq.yaml")).expect("copy");
    std::fs::write(
        kb.join("secret-plans/acquisition-bigcorp-march.yaml"),
        "plans:\n- id: bigcorp\n  title: Acquire BigCorp in March\n  visibility: private\n",
    )
    .expect("write");
    let art = tmp.path().join("public.lore");
    build(&kb, &art, &[]);
    let bytes = std::fs::read(&art).expect("read");
    for needle in [&b"acquisition-bigcorp"[..], b"secret-plans", b"faq.yaml"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} is in the file's bytes",
            String::from_utf8_lossy(needle)
        );
    }
    let keyless = run(lorec().arg("inspect").arg(&art).arg("--json"));
    assert_eq!(keyless.code, 0, "{}", keyless.stderr);
    let info: serde_json::Value = serde_json::from_str(&keyless.stdout).expect("json");
    assert!(info["sources"].is_null(), "sources shown without the key: {}", info["sources"]);
    let keyed = run(lorec().arg("inspect").arg(&art).arg("--json").env("LORE_KEY", TEST_KEY));
    let info: serde_json::Value = serde_json::from_str(&keyed.stdout).expect("json");
    let paths: Vec<&str> =
        info["sources"].as_array().expect("list").iter().filter_map(|s| s["path"].as_str()).collect();
    assert_eq!(paths, ["faq.yaml"], "only the included source is named");
    // An internal build includes the file, and so names it.
    let internal = tmp.path().join("internal.lore");
    build(&kb, &internal, &["--audience", "internal"]);
    let keyed = run(lorec().arg("inspect").arg(&internal).arg("--json").env("LORE_KEY", TEST_KEY));
    let info: serde_json::Value = serde_json::from_str(&keyed.stdout).expect("json");
    assert_eq!(info["sources"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_tampered_model_section_is_refused_at_open_instead_of_served() {
    let tmp = TempDir::new("model");
    let art = faq_artifact(&tmp);
    let model = section_range(&art, "model");
    let mut bytes = std::fs::read(&art).expect("read");
    // Random-looking bytes over the middle of the embedding table, as in the report.
    let mut state = 0x1234_5678_u32;
    for b in &mut bytes[model.start + model.len() / 4..model.start + model.len() / 2] {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *b = state as u8;
    }
    std::fs::write(&art, &bytes).expect("write");
    let r = run(lore().arg("query").arg(&art).arg("Do you work remotely?").env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 2, "a tampered model was served:\n{}", r.stdout);
    assert!(r.stderr.contains("model section does not match its digest"), "{}", r.stderr);
    assert!(!r.stderr.contains("debug"), "{}", r.stderr);
}

#[test]
fn a_closed_stderr_does_not_make_lorec_panic() {
    let tmp = TempDir::new("stderr");
    let kb = tmp.write("kb/bad.yaml", "jobs:\n  - id: a\n    id: b\n");
    let kb = kb.parent().expect("kb");
    for args in [
        vec!["check".to_string()],
        vec![
            "build".into(),
            "-o".into(),
            tmp.path().join("x.lore").display().to_string(),
            "--model".into(),
            model_dir().display().to_string(),
        ],
    ] {
        let mut child = lorec()
            .args(&args[..1])
            .arg(kb)
            .args(&args[1..])
            .env("LORE_KEY", TEST_KEY)
            .env("LORE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // `2>&1 | true`: the reader is gone before lorec writes anything.
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(2), "{args:?}: lorec must reject the input, not panic (101)");
    }
}

#[test]
fn new_artifacts_are_private_and_a_rebuild_keeps_the_mode_it_replaces() {
    let tmp = TempDir::new("mode");
    let art = faq_artifact(&tmp);
    assert_eq!(mode_of(&art), 0o600);
    std::fs::set_permissions(&art, std::os::unix::fs::PermissionsExt::from_mode(0o640)).expect("chmod");
    build(&tmp.path().join("kb"), &art, &[]);
    assert_eq!(mode_of(&art), 0o640, "the rebuild reset the mode");
    let shared = tmp.path().join("shared.lore");
    build(&tmp.path().join("kb"), &shared, &["--mode", "644"]);
    assert_eq!(mode_of(&shared), 0o644);
}

#[test]
fn a_key_file_others_can_read_draws_a_warning() {
    let tmp = TempDir::new("keyfile");
    let art = faq_artifact(&tmp);
    let key = tmp.write("lore.key", format!("{TEST_KEY}\n"));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let r = run(lore().arg("query").arg(&art).arg("Do you work remotely?").env("LORE_KEY_FILE", &key));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("readable by") && r.stderr.contains("chmod 600"), "{}", r.stderr);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let r = run(lore().arg("query").arg(&art).arg("Do you work remotely?").env("LORE_KEY_FILE", &key));
    assert!(!r.stderr.contains("readable by"), "{}", r.stderr);
}

#[test]
fn temporaries_left_by_a_killed_build_are_removed_by_the_next_build() {
    let tmp = TempDir::new("stale");
    let art = faq_artifact(&tmp);
    // What `kill -9` during the write leaves: a temporary no process holds.
    let stale = tmp.write(".faq.lore.4242.tmp", vec![7u8; 4096]);
    // A build still writing holds its temporary's lock; it must survive.
    let live = tmp.write(".faq.lore.4243.tmp", vec![7u8; 4096]);
    let held = std::fs::OpenOptions::new().write(true).open(&live).expect("open");
    held.lock().expect("lock");
    build(&tmp.path().join("kb"), &art, &[]);
    assert!(!stale.exists(), "the stale temporary is still there");
    assert!(live.exists(), "a live build's temporary was removed");
    drop(held);
}

#[test]
fn an_oversized_key_file_and_a_bad_mode_are_named_errors() {
    let tmp = TempDir::new("badargs");
    let art = faq_artifact(&tmp);
    let key = tmp.write("big.key", vec![b'A'; 10_000]);
    let r = run(lore().arg("query").arg(&art).arg("hello").env("LORE_KEY_FILE", &key));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("key file") && r.stderr.contains("the limit is 4096 bytes"), "{}", r.stderr);
    let r = run(lorec().arg("build").arg(tmp.path().join("kb")).arg("-o").arg(&art).args(["--mode", "999"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not an octal file mode"), "{}", r.stderr);
}
