//! `cargo xtask eval scifact`: BEIR SciFact through the real compiler and runtime.
//! Parameters are tuned on the train qrels only (`--tune`); test figures are only reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::eval::EVAL_KEY;

/// Passages asked for per query: enough that grouping by document leaves 100 documents.
const PASSAGES: usize = 300;

struct Split {
    qrels: HashMap<String, HashSet<String>>,
}

pub fn run(root: &Path, tune: bool) -> Result<()> {
    let model = crate::model::model_for_env(root)?;
    crate::run_checked(crate::cargo().args(["build", "--release", "--bins", "--all-features", "--quiet"]))?;
    let bin = root.join("target/release");
    let data = root.join("../shared/eval/scifact");
    let work = root.join("target/eval/scifact");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("kb"))?;
    std::os::unix::fs::symlink(data.join("corpus.jsonl").canonicalize()?, work.join("kb/corpus.jsonl"))?;
    let artifact = work.join("scifact.lore");
    let (took, _) = crate::bench::lorec_build(&bin, &model, &work.join("kb"), &artifact, None, EVAL_KEY)?;
    eprintln!("compiled the SciFact corpus in {:.1} s", took.as_secs_f64());
    let queries = load_queries(&data.join("queries.jsonl"))?;
    let splits = [
        Split { qrels: load_qrels(&data.join("qrels/train.tsv"))? },
        Split { qrels: load_qrels(&data.join("qrels/test.tsv"))? },
    ];
    if tune {
        return tune_on_train(&bin.join("lore"), &artifact, &queries, &splits[0]);
    }
    println!("| retrieval | train nDCG@10 | train Recall@100 | test nDCG@10 | test Recall@100 | median query |");
    println!("|---|---|---|---|---|---|");
    for mode in ["bm25", "dense", "hybrid"] {
        let embedder = crate::model::embedder_of(&model);
        let mut row = format!("| {mode} ({embedder}) ");
        let mut took = Vec::new();
        for split in &splits {
            let (ndcg, recall, t) = evaluate(&bin.join("lore"), &artifact, &queries, &split.qrels, mode, None)?;
            row.push_str(&format!("| {ndcg:.4} | {recall:.4} "));
            took.extend(t);
        }
        took.sort_by(f64::total_cmp);
        row.push_str(&format!("| {:.0} µs |", took[took.len() / 2]));
        println!("{row}");
    }
    Ok(())
}

fn tune_on_train(lore: &Path, artifact: &Path, queries: &BTreeMap<String, String>, train: &Split) -> Result<()> {
    println!(
        "| k1 | b | dense weight | bm25 weight (no coverage) | bm25 weight (full coverage) | train nDCG@10 | train Recall@100 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut best = (0.0, String::new());
    for (k1, b) in [(0.9f32, 0.4f32), (1.2, 0.4), (1.2, 0.75)] {
        for (low, full) in [(0.3f32, 0.3f32), (0.3, 1.0), (0.3, 1.5), (0.3, 2.0), (0.3, 3.0), (0.5, 1.5), (0.5, 2.0)] {
            let params = format!("{k1},{b},1.0,{low},{full}");
            let (ndcg, recall, _) = evaluate(lore, artifact, queries, &train.qrels, "hybrid", Some(&params))?;
            println!("| {k1} | {b} | 1.0 | {low} | {full} | {ndcg:.4} | {recall:.4} |");
            if ndcg > best.0 {
                best = (ndcg, params);
            }
        }
    }
    println!("\nbest on train: LORE_RETRIEVAL_PARAMS={} (nDCG@10 {:.4})", best.1, best.0);
    Ok(())
}

fn load_queries(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok((v["_id"].as_str().context("_id")?.to_string(), v["text"].as_str().context("text")?.to_string()))
        })
        .collect()
}

fn load_qrels(path: &Path) -> Result<HashMap<String, HashSet<String>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [q, d, score] = cols.as_slice()
            && score.trim().parse::<i32>().unwrap_or(0) > 0
        {
            out.entry(q.to_string()).or_default().insert(d.to_string());
        }
    }
    Ok(out)
}

/// Mean nDCG@10 and Recall@100 over the queries in `qrels`, documents ranked by their best
/// passage; plus each query's `took_us`.
fn evaluate(
    lore: &Path,
    artifact: &Path,
    queries: &BTreeMap<String, String>,
    qrels: &HashMap<String, HashSet<String>>,
    mode: &str,
    params: Option<&str>,
) -> Result<(f64, f64, Vec<f64>)> {
    let ids: Vec<&String> = queries.keys().filter(|id| qrels.contains_key(*id)).collect();
    let mut cmd = crate::bench::lore_serve(lore, artifact, EVAL_KEY);
    if let Some(p) = params {
        cmd.env("LORE_RETRIEVAL_PARAMS", p);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            serde_json::json!({"q": queries[*id], "k": PASSAGES, "include_off_topic": true, "mode": mode}).to_string()
        })
        .collect();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for l in lines {
            writeln!(stdin, "{l}")?;
        }
        Ok(())
    });
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    let answers: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    if answers.len() != ids.len() {
        bail!("{} answers for {} queries", answers.len(), ids.len());
    }
    let (mut ndcg, mut recall, mut took) = (0.0, 0.0, Vec::new());
    for (id, a) in ids.iter().zip(&answers) {
        if let Some(e) = a.get("error") {
            bail!("query {id} failed: {e}");
        }
        took.push(a["took_us"].as_f64().unwrap_or(0.0));
        let relevant = &qrels[*id];
        let mut docs: Vec<&str> = Vec::new();
        for hit in a["hits"].as_array().context("hits")? {
            let doc = hit["doc"].as_str().context("doc")?;
            if !docs.contains(&doc) {
                docs.push(doc);
            }
        }
        let dcg: f64 = docs
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, d)| relevant.contains(**d))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let idcg: f64 = (0..relevant.len().min(10)).map(|i| 1.0 / ((i + 2) as f64).log2()).sum();
        ndcg += dcg / idcg;
        recall += docs.iter().take(100).filter(|d| relevant.contains(**d)).count() as f64 / relevant.len() as f64;
    }
    let n = ids.len() as f64;
    Ok((ndcg / n, recall / n, took))
}
