"""GSM8K prompting and stopping, the fact suite's sets, and the relearning attack, on small inputs."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import facts_suite, gsm8k, robustness
from common.facts import Fact
from neuralcpu.facts import FactSets
from neuralcpu.generation import adds_bos

ROWS = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(20)]


def test_subset_is_seeded_and_stable():
    a, b = gsm8k.select_problems(ROWS, 5, seed=1), gsm8k.select_problems(ROWS, 5, seed=1)
    assert a == b and len(set(a)) == 5
    assert gsm8k.select_problems(ROWS, 5, seed=2) != a
    assert gsm8k.select_problems(ROWS, None, 0) == list(range(20))
    assert gsm8k.select_problems(ROWS, 100, 0) == list(range(20))


def test_fewshot_prefix_has_eight_clean_exemplars():
    prefix = gsm8k.fewshot_prefix(ROWS, seed=0)
    assert prefix.count("Question:") == 8 and prefix.count("####") == 8
    assert "<<" not in prefix  # calculator annotations stripped
    with pytest.raises(ValueError):
        gsm8k.fewshot_prefix(ROWS[:3], seed=0)


def test_stop_patterns_and_truncation():
    pats = [gsm8k.ANSWER_DONE, gsm8k._NEXT_QUESTION]
    assert not gsm8k.ANSWER_DONE.search("#### 1,2")  # the number may still go on
    assert gsm8k.ANSWER_DONE.search("#### 1,200\n")
    assert gsm8k._truncate(" 2+2=4\n#### 4\nQuestion: more", pats) == " 2+2=4\n#### 4"
    assert gsm8k._truncate(" 2+2=4 so 4.\n\nQuestion: next", pats) == " 2+2=4 so 4."


def test_generate_counts_tokens_and_respects_cap(tiny_qwen2_dir):
    from neuralcpu.generation import greedy_generate
    from neuralcpu.models import load_model

    model, tok = load_model(tiny_qwen2_dir)
    prompts = ["Question: What is 3 plus 4?\nAnswer:", "The city of Tokyo is"]
    outs = gsm8k.generate(model, tok, prompts, max_new_tokens=12, batch_size=2, stop=False)
    assert [o["text"] for o in outs] == greedy_generate(model, tok, prompts, max_new_tokens=12)  # same greedy path
    assert all(0 <= o["tokens"] <= 12 for o in outs)


def test_fact_sets_split_and_floor(tmp_path):
    facts = FactSets([Fact("A", "country", "X"), Fact("B", "country", "Y")],
                     [Fact("C", "country", "Z"), Fact("X", "capital", "A")])
    tofu = [{"question": "q?", "answer": "a", "perturbed_answer": ["b", "c", "d"]}]
    sets = facts_suite.fact_sets(facts, tofu, tokenizer=None, tofu_fmt="completion")
    assert set(sets) == {"forget", "locality_same", "locality_other", "tofu"}
    assert sets["forget"].floor == 0.5 and sets["tofu"].floor == 1.0  # one question: its answer is the best fixed one
    from common.relations import load_relation

    test_templates = load_relation("country").select("test", "completion")
    assert len(sets["forget"].items) == 2 * len(test_templates)  # two facts x the test-split completion templates
    assert {p for _, p, _ in sets["forget"].items} == {t.render(s) for t in test_templates for s in ("A", "B")}
    assert sets["tofu"].items[0][1] == "Question: q?\nAnswer:"


def test_floor_is_the_best_fixed_answer_not_one_over_the_objects():
    # Free generation is no multiple choice: a model that knows nothing and always says "Japan" gets 3 of 5
    # here, not 1/3 (the probe chance over the 3 objects).
    facts = [Fact("Osaka", "country", "Japan"), Fact("Kyoto", "country", "Japan"), Fact("Nagoya", "country", "Japan"),
             Fact("Lagos", "country", "Nigeria"), Fact("Niamey", "country", "Niger"),
             Fact("France", "capital", "Paris"), Fact("Peru", "capital", "Lima")]
    floor, answers = facts_suite.constant_answer_floor(facts, facts_suite.FACT_WINDOW)
    assert answers == {"country": "Japan", "capital": "Paris"} and floor == pytest.approx(4 / 7)
    sets = facts_suite.fact_sets(FactSets(facts[:5], []), None)
    assert sets["forget"].floor == pytest.approx(3 / 5) and sets["forget"].floor_answers == {"country": "Japan"}
    # scored as a system's answer is: "Niger" does not count for Nigeria, an alias counts for its fact
    assert facts_suite.constant_answer_floor([Fact("Lagos", "country", "Nigeria"), Fact("Niamey", "country", "Niger")],
                                             40)[0] == 0.5
    usa = [Fact("Austin", "country", "United States", ("USA",)), Fact("Boston", "country", "USA")]
    assert facts_suite.constant_answer_floor(usa, 40) == (1.0, {"country": "USA"})
    tofu = [{"question": f"q{i}?", "answer": a, "perturbed_answer": ["x", "y", "z"]}
            for i, a in enumerate(["Paris", "Paris", "Nile", "Paris"])]
    assert facts_suite.fact_sets(None, tofu, tofu_fmt="completion")["tofu"].floor == 0.75  # not 1/4


def test_load_tofu_names_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        facts_suite.load_tofu(tmp_path / "nope.json")
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"question": "q", "answer": "a", "perturbed_answer": ["b"]}) + "\n")
    assert facts_suite.load_tofu(f)[0]["answer"] == "a"


def test_relearning_attack_trains_the_attack_set_only(tiny_qwen2_dir):
    from neuralcpu.models import load_model

    facts = FactSets([Fact(c, "country", k) for c, k in [("Alphaville", "Norland"), ("Betatown", "Sudria"),
                      ("Gammaburg", "Estavia"), ("Deltapolis", "Westmark"), ("Epsilon Bay", "Centralia")]], [])
    attack, held = robustness.split_forget(facts.forget, 0.2, seed=0)
    assert len(attack) == 1 and len(held) == 4 and not set(attack) & set(held)
    model, tok = load_model(tiny_qwen2_dir)
    before = {n: p.clone() for n, p in model.named_parameters()}
    loss = robustness.relearn(model, tok, attack, steps=30, lr=3e-3, seed=0)
    assert loss[-1] < 0.5 * loss[0]  # the attack fits its facts
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    # and now answers them, under the phrasings it was fine-tuned on (a 4-layer random model does not
    # carry them to the test families)
    assert robustness.closed_book_accuracy(model, tok, attack, split="train")["acc"] > 0
    probe = robustness.probe_decodability(model, tok, facts.forget)
    assert len(probe["per_layer"]) == model.config.num_hidden_layers + 1 and probe["chance"] == 0.2
    assert all(0 <= a <= 1 for a in probe["per_layer"])


def test_generation_bench_runs_and_reports(context_tiny_qwen2_dir, tmp_path):
    """Side by side: HF generate at batch 8 (the baseline), ours at batch 8 and at a larger batch; in fp32
    ours gives the baseline's greedy ids exactly; bf16 is skipped on a CPU without it, with the reason."""
    from benchmarks import generation_bench
    from neuralcpu.generation import native_bf16

    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "bench.json"
    assert generation_bench.main(["--model", str(context_tiny_qwen2_dir), "--n", "12", "--max-new-tokens", "12",
                                  "--batch-size", "5", "--gsm8k-test", str(gsm), "--gsm8k-train", str(gsm),
                                  "--bf16", "off", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [x["mode"] for x in r["results"]] == ["hf-generate b8 fp32", "neuralcpu b8 fp32", "neuralcpu b5 fp32"]
    assert r["results"][0]["ratio"] == 1.0 and all(x["tokens_per_s"] > 0 for x in r["results"])
    assert [x["differing"] for x in r["results"]] == [0, 0, 0]  # identical greedy ids in fp32
    assert len({x["tokens"] for x in r["results"]}) == 1 and r["results"][0]["tokens"] > 12  # same work, some of it
    assert r["bf16"].startswith("skipped") and r["native_bf16"] == native_bf16()
    assert r["commit"] and r["machine"] and r["seed"] == 0
    assert generation_bench.first_difference([1, 2, 3], [1, 2, 4]) == 2
    assert generation_bench.first_difference([1, 2], [1, 2]) is None

    # --large-only --int8: the fp32 generator at --batch-size is the baseline, int8 is timed and compared
    assert generation_bench.main(["--model", str(context_tiny_qwen2_dir), "--n", "6", "--max-new-tokens", "8",
                                  "--batch-size", "3", "--gsm8k-test", str(gsm), "--gsm8k-train", str(gsm),
                                  "--bf16", "off", "--int8", "--large-only", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [x["mode"] for x in r["results"]] == ["neuralcpu b3 fp32", "neuralcpu b3 int8"] and r["int8"]
    assert r["results"][1]["tokens"] > 0 and 0 <= r["results"][1]["differing"] <= 6


def test_train_bench_runs_and_reports(tiny_qwen2_dir, tmp_path):
    from benchmarks import train_bench

    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "train.json"
    assert train_bench.main(["--model", str(tiny_qwen2_dir), "--steps", "1", "--gsm8k-path", str(gsm),
                             "--variants", "full-fp32", "deep-cache-fp32", "deep-cache-bf16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["complete"] and [r["variant"] for r in rows] == ["full-fp32", "deep-cache-fp32", "deep-cache-bf16"]
    full, deep, bf16 = rows
    assert full["speedup_vs_full_fp32"] == 1.0 and deep["tokens_per_s"] > 0
    assert deep["trainable_params"] < full["trainable_params"]  # only the blocks from the first GRL layer up
    assert deep["tokens_per_step"] == full["tokens_per_step"] and 0 < deep["step_flops"] < full["step_flops"]
    # the caches change where the work is done, not the step's losses (same weights at the first step)
    assert deep["first_loss"] == pytest.approx(full["first_loss"], rel=1e-4)
    # bf16 autocasts the forwards only, as rlcp.train does; the losses are fp32 (under autocast, the ridge
    # fits and probe losses came out 2.7% off on this model, and -3.92 against 3.74 on SmolLM2)
    assert bf16["first_loss"] == pytest.approx(full["first_loss"], rel=0.005)


def test_phase_transition_plot_from_metrics(tmp_path):
    from benchmarks import report

    rows = [{"step": s, "forget_acc": 1 - s / 10, "locality_acc": 0.9, "probe_acc": [0.5, 0.7]} for s in (0, 5, 10)]
    rows.append({"step": 12, "forget_acc": 0.0, "locality_acc": 0.8})  # a baseline row without probes
    path = report.plot_phase_transition("rlcp", rows, tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_no_second_bos_before_a_rendered_chat_template():
    class Tok:
        bos_token = "<|im_start|>"

    assert not adds_bos(Tok(), ["<|im_start|>system\nhi", "<|im_start|>user\nq"])
    assert adds_bos(Tok(), ["Question: q\nAnswer:", "<|im_start|>user\nq"])
    Tok.bos_token = None
    assert adds_bos(Tok(), ["<|im_start|>user\nq"])


def test_report_labels_the_fact_floor_and_keeps_chance_for_probes_only():
    from benchmarks import report

    cell = {"k": 3, "n": 5, "acc": 0.6, "ci95": [0.23, 0.88], "floor": 0.6, "lookup_rate": 0.0}
    md = report.markdown({"model": "m", "seed": 0, "git": {"commit": "abc"}, "config": {"suite": ["facts"]},
                          "facts": {"original": {"forget": cell}}})
    assert "| *floor: the best fixed answer* | 0.60 |" in md and "chance" not in md.split("no chance level")[0]


def test_stream_drift_runs_each_stream_alone_and_reads_the_drift(tiny_qwen2_dir, tmp_path):
    """benchmarks/stream_drift: each variant trains only its own stream group (the rest at weight 0) and reads
    the KL on the original's held-out answers; a variant with zero steps leaves the model as it was (KL 0),
    and a stream that trains moves it; a rerun skips the variants it has."""
    from benchmarks import stream_drift
    from common.facts import Fact
    from neuralcpu.facts import FactSets

    cfg = stream_drift.variant_config("lookup", "m", "o")
    assert cfg.w_retrieval > 0 and cfg.w_forget == cfg.w_class_mean == cfg.w_country_probe == 0
    assert cfg.w_retain_lm == cfg.w_kl == cfg.w_locality == cfg.w_locality_states == cfg.w_rag == 0
    left_out = stream_drift.variant_config("no-rag", "m", "o")
    assert left_out.w_rag == 0 and left_out.w_retrieval > 0 and left_out.w_forget > 0 and left_out.w_kl > 0
    assert stream_drift.parse_overrides(["lr=5e-5", "retain-source=own", "steps=3"]) == {
        "lr": 5e-5, "retain_source": "own", "steps": 3}
    with pytest.raises(ValueError, match="no_such_field"):
        stream_drift.parse_overrides(["no_such_field=1"])
    with pytest.raises(ValueError, match="lr=fast"):
        stream_drift.parse_overrides(["lr=fast"])
    own = stream_drift.variant_config("retain-own", "m", "o")
    assert own.retain_source == "own" and own.w_kl > 0 and own.w_retrieval == 0
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    countries = ["Norland", "Sudmark", "Ostria", "Westend"]
    FactSets([Fact(k, "country", k) for k in countries],
             [Fact(f"{k}ton", "country", k) for k in countries]).save(tmp_path / "facts.json")
    common = ["--model", str(tiny_qwen2_dir), "--facts", str(tmp_path / "facts.json"), "--gsm8k-path", str(gsm),
              "--problems", "2", "--max-new-tokens", "8"]
    assert stream_drift.main(common + ["--steps", "0", "--variants", "lookup", "--out", str(tmp_path / "zero")]) == 0
    zero = json.loads((tmp_path / "zero" / "stream_drift.json").read_text())["variants"]["lookup"]
    assert zero["kl"] == pytest.approx(0.0, abs=1e-6) and zero["nll"] == pytest.approx(zero["nll_original"], abs=1e-5)
    out = tmp_path / "two"
    assert stream_drift.main(common + ["--steps", "2", "--variants", "lookup,rag", "--out", str(out)]) == 0
    rows = json.loads((out / "stream_drift.json").read_text())["variants"]
    assert set(rows) == {"lookup", "rag"} and all(r["kl"] > 1e-6 and r["tokens"] > 0 for r in rows.values())
    assert rows["lookup"]["weights"]["w_rag"] == 0 and rows["rag"]["weights"]["w_retrieval"] == 0
    for r in rows.values():  # the first step's gradient sizes: an RMS, and shares that grow with the size
        g = r["first_step_gradients"]
        shares = [g[f"share_below_{t:g}"] for t in (1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5)]
        assert g["rms"] > 0 and g["elements"] > 0 and shares == sorted(shares) and 0 <= shares[0] <= shares[-1] <= 1
    assert zero["first_step_gradients"] is None and zero["adam_eps"] == 1e-8
    before = (out / "stream_drift.json").read_text()
    assert stream_drift.main(common + ["--steps", "2", "--variants", "lookup", "--out", str(out)]) == 0
    assert (out / "stream_drift.json").read_text() == before  # done variants are skipped
