//! What `lore serve` serves: knowledge bases, their variants and weights, from one artifact on
//! the command line or from a TOML file (`--config`). Every bad value is an error naming the
//! file and the key; nothing is served half-configured.
//!
//! ```toml
//! default = "maya"                   # optional: the knowledge base of /v1/query
//! [[kb]]
//! name = "maya"
//! key_file = "maya.key"              # optional; else LORE_KEY / LORE_KEY_FILE
//! [[kb.variant]]
//! name = "a"
//! artifact = "artifacts/maya-1.4.0.lore"
//! weight = 90
//! [[kb.variant]]
//! name = "b"
//! artifact = "artifacts/maya-1.5.0.lore"
//! weight = 10
//!
//! [[kb]]                             # one variant: `artifact` on the knowledge base itself
//! name = "faq"
//! artifact = "artifacts/faq.lore"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The name of the knowledge base, and of its variant, that `lore serve ARTIFACT` serves.
pub const DEFAULT_NAME: &str = "default";
/// Weights are percentages: a knowledge base's variants add up to this.
pub const TOTAL_WEIGHT: u32 = 100;
/// Longest knowledge-base or variant name.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// Where in the file, as a TOML key path (`kb[0].variant[1].weight`).
    pub key: String,
    pub message: String,
}

/// Knowledge bases to serve, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kbs: Vec<KbConfig>,
    /// The knowledge base of `/v1/query` and of requests that name none.
    pub default: Option<String>,
    /// The file this came from, re-read on reload.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KbConfig {
    pub name: String,
    /// This knowledge base's own key file; `None` means the process-wide key.
    pub key_file: Option<PathBuf>,
    pub variants: Vec<VariantConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantConfig {
    pub name: String,
    pub artifact: PathBuf,
    /// Percent of assignments.
    pub weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    default: Option<String>,
    #[serde(default)]
    kb: Vec<FileKb>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKb {
    name: String,
    key_file: Option<PathBuf>,
    artifact: Option<PathBuf>,
    #[serde(default)]
    variant: Vec<FileVariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVariant {
    name: String,
    artifact: PathBuf,
    weight: Option<u32>,
}

impl Config {
    /// One artifact served as the default knowledge base with one variant.
    pub fn single(artifact: PathBuf, kb: &str) -> Config {
        Config {
            kbs: vec![KbConfig {
                name: kb.to_string(),
                key_file: None,
                variants: vec![VariantConfig { name: DEFAULT_NAME.to_string(), artifact, weight: TOTAL_WEIGHT }],
            }],
            default: Some(kb.to_string()),
            file: None,
        }
    }

    /// Read and check a TOML file; relative paths in it are relative to its folder.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, message: String| ConfigError { file: file.clone(), key: key.to_string(), message };
        let bytes = format::fsio::read_regular(path, 1024 * 1024).map_err(|e| err("(file)", e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| err("(file)", "not UTF-8 text".into()))?;
        Config::from_toml(&text, path)
    }

    /// Parse and check `text`, read from `path`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: String, message: String| ConfigError { file: file.clone(), key, message };
        let parsed: FileConfig = toml::from_str(text).map_err(|e| {
            let key = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                }
                None => "(file)".to_string(),
            };
            err(key, e.message().trim().to_string())
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // URLs (`oci://`, `https://…#sha256=`) are fetched by the registry, not joined to the folder.
        let resolve = |p: PathBuf| {
            if p.is_absolute() || crate::fetch::is_url(&p.to_string_lossy()) { p } else { base.join(p) }
        };
        if parsed.kb.is_empty() {
            return Err(err("kb".into(), "no knowledge base is configured; add a [[kb]] table".into()));
        }
        let mut kbs: Vec<KbConfig> = Vec::new();
        for (i, kb) in parsed.kb.into_iter().enumerate() {
            let at = format!("kb[{i}]");
            check_name(&kb.name).map_err(|m| err(format!("{at}.name"), m))?;
            if let Some(first) = kbs.iter().position(|k| k.name == kb.name) {
                return Err(err(
                    format!("{at}.name"),
                    format!("knowledge base \"{}\" is also kb[{first}]; names must be unique", kb.name),
                ));
            }
            let at = format!("{at} (\"{}\")", kb.name);
            let mut variants: Vec<VariantConfig> = Vec::new();
            match (kb.artifact, kb.variant.is_empty()) {
                (Some(_), false) => {
                    return Err(err(
                        format!("{at}.artifact"),
                        "give either `artifact` (one variant) or [[kb.variant]] tables, not both".into(),
                    ));
                }
                (None, true) => {
                    return Err(err(at, "no artifact: give `artifact = \"...\"` or [[kb.variant]] tables".into()));
                }
                (Some(artifact), true) => variants.push(VariantConfig {
                    name: DEFAULT_NAME.to_string(),
                    artifact: resolve(artifact),
                    weight: TOTAL_WEIGHT,
                }),
                (None, false) => {
                    let n = kb.variant.len();
                    for (j, v) in kb.variant.into_iter().enumerate() {
                        let vat = format!("{at}.variant[{j}]");
                        check_name(&v.name).map_err(|m| err(format!("{vat}.name"), m))?;
                        if variants.iter().any(|o| o.name == v.name) {
                            return Err(err(
                                format!("{vat}.name"),
                                format!("variant \"{}\" appears twice in knowledge base \"{}\"", v.name, kb.name),
                            ));
                        }
                        let weight = match (v.weight, n) {
                            (Some(w), _) => w,
                            (None, 1) => TOTAL_WEIGHT,
                            (None, _) => {
                                return Err(err(
                                    format!("{vat} (\"{}\").weight", v.name),
                                    format!(
                                        "missing; with several variants each needs a weight, and they add up to {TOTAL_WEIGHT}"
                                    ),
                                ));
                            }
                        };
                        variants.push(VariantConfig { name: v.name, artifact: resolve(v.artifact), weight });
                    }
                }
            }
            let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
            if total != u64::from(TOTAL_WEIGHT) {
                let list: Vec<String> = variants.iter().map(|v| format!("{}={}", v.name, v.weight)).collect();
                return Err(err(
                    format!("{at}.variant[*].weight"),
                    format!("the weights add up to {total} ({}); they must add up to {TOTAL_WEIGHT}", list.join(", ")),
                ));
            }
            for (j, v) in variants.iter().enumerate() {
                let key = format!("{at}.variant[{j}] (\"{}\").artifact", v.name);
                check_file(&v.artifact).map_err(|m| err(key, m))?;
            }
            let key_file = kb.key_file.map(resolve);
            if let Some(k) = &key_file {
                check_file(k).map_err(|m| err(format!("{at}.key_file"), m))?;
            }
            kbs.push(KbConfig { name: kb.name, key_file, variants });
        }
        if let Some(d) = &parsed.default
            && !kbs.iter().any(|k| &k.name == d)
        {
            let names: Vec<&str> = kbs.iter().map(|k| k.name.as_str()).collect();
            return Err(err(
                "default".into(),
                format!("no knowledge base is named \"{d}\" (there are: {})", names.join(", ")),
            ));
        }
        let default = parsed.default.or_else(|| (kbs.len() == 1).then(|| kbs[0].name.clone()));
        Ok(Config { kbs, default, file: Some(path.to_path_buf()) })
    }
}

/// Names go in URL paths and metric labels: short, and only letters, digits, `.`, `_`, `-`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty; a name is 1 to 64 letters, digits, `.`, `_` or `-`".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("\"{name}\" is longer than {MAX_NAME_LEN} bytes"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("\"{name}\" contains {c:?}; a name is letters, digits, `.`, `_` or `-`"));
    }
    Ok(())
}

fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) => Err(format!("{} is {}, not a regular file", path.display(), format::fsio::kind_of(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{} does not exist", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("lore-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for f in ["a.lore", "b.lore", "k.key"] {
            std::fs::write(dir.join(f), b"x").expect("write");
        }
        Config::from_toml(text, &dir.join("lore.toml")).map_err(|e| {
            let s = e.to_string();
            s[s.find("lore.toml").unwrap_or(0)..].to_string()
        })
    }

    #[test]
    fn variants_weights_and_paths_resolve() {
        let c = parse(
            "[[kb]]\nname = \"maya\"\nkey_file = \"k.key\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"a.lore\"\nweight = 90\n[[kb.variant]]\nname = \"b\"\nartifact = \"b.lore\"\nweight = 10\n[[kb]]\nname = \"faq\"\nartifact = \"a.lore\"\n",
        )
        .expect("valid");
        assert_eq!(c.kbs.len(), 2);
        assert_eq!(c.kbs[0].variants[1].weight, 10);
        assert!(c.kbs[0].variants[0].artifact.is_absolute());
        assert_eq!(c.kbs[1].variants[0].name, DEFAULT_NAME);
        assert_eq!(c.default, None, "two knowledge bases and no `default`");
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let cases = [
            ("", "lore.toml: kb: no knowledge base"),
            ("[[kb]]\nname = \"x\"\n", "kb[0] (\"x\"): no artifact"),
            (
                "[[kb]]\nname = \"x\"\nartifact = \"missing.lore\"\n",
                "kb[0] (\"x\").variant[0] (\"default\").artifact: ",
            ),
            (
                "[[kb]]\nname = \"x\"\nartifact = \"a.lore\"\n[[kb]]\nname = \"x\"\nartifact = \"b.lore\"\n",
                "kb[1].name: knowledge base \"x\" is also kb[0]",
            ),
            ("[[kb]]\nname = \"x/y\"\nartifact = \"a.lore\"\n", "kb[0].name: \"x/y\" contains '/'"),
            (
                "[[kb]]\nname = \"x\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"a.lore\"\nweight = 60\n[[kb.variant]]\nname = \"b\"\nartifact = \"b.lore\"\nweight = 30\n",
                "weights add up to 90 (a=60, b=30)",
            ),
            (
                "[[kb]]\nname = \"x\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"a.lore\"\nweight = 50\n[[kb.variant]]\nname = \"a\"\nartifact = \"b.lore\"\nweight = 50\n",
                "variant[1].name: variant \"a\" appears twice",
            ),
            (
                "[[kb]]\nname = \"x\"\n[[kb.variant]]\nname = \"a\"\nartifact = \"a.lore\"\n[[kb.variant]]\nname = \"b\"\nartifact = \"b.lore\"\n",
                "variant[0] (\"a\").weight: missing",
            ),
            (
                "default = \"nope\"\n[[kb]]\nname = \"x\"\nartifact = \"a.lore\"\n",
                "default: no knowledge base is named \"nope\" (there are: x)",
            ),
            ("[[kb]]\nname = \"x\"\nartifact = \"a.lore\"\nkey_file = \"none.key\"\n", "kb[0] (\"x\").key_file: "),
            ("[[kb]]\nname = \"x\"\nartifacts = \"a.lore\"\n", "line 3"),
        ];
        for (text, want) in cases {
            let got = parse(text).expect_err(text);
            assert!(got.contains(want), "{text:?}\n  got: {got}\n want: {want}");
        }
    }
}
