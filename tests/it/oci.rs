//! Artifacts through a real OCI registry: Debian's `docker-registry` (the CNCF distribution
//! server) on loopback, started by each test with its own storage. `lorec publish` pushes,
//! `lore` pulls by tag and by digest into its cache, `lorec promote` moves `stable` forward and
//! back while a server follows it on SIGHUP; a tampered artifact, a wrong digest, a corrupted
//! or truncated blob in the registry's storage and missing credentials are each refused.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// `ci` / `lore-test-password`, bcrypt: the registry's htpasswd accepts nothing else.
const HTPASSWD: &str = "ci:$2b$12$dGC0iIv//QJNnS6w8A3MjO6nP4imBsrfS1Mm7NbU/zQubYlvG0dcy\n";
const PASSWORD: &str = "lore-test-password";

struct Registry {
    child: Child,
    host: String,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path, with_auth: bool) -> Registry {
        let binary = std::env::var("LORE_DOCKER_REGISTRY").unwrap_or_else(|_| "/usr/bin/docker-registry".into());
        assert!(
            Path::new(&binary).exists(),
            "the OCI registry is not installed: `apt-get install docker-registry` (`.ci/run` does), or set LORE_DOCKER_REGISTRY"
        );
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.join("registry-storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: lore-tests-only\n",
            storage.display()
        );
        if with_auth {
            std::fs::write(dir.join("htpasswd"), HTPASSWD).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: lore-tests\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        let config_path = dir.join("registry.yml");
        std::fs::write(&config_path, config).expect("config");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen on {host}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, host, storage }
    }

    /// The file the registry keeps blob `digest` in (its filesystem driver's layout).
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_digest(line: &str) -> bool {
    line.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn publish(file: &Path, target: &str) -> Run {
    run(lorec().arg("publish").arg(file).arg(target).env("LORE_KEY", TEST_KEY))
}

fn promote(repo: &str, version: &str, tag: &str) -> Run {
    run(lorec().args(["promote", repo, version, tag]))
}

/// `lore query REFERENCE --json` with its own cache; returns the run.
fn query(reference: &str, cache: &Path) -> Run {
    run(lore()
        .args(["query", reference, "What is this knowledge base about?", "--json"])
        .env("LORE_KEY", TEST_KEY)
        .env("LORE_LOG", "info")
        .env("LORE_CACHE_DIR", cache))
}

fn served_version(run: &Run) -> String {
    let answer: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON answer");
    answer["artifact"]["version"].as_str().expect("version").to_string()
}

fn two_versions(tmp: &TempDir) -> (PathBuf, PathBuf) {
    let kb = workspace().join("tests/compat/kb");
    let (one, two) = (tmp.path().join("kb-1.lore"), tmp.path().join("kb-2.lore"));
    for (out, version) in [(&one, "1.0.0"), (&two, "2.0.0")] {
        let r = build(&kb, out, &["--artifact-version", version]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    (one, two)
}

/// `lore serve REFERENCE --http`, following a tag on SIGHUP.
struct Serving(crate::serve::Server);

impl Serving {
    fn start(reference: &str, cache: &Path) -> Serving {
        let cache = format!("--cache-dir={}", cache.display());
        Serving(crate::serve::Server::start_with(Path::new(reference), &[&cache]))
    }

    fn version(&self) -> String {
        let (status, body) = self.0.post(r#"{"q": "What is this knowledge base about?"}"#);
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        json["artifact"]["version"].as_str().expect("version").to_string()
    }

    /// SIGHUP, then wait until the served version is `want`.
    fn reload_until(&self, want: &str) {
        let status = Command::new("kill").arg("-HUP").arg(self.0.child.id().to_string()).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.version();
            if now == want {
                return;
            }
            assert!(Instant::now() < deadline, "still serving {now} after SIGHUP, expected {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn publish_pull_by_tag_and_digest_then_promote_and_roll_back_while_serving() {
    let tmp = TempDir::new("oci");
    let registry = Registry::start(tmp.path(), false);
    let (one, two) = two_versions(&tmp);
    let repo = format!("oci://{}/lore/kb", registry.host);

    let mut digests = Vec::new();
    for (file, tag) in [(&one, "1.0.0"), (&two, "2.0.0")] {
        let r = publish(file, &format!("{repo}:{tag}"));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let last = r.stdout.lines().last().unwrap_or_default().to_string();
        assert!(is_digest(&last), "the last line is the manifest digest: {}", r.stdout);
        digests.push(last);
    }
    assert_ne!(digests[0], digests[1]);

    // By tag and by digest; the cache holds the artifact byte for byte.
    let cache = tmp.path().join("cache");
    let by_tag = query(&format!("{repo}:1.0.0"), &cache);
    assert_eq!(by_tag.code, 0, "{}", by_tag.stderr);
    assert_eq!(served_version(&by_tag), "1.0.0");
    assert!(by_tag.stderr.contains(&digests[0]), "the resolved digest is logged: {}", by_tag.stderr);
    let original = std::fs::read(&one).expect("artifact");
    let cached = cache.join(format!("sha256/{}.lore", sha256_hex(&original)));
    assert_eq!(std::fs::read(&cached).expect("cached layer"), original, "byte-identical round trip");
    let by_digest = query(&format!("{repo}@{}", digests[1]), &cache);
    assert_eq!(by_digest.code, 0, "{}", by_digest.stderr);
    assert_eq!(served_version(&by_digest), "2.0.0");

    // Promote 1.0.0 to stable and serve stable; promote 2.0.0, reload; roll back, reload.
    let p = promote(&repo, "1.0.0", "stable");
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert_eq!(p.stdout.lines().last(), Some(digests[0].as_str()), "{}", p.stdout);
    let serving = Serving::start(&format!("{repo}:stable"), &cache);
    assert_eq!(serving.version(), "1.0.0");
    let p = promote(&repo, &digests[1], "stable");
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert!(p.stdout.contains(&format!("{} -> {}", digests[0], digests[1])), "{}", p.stdout);
    serving.reload_until("2.0.0");
    let p = promote(&repo, "1.0.0", "stable");
    assert_eq!(p.code, 0, "{}", p.stderr);
    serving.reload_until("1.0.0");

    // The registry gone, a reload cannot resolve the tag: it is rejected as a fetch failure,
    // counted, and the served version keeps answering.
    drop(registry);
    let status = Command::new("kill").arg("-HUP").arg(serving.0.child.id().to_string()).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, metrics) = serving.0.get("/metrics");
        assert_eq!(code, 200);
        let rejected = metrics
            .lines()
            .find(|l| l.starts_with("lore_swaps_rejected_total{") && l.contains("reason=\"fetch\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if rejected.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no fetch rejection counted after SIGHUP:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(serving.version(), "1.0.0", "the old version keeps serving");
    drop(serving);

    // A digest is served from the cache; a tag cannot be resolved.
    let offline = query(&format!("{repo}@{}", digests[1]), &cache);
    assert_eq!(offline.code, 0, "{}", offline.stderr);
    assert_eq!(served_version(&offline), "2.0.0");
    let unreachable = query(&format!("{repo}:stable"), &cache);
    assert_eq!(unreachable.code, 1, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains(&format!("{repo}:stable")),
        "the error names the reference: {}",
        unreachable.stderr
    );
}

#[test]
fn tampered_artifacts_wrong_digests_and_corrupted_blobs_are_refused() {
    let tmp = TempDir::new("oci-bad");
    let registry = Registry::start(tmp.path(), false);
    let (one, _) = two_versions(&tmp);
    let repo = format!("oci://{}/lore/kb", registry.host);
    let cache = tmp.path().join("cache");

    // `publish` verifies first: a flipped byte never reaches the registry.
    let mut bytes = std::fs::read(&one).expect("artifact");
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tampered = tmp.write("tampered.lore", &bytes);
    let r = publish(&tampered, &format!("{repo}:bad"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("refusing to publish"), "{}", r.stderr);
    let missing = query(&format!("{repo}:bad"), &cache);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    let r = publish(&one, &format!("{repo}:1.0.0"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let digest = r.stdout.lines().last().unwrap_or_default().to_string();

    // A digest the registry does not hold.
    let wrong = format!("{repo}@sha256:{}", "0".repeat(64));
    let r = query(&wrong, &cache);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not found") && r.stderr.contains(&wrong), "{}", r.stderr);

    // The registry's copy of the layer corrupted in place, then truncated: refused, and
    // nothing (not even a partial file) is left in the cache.
    let layer = registry.blob_path(&format!("sha256:{}", sha256_hex(&std::fs::read(&one).expect("artifact"))));
    let good = std::fs::read(&layer).expect("the layer blob in the registry's storage");
    let mut corrupt = good.clone();
    corrupt[at] ^= 1;
    std::fs::write(&layer, &corrupt).expect("corrupt");
    let r = query(&format!("{repo}@{digest}"), &cache);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("digest mismatch"), "{}", r.stderr);
    std::fs::write(&layer, &good[..good.len() / 2]).expect("truncate");
    let r = query(&format!("{repo}:1.0.0"), &cache);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{repo}:1.0.0")), "{}", r.stderr);
    let blobs: Vec<_> = std::fs::read_dir(cache.join("sha256"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "nothing unverified is cached: {blobs:?}");

    // Restored, it is fetched and served.
    std::fs::write(&layer, &good).expect("restore");
    let r = query(&format!("{repo}@{digest}"), &cache);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Promoting something that does not exist is an error naming it.
    let p = promote(&repo, "9.9.9", "stable");
    assert_ne!(p.code, 0);
    assert!(p.stderr.contains(&format!("{repo}:9.9.9")), "{}", p.stderr);
}

#[test]
fn a_registry_with_credentials_takes_them_from_the_environment_or_docker_config() {
    let tmp = TempDir::new("oci-auth");
    let registry = Registry::start(tmp.path(), true);
    let art = tmp.path().join("kb.lore");
    assert_eq!(build(&workspace().join("tests/compat/kb"), &art, &[]).code, 0);
    let target = format!("oci://{}/lore/kb:1", registry.host);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let publish_as = |envs: &[(&str, &str)]| {
        let mut cmd = lorec();
        cmd.arg("publish").arg(&art).arg(&target).env("LORE_KEY", TEST_KEY).env("HOME", &home);
        for var in [
            "LORE_REGISTRY_USERNAME",
            "LORE_REGISTRY_PASSWORD",
            "DOCKER_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_RUNTIME_DIR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };

    let anonymous = publish_as(&[]);
    assert_eq!(anonymous.code, 1, "{}", anonymous.stderr);
    assert!(anonymous.stderr.contains("LORE_REGISTRY_USERNAME"), "{}", anonymous.stderr);
    let wrong = publish_as(&[("LORE_REGISTRY_USERNAME", "ci"), ("LORE_REGISTRY_PASSWORD", "not-it")]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(!wrong.stderr.contains("not-it"), "the password is never printed: {}", wrong.stderr);

    let env = publish_as(&[("LORE_REGISTRY_USERNAME", "ci"), ("LORE_REGISTRY_PASSWORD", PASSWORD)]);
    assert_eq!(env.code, 0, "{}", env.stderr);
    assert!(!env.stderr.contains(PASSWORD) && !env.stdout.contains(PASSWORD));

    // `docker login`'s file: auths.HOST.auth = base64(user:password).
    let docker = tmp.path().join("docker");
    std::fs::create_dir_all(&docker).expect("docker config dir");
    let auth = base64(format!("ci:{PASSWORD}").as_bytes());
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, registry.host),
    )
    .expect("config.json");
    let from_file = publish_as(&[("DOCKER_CONFIG", &docker.display().to_string())]);
    assert_eq!(from_file.code, 0, "{}", from_file.stderr);

    // Pulling needs them too.
    let cache = tmp.path().join("cache");
    let mut pull = lore();
    pull.args(["query", &target, "anything", "--json"])
        .env("LORE_KEY", TEST_KEY)
        .env("LORE_CACHE_DIR", &cache)
        .env("HOME", &home)
        .env_remove("DOCKER_CONFIG");
    let denied = run(&mut pull);
    assert_ne!(denied.code, 0, "{}", denied.stderr);
    let allowed = run(pull.env("DOCKER_CONFIG", &docker));
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
}

/// A 1 MiB tmpfs, unmounted on drop: a disk that fills up (mounting needs root, as CI is).
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(at: PathBuf) -> TinyDisk {
        std::fs::create_dir_all(&at).expect("mount point");
        let r = run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&at));
        assert_eq!(r.code, 0, "cannot mount a 1 MiB tmpfs (needs root, as CI runs): {}", r.stderr);
        TinyDisk(at)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(files_under(&path)) } else { found.push(path) }
    }
    found
}

#[test]
fn a_full_disk_is_an_error_naming_the_reference_and_leaves_nothing_half_written() {
    let tmp = TempDir::new("oci-full");
    let registry = Registry::start(tmp.path(), false);
    let artifact = tmp.path().join("kb.lore");
    build(&workspace().join("tests/compat/kb"), &artifact, &["--artifact-version", "1.0.0"]);
    assert!(std::fs::metadata(&artifact).expect("artifact").len() > 1 << 20, "larger than the disk");
    let repo = format!("oci://{}/lore/full", registry.host);
    let r = publish(&artifact, &format!("{repo}:1.0.0"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let digest = r.stdout.lines().last().unwrap_or_default().to_string();

    let disk = TinyDisk::mount(tmp.path().join("tiny"));
    for reference in [format!("{repo}@{digest}"), format!("{repo}:1.0.0")] {
        let r = query(&reference, &disk.0);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains(&reference), "the error names the reference: {}", r.stderr);
        assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
        // What was fetched before the disk filled up is gone: no partial layer stays behind.
        let left: Vec<PathBuf> =
            files_under(&disk.0).into_iter().filter(|p| p.extension().is_none_or(|e| e != "json")).collect();
        assert!(left.is_empty(), "left in the cache: {left:?}");
    }
}
