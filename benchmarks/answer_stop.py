"""Does a model still stop where an answer ends? A teacher-forced check on GSM8K, continuous where the
free-generation count ("k of 16 answers ran to the cap") is coarse.

A reference model (the original) answers GSM8K test questions greedily under the benchmark's prompt;
every answer that ends in `#### N` is kept, cut right after the number. Each model then reads prompt +
that answer in one forward pass, and its next-token distribution there is scored:

  p_end        probability of a token that ends the row (EOS, end-of-turn, pad; `stop_token_ids`)
  p_number     probability of a token that goes on with the number (starts with a digit, or . or ,
               followed by one)
  greedy_ends  the share of answers where the single most likely token ends the row: where greedy
               decoding, having written the reference's answer, would stop
  number_beats_end  the share where p_number > p_end: where the number is likelier to go on

A model that runs away after `#### 125` (`#### 125000000…` to the cap) puts p_number above p_end
there. The reference itself does not always stop right after the number (Qwen2.5-Coder sometimes
goes on with " <number>", echoing the instruction), so compare each model with the reference's row.

    .venv/bin/python benchmarks/answer_stop.py --reference qwen2.5-coder-0.5b \\
        --models qwen2.5-coder-0.5b runs/qwen-sc3 runs/qwen-sc3-seed1 --n 96 --out results/answer_stop

Writes `answer_stop.json` (per-answer values too; the reference answers are kept, so `--resume` adds
models without regenerating them), `report.md` and `answer_stop.png` (p_end per answer, per model).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import gsm8k  # noqa: E402
from benchmarks.report import write_json_atomic, write_text_atomic  # noqa: E402
from neuralcpu.generation import adds_bos, encode_left_padded, padded_positions, stop_token_ids  # noqa: E402

# The reference's answer must end in its final number: `gsm8k.generate` cuts the text right after it.
_ENDS_IN_ANSWER = re.compile(r"####\s*\$?\s*-?\d[\d,]*(?:\.\d+)?$")
_GOES_ON_WITH_NUMBER = re.compile(r"^(?:\d|[.,]\d)")


def reference_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str | None]:
    """The reference's greedy answer to each prompt, cut right after its `#### N`; None where it gave none."""
    outs = gsm8k.generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress=True)
    return [o["text"] if _ENDS_IN_ANSWER.search(o["text"]) else None for o in outs]


def number_token_mask(tokenizer) -> torch.Tensor:
    """Bool mask over the vocabulary: tokens whose text goes on with a number just written."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([bool(_GOES_ON_WITH_NUMBER.match(t)) for t in texts])


@torch.inference_mode()
def next_token_scores(model, tokenizer, texts: list[str], batch_size: int = 16,
                      number: torch.Tensor | None = None) -> list[dict]:
    """{"p_end", "p_number", "greedy_ends"} of the next token after each text (left-padded batches, position
    ids as in decoding). `number`: the tokenizer's `number_token_mask`, when the caller has it already."""
    ends = torch.tensor(sorted(stop_token_ids(tokenizer, model)))
    number = number_token_mask(tokenizer) if number is None else number
    special = adds_bos(tokenizer, texts)
    scores = []
    for i in tqdm(range(0, len(texts), batch_size), desc="score", leave=False):
        enc = encode_left_padded(tokenizer, texts[i:i + batch_size], special).to(model.device)
        logits = model(**enc, position_ids=padded_positions(enc["attention_mask"]),
                       logits_to_keep=1).logits[:, -1].float()  # the LM head at the last column only
        for p in logits.softmax(-1).cpu():
            # A model may have more logits than tokenizer entries (padded embedding): those are never numbers.
            scores.append({"p_end": p[ends].sum().item(), "p_number": p[: len(number)][number].sum().item(),
                           "greedy_ends": bool(torch.isin(p.argmax(), ends))})
    return scores


def summarize(scores: list[dict]) -> dict:
    n = len(scores)
    return {"n": n, "mean_p_end": sum(s["p_end"] for s in scores) / n,
            "mean_p_number": sum(s["p_number"] for s in scores) / n,
            "greedy_ends": sum(s["greedy_ends"] for s in scores) / n,
            "number_beats_end": sum(s["p_number"] > s["p_end"] for s in scores) / n}


def markdown(results: dict) -> str:
    lines = [f"# Answer stop: the next token after the reference's `#### N` (GSM8K test, teacher-forced)", "",
             f"Reference `{results['reference']}`: {results['n_answers']} of {results['n_questions']} questions "
             f"answered with `#### N` ({results['format']} prompt, cap {results['max_new_tokens']} tokens).", "",
             "| model | mean P(end) | mean P(number goes on) | greedy would stop | P(number) > P(end) |",
             "|---|---|---|---|---|"]
    for name, r in results["models"].items():
        s = r["summary"]
        lines.append(f"| `{name}` | {s['mean_p_end']:.2f} | {s['mean_p_number']:.2f} | {s['greedy_ends']:.2f} "
                     f"| {s['number_beats_end']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names)), 4))
    ax.boxplot([[s["p_end"] for s in results["models"][n]["scores"]] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), [Path(n).name for n in names], rotation=30, ha="right")
    ax.set_ylabel("P(end) after the reference's #### N")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Does the model stop after its answer? (teacher-forced)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="qwen2.5-coder-0.5b",
                        help="model whose own answers are read (preset, hub id or save_pretrained dir)")
    parser.add_argument("--models", nargs="+", required=True, help="models to score (same tokenizer as the reference)")
    parser.add_argument("--n", type=int, default=96, help="first N GSM8K test questions")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on the reference's answers")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass / generation batch")
    parser.add_argument("--gsm8k-test", default=None, help="GSM8K test JSONL (default: shared copy, else hub)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true",
                        help="keep the reference answers and the models already scored in OUT/answer_stop.json")
    args = parser.parse_args(argv)
    if args.n < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        parser.error("--n, --max-new-tokens and --batch-size must be >= 1")

    from neuralcpu.data import load_gsm8k
    from neuralcpu.models import load_model, load_tokenizer

    out = Path(args.out)
    path = out / "answer_stop.json"
    results = None
    if args.resume and path.is_file():
        results = json.loads(path.read_text())
        if (results["reference"], results["n_questions"], results["max_new_tokens"]) != (
                args.reference, args.n, args.max_new_tokens):
            parser.error(f"{path} was made with --reference {results['reference']} --n {results['n_questions']} "
                         f"--max-new-tokens {results['max_new_tokens']}; rerun without --resume or with those")

    rows = load_gsm8k("test", args.gsm8k_test, limit=args.n)
    ref_tok = load_tokenizer(args.reference)  # kept answers (--resume) need no reference model
    fmt = gsm8k.prompt_format(ref_tok)
    if fmt != "chat":
        parser.error(f"{args.reference} has no chat template; this check reads answers to the zero-shot chat prompt")
    prompts = gsm8k.build_prompts(ref_tok, [r["question"] for r in rows], fmt)
    ref_model = None
    if results is None:
        ref_model, ref_tok = load_model(args.reference)
        answers = reference_answers(ref_model, ref_tok, prompts, args.max_new_tokens, args.batch_size)
        results = {"reference": args.reference, "n_questions": len(rows), "format": fmt,
                   "max_new_tokens": args.max_new_tokens, "answers": answers,
                   "n_answers": sum(a is not None for a in answers), "models": {}}
        write_json_atomic(path, results)
        if args.reference not in args.models:
            ref_model = None  # not scored: free it before the others load
    if results["n_answers"] == 0:
        raise SystemExit(f"{args.reference} ended none of its {len(rows)} answers in '#### N': nothing to score")
    keep = [i for i, a in enumerate(results["answers"]) if a is not None]
    texts = [prompts[i] + results["answers"][i] for i in keep]
    vocab = ref_tok.get_vocab()
    number = number_token_mask(ref_tok)  # every scored model shares this vocabulary (checked below)

    for name in args.models:
        if name in results["models"]:
            print(f"{name}: kept from {path}")
            continue
        if name == args.reference and ref_model is not None:  # already loaded for its answers
            model, tok, ref_model = ref_model, ref_tok, None
        else:
            model, tok = load_model(name)
        if tok.get_vocab() != vocab:
            raise SystemExit(f"{name}: its tokenizer differs from {args.reference}'s; the reference's answers "
                             "cannot be read token for token")
        scores = next_token_scores(model, tok, texts, args.batch_size, number)
        for i, s in zip(keep, scores):
            s["index"] = i
        results["models"][name] = {"summary": summarize(scores), "scores": scores}
        write_json_atomic(path, results)  # after each model: a killed run keeps what it scored
        s = results["models"][name]["summary"]
        print(f"{name}: P(end) {s['mean_p_end']:.2f}, P(number) {s['mean_p_number']:.2f}, "
              f"greedy stops {s['greedy_ends']:.2f} (n={s['n']})", flush=True)
        del model

    write_text_atomic(out / "report.md", markdown(results))
    plot(results, out / "answer_stop.png")
    print(f"wrote {path}, {out / 'report.md'}, {out / 'answer_stop.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
