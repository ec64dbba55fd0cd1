"""Paired GSM8K comparison: McNemar's exact p, Newcombe's paired CI, and the resumable CLI on two tiny
random Qwen2 models; the out-of-domain perplexity text."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from benchmarks import gsm8k_paired, ood_perplexity


def test_mcnemar_exact_value():
    # 2 of 12 discordant pairs favour B: two-sided exact p = 2 * (1 + 12 + 66) / 2**12
    assert gsm8k_paired.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert gsm8k_paired.mcnemar_exact(0, 0) == 1.0


def test_paired_counts_and_identical_models():
    a = [True, True, False, False, True]
    b = [True, False, True, False, True]
    p = gsm8k_paired.paired(a, b)
    assert (p["both"], p["a_only"], p["b_only"], p["neither"]) == (2, 1, 1, 1)
    assert p["diff"] == 0 and p["mcnemar_p"] == 1.0 and p["diff_ci95"][0] < 0 < p["diff_ci95"][1]
    same = gsm8k_paired.paired(a, a)
    assert same["diff"] == 0 and same["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        gsm8k_paired.paired(a, b[:3])


def test_newcombe_ci_agrees_with_a_paired_bootstrap():
    """Newcombe's interval and a 4000-resample paired percentile bootstrap agree to 0.02 at n = 250."""
    rng = random.Random(0)
    a = [rng.random() < 0.2 for _ in range(250)]
    b = [x if rng.random() < 0.85 else not x for x in a]  # correlated, with some flips each way
    p = gsm8k_paired.paired(a, b)
    diffs = []
    for _ in range(4000):
        idx = [rng.randrange(250) for _ in range(250)]
        diffs.append(sum(b[i] - a[i] for i in idx) / 250)
    diffs.sort()
    lo, hi = diffs[int(0.025 * 4000)], diffs[int(0.975 * 4000)]
    assert p["diff_ci95"][0] == pytest.approx(lo, abs=0.02) and p["diff_ci95"][1] == pytest.approx(hi, abs=0.02)
    assert p["diff_ci95"][0] <= p["diff"] <= p["diff_ci95"][1]


def test_clear_difference_excludes_zero():
    a = [True] * 60 + [False] * 190
    b = [True] * 20 + [False] * 230
    p = gsm8k_paired.paired(a, b)
    assert p["diff"] == pytest.approx(-0.16) and p["diff_ci95"][1] < 0 and p["mcnemar_p"] < 1e-9


def test_ood_text_has_no_gsm8k_and_is_fixed():
    texts = ood_perplexity.passages()
    assert len(texts) > 50 and all(title.endswith("\n") and len(body) > 100 for title, body in texts)
    assert not any("####" in body for _, body in texts)  # no GSM8K solution layout
    assert texts == ood_perplexity.passages() and texts[:5] == ood_perplexity.passages(5)


@pytest.fixture
def chat_tiny_dirs(tiny_qwen2_dir, context_tiny_qwen2_dir, tmp_path):
    """The two tiny models, each given a minimal chat template (the boxed prompt needs one)."""
    from transformers import AutoTokenizer

    out = []
    for name, src in (("a", tiny_qwen2_dir), ("b", context_tiny_qwen2_dir)):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        tok = AutoTokenizer.from_pretrained(dst)
        tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
        tok.save_pretrained(dst)
        out.append(str(dst))
    return out


def test_cli_pairs_two_models_and_resumes(chat_tiny_dirs, tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"}) + "\n"
                            for i in range(6)))
    out = tmp_path / "run"
    argv = ["--a", chat_tiny_dirs[0], "--b", chat_tiny_dirs[1], "--n", "4", "--prompt", "qwen-boxed",
            "--max-new-tokens", "5", "--batch-size", "2", "--chunk", "3", "--gsm8k-test", str(test), "--out", str(out)]
    assert gsm8k_paired.main(argv + ["--ood-ppl"]) == 0
    result = json.loads((out / "gsm8k_paired.json").read_text())
    assert result["config"]["prompt"] == "boxed" and result["config"]["n_problems"] == 4
    assert result["models"]["a"]["n"] == result["models"]["b"]["n"] == 4
    assert result["paired"]["accuracy"]["n"] == 4 and 0 <= result["paired"]["accuracy"]["mcnemar_p"] <= 1
    assert result["ood_perplexity"]["a"] > 1 and result["ood_perplexity"]["b"] > 1
    assert result["commit"] and result["machine"] and result["command"].startswith(".venv/bin/python -m benchmarks.gsm8k_paired")
    assert "exact McNemar p" in (out / "report.md").read_text()
    first = {side: (out / f"{side}.jsonl").read_text().splitlines() for side in ("a", "b")}

    # a run killed in its last chunk of B: one record lost, one torn line; the rerun regenerates only that
    (out / "b.jsonl").write_text("\n".join(first["b"][:-1]) + '\n{"index": 9, "gold"')
    assert gsm8k_paired.main(argv + ["--partial"]) == 0  # a report on what both have, generating nothing
    cut = json.loads((out / "gsm8k_paired.json").read_text())
    assert cut["models"]["a"]["n"] == cut["models"]["b"]["n"] == 3 and cut["config"]["partial"].startswith("3 of the 4")
    assert (out / "a.jsonl").read_text().splitlines() == first["a"]
    assert gsm8k_paired.main(argv) == 0
    again = {side: (out / f"{side}.jsonl").read_text().splitlines() for side in ("a", "b")}
    assert again["a"] == first["a"]  # A was complete: not regenerated
    strip = lambda lines: sorted((json.loads(x)["index"], json.loads(x)["output"]) for x in lines
                                 if x.startswith('{"index"') and x.endswith("}"))
    assert strip(again["b"]) == strip(first["b"])  # greedy: the regenerated problem gives the same output

    with pytest.raises(SystemExit, match="holds a different run"):
        gsm8k_paired.main([("6" if x == "5" else x) for x in argv])  # another --max-new-tokens, same --out


def test_int8_side_is_quantized_and_recorded(chat_tiny_dirs, tmp_path, monkeypatch):
    """--int8 b: model B is generated through int8_dynamic (A is not), the config and report say so, and a
    resume with another --int8 is refused."""
    import neuralcpu.generation as generation

    quantized = []
    real = generation.int8_dynamic
    monkeypatch.setattr(generation, "int8_dynamic", lambda m: quantized.append(m) or real(m))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"}) + "\n"
                            for i in range(4)))
    out = tmp_path / "run"
    argv = ["--a", chat_tiny_dirs[0], "--b", chat_tiny_dirs[0], "--n", "3", "--prompt", "qwen-boxed",
            "--max-new-tokens", "4", "--batch-size", "2", "--gsm8k-test", str(test), "--out", str(out)]
    assert gsm8k_paired.main(argv + ["--int8", "b"]) == 0
    assert len(quantized) == 1  # B only
    result = json.loads((out / "gsm8k_paired.json").read_text())
    assert result["config"]["int8"] == "b" and result["paired"]["accuracy"]["n"] == 3
    assert "(int8)" in (out / "report.md").read_text().split("| b:")[1].split("\n")[0]
    with pytest.raises(SystemExit, match="int8"):
        gsm8k_paired.main(argv + ["--int8", "both"])
