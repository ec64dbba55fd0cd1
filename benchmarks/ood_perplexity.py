"""Perplexity on text the RLCP retain stream never trained on: the Python language reference's help
topics, as shipped with Python itself (`pydoc_data.topics`, what `help("if")` prints).

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.ood_perplexity --models qwen2.5-coder-0.5b runs/X

Why it is out of domain for the retain stream: that stream trains on GSM8K train solutions (in the
same layout as the GSM8K test perplexity, which therefore measures in-domain training, not retention)
and on the fact templates; this text is English technical prose and grammar about Python, with no
word problems and no facts of the forget set. It ships with every Python (no download, fixed per
Python version, recorded in the result), and a code model like Qwen2.5-Coder was pretrained on text of
this kind, so a rise in its perplexity is lost general ability. Each passage is a topic's first
~1,200 characters: the title line is the prompt, the rest is scored (`neuralcpu.analyze.solution_perplexity`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

SOURCE = f"pydoc_data.topics (the Python {sys.version_info.major}.{sys.version_info.minor} language reference help topics)"


def passages(limit: int | None = None, chars: int = 1200) -> list[tuple[str, str]]:
    """(title, text) pairs: each help topic, in sorted order, cut at the last paragraph end before
    `chars` characters (or at `chars`); the first `limit` topics (all when None)."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics)[:limit]:
        title, _, body = topics[key].strip().partition("\n")
        body = body.lstrip("*\n")
        cut = body.rfind("\n\n", 0, chars)
        out.append((title.strip() + "\n", body[: cut if cut > chars // 3 else chars]))
    return out


def perplexity(model, tokenizer, limit: int | None = None, batch_size: int = 8) -> float:
    """exp(mean next-token loss) of `model` over the text of `passages(limit)` (titles as prompts)."""
    from neuralcpu.analyze import solution_perplexity

    return solution_perplexity(model, tokenizer, passages(limit), batch_size=batch_size)


def compare(models: dict[str, str], limit: int | None = None) -> dict:
    """{"source", "passages", <label>: perplexity} for each label -> model (preset, .gguf or run dir)."""
    from neuralcpu.models import load_model

    out = {"source": SOURCE, "passages": len(passages(limit))}
    for label, name in models.items():
        model, tok = load_model(name)
        out[label] = perplexity(model, tok, limit)
        del model
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="presets, .gguf files or run dirs")
    parser.add_argument("--limit", type=int, default=None, help="first N topics (default all)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    print(json.dumps(compare({m: m for m in args.models}, args.limit), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
