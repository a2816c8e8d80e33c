//! `lorec publish` to file:// and http(s):// (a loopback object store this test runs), and
//! `lore` fetching an artifact by URL and digest into its cache: nothing unverified is
//! published or served.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use crate::support::*;

/// A tiny object store: PUT stores the body (refusing one whose `x-amz-checksum-sha256` does
/// not match, and answering 503 to the first PUT of any path ending in `flaky`), GET serves it.
struct Store {
    base: String,
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    puts: Arc<AtomicUsize>,
}

fn b64_sha256(bytes: &[u8]) -> String {
    base64(&sha2::Sha256::digest(bytes))
}

impl Store {
    fn start() -> Store {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let objects: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let puts = Arc::new(AtomicUsize::new(0));
        let (store, count) = (objects.clone(), puts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, count) = (store.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = request.split_whitespace();
                    let (method, path) =
                        (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                    let (mut len, mut checksum, mut line) = (0usize, None, String::new());
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("x-amz-checksum-sha256:") {
                            checksum = line.split_once(':').map(|(_, v)| v.trim().to_string());
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let mut stream = stream;
                    let reply = |stream: &mut std::net::TcpStream, status: &str, body: &[u8]| {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(body);
                    };
                    match method.as_str() {
                        "PUT" => {
                            count.fetch_add(1, Ordering::SeqCst);
                            if path.ends_with("flaky") && !store.lock().expect("store").contains_key("flaky-seen") {
                                store.lock().expect("store").insert("flaky-seen".into(), Vec::new());
                                return reply(&mut stream, "503 Slow Down", b"");
                            }
                            if checksum.as_deref() != Some(&b64_sha256(&body)) {
                                return reply(&mut stream, "400 Bad Digest", b"checksum mismatch");
                            }
                            store.lock().expect("store").insert(path, body);
                            reply(&mut stream, "200 OK", b"");
                        }
                        "GET" => match store.lock().expect("store").get(&path).cloned() {
                            Some(bytes) => reply(&mut stream, "200 OK", &bytes),
                            None => reply(&mut stream, "404 Not Found", b""),
                        },
                        _ => reply(&mut stream, "405 Method Not Allowed", b""),
                    }
                });
            }
        });
        Store { base, objects, puts }
    }
}

fn publish(file: &std::path::Path, target: &str) -> Run {
    run(lorec().arg("publish").arg(file).arg(target).env("LORE_KEY", TEST_KEY))
}

#[test]
fn publish_to_an_object_store_then_serve_by_url_and_digest_from_the_cache() {
    let tmp = TempDir::new("publish");
    let art = tmp.path().join("data.lore");
    build(&workspace().join("data"), &art, &[]);
    let bytes = std::fs::read(&art).expect("artifact");
    let digest = sha256_hex(&bytes);
    let store = Store::start();
    let url = format!("{}/bucket/data.lore", store.base);
    let r = publish(&art, &url);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().last(), Some(format!("sha256:{digest}").as_str()), "{}", r.stdout);
    assert_eq!(store.objects.lock().expect("store").get("/bucket/data.lore"), Some(&bytes), "byte-identical");

    // A store that answers 503 once: retried.
    let flaky = publish(&art, &format!("{}/bucket/flaky", store.base));
    assert_eq!(flaky.code, 0, "{}", flaky.stderr);
    assert!(store.puts.load(Ordering::SeqCst) >= 3);

    let cache = tmp.path().join("cache");
    let ask = |target: &str| {
        run(lore()
            .arg("query")
            .arg(target)
            .arg("What kind of robots do you build?")
            .env("LORE_KEY", TEST_KEY)
            .env("LORE_CACHE_DIR", &cache))
    };
    let answer = ask(&format!("{url}#sha256={digest}"));
    assert_eq!(answer.code, 0, "{}", answer.stderr);
    assert!(answer.stdout.contains("robot"), "{}", answer.stdout);
    let cached = cache.join(format!("sha256/{digest}.lore"));
    assert_eq!(std::fs::read(&cached).expect("cached"), bytes);
    // The store is gone; the cache serves.
    store.objects.lock().expect("store").clear();
    assert_eq!(ask(&format!("{url}#sha256={digest}")).code, 0);

    // A wrong digest is refused and nothing is kept; a URL without one is refused outright.
    let wrong = "0".repeat(64);
    store.objects.lock().expect("store").insert("/bucket/data.lore".into(), bytes.clone());
    let refused = ask(&format!("{url}#sha256={wrong}"));
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("digest mismatch") && refused.stderr.contains(&digest), "{}", refused.stderr);
    let left: Vec<_> =
        std::fs::read_dir(cache.join("sha256")).expect("cache").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only the verified artifact is cached: {left:?}");
    let bare = ask(&url);
    assert_eq!(bare.code, 2, "{}", bare.stderr);
    assert!(bare.stderr.contains("#sha256="), "{}", bare.stderr);
}

#[test]
fn publish_refuses_a_tampered_artifact_and_insecure_targets() {
    let tmp = TempDir::new("publish-bad");
    let art = tmp.path().join("a.lore");
    build(&workspace().join("tests/compat/kb"), &art, &[]);
    let mut bytes = std::fs::read(&art).expect("artifact");
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tampered = tmp.write("tampered.lore", &bytes);
    let store = Store::start();
    let r = publish(&tampered, &format!("{}/b/t.lore", store.base));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("refusing to publish"), "{}", r.stderr);
    assert_eq!(store.puts.load(Ordering::SeqCst), 0, "nothing was sent");
    let plain = publish(&art, "http://example.com/bucket/a.lore");
    assert_eq!(plain.code, 2, "{}", plain.stderr);
    assert!(plain.stderr.contains("loopback"), "{}", plain.stderr);
    let untagged = publish(&art, "oci://127.0.0.1:5000/lore/a");
    assert_eq!(untagged.code, 2, "{}", untagged.stderr);
    assert!(untagged.stderr.contains("oci://REGISTRY/REPO"), "{}", untagged.stderr);

    // file://: an atomic copy, verified.
    let dest = tmp.path().join("published");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let r = publish(&art, &format!("file://{}/", dest.display()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(dest.join("a.lore")).expect("copy"), std::fs::read(&art).expect("artifact"));
}
