#!/usr/bin/env python3
"""Regenerate minilm_reference.json: ids and embeddings from the reference Python libraries.

    python3 -m venv /tmp/mlvenv && /tmp/mlvenv/bin/pip install sentence-transformers
    /tmp/mlvenv/bin/python make_minilm_reference.py /path/to/sentence-transformers__all-MiniLM-L6-v2

The model directory is the one `tests/reference.rs` reads from LORE_MINILM_DIR. Embeddings
come from `SentenceTransformer(dir).encode(texts, normalize_embeddings=True)` on the CPU in
float32; ids come from the same model's tokenizer with the same truncation (max_seq_length).
"""

import hashlib
import json
import sys
from pathlib import Path

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

LONG = (
    "The archive service keeps every compiled knowledge base as a single sealed file. "
    "When an operator publishes a new build, the runtime maps the new file next to the old one, "
    "checks its header, decrypts the index, and only then swaps the two, so that questions that "
    "are already in flight keep reading the inode they started with. Nothing is ever modified in "
    "place: the compiler writes a temporary file, flushes it to disk, and renames it over the old "
    "name, which is atomic on every file system we support. Retrieval combines a lexical score "
    "(BM25 over stemmed terms, with stop words removed) and a dense score (cosine similarity "
    "between the question's embedding and each chunk's embedding), weighted and fused, and a "
    "question whose best fused score falls below the on-topic threshold is answered with a polite "
    "refusal instead of a guess. Each answer cites the chunks it used by their stable identifiers, "
    "which are the source file's name followed by a JSON pointer into the entity, so that an editor "
    "can jump straight to the paragraph that needs fixing. The same paragraph is repeated to make "
    "sure that the input is longer than the model's maximum sequence length of two hundred and "
    "fifty-six word pieces: the archive service keeps every compiled knowledge base as a single "
    "sealed file, and the runtime maps it, checks it, decrypts the index, and swaps it atomically."
)

TEXTS = [
    "What is the refund policy?",
    "How do I reset my password?",
    "Who founded the company and when?",
    "Wie setze ich mein Passwort zurück?",
    "Café, naïve façade: résumé of Zoë's déjà vu in São Paulo.",
    "e-mail me at ops@example.com (or +1-555-0100)!!! -- thanks...",
    "PANIC: disk /dev/sda1 is 99% full; rotate logs & retry?",
    "东京 is the capital of Japan; 北京 is the capital of China.",
    "",
    "supercalifragilisticexpialidociousness antidisestablishmentarianism",
    "a",
    "What does [MASK] mean in [CLS]-style BERT inputs?[SEP]",
    LONG,
]


def main() -> None:
    model_dir = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("minilm_reference.json")
    torch.set_num_threads(1)
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    tokenizer = model.tokenizer
    ids = [
        tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"] for t in TEXTS
    ]
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
    weights = (model_dir / "model.safetensors").read_bytes()
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": hashlib.sha256(weights).hexdigest(),
        "generator": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "max_seq_length": model.max_seq_length,
        "cases": [
            {"text": t, "ids": i, "embedding": [round(float(x), 8) for x in v]}
            for t, i, v in zip(TEXTS, ids, vectors)
        ],
    }
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(TEXTS)} cases, {vectors.shape[1]} dims")


if __name__ == "__main__":
    main()
