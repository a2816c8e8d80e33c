//! The bodies of lore's fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/*.rs`,
//! one line each) and the stable driver (`src/bin/fuzz-stable.rs`). Each target takes
//! arbitrary bytes and must never panic, abort, hang or blow up memory, whatever it is fed.
//!
//! The targets stay thin: they call the same public entry points `lorec` and `lore` call.
#![forbid(unsafe_code)]

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use compiler::sources::{SourceFile, SourceMap};
use format::container::{PREAMBLE_LEN, TRAILER_LEN, TRAILER_MAGIC};
use format::seal::Key;
use format::{OpenedContainer, SectionKind};
use runtime::Engine;
use sha2::{Digest as _, Sha256};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target, by the name its libFuzzer binary, corpus and dictionary use.
pub const TARGETS: &[(&str, Body)] = &[
    ("artifact", artifact),
    ("yaml", yaml),
    ("resume_json", resume_json),
    ("jsonl", jsonl),
    ("markdown", markdown),
    ("request", request),
    ("config", config),
    ("oci", oci_manifest),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// The fixed key the tests and the golden artifacts use (`tests/it/support.rs`, `TEST_KEY`).
pub const TEST_KEY: &str = "dGVzdC1rZXktZm9yLWxvcmUtdGVzdHMtb25seS0wMDA=";

/// A small sealed artifact (three chunks, an 8-dimensional model) to answer requests from.
const GOLDEN: &[u8] = include_bytes!("../../tests/compat/v2/golden.lore");

fn test_key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| Key::from_base64(TEST_KEY).expect("TEST_KEY is valid base64 of 32 bytes"))
}

/// A file of this process's own in the temporary folder, for APIs that take a path.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lore-fuzz-{}-{name}", std::process::id()))
}

// ---------------------------------------------------------------------------------------------
// artifact

/// The artifact reader: the container (structure, key, every section, the full verification)
/// and the runtime's `Engine::open` plus one query. Each input is tried as given and, when it
/// looks like an artifact, once more with its header digest and file digest recomputed, so
/// mutations get past the SHA-256 checks into the header and (in unsealed artifacts) the
/// sections; sealed sections stay behind AES-GCM either way.
pub fn artifact(data: &[u8]) {
    artifact_once(data);
    if let Some(fixed) = with_fresh_digests(data)
        && fixed != data
    {
        artifact_once(&fixed);
    }
}

fn artifact_once(data: &[u8]) {
    let key = test_key();
    if let Ok(opened) = OpenedContainer::open(data) {
        if let Ok(sealer) = opened.sealer(Some(key)) {
            for kind in [SectionKind::Model, SectionKind::Index, SectionKind::Texts] {
                let _ = opened.open_section(sealer.as_ref(), kind);
            }
        }
        let _ = format::verify::verify(&opened, Some(key));
    }
    // The engine maps a file: one scratch file per process, rewritten for every input (the
    // previous engine, and with it the map, is gone by then).
    let path = scratch("artifact.lore");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(engine) = Engine::open(&path, Some(key)) {
        let opts = runtime::QueryOptions { k: 5, include_off_topic: true, mode: runtime::engine::retrieval::Mode::Hybrid };
        let _ = engine.query_with("who kept the lighthouse lamp lit?", opts);
    }
}

/// `data` with a correct header digest and trailer (magic and file digest), or `None` when it
/// does not start like an artifact.
pub fn with_fresh_digests(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(&format::MAGIC) || data.len() < PREAMBLE_LEN + TRAILER_LEN {
        return None;
    }
    let mut out = data.to_vec();
    let header_len = u32::from_le_bytes(out[16..20].try_into().ok()?) as usize;
    let trailer_at = out.len() - TRAILER_LEN;
    if let Some(header) =
        PREAMBLE_LEN.checked_add(header_len).filter(|&end| end <= trailer_at).map(|end| &data[PREAMBLE_LEN..end])
    {
        let digest: [u8; 32] = Sha256::new().chain_update(&data[..24]).chain_update(header).finalize().into();
        out[24..56].copy_from_slice(&digest);
    }
    out[trailer_at..trailer_at + 8].copy_from_slice(&TRAILER_MAGIC);
    let digest: [u8; 32] = Sha256::digest(&out[..trailer_at]).into();
    out[trailer_at + 8..].copy_from_slice(&digest);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// source front ends

/// Compile one source named `rel` the way `lorec check` does, then render its diagnostics
/// (plain and coloured, so every label and snippet is laid out).
fn compile(rel: &str, data: &[u8]) {
    let source = SourceFile { rel: rel.into(), sha256: Sha256::digest(data).into(), bytes: data.to_vec() };
    let mut map = SourceMap::default();
    let mut diags = Vec::new();
    let chunks = compiler::sources::compile(&source, &mut map, &mut diags);
    std::hint::black_box(chunks);
    std::hint::black_box(compiler::diag::render(&diags, &map, false));
    std::hint::black_box(compiler::diag::render(&diags, &map, true));
}

/// The YAML front end: parsing (anchors, aliases, merge keys, nesting), validation, chunking.
pub fn yaml(data: &[u8]) {
    compile("x.yaml", data);
}

/// JSON Resume files (JSON through the YAML parser, then the résumé's own shape).
pub fn resume_json(data: &[u8]) {
    compile("x.resume.json", data);
}

/// BEIR-style JSON Lines document collections.
pub fn jsonl(data: &[u8]) {
    compile("x.jsonl", data);
}

/// Markdown split at headings, with YAML front matter.
pub fn markdown(data: &[u8]) {
    compile("x.md", data);
}

// ---------------------------------------------------------------------------------------------
// request

/// The golden artifact served as the only knowledge base, through the same service layer as
/// `lore serve`.
fn golden_service() -> &'static Arc<runtime::service::Service> {
    static SERVICE: OnceLock<Arc<runtime::service::Service>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let path = scratch("golden.lore");
        std::fs::write(&path, GOLDEN).expect("write the golden artifact to the temporary folder");
        let config = runtime::config::Config::single(path, runtime::config::DEFAULT_NAME);
        let options = runtime::registry::OpenOptions { key_base64: Some(TEST_KEY.into()), ..Default::default() };
        let metrics = Arc::new(runtime::metrics::Metrics::default());
        let registry = runtime::registry::Registry::open(&config, options, metrics.clone()).expect("the golden artifact opens");
        Arc::new(runtime::service::Service::new(registry, metrics))
    })
}

/// Request parsing as both servers do it: the JSON-lines loop over the whole input, the
/// request type on its own, and the HTTP router (admin endpoints on) driven in process.
pub fn request(data: &[u8]) {
    let _ = runtime::server::stdin::serve_lines(golden_service(), Cursor::new(data), std::io::sink());
    if let Ok(req) = serde_json::from_slice::<runtime::QueryRequest>(data) {
        let _ = req.options();
    }
    http(data);
}

/// `lore.toml`: the configuration parser and its checks, on any text.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = runtime::config::Config::from_toml(&text, std::path::Path::new("/srv/lore/lore.toml"));
}

/// What comes back from an OCI registry and what a user types: a reference (the first line)
/// and a manifest (the rest), read the way `lore serve oci://...` reads them.
pub fn oci_manifest(data: &[u8]) {
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let reference = oci::OciRef::parse(&String::from_utf8_lossy(first))
        .unwrap_or_else(|_| oci::OciRef::parse("oci://127.0.0.1:5000/lore/kb:1").expect("a valid reference"));
    let _ = reference.is_loopback();
    let _ = reference.to_string();
    let _ = oci::artifact_layer(&reference, rest);
}

struct Http {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn http_env() -> &'static Http {
    static HTTP: OnceLock<Http> = OnceLock::new();
    HTTP.get_or_init(|| Http {
        rt: tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime"),
        router: runtime::server::http::router(
            runtime::server::http::AppState {
                service: Arc::clone(golden_service()),
                ids: Arc::default(),
                admin_token: Some(Arc::from("fuzz-admin-token-0123456789")),
            },
            Duration::from_secs(5),
        ),
    })
}

const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "GET"];

/// One HTTP request from the bytes: the first byte picks the method (low 3 bits) and the
/// content type (next 2 bits); the rest up to the first newline is the path and query, and
/// what follows is the body.
fn http(data: &[u8]) {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let Some((&select, rest)) = data.split_first() else { return };
    let method = METHODS[usize::from(select & 7)];
    let content_type = match (select >> 3) & 3 {
        0 => Some("application/json"),
        1 => Some("application/json; charset=utf-8"),
        2 => Some("text/plain"),
        _ => None,
    };
    let (target, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let target = String::from_utf8_lossy(target);
    let uri = if target.starts_with('/') { target.into_owned() } else { format!("/{target}") };
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let Ok(req) = builder.body(Body::from(body.to_vec())) else { return };
    let env = http_env();
    env.rt.block_on(async {
        let Ok(resp) = env.router.clone().oneshot(req).await;
        let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
    });
}
