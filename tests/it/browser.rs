//! The chat page in a real browser: Debian's chromium driven by `playwright-core` (npm) through
//! `tests/browser/chat.mjs`. It types a question, waits for the streamed answer, clicks a
//! citation and keeps a screenshot in `target/test-artifacts/`. `.ci/run` installs chromium and
//! `cargo xtask test` the npm package.

use std::process::Command;

use crate::support::*;

#[test]
fn the_chat_page_streams_an_answer_and_opens_a_citation_in_chromium() {
    let browser_dir = workspace().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in tests/browser (`cargo xtask test` does)"
    );
    let chromium = std::env::var("LORE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "chromium is not installed: `apt-get install chromium` (`.ci/run` does), or set LORE_CHROMIUM"
    );
    let tmp = TempDir::new("browser");
    let art = tmp.path().join("data.lore");
    build(&workspace().join("data"), &art, &[]);
    let server = crate::serve::Server::start(&art);
    let shots = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).expect("mkdir");
    let shot = shots.join("chat-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(browser_dir.join("chat.mjs"))
        .arg(format!("http://{}/", server.addr))
        .arg(&shot)
        .env("LORE_CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script prints JSON");
    assert_eq!(seen["name"], "Maren Okafor-Lindqvist", "{seen}");
    assert!(seen["openers"].as_u64().expect("openers") >= 1, "{seen}");
    let text = seen["text"].as_str().expect("text");
    assert!(text.contains("[1]") && text.to_lowercase().contains("robot"), "{seen}");
    assert!(seen["notice"].as_str().expect("notice").contains("no language model"), "{seen}");
    assert!(seen["sourceTitle"].as_str().expect("title").starts_with("[1] "), "{seen}");
    assert!(!seen["sourceText"].as_str().expect("source text").is_empty(), "{seen}");
    assert_eq!(seen["session"].as_str().expect("session").len(), 32, "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "the page logged errors: {seen}");
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "the screenshot is not a PNG");
}
