//! Temporary timing harness (not shipped).
use std::time::Instant;
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("LORE_MINILM_DIR").expect("LORE_MINILM_DIR"));
    let t = Instant::now();
    let cfg = std::fs::read(dir.join("config.json")).unwrap();
    let tok = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    let m = embed_minilm::MiniLm::from_parts(&cfg, &tok, &st).unwrap();
    let parts = t.elapsed();
    let t = Instant::now();
    let _m2 = embed_minilm::MiniLm::from_dir(&dir).unwrap();
    let from_dir = t.elapsed();
    println!("read files {:?}, from_parts {:?}, from_dir (read+parse) {:?}", read, parts, from_dir);
    let qs = ["What is the refund policy?", "How do I reset my password?", "Who founded the company and when?",
        "Can I pay by invoice instead of credit card?", "Does the warranty cover water damage on the phone?",
        "What are your opening hours on public holidays?", "How long does shipping to Canada take?",
        "Is there a student discount?"];
    for q in qs { m.embed(&[q]).unwrap(); }
    let n = 20;
    let t = Instant::now();
    for _ in 0..n { for q in qs { m.embed(&[q]).unwrap(); } }
    let per = t.elapsed() / (n * qs.len() as u32);
    let toks: f64 = qs.iter().map(|q| m.token_ids(q).len() as f64).sum::<f64>() / qs.len() as f64;
    println!("one question at a time: {:?} per question (avg {:.1} tokens)", per, toks);
    let t = Instant::now();
    for _ in 0..n { m.embed(&qs).unwrap(); }
    println!("batch of {}: {:?} per question", qs.len(), t.elapsed() / (n * qs.len() as u32));
    let chunk = "The archive service keeps every compiled knowledge base as a single sealed file. When an operator publishes a new build, the runtime maps the new file next to the old one, checks its header, decrypts the index, and only then swaps the two. ".repeat(2);
    let chunks: Vec<&str> = (0..32).map(|_| chunk.as_str()).collect();
    let t = Instant::now();
    m.embed(&chunks).unwrap();
    println!("32 chunks of {} tokens: {:?} per chunk", m.token_ids(&chunk).len(), t.elapsed() / 32);
    let t = Instant::now();
    for c in &chunks { m.embed(&[c]).unwrap(); }
    println!("same 32 chunks one at a time: {:?} per chunk", t.elapsed() / 32);
}
