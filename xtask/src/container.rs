//! `cargo xtask container`: the build context the `Containerfile` copies, in
//! `target/container/`: a statically linked `lore` (the gnu target with `crt-static`: no musl
//! toolchain is needed) built with no optional feature (potion only: no candle, no OCI client,
//! no PostgreSQL client) in the `container` profile (size-optimised, fat LTO, stripped; its
//! HTTPS roots are compiled in through webpki-roots), and `data/` compiled with potion under
//! `artifacts/demo.key`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run_checked};

/// The rustc host triple (`x86_64-unknown-linux-gnu` here).
fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host")
}

/// The demo key, made once (0600) with `lorec keygen`.
pub fn demo_key(root: &Path, lorec: &Path) -> Result<PathBuf> {
    let key_file = root.join("artifacts/demo.key");
    if !key_file.exists() {
        let out = Command::new(lorec).arg("keygen").output().context("lorec keygen")?;
        if !out.status.success() {
            bail!("lorec keygen failed");
        }
        // 0600, as a key file should be: lore warns about a key others can read.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_file)?.write_all(&out.stdout)?;
        eprintln!("wrote a new demo key to {}", key_file.display());
    }
    Ok(key_file)
}

/// Build `target/container/` with `lorec` (any build of it) compiling the artifact. `full`
/// builds `lore` with the `oci` and `postgres` features too (replicas sharing PostgreSQL
/// memory, `oci://` artifacts), at the cost of about 3 MB.
pub fn context(root: &Path, lorec: &Path, full: bool) -> Result<PathBuf> {
    crate::model::fetch(root)?;
    let triple = host_triple()?;
    if !triple.ends_with("-linux-gnu") {
        bail!("the container's static lore is built for a *-linux-gnu host; this one is {triple}");
    }
    // Only the target's crates get crt-static; build scripts and proc macros stay dynamic.
    let flags_var = format!("CARGO_TARGET_{}_RUSTFLAGS", triple.to_uppercase().replace('-', "_"));
    run_checked(
        cargo()
            .args(["build", "--profile", "container", "--package", "runtime", "--no-default-features"])
            .args(if full { &["--features", "oci,postgres"][..] } else { &[] })
            .args(["--target", &triple])
            .env(flags_var, "-C target-feature=+crt-static"),
    )?;
    let out = root.join("target/container");
    std::fs::create_dir_all(&out)?;
    // Left by older versions of this task; the image no longer copies it.
    let _ = std::fs::remove_file(out.join("ca-certificates.crt"));
    let binary = out.join("lore");
    std::fs::copy(root.join("target").join(&triple).join("container/lore"), &binary)?;
    let key = demo_key(root, lorec)?;
    run_checked(
        Command::new(lorec)
            .args(["build", "data", "--embedder", "potion", "--artifact-version", "container", "-o"])
            .arg(out.join("data.lore"))
            .env("LORE_KEY_FILE", &key),
    )?;
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    eprintln!(
        "container context {}: lore {} bytes, data.lore {} bytes; `podman build -f Containerfile -t lore .`",
        out.display(),
        size(&binary),
        size(&out.join("data.lore"))
    );
    Ok(out)
}
