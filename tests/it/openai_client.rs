//! `/v1/models` and `/v1/chat/completions` through the official `openai` Python package (the
//! client Open WebUI and many scripts use), streaming and not. `cargo xtask test` installs it
//! into a venv under `target/` and names the interpreter in `LORE_OPENAI_PYTHON`.

use std::process::Command;

use crate::support::*;

#[test]
fn the_official_openai_python_client_lists_models_and_chats_streaming_and_not() {
    let python = std::env::var("LORE_OPENAI_PYTHON")
        .unwrap_or_else(|_| workspace().join("target/openai-client-venv/bin/python").to_string_lossy().into_owned());
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with the `openai` package at {python}: run `cargo xtask test` (it makes the venv) or set LORE_OPENAI_PYTHON"
    );
    let tmp = TempDir::new("openai-client");
    let art = tmp.path().join("data.lore");
    build(&workspace().join("data"), &art, &[]);
    let server = crate::serve::Server::start_with(&art, &["--kb-name", "maren"]);
    let out = Command::new(&python)
        .arg(workspace().join("tests/openai-client/check.py"))
        .arg(format!("http://{}/v1", server.addr))
        .arg("maren")
        .arg("What kind of robots do you build?")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script prints JSON");
    assert_eq!(seen["models"], serde_json::json!(["maren"]), "{seen}");
    let whole = seen["whole"].as_str().expect("whole");
    assert!(whole.contains("[1]") && whole.contains("Sources:"), "{seen}");
    assert_eq!(seen["whole_finish"], "stop");
    assert!(seen["whole_usage"].as_u64().expect("usage") > 0, "{seen}");
    assert_eq!(seen["streamed"], seen["whole"], "streamed and whole answers agree: {seen}");
    assert!(seen["pieces"].as_u64().expect("pieces") >= 2, "{seen}");
    assert_eq!(seen["roles"], serde_json::json!(["assistant"]), "{seen}");
    assert_eq!(seen["finish_reasons"], serde_json::json!(["stop"]), "{seen}");
    assert!(seen["usage"]["total_tokens"].as_u64().expect("stream usage") > 0, "{seen}");
    assert_eq!(seen["error"]["status"], 404, "{seen}");
}
