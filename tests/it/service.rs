//! `lore serve` as a service: several knowledge bases, sticky A/B variants, hot swap under
//! load, rejected swaps, rollback, admin auth, metrics and request ids. Every test drives the
//! real binaries over loopback HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A knowledge base whose every text carries `year`, so any hit tells which build it came from.
fn versioned_kb(tmp: &TempDir, name: &str, year: u32) -> PathBuf {
    let dir = tmp.path().join(format!("kb-{name}-{year}"));
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(
        dir.join("jobs.yaml"),
        format!(
            "jobs:\n  - id: keeper\n    title: Lighthouse keeper in {year}\n    company: Northern Lights Board\n    achievements:\n      - Kept the lamp lit through the storm of {year}\n  - id: baker\n    title: Night baker at the harbour bakery in {year}\n    achievements:\n      - Baked rye bread for the harbour every night of {year}\n"
        ),
    )
    .expect("write kb");
    dir
}

/// Build the `year` knowledge base as artifact `version`, sealed with `key`.
fn artifact(tmp: &TempDir, year: u32, version: &str, key: &str) -> PathBuf {
    let kb = versioned_kb(tmp, "jobs", year);
    let out = tmp.path().join(format!("jobs-{version}-{}.lore", &key[..4]));
    let r = run(lorec()
        .arg("build")
        .arg(&kb)
        .arg("-o")
        .arg(&out)
        .arg("--model")
        .arg(model_dir())
        .arg("--no-cache")
        .args(["--artifact-version", version])
        .env("LORE_KEY", key));
    assert_eq!(r.code, 0, "lorec build failed:\n{}", r.stderr);
    out
}

/// Put `src`'s bytes at `dst` the way lorec does: a temporary file renamed over it.
fn replace_by_rename(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("incoming");
    std::fs::copy(src, &tmp).expect("copy");
    std::fs::rename(&tmp, dst).expect("rename");
}

fn replace_bytes_by_rename(bytes: &[u8], dst: &Path) {
    let tmp = dst.with_extension("incoming");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dst).expect("rename");
}

/// A running `lore serve --http 127.0.0.1:0`, its stderr collected.
struct Lore {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Lore {
    /// `lore serve ARGS --http 127.0.0.1:0` with `LORE_KEY` = the test key and `envs`.
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Lore {
        Lore::try_start(args, envs)
            .unwrap_or_else(|(code, log)| panic!("lore exited ({code}) before listening:\n{log}"))
    }

    fn try_start(args: &[&str], envs: &[(&str, &str)]) -> Result<Lore, (i32, String)> {
        let mut cmd: Command = lore();
        cmd.arg("serve").args(args).args(["--http", "127.0.0.1:0"]).env("LORE_KEY", TEST_KEY).env("LORE_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let log = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line).expect("stderr") == 0 {
                let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
                let text = log.lock().expect("log").clone();
                return Err((code, text));
            }
            log.lock().expect("log").push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("lore: listening on http://") {
                break rest.to_string();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(stderr.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock().expect("log").push_str(&line);
                line.clear();
            }
        });
        Ok(Lore { child, addr, log })
    }

    fn conn(&self) -> Conn {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Conn(s)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.conn().send("GET", path, headers, "")
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.conn().send("POST", path, headers, body)
    }

    fn admin(&self, method: &str, path: &str) -> Reply {
        self.conn().send(method, path, &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))], "")
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().expect("kill").success());
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Poll `/v1/artifact` (with `headers`) until it reports `version`.
    fn wait_for_version(&self, headers: &[(&str, &str)], path: &str, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(path, headers);
            if r.status == 200 && r.json()["version"] == version {
                return;
            }
            assert!(Instant::now() < deadline, "{path} never served {version}; last: {r:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kept-alive HTTP/1.1 connection.
struct Conn(TcpStream);

impl Conn {
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.try_send(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn try_send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<Reply> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: lore\r\nContent-Length: {}\r\n", body.len());
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        self.0.write_all(head.as_bytes())?;
        read_reply(&mut self.0)
    }
}

const QUERY: &str = r#"{"q": "who kept the lamp lit through the storm", "k": 2, "include_off_topic": true}"#;

/// Every hit of an answer comes from the build its `artifact.version` names.
fn assert_one_artifact(answer: &serde_json::Value, years: &HashMap<&str, u32>) {
    let version = answer["artifact"]["version"].as_str().expect("version");
    let year = years.get(version).unwrap_or_else(|| panic!("unknown version {version}"));
    let hits = answer["hits"].as_array().expect("hits");
    assert!(!hits.is_empty(), "{answer}");
    for hit in hits {
        let text = hit["text"].as_str().unwrap_or_default();
        assert!(text.contains(&year.to_string()), "an answer from {version} holds a hit from another build: {text}");
    }
}

fn metrics(lore: &Lore) -> prometheus_parse::Scrape {
    let r = lore.get("/metrics", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").is_some_and(|c| c.contains("text")), "{}", r.head);
    prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text exposition")
}

/// The sum of the samples named `name` whose labels include every pair of `labels`.
fn metric_sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn fifty_swaps_under_load_fail_no_request_and_never_mix_two_artifacts() {
    let tmp = TempDir::new("swaps");
    let v1 = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let v2 = artifact(&tmp, 2024, "2.0.0", TEST_KEY);
    let live = tmp.path().join("live.lore");
    replace_by_rename(&v1, &live);
    let lore = Lore::start(&[live.to_str().expect("utf8"), "--watch-ms", "0"], &[("LORE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let years: HashMap<&str, u32> = [("1.0.0", 1987), ("2.0.0", 2024)].into_iter().collect();

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let mut conn = lore.conn();
            let stop = stop.clone();
            let years = years.clone();
            std::thread::spawn(move || {
                let mut seen: HashMap<String, usize> = HashMap::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = match conn.try_send("POST", "/v1/query", &[], QUERY) {
                        Ok(r) => r,
                        Err(e) => {
                            failures.push(format!("transport: {e}"));
                            break;
                        }
                    };
                    if r.status != 200 {
                        failures.push(format!("{} {}", r.status, r.body));
                        continue;
                    }
                    let answer = r.json();
                    assert_one_artifact(&answer, &years);
                    let version = answer["artifact"]["version"].as_str().unwrap_or_default().to_string();
                    assert_eq!(r.header("x-lore-artifact-version").as_deref(), Some(version.as_str()), "{}", r.head);
                    *seen.entry(version).or_default() += 1;
                }
                (seen, failures)
            })
        })
        .collect();

    for i in 0..50 {
        let (next, version) = if i % 2 == 0 { (&v2, "2.0.0") } else { (&v1, "1.0.0") };
        replace_by_rename(next, &live);
        if i % 5 == 4 {
            lore.signal("-HUP");
        } else {
            let r = lore.admin("POST", "/admin/reload");
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.json()["swapped"], 1, "{}", r.body);
        }
        lore.wait_for_version(&[], "/v1/artifact", version);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut totals: HashMap<String, usize> = HashMap::new();
    for c in clients {
        let (seen, failures) = c.join().expect("a client thread panicked");
        assert!(
            failures.is_empty(),
            "{} failed requests while swapping, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        for (v, n) in seen {
            *totals.entry(v).or_default() += n;
        }
    }
    assert!(
        totals.get("1.0.0").copied().unwrap_or(0) > 0 && totals.get("2.0.0").copied().unwrap_or(0) > 0,
        "{totals:?}"
    );
    let scrape = metrics(&lore);
    assert_eq!(metric_sum(&scrape, "lore_swaps_total", &[("kb", "default")]), 50.0);
    let served: f64 = totals.values().sum::<usize>() as f64;
    assert!(metric_sum(&scrape, "lore_requests_total", &[("outcome", "ok")]) >= served, "{totals:?}");
}

#[test]
fn bad_artifacts_offered_for_a_swap_are_rejected_and_the_old_one_keeps_serving() {
    let tmp = TempDir::new("reject");
    let v1 = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let wrong_key = artifact(&tmp, 2024, "2.0.0", OTHER_KEY);
    let good = std::fs::read(&v1).expect("read");
    let index = section_range(&v1, "index");
    let mut corrupt = good.clone();
    corrupt[index.start + 10] ^= 0x5a;
    let truncated = good[..good.len() / 2].to_vec();
    let mut too_new = good.clone();
    too_new[8..12].copy_from_slice(&99u32.to_le_bytes());
    too_new[12..16].copy_from_slice(&99u32.to_le_bytes());

    let live = tmp.path().join("live.lore");
    replace_by_rename(&v1, &live);
    let lore = Lore::start(&[live.to_str().expect("utf8")], &[("LORE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("corrupt", corrupt),
        ("truncated", truncated),
        ("wrong_key", std::fs::read(&wrong_key).expect("read")),
        ("too_new", too_new),
    ];
    for (reason, bytes) in cases {
        replace_bytes_by_rename(&bytes, &live);
        let r = lore.admin("POST", "/admin/reload");
        assert_eq!(r.status, 422, "{reason}: {r:?}");
        let body = r.json();
        assert_eq!(body["error"]["code"], "reload_failed", "{body}");
        assert_eq!(body["error"]["details"]["variants"][0]["reason"], reason, "{body}");
        let answer = lore.post("/v1/query", &[], QUERY);
        assert_eq!(answer.status, 200, "{reason}: {answer:?}");
        assert_eq!(answer.json()["artifact"]["version"], "1.0.0", "{reason}");
        assert_eq!(lore.get("/readyz", &[]).status, 200, "{reason}");
    }
    let scrape = metrics(&lore);
    for reason in ["corrupt", "truncated", "wrong_key", "too_new"] {
        assert!(
            metric_sum(&scrape, "lore_swaps_rejected_total", &[("kb", "default"), ("reason", reason)]) >= 1.0,
            "no rejection counted for {reason}"
        );
    }
    assert_eq!(metric_sum(&scrape, "lore_swaps_total", &[]), 0.0);
    assert!(lore.log().contains("swap rejected"), "{}", lore.log());
    // The good artifact put back is taken again.
    replace_by_rename(&artifact(&tmp, 2024, "2.0.0", TEST_KEY), &live);
    let r = lore.admin("POST", "/admin/reload");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(lore.post("/v1/query", &[], QUERY).json()["artifact"]["version"], "2.0.0");
}

#[test]
fn the_artifact_replaced_by_rename_or_after_sighup_is_served_without_a_restart() {
    let tmp = TempDir::new("rename");
    let v1 = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let v2 = artifact(&tmp, 2024, "2.0.0", TEST_KEY);
    let live = tmp.path().join("live.lore");
    replace_by_rename(&v1, &live);
    // The contract: `lore serve ARTIFACT --http ADDR`, nothing else.
    let lore = Lore::start(&[live.to_str().expect("utf8")], &[]);
    replace_by_rename(&v2, &live);
    lore.wait_for_version(&[], "/v1/artifact", "2.0.0");
    let years: HashMap<&str, u32> = [("1.0.0", 1987), ("2.0.0", 2024)].into_iter().collect();
    assert_one_artifact(&lore.post("/v1/query", &[], QUERY).json(), &years);
    drop(lore);

    let lore = Lore::start(&[live.to_str().expect("utf8"), "--watch-ms", "0"], &[]);
    replace_by_rename(&v1, &live);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lore.get("/v1/artifact", &[]).json()["version"], "2.0.0", "no watcher, no signal: no swap");
    lore.signal("-HUP");
    lore.wait_for_version(&[], "/v1/artifact", "1.0.0");
}

fn write_config(tmp: &TempDir, name: &str, text: &str) -> PathBuf {
    tmp.write(name, text)
}

#[test]
fn ab_variants_split_by_weight_stick_to_users_and_roll_back() {
    let tmp = TempDir::new("ab");
    let a = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let b1 = artifact(&tmp, 2024, "2.0.0", TEST_KEY);
    let b2 = artifact(&tmp, 2025, "2.1.0", TEST_KEY);
    let b_live = tmp.path().join("b-live.lore");
    replace_by_rename(&b1, &b_live);
    let config = |wa: u32, wb: u32| {
        format!(
            "[[kb]]\nname = \"maya\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"{}\"\nweight = {wa}\n[[kb.variant]]\nname = \"b\"\nartifact = \"b-live.lore\"\nweight = {wb}\n",
            a.display()
        )
    };
    let file = write_config(&tmp, "lore.toml", &config(90, 10));
    let args = ["--config", file.to_str().expect("utf8")];
    let lore = Lore::start(&args, &[("LORE_ADMIN_TOKEN", ADMIN_TOKEN)]);

    // 10,000 users: the split is within 2 points of 90/10, and each answer names its variant.
    let assign = |lore: &Lore, users: std::ops::Range<usize>, b_version: &str| -> Vec<String> {
        let mut conn = lore.conn();
        users
            .map(|u| {
                let user = format!("user-{u}");
                let r = conn.send("GET", "/v1/kb/maya/query?q=lamp&k=1", &[("X-Lore-User", &user)], "");
                assert_eq!(r.status, 200, "{r:?}");
                let body = r.json();
                assert_eq!(body["kb"], "maya");
                assert_eq!(body["assignment"], "user");
                let variant = body["variant"].as_str().expect("variant").to_string();
                assert_eq!(r.header("x-lore-variant").as_deref(), Some(variant.as_str()));
                let want = if variant == "a" { "1.0.0" } else { b_version };
                assert_eq!(body["artifact"]["version"], want, "variant {variant}");
                variant
            })
            .collect()
    };
    let first = assign(&lore, 0..10_000, "2.0.0");
    let b_share = first.iter().filter(|v| *v == "b").count() as f64 / first.len() as f64;
    assert!((b_share - 0.10).abs() <= 0.02, "variant b got {:.2}% of users, not 10 ± 2", b_share * 100.0);

    // Forced and random assignment; an unknown variant names the ones that exist.
    let r = lore.get("/v1/kb/maya/query?q=lamp", &[("X-Lore-Variant", "b"), ("X-Lore-User", "user-0")]);
    assert_eq!((r.json()["variant"].as_str(), r.json()["assignment"].as_str()), (Some("b"), Some("forced")));
    let r = lore.post("/v1/kb/maya/query", &[], r#"{"q": "lamp", "variant": "a"}"#);
    assert_eq!(r.json()["variant"], "a");
    let r = lore.get("/v1/kb/maya/query?q=lamp", &[("X-Lore-Variant", "c")]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_variant");
    assert_eq!(r.json()["error"]["available"], serde_json::json!(["a", "b"]));
    let mut conn = lore.conn();
    let random: Vec<String> = (0..300)
        .map(|_| {
            let body = conn.send("GET", "/v1/query?q=lamp", &[], "").json();
            assert_eq!(body["assignment"], "random");
            body["variant"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert!(random.iter().any(|v| v == "a") && random.iter().any(|v| v == "b"), "{random:?}");

    // A reload that swaps b keeps every user on the same variant.
    replace_by_rename(&b2, &b_live);
    let r = lore.admin("POST", "/admin/reload");
    assert_eq!(r.status, 200, "{r:?}");
    let mut conn = lore.conn();
    for (u, before) in first.iter().enumerate().take(500) {
        let r = conn.send("GET", "/v1/kb/maya/query?q=lamp", &[("X-Lore-User", &format!("user-{u}"))], "");
        let body = r.json();
        assert_eq!(body["variant"].as_str(), Some(before.as_str()), "user-{u} changed variant across a reload");
        if before == "b" {
            assert_eq!(body["artifact"]["version"], "2.1.0");
        }
    }

    // Rollback restores b's previous artifact at once; the watcher does not undo it.
    let r = lore.admin("POST", "/admin/rollback?kb=maya&variant=b");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["rolled_back"][0]["to"]["version"], "2.0.0", "{}", r.body);

    let forced_b = [("X-Lore-Variant", "b")];
    assert_eq!(lore.get("/v1/kb/maya/query?q=lamp", &forced_b).json()["artifact"]["version"], "2.0.0");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lore.get("/v1/kb/maya/query?q=lamp", &forced_b).json()["artifact"]["version"], "2.0.0");
    let status = lore.admin("GET", "/admin/status").json();
    let b = &status["kbs"][0]["variants"][1];
    assert_eq!((b["name"].as_str(), b["weight"].as_u64()), (Some("b"), Some(10)), "{status}");
    assert_eq!(b["artifact"]["version"], "2.0.0", "{status}");
    assert_eq!(b["previous"]["version"], "2.1.0", "{status}");
    assert_eq!(b["artifact"]["digest"].as_str().map(str::len), Some(64), "{status}");
    assert!(b["artifact"]["loaded_unix_ms"].as_u64().is_some(), "{status}");
    let r = lore.admin("POST", "/admin/rollback?kb=maya&variant=nope");
    assert_eq!(r.status, 404, "{r:?}");

    // Weights change without a restart. (An explicit reload serves what the files hold, so b
    // is back on 2.1.0.)
    std::fs::write(&file, config(50, 50)).expect("rewrite config");
    assert_eq!(lore.admin("POST", "/admin/reload").status, 200);
    let half = assign(&lore, 0..2000, "2.1.0");
    let b_share = half.iter().filter(|v| *v == "b").count() as f64 / half.len() as f64;
    assert!((b_share - 0.5).abs() <= 0.04, "after 50/50, b got {:.1}%", b_share * 100.0);
    let scrape = metrics(&lore);
    assert_eq!(metric_sum(&scrape, "lore_variant_weight", &[("kb", "maya"), ("variant", "b")]), 50.0);
    assert_eq!(metric_sum(&scrape, "lore_rollbacks_total", &[("variant", "b")]), 1.0);
    drop(lore);

    // Sticky across a restart too (same weights, same users, same variants).
    std::fs::write(&file, config(90, 10)).expect("rewrite config");
    let lore = Lore::start(&args, &[]);
    let again = assign(&lore, 0..300, "2.1.0");
    assert_eq!(again, first[..300].to_vec(), "assignments changed across a restart");
}

#[test]
fn two_knowledge_bases_never_see_each_others_chunks_or_keys() {
    let tmp = TempDir::new("tenants");
    let light = tmp.write(
        "light/lighthouse.yaml",
        "notes:\n  - title: The lamp\n    text: The keeper trims the wick and winds the clockwork every evening\n  - title: Storms\n    text: Winter storms break over the rocks below the tower\n",
    );
    let bread = tmp.write(
        "bread/bakery.yaml",
        "notes:\n  - title: Rye\n    text: The rye dough rests overnight before the ovens are fired at four\n  - title: Harbour\n    text: Fishermen buy warm bread at the harbour before dawn\n",
    );
    let light_art = tmp.path().join("light.lore");
    let bread_art = tmp.path().join("bread.lore");
    build(light.parent().expect("dir"), &light_art, &[]);
    let r = run(lorec()
        .arg("build")
        .arg(bread.parent().expect("dir"))
        .arg("-o")
        .arg(&bread_art)
        .arg("--model")
        .arg(model_dir())
        .arg("--no-cache")
        .env("LORE_KEY", OTHER_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    tmp.write("light.key", TEST_KEY);
    tmp.write("bread.key", OTHER_KEY);
    let config = |bread_key: &str| {
        format!(
            "[[kb]]\nname = \"light\"\nkey_file = \"light.key\"\nartifact = \"light.lore\"\n[[kb]]\nname = \"bread\"\nkey_file = \"{bread_key}\"\nartifact = \"bread.lore\"\n"
        )
    };
    let file = write_config(&tmp, "lore.toml", &config("bread.key"));
    let lore = Lore::start(&["--config", file.to_str().expect("utf8")], &[("LORE_KEY", "")]);
    for (kb, own, other_question) in [
        ("light", "lighthouse.yaml", "rye dough bread ovens harbour fishermen"),
        ("bread", "bakery.yaml", "keeper wick clockwork storms tower"),
    ] {
        let body = serde_json::json!({"q": other_question, "k": 10, "include_off_topic": true}).to_string();
        let r = lore.post(&format!("/v1/kb/{kb}/query"), &[], &body);
        assert_eq!(r.status, 200, "{r:?}");
        let answer = r.json();
        assert_eq!(answer["kb"], kb);
        let hits = answer["hits"].as_array().expect("hits");
        assert!(!hits.is_empty());
        for hit in hits {
            assert_eq!(hit["source"], own, "knowledge base {kb} answered with another's chunk: {hit}");
        }
    }
    // No default with two knowledge bases: /v1/query names them; an unknown one is a 404 too.
    let r = lore.get("/v1/query?q=lamp", &[("X-Request-Id", "req-42")]);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "no_default_kb");
    assert_eq!(r.json()["error"]["request_id"], "req-42");
    assert_eq!(r.header("x-request-id").as_deref(), Some("req-42"));
    let r = lore.get("/v1/kb/nope/query?q=lamp", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_kb");
    assert_eq!(r.json()["error"]["available"], serde_json::json!(["light", "bread"]));
    assert!(r.json()["error"]["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    drop(lore);

    // One knowledge base's key never opens another's artifact: nothing is served.
    let file = write_config(&tmp, "wrong.toml", &config("light.key"));
    let Err((code, log)) = Lore::try_start(&["--config", file.to_str().expect("utf8")], &[("LORE_KEY", "")]) else {
        panic!("lore served an artifact with another knowledge base's key");
    };
    assert_ne!(code, 0);
    assert!(log.contains("knowledge base \"bread\"") && log.contains("wrong key"), "{log}");
}

#[test]
fn a_bad_config_is_an_error_naming_the_entry_and_nothing_is_served() {
    let tmp = TempDir::new("config");
    let good = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let mut damaged = std::fs::read(&good).expect("read");
    let index = section_range(&good, "index");
    damaged[index.start + 3] ^= 0xff;
    std::fs::write(tmp.path().join("damaged.lore"), damaged).expect("write");
    let g = good.display();
    let cases = [
        (
            format!("[[kb]]\nname = \"maya\"\nartifact = \"{g}\"\n[[kb]]\nname = \"maya\"\nartifact = \"{g}\"\n"),
            "kb[1].name: knowledge base \"maya\" is also kb[0]",
        ),
        ("[[kb]]\nname = \"maya\"\nartifact = \"missing.lore\"\n".to_string(), "missing.lore does not exist"),
        (
            format!(
                "[[kb]]\nname = \"maya\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"{g}\"\nweight = 80\n[[kb.variant]]\nname = \"b\"\nartifact = \"{g}\"\nweight = 30\n"
            ),
            "the weights add up to 110",
        ),
        (
            "[[kb]]\nname = \"maya\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"damaged.lore\"\n".to_string(),
            "knowledge base \"maya\", variant \"a\"",
        ),
        ("[[kb]\nname = \"maya\"\n".to_string(), "line 1"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = write_config(&tmp, &format!("c{i}.toml"), text);
        let Err((code, log)) = Lore::try_start(&["--config", file.to_str().expect("utf8")], &[]) else {
            panic!("lore served a bad config:\n{text}");
        };
        assert_ne!(code, 0, "{text}");
        assert!(log.contains(want), "config {i}: the error does not say {want:?}:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn admin_calls_without_or_with_a_wrong_token_are_refused_and_change_nothing() {
    let tmp = TempDir::new("admin");
    let v1 = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let v2 = artifact(&tmp, 2024, "2.0.0", TEST_KEY);
    let live = tmp.path().join("live.lore");
    replace_by_rename(&v1, &live);

    let off = Lore::start(&[live.to_str().expect("utf8")], &[]);
    let r = off.admin("GET", "/admin/status");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("admin_disabled")), "{r:?}");
    drop(off);

    let lore = Lore::start(&[live.to_str().expect("utf8"), "--watch-ms", "0"], &[("LORE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    replace_by_rename(&v2, &live);
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let short = format!("Bearer {}", &ADMIN_TOKEN[..10]);
    for auth in [None, Some(wrong.as_str()), Some(short.as_str()), Some("Bearer "), Some(ADMIN_TOKEN)] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        for (method, path) in [("GET", "/admin/status"), ("POST", "/admin/reload"), ("POST", "/admin/rollback")] {
            let r = lore.conn().send(method, path, &headers, "");
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {r:?}");
            assert_eq!(r.json()["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(lore.get("/v1/artifact", &[]).json()["version"], "1.0.0", "a refused reload changed the artifact");
    let r = lore.admin("POST", "/admin/rollback");
    assert_eq!(r.status, 409, "nothing to roll back yet: {r:?}");
    let r = lore.admin("POST", "/admin/reload");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(lore.get("/v1/artifact", &[]).json()["version"], "2.0.0");
}

#[test]
fn metrics_are_prometheus_text_with_requests_latency_topic_and_artifact_info() {
    let tmp = TempDir::new("metrics");
    let v1 = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let lore = Lore::start(&[v1.to_str().expect("utf8")], &[]);
    let mut conn = lore.conn();
    for _ in 0..5 {
        assert_eq!(conn.send("POST", "/v1/query", &[], r#"{"q": "who kept the lamp lit"}"#).status, 200);
    }
    assert_eq!(conn.send("POST", "/v1/query", &[], r#"{"q": "best pizza recipe with pineapple"}"#).status, 200);
    assert_eq!(conn.send("POST", "/v1/query", &[], r#"{"q": ""}"#).status, 400);
    assert_eq!(conn.send("POST", "/v1/kb/nope/query", &[], r#"{"q": "x"}"#).status, 404);
    let scrape = metrics(&lore);
    let kb = ("kb", "default");
    assert_eq!(metric_sum(&scrape, "lore_requests_total", &[kb, ("version", "1.0.0"), ("outcome", "ok")]), 6.0);
    assert_eq!(metric_sum(&scrape, "lore_requests_total", &[kb, ("outcome", "bad_request")]), 1.0);
    assert_eq!(metric_sum(&scrape, "lore_requests_total", &[("kb", ""), ("outcome", "unknown_kb")]), 1.0);
    let on = metric_sum(&scrape, "lore_answers_total", &[kb, ("topic", "on")]);
    let off = metric_sum(&scrape, "lore_answers_total", &[kb, ("topic", "off")]);
    assert_eq!(on + off, 6.0);
    assert!(on >= 5.0 && off >= 1.0, "on {on}, off {off}");
    let count = scrape
        .samples
        .iter()
        .find(|s| s.metric == "lore_request_duration_seconds" && s.labels.get("kb") == Some("default"))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            other => panic!("not a histogram: {other:?}"),
        });
    assert_eq!(count, Some(6.0));
    assert_eq!(metric_sum(&scrape, "lore_artifact_info", &[kb, ("version", "1.0.0")]), 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "lore_artifact_info" && s.labels.get("digest").is_some_and(|d| d.len() == 64))
    );
}

/// Request fields that disagree, headers that are not text, an absurd request id, a short
/// admin token, and a config reload that would add a knowledge base: each is a clear refusal.
#[test]
fn conflicting_or_malformed_request_parts_and_unappliable_reloads_are_refused_by_name() {
    let tmp = TempDir::new("badparts");
    let v1 = artifact(&tmp, 1987, "1.0.0", TEST_KEY);
    let file = write_config(&tmp, "lore.toml", &format!("[[kb]]\nname = \"maya\"\nartifact = \"{}\"\n", v1.display()));
    let lore = Lore::start(&["--config", file.to_str().expect("utf8")], &[("LORE_ADMIN_TOKEN", ADMIN_TOKEN)]);

    // The path names one knowledge base and the body another.
    let r = lore.post("/v1/kb/maya/query", &[], r#"{"q": "lamp", "kb": "other"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("`kb`")), "{}", r.body);
    // The header names one variant and the body another.
    let r = lore.post("/v1/query", &[("X-Lore-Variant", "a")], r#"{"q": "lamp", "variant": "b"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("`variant`")), "{}", r.body);
    // A user header that is not visible ASCII.
    let mut conn = lore.conn();
    let r = conn.send("GET", "/v1/query?q=lamp", &[("X-Lore-User", "caf\u{e9}")], "");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("x-lore-user")), "{}", r.body);
    // A 300-byte request id is replaced by one of the server's own.
    let long = "x".repeat(300);
    let r = lore.get("/v1/query?q=lamp", &[("X-Request-Id", &long)]);
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.header("x-request-id").expect("an id");
    assert!(!id.is_empty() && id.len() < 64, "{id}");
    // A user name over the limit.
    let r = lore.post("/v1/query", &[], &serde_json::json!({"q": "lamp", "user": "u".repeat(300)}).to_string());
    assert_eq!(r.status, 400, "{r:?}");

    // Adding a knowledge base needs a restart: the reload is refused and nothing changes.
    std::fs::write(
        &file,
        format!(
            "[[kb]]\nname = \"maya\"\nartifact = \"{0}\"\n[[kb]]\nname = \"faq\"\nartifact = \"{0}\"\n",
            v1.display()
        ),
    )
    .expect("rewrite");
    let r = lore.admin("POST", "/admin/reload");
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "reload_failed");
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("restart lore")), "{}", r.body);
    assert_eq!(lore.post("/v1/query", &[], r#"{"q": "lamp"}"#).status, 200, "still serving");
    drop(lore);

    // An admin token too short to be a secret is refused at start-up.
    let Err((code, log)) = Lore::try_start(&[v1.to_str().expect("utf8")], &[("LORE_ADMIN_TOKEN", "short")]) else {
        panic!("lore started with a 5-byte admin token");
    };
    assert_ne!(code, 0);
    assert!(log.contains("admin token is 5 bytes"), "{log}");
}
