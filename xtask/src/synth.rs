//! Deterministic synthetic knowledge bases for the scale benchmarks: persona-shaped YAML
//! (jobs, projects, books, FAQ entries) with varied, readable sentences; never committed.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

/// Entities per generated file.
pub const PER_FILE: usize = 100;

const FIRST: &[&str] = &[
    "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena", "Mateo",
    "Nadia", "Oren", "Priya",
];
const ORGS: &[&str] = &[
    "Tagus Robotics",
    "Northwind Analytics",
    "Harbour Labs",
    "Cedar Health",
    "Quayside Energy",
    "Atlas Freight",
    "Bluefin Studios",
    "Granite Bank",
    "Orchard Foods",
    "Helix Biotech",
    "Lumen Optics",
    "Kestrel Aerospace",
];
const TECH: &[&str] = &[
    "Rust",
    "Python",
    "Kubernetes",
    "PostgreSQL",
    "React",
    "Kafka",
    "TensorFlow",
    "Terraform",
    "Go",
    "TypeScript",
    "Redis",
    "Spark",
    "ROS 2",
    "gRPC",
    "DuckDB",
    "WebAssembly",
];
const VERBS: &[&str] = &[
    "designed",
    "rebuilt",
    "scaled",
    "migrated",
    "automated",
    "simplified",
    "launched",
    "hardened",
    "profiled",
    "documented",
];
const THINGS: &[&str] = &[
    "the billing pipeline",
    "a fleet telemetry service",
    "the search ranking stack",
    "an onboarding flow",
    "the data warehouse",
    "a mobile checkout",
    "the incident runbooks",
    "a sensor fusion module",
    "the recommendation engine",
    "an internal design system",
];
const OUTCOMES: &[&str] = &[
    "cut latency by a third",
    "halved the cloud bill",
    "removed a week of manual work each month",
    "raised conversion measurably",
    "made releases boring again",
    "let two teams ship independently",
    "survived the holiday peak without paging anyone",
];
const TOPICS: &[&str] = &[
    "distributed systems",
    "urban gardening",
    "jazz harmony",
    "mountain photography",
    "sourdough baking",
    "chess endgames",
    "sailing",
    "Portuguese history",
    "typography",
    "birdwatching",
    "climate policy",
    "woodworking",
];
const ADJ: &[&str] =
    &["thoughtful", "sprawling", "quiet", "fierce", "playful", "meticulous", "unhurried", "surprising"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: fixed and portable, so every run generates the same text.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn entity(rng: &mut Rng, n: usize, out: &mut String) {
    let kind = n % 4;
    let year = 2005 + (rng.next() % 20) as usize;
    match kind {
        0 => {
            let org = rng.pick(ORGS);
            let _ = writeln!(
                out,
                "  - id: job_{n}\n    title: {} engineer\n    company: {org}\n    start_date: '{year}'",
                rng.pick(&["Senior", "Staff", "Lead", "Principal", "Founding"])
            );
            let _ = writeln!(out, "    responsibilities:");
            for _ in 0..3 {
                let _ =
                    writeln!(out, "      - {} {} with {}", capital(rng.pick(VERBS)), rng.pick(THINGS), rng.pick(TECH));
            }
            let _ =
                writeln!(out, "    achievements:\n      - {} and {}", capital(rng.pick(OUTCOMES)), rng.pick(OUTCOMES));
            let _ = writeln!(
                out,
                "    tags: [{}, {}]",
                rng.pick(TECH).to_lowercase().replace(' ', "-"),
                rng.pick(TOPICS).replace(' ', "-")
            );
        }
        1 => {
            let _ = writeln!(
                out,
                "  - id: project_{n}\n    name: {} {}\n    description: A {} side project that {} {} using {} and {}.",
                capital(rng.pick(ADJ)),
                rng.pick(&["Compass", "Lantern", "Anchor", "Beacon", "Harbor", "Sextant", "Kite"]),
                rng.pick(ADJ),
                rng.pick(VERBS),
                rng.pick(THINGS),
                rng.pick(TECH),
                rng.pick(TECH)
            );
            let _ = writeln!(out, "    status: {}\n    started: '{year}'", rng.pick(&["active", "paused", "shipped"]));
        }
        2 => {
            let _ = writeln!(
                out,
                "  - id: book_{n}\n    title: The {} Art of {}\n    author: {} {}\n    reason: A {} book about {} that changed how I think about {}.",
                capital(rng.pick(ADJ)),
                capital(rng.pick(TOPICS)),
                rng.pick(FIRST),
                rng.pick(&["Silva", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad"]),
                rng.pick(ADJ),
                rng.pick(TOPICS),
                rng.pick(TOPICS)
            );
        }
        _ => {
            let topic = rng.pick(TOPICS);
            let _ = writeln!(
                out,
                "  - id: faq_{n}\n    question: How did you get into {topic}?\n    answer: {} introduced me to {topic} in {year}; since then I have {} {} on weekends.",
                rng.pick(FIRST),
                rng.pick(VERBS),
                rng.pick(THINGS)
            );
        }
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Write `chunks` entities into `dir` as `part-NNNNN.yaml` files of [`PER_FILE`] entities.
pub fn generate(dir: &Path, chunks: usize) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng(0x1ead_5eed);
    for file in 0..chunks.div_ceil(PER_FILE) {
        let mut out = String::from("metadata:\n  description: Synthetic benchmark data\nentries:\n");
        for n in file * PER_FILE..((file + 1) * PER_FILE).min(chunks) {
            entity(&mut rng, n, &mut out);
        }
        std::fs::write(dir.join(format!("part-{file:05}.yaml")), out)?;
    }
    Ok(())
}

/// Change one file the way an edit would: one entity's text changes, differently each round.
pub fn touch_one(dir: &Path, round: usize) -> Result<()> {
    let path = dir.join("part-00000.yaml");
    let original = dir.join(".part-00000.yaml.orig");
    if !original.exists() {
        std::fs::copy(&path, &original)?;
    }
    let text = std::fs::read_to_string(&original)?;
    std::fs::write(&path, text.replacen("engineer\n", &format!("engineer (edit {round})\n"), 1))?;
    Ok(())
}
