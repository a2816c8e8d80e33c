#!/usr/bin/env python3
"""Regenerate potion_reference.json, the Model2Vec reference fixture.

Usage:
    python make_potion_reference.py MODEL_DIR [OUT_JSON]

MODEL_DIR holds minishlab/potion-base-8M (tokenizer.json, model.safetensors,
config.json). OUT_JSON defaults to potion_reference.json beside this script.
Needs: pip install tokenizers safetensors numpy   (model2vec optional: if it
imports, every embedding is checked against StaticModel.encode and the
library's own output is what gets written).

Pipeline reproduced (this is exactly what model2vec's StaticModel.encode does,
with max_length = 512 and normalize = true from config.json):
  1. text = text[: 512 * median_token_length]   (Python str slice, i.e. in
     Unicode code points; median_token_length = int(median(len(tok) for tok in
     vocab)), which is 6 for this vocab -> 3072 code points)
  2. ids = tokenizer.encode(text, add_special_tokens=False) with the tokenizer's
     truncation set to 512 tokens
  3. drop every id equal to the id of model.unk_token ("[UNK]")
     (note: AFTER the 512-token truncation)
  4. mean of the rows of the "embeddings" tensor (zeros if no ids remain)
  5. divide by (L2 norm + 1e-32)
The "ids" written per case are the plain, untruncated
tokenizer.encode(text, add_special_tokens=False).ids of the full text;
"n_pooled" is how many ids steps 1-3 left to be averaged.
"""
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import safetensors
import tokenizers
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_LENGTH = 512


def sig7(x: float) -> float:
    return float(f"{x:.7g}")


def long_text(n_words: int) -> str:
    """A deterministic ~n_words English text (the text itself is stored in the fixture)."""
    words = (
        "the quick brown fox jumps over a lazy dog while researchers in several "
        "international laboratories continue investigating how distributed "
        "systems behave under unpredictable network partitions and whether "
        "eventual consistency guarantees are sufficient for everyday "
        "applications such as banking, messaging, collaborative editing, and "
        "inventory management; meanwhile, the committee's 2024 report "
        "recommends stronger safeguards, clearer documentation, reproducible "
        "benchmarks, and more careful attention to latency, throughput, "
        "durability, recovery, observability, and cost"
    ).split()
    out = []
    state = 12345
    for i in range(n_words):
        state = (state * 1103515245 + 12345) % (2**31)
        w = words[state % len(words)]
        if i % 17 == 0:
            w = w.capitalize()
        out.append(w)
        if i % 23 == 22:
            out[-1] += "."
    return " ".join(out)


def cases() -> list:
    unk_then_trunc = " ".join(f"😀 {w}" for w in long_text(250).split())
    return [
        # plain English / mixed case
        "What is the capital of France?",
        "How do I reset my password if I no longer have access to my email?",
        "The quick brown fox jumps over the lazy dog.",
        "HeLLo WoRLD, THIS is MiXeD CaSe",
        "hello",
        # accents / diacritics / combining marks
        "Café Müller",
        "naïve résumé",
        "Ångström",
        "e\u0301",
        "a\u0300\u0301b",
        "İstanbul",
        "ΟΔΟΣ Ελληνικά",
        "Ёлка Привет мир",
        "مَرْحَبًا بالعالم",
        "हिन्दी",
        # CJK / other scripts
        "東京 is in 日本",
        "。、「東京」",
        "ひらがな が カタカナ",
        "한국어",
        "ＡＢＣ１２３",
        "ﬁnance ﬁ",
        # punctuation-heavy
        "don't",
        "e-mail",
        "U.S.A.",
        "C++/Rust!!",
        "(hello)[world]",
        "##abc",
        "5€ ±3 ©2020 $5 ^_^ `x` ~y",
        # numbers / dates
        "2023–present",
        "3.14",
        "v1.2.3 3.14 -42 1,000,000",
        # URLs / emails
        "https://example.com/path?q=1&x=y#frag",
        "john.doe@example.org",
        # very long words
        "x" * 100,
        "x" * 101,
        "short " + "x" * 101 + " words",
        "e\u0301" * 100,
        # emoji / unknown
        "I love pizza 😀🍕!",
        "hi😀there friend",
        "😀 🎉 ①",
        # control, whitespace and format characters
        "a\tb\nc\u0000d",
        "a\u200bb",
        "co\u00adoperate \ufeffstart",
        "a\u00a0b\u3000c\u2028d\u2029e",
        "a\u0085b\u000bc\u000cd\u007fe\ufffdf",
        "\ue000private \u0378unassigned",
        # degenerate inputs
        "",
        " \t\n  ",
        # truncation behaviour
        long_text(700),
        unk_then_trunc,
        " " * 3100 + "hello world",
        " " * 3071 + "東京都",
    ]


def main() -> None:
    model_dir = Path(sys.argv[1])
    out_path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("potion_reference.json")

    tok_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config.get("normalize") is True
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    unk_id = tokenizer.token_to_id(tok_json["model"]["unk_token"])
    emb = load_file(str(model_dir / "model.safetensors"))["embeddings"]
    sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()

    vocab = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda x: x[1])]
    median_token_length = int(np.median([len(t) for t in vocab]))
    char_cap = MAX_LENGTH * median_token_length

    trunc_tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    trunc_tok.enable_truncation(MAX_LENGTH)

    texts = cases()
    manual = []
    n_pooled = []
    for text in texts:
        ids = trunc_tok.encode(text[:char_cap], add_special_tokens=False).ids
        ids = [i for i in ids if i != unk_id]
        n_pooled.append(len(ids))
        v = emb[ids].astype(np.float64).mean(axis=0) if ids else np.zeros(emb.shape[1])
        manual.append(v / (np.linalg.norm(v) + 1e-32))
    manual = np.array(manual)

    versions = (
        f"python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
        f"safetensors {safetensors.__version__}, numpy {np.__version__}"
    )
    try:
        import model2vec
        from model2vec import StaticModel
    except ImportError:
        final = manual
        produced_by = versions + "; embeddings from manual numpy pipeline (model2vec not installed)"
    else:
        model = StaticModel.from_pretrained(str(model_dir))
        assert model.max_length == MAX_LENGTH and model.normalize and model.unk_token_id == unk_id
        assert model.median_token_length == median_token_length
        lib = np.asarray(model.encode(texts), dtype=np.float64)
        diff = float(np.abs(lib - manual).max())
        assert diff < 1e-6, diff
        final = lib
        produced_by = (
            versions + f", model2vec {model2vec.__version__}; embeddings = model2vec "
            f"StaticModel.from_pretrained(dir).encode(texts) (float32), which matches an "
            f"independent float64 numpy pipeline to max abs diff {diff:.1e}"
        )

    out = {
        "model": "minishlab/potion-base-8M",
        "model_safetensors_sha256": sha,
        "produced_by": produced_by,
        "semantics": (
            f"text[:{char_cap}] (code points; 512 * median vocab token length {median_token_length}) -> "
            "encode(add_special_tokens=False) truncated to 512 tokens -> drop [UNK] id "
            f"{unk_id} -> mean of embedding rows (zeros if none) -> / (L2 norm + 1e-32). "
            "'ids' = untruncated encode(text, add_special_tokens=False).ids of the full text; "
            "'n_pooled' = number of ids actually averaged."
        ),
        "cases": [
            {
                "text": text,
                "ids": tokenizer.encode(text, add_special_tokens=False).ids,
                "n_pooled": n,
                "embedding": [sig7(x) for x in vec],
            }
            for text, n, vec in zip(texts, n_pooled, final)
        ],
    }
    # One case per line keeps diffs readable; ASCII-only with \u escapes for everything else.
    head = json.dumps({k: v for k, v in out.items() if k != "cases"}, ensure_ascii=True, indent=1)
    body = ",\n".join(json.dumps(c, ensure_ascii=True) for c in out["cases"])
    out_path.write_text(head[:-2] + ',\n "cases": [\n' + body + "\n ]\n}\n", encoding="utf-8")
    print(f"wrote {len(texts)} cases to {out_path}; {produced_by}")


if __name__ == "__main__":
    main()
