"""Talks to `lore serve` with the official `openai` Python package, as a front end would.

python check.py BASE_URL MODEL QUESTION; prints one JSON object of what it saw.
"""
import json
import sys

from openai import OpenAI

base_url, model, question = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key="not-needed-by-lore", max_retries=0, timeout=30)

models = [m.id for m in client.models.list()]

whole = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": question}],
)

pieces = []
finish_reasons = []
usage = None
roles = []
with client.chat.completions.create(
    model=model,
    messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": question},
    ],
    stream=True,
    stream_options={"include_usage": True},
) as stream:
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

error = None
try:
    client.chat.completions.create(model="no-such-kb", messages=[{"role": "user", "content": question}])
except Exception as e:  # the client raises its own NotFoundError
    error = {"type": type(e).__name__, "status": getattr(e, "status_code", None)}

print(json.dumps({
    "models": models,
    "whole": whole.choices[0].message.content,
    "whole_finish": whole.choices[0].finish_reason,
    "whole_usage": whole.usage.total_tokens if whole.usage else None,
    "streamed": "".join(pieces),
    "pieces": len(pieces),
    "roles": roles,
    "finish_reasons": finish_reasons,
    "usage": usage,
    "error": error,
}))
