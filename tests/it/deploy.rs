//! The deployment recipes: the Kubernetes manifests validate against the Kubernetes 1.37 API
//! schemas (kubernetes-validate from PyPI, strict: no unknown field), and the Hugging Face
//! Space recipe's README carries the front matter a Docker Space needs.

use std::process::Command;

use crate::support::*;

#[test]
fn the_kubernetes_manifests_validate_strictly_against_the_api_schemas() {
    let python = std::env::var("LORE_OPENAI_PYTHON")
        .unwrap_or_else(|_| workspace().join("target/openai-client-venv/bin/python").display().to_string());
    let validator = std::path::Path::new(&python).with_file_name("kubernetes-validate");
    assert!(
        validator.exists(),
        "kubernetes-validate is not installed next to {python}: run `cargo xtask test` (it makes the venv)"
    );
    let manifests = workspace().join("deploy/kubernetes/lore.yaml");
    let r = run(Command::new(&validator).args(["--strict", "--kubernetes-version", "1.37.0"]).arg(&manifests));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for kind in ["deployment/lore", "service/lore", "horizontalpodautoscaler/lore"] {
        assert!(r.stdout.contains(&format!("passed for resource {kind}")), "{kind} was not checked:\n{}", r.stdout);
    }
    // The check can fail: an unknown field is refused.
    let text = std::fs::read_to_string(&manifests).expect("manifests");
    let tmp = TempDir::new("deploy");
    let bad =
        tmp.write("bad.yaml", text.replacen("runAsNonRoot: true", "runAsNonRoot: true\n        runAsRooot: false", 1));
    let r = run(Command::new(&validator).arg("--strict").arg(&bad));
    assert_ne!(r.code, 0, "a misspelt field passed:\n{}", r.stdout);
}

#[test]
fn the_space_recipe_has_docker_front_matter_on_port_7860() {
    let readme = std::fs::read_to_string(workspace().join("deploy/huggingface/README.md")).expect("Space README");
    let front =
        readme.strip_prefix("---\n").and_then(|r| r.split_once("\n---\n")).map(|(f, _)| f).expect("front matter");
    assert!(front.lines().any(|l| l.trim() == "sdk: docker"), "{front}");
    assert!(front.lines().any(|l| l.trim() == "app_port: 7860"), "{front}");
    let dockerfile =
        std::fs::read_to_string(workspace().join("deploy/huggingface/Dockerfile")).expect("Space Dockerfile");
    assert!(dockerfile.contains("USER 1000"), "a Space runs as user 1000");
}
