//! `cargo xtask bench`, the chat part: lore's own time per chat message (retrieval, memory
//! read and write, prompt assembly or the extractive answer), as the server measures it, and
//! the time to the first streamed byte with an LLM that answers at once (a fake one on
//! loopback, whose own time to its first token is measured too).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench_service::Server;

/// A key for the benchmark's conversation memory (never a real one).
const MEMORY_KEY: &str = "YmVuY2gtbWVtb3J5LWtleS1ub3QtYS1zZWNyZXQtMDA=";
/// Messages per conversation: later ones read and carry more history.
const TURNS_PER_SESSION: usize = 4;

/// A fake OpenAI-compatible chat server that streams three pieces at once; records, per
/// request, the time from the end of the request to its first piece written.
fn fake_llm() -> Result<(String, Arc<Mutex<Vec<Duration>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    let own: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let record = own.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(clone) = stream.try_clone() else { return };
                let mut reader = BufReader::new(clone);
                let (mut len, mut line) = (0usize, String::new());
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let asked = Instant::now();
                let mut stream = stream;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                let piece =
                    |t: &str| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n");
                let first = format!("{head}{}", piece("I build robots "));
                if stream.write_all(first.as_bytes()).and_then(|()| stream.flush()).is_err() {
                    return;
                }
                if let Ok(mut own) = record.lock() {
                    own.push(asked.elapsed());
                }
                let rest = format!("{}{}data: [DONE]\n\n", piece("for vineyards "), piece("[1]."));
                let _ = stream.write_all(rest.as_bytes());
            });
        }
    });
    Ok((base, own))
}

/// POST a chat message; returns the answer JSON and, for a stream, the client's time to the
/// first byte of the first `token` event.
fn chat(addr: &str, body: &serde_json::Value) -> Result<(serde_json::Value, Option<Duration>)> {
    let stream_asked = body["stream"].as_bool().unwrap_or(false);
    let payload = body.to_string();
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let sent = Instant::now();
    write!(
        s,
        "POST /v1/chat HTTP/1.1\r\nHost: lore\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut first = None;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if stream_asked && first.is_none() && raw.windows(12).any(|w| w == b"event: token") {
            first = Some(sent.elapsed());
        }
    }
    let text = String::from_utf8_lossy(&raw);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("chat answered: {}", text.lines().next().unwrap_or(""));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = if stream_asked {
        let done = body.split("event: done\ndata: ").nth(1).context("no done event")?;
        let line = done.split('\n').next().unwrap_or("");
        serde_json::from_str(line)?
    } else {
        serde_json::from_str(body)?
    };
    Ok((json, first))
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn field(a: &serde_json::Value, path: &str) -> u64 {
    a.pointer(path).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Run `messages` chat messages (conversations of four) against a fresh server; prints one row.
#[allow(clippy::too_many_arguments)]
fn measure(
    label: &str,
    lore: &Path,
    artifact: &Path,
    work: &Path,
    key: &str,
    questions: &[String],
    messages: usize,
    llm: Option<&(String, Arc<Mutex<Vec<Duration>>>)>,
) -> Result<()> {
    let memory = work.join(format!("chat-memory-{}.sqlite3", label.replace([' ', ',', '/'], "-")));
    let _ = std::fs::remove_file(&memory);
    let memory_arg = memory.to_str().context("memory path")?;
    let mut env = vec![
        ("LORE_MEMORY", memory_arg.to_string()),
        ("LORE_MEMORY_KEY", MEMORY_KEY.to_string()),
        // Every message measured, none served from the cache.
        ("LORE_CHAT_CACHE_ENTRIES", "0".to_string()),
    ];
    if let Some((base, _)) = llm {
        env.push(("OPENAI_BASE_URL", base.clone()));
        env.push(("LORE_LLM_MODEL", "fake".to_string()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with_env(lore, &[artifact.to_str().context("path")?], key, &env_refs)?;
    let (mut own, mut retrieval, mut memory_us, mut extractive, mut first) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..messages {
        let q = &questions[i % questions.len()];
        let body = serde_json::json!({
            "session_id": format!("bench-{}", i / TURNS_PER_SESSION),
            "message": q,
            "stream": llm.is_some(),
        });
        let (a, ttfb) = chat(&server.addr, &body)?;
        let took = field(&a, "/took_us");
        let llm_us = field(&a, "/timings/llm_us");
        let (r, mr, mw) = (
            field(&a, "/timings/retrieval_us"),
            field(&a, "/timings/memory_read_us"),
            field(&a, "/timings/memory_write_us"),
        );
        own.push(took.saturating_sub(llm_us));
        retrieval.push(r);
        memory_us.push(mr + mw);
        if a["extractive"] == true && a["on_topic"] == true {
            extractive.push(took.saturating_sub(llm_us + r + mr + mw));
        }
        if let Some(t) = ttfb {
            first.push(t.as_micros() as u64);
        }
    }
    let llm_own = llm.map(|(_, own)| {
        let mut v: Vec<u64> = own.lock().map(|o| o.iter().map(|d| d.as_micros() as u64).collect()).unwrap_or_default();
        percentile(&mut v, 0.5)
    });
    let us = |v: u64| format!("{v} µs");
    println!(
        "| {label} | {messages} | {} / {} | {} | {} | {} | {} | {} |",
        us(percentile(&mut own, 0.5)),
        us(percentile(&mut own, 0.99)),
        us(percentile(&mut retrieval, 0.5)),
        us(percentile(&mut memory_us, 0.5)),
        if extractive.is_empty() { "–".into() } else { us(percentile(&mut extractive, 0.5)) },
        if first.is_empty() { "–".into() } else { us(percentile(&mut first, 0.5)) },
        llm_own.map_or("–".into(), us),
    );
    Ok(())
}

/// The chat table for data/: for each embedder configuration, extractive answers and answers
/// from a fake LLM.
pub fn run(
    bin: &Path,
    models: &[(&str, std::path::PathBuf)],
    root: &Path,
    work: &Path,
    key: &str,
    quick: bool,
) -> Result<()> {
    let mut artifacts = Vec::new();
    for (label, model) in models {
        let out = work.join(format!("chat-data-{}.lore", crate::model::embedder_of(model)));
        crate::bench::lorec_build(bin, model, &root.join("data"), &out, None, key)?;
        artifacts.push((label.to_string(), out));
    }
    let lore = bin.join("lore");
    let questions: Vec<String> = std::fs::read_to_string(root.join("eval/persona/data.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|q| q["kind"] != "off_topic")
        .filter_map(|q| q["q"].as_str().map(str::to_string))
        .collect();
    let messages = if quick { 40 } else { 2000 };
    println!(
        "\n| chat (data/) | messages | lore's own time per message p50 / p99 | retrieval p50 | memory read + write p50 | extractive answer p50 | first streamed byte p50 (client, loopback) | the LLM's own first token p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let llm = fake_llm()?;
    for (label, artifact) in &artifacts {
        measure(&format!("{label}, extractive"), &lore, artifact, work, key, &questions, messages, None)?;
        measure(&format!("{label}, fake LLM, streamed"), &lore, artifact, work, key, &questions, messages, Some(&llm))?;
    }
    Ok(())
}
