//! The image: `podman build -f Containerfile` from `target/container/` (made by `cargo xtask
//! test`), run read-only as its non-root user, asked a question over HTTP on 7860, stopped with
//! SIGTERM: a clean exit. Podman and runc come from Debian; `.ci/run` installs them and
//! `../shared/podman/containers.conf` as `/etc/containers/containers.conf`.

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

fn podman(args: &[&str]) -> Run {
    run(Command::new("podman").args(args))
}

#[test]
fn the_image_serves_the_baked_artifact_as_a_non_root_user_and_stops_cleanly_on_sigterm() {
    let root = workspace();
    assert!(
        Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()),
        "podman is not installed: `apt-get install podman runc` (`.ci/run` does)"
    );
    let context = root.join("target/container");
    for file in ["lore", "data.lore"] {
        assert!(context.join(file).exists(), "target/container/{file} is missing: run `cargo xtask container`");
    }
    let key = std::fs::read_to_string(root.join("artifacts/demo.key")).expect("artifacts/demo.key");
    let tag = format!("localhost/lore-test:{}", std::process::id());
    let built = run(Command::new("podman").args(["build", "-f", "Containerfile", "-t", &tag, "."]).current_dir(&root));
    assert_eq!(built.code, 0, "podman build failed:\n{}\n{}", built.stdout, built.stderr);

    let inspect = |format: &str| podman(&["image", "inspect", "--format", format, &tag]).stdout.trim().to_string();
    assert_eq!(inspect("{{.Config.User}}"), "1000:1000");
    let size: u64 = inspect("{{.Size}}").parse().expect("image size");
    assert!(size <= 15_000_000, "the image is {size} bytes; the floor is 15 MB");

    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let name = format!("lore-test-{}", std::process::id());
    let started = Instant::now();
    let up = run(Command::new("podman")
        .args(["run", "-d", "--name", &name, "--read-only", "-p", &format!("127.0.0.1:{port}:7860"), "-e", "LORE_KEY"])
        .arg(&tag)
        .env("LORE_KEY", key.trim()));
    assert_eq!(up.code, 0, "podman run failed: {}", up.stderr);
    let cleanup = |name: &str| {
        let _ = podman(&["rm", "-f", name]);
        let _ = podman(&["rmi", "-f", &tag]);
    };
    let ready = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read as _, Write as _};
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(s, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            if raw.starts_with("HTTP/1.1 200") {
                break true;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !ready {
        let logs = podman(&["logs", &name]);
        cleanup(&name);
        panic!("the container never became ready:\n{}\n{}", logs.stdout, logs.stderr);
    }
    let answer = {
        use std::io::{Read as _, Write as _};
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(s, "GET /v1/query?q=what+kind+of+robots+do+you+build HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw
    };
    eprintln!("podman run to first answer: {:?}", started.elapsed());
    let stopped = podman(&["stop", "-t", "20", &name]);
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]).stdout.trim().to_string();
    let logs = podman(&["logs", &name]);
    let user = podman(&["inspect", "--format", "{{.Config.User}}", &name]).stdout.trim().to_string();
    cleanup(&name);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_lowercase().contains("robot"), "{answer}");
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    assert_eq!(code, "0", "lore exits 0 on SIGTERM; its log:\n{}{}", logs.stdout, logs.stderr);
    assert_eq!(user, "1000:1000");
    // The log is JSON lines (LORE_LOG_FORMAT=json in the image).
    let log = format!("{}{}", logs.stdout, logs.stderr);
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("\"level\"")), "{log}");
}

#[test]
fn the_hugging_face_space_dockerfile_builds_from_the_files_it_names() {
    let root = workspace();
    let context = root.join("target/container");
    assert!(context.join("lore").exists(), "run `cargo xtask container` first");
    // The Space's repository: the three built files beside the recipe's Dockerfile.
    let tmp = TempDir::new("space");
    for file in ["lore", "data.lore"] {
        std::fs::copy(context.join(file), tmp.path().join(file)).expect("copy");
    }
    std::fs::copy(root.join("deploy/huggingface/Dockerfile"), tmp.path().join("Dockerfile")).expect("Dockerfile");
    let tag = format!("localhost/lore-space-test:{}", std::process::id());
    let built = run(Command::new("podman").args(["build", "-t", &tag, "."]).current_dir(tmp.path()));
    assert_eq!(built.code, 0, "{}\n{}", built.stdout, built.stderr);
    let inspect = |format: &str| podman(&["image", "inspect", "--format", format, &tag]).stdout.trim().to_string();
    let (user, ports) = (inspect("{{.Config.User}}"), inspect("{{.Config.ExposedPorts}}"));
    let _ = podman(&["rmi", "-f", &tag]);
    assert_eq!(user, "1000:1000");
    assert!(ports.contains("7860"), "{ports}");
}

/// The image's `lore` leaves the OCI client out to stay small: an `oci://` reference is
/// refused at once, by name, with what to use instead, and exit 2 (the input, not the network).
#[test]
fn the_images_lore_without_the_oci_feature_refuses_oci_references_by_name() {
    let lore = workspace().join("target/container/lore");
    assert!(lore.exists(), "target/container/lore is missing: run `cargo xtask container`");
    let r = run(std::process::Command::new(&lore).env_clear().args([
        "query",
        "oci://127.0.0.1:1/lore/kb:stable",
        "What do you build?",
    ]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("oci://127.0.0.1:1/lore/kb:stable"), "{}", r.stderr);
    assert!(r.stderr.contains("without OCI support") && r.stderr.contains("https://URL#sha256=HEX"), "{}", r.stderr);
}
