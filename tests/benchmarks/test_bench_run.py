"""End to end: benchmarks/run.py on the tiny random Qwen2 with a fake RLCP run, a few GSM8K rows and
a small facts.json; outputs exist, numbers are in range, and the same seed gives the same numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.relations import load_relation

from common.facts import Fact
from neuralcpu.facts import FactSets

ROOT = Path(__file__).resolve().parents[2]
# every forget fact is asked under the test-split completion templates of its relation
N_TEST_TEMPLATES = len(load_relation("country").select("test", "completion"))

CITIES = [("Alphaville", "Norland"), ("Betatown", "Sudria"), ("Gammaburg", "Estavia"), ("Deltapolis", "Westmark"),
          ("Epsilon Bay", "Centralia")]
TIMING = {"seconds", "wall_seconds", "elapsed_s"}


@pytest.fixture(scope="module")
def bench_inputs(tiny_qwen2_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    run = d / "rlcp"
    shutil.copytree(tiny_qwen2_dir, run)
    FactSets([Fact(c, "country", k) for c, k in CITIES],
             [Fact("Thetaford", "country", "Quarnia"), Fact("Norland", "capital", "Alphaville")]).save(run / "facts.json")
    (run / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": s, "forget_acc": 1 - s / 20, "locality_acc": 0.9, "probe_acc": [1 - s / 25, 1 - s / 30],
         "forget_samples": ["x"]}) + "\n" for s in (0, 10, 20)))
    (run / "analysis").mkdir()  # what `python -m neuralcpu analyze` leaves in a run dir
    (run / "analysis" / "analysis.json").write_text(json.dumps({"chance": 0.2, "before": {}, "after": {}}))
    (run / "analysis" / "probe_accuracy.png").write_bytes(b"\x89PNG stand-in")
    (run / "rlcp_config.json").write_text(json.dumps({"model": str(tiny_qwen2_dir), "method": "rlcp"}))
    gsm = d / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"})
                           + "\n" for i in range(12)))
    tofu = d / "tofu.json"
    tofu.write_text("".join(json.dumps({"question": q, "answer": a, "perturbed_answer": ["x", "y", "z"]}) + "\n"
                            for q, a in [("What is the capital of France?", "Paris"), ("Where is Tokyo?", "Japan")]))
    args = ["--model", str(tiny_qwen2_dir), "--rlcp-dir", str(run), "--systems", "original", "rlcp", "npo",
            "--suite", "all", "--gsm8k-test", str(gsm), "--gsm8k-train", str(gsm), "--tofu-path", str(tofu),
            "--n-gsm8k", "3", "--gsm8k-max-new-tokens", "16", "--attack-steps", "2", "--seed", "3"]
    return d, args


def _numbers(obj, path=""):
    """Every number in a results tree, keyed by its path, without the timing fields."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() if key not in TIMING for k, v in _numbers(val, f"{path}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _numbers(val, f"{path}/{i}").items()}
    return {path: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


def test_run_script_end_to_end_and_reproducible(bench_inputs, tmp_path):
    d, args = bench_inputs
    out1, out2 = tmp_path / "a", tmp_path / "b"
    # 1: as the documented script, from another working directory (its sys.path setup must work)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), *args, "--out", str(out1)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("results.json", "report.md", "gsm8k_acc_vs_cot.png", "probe_before_after_attack.png",
                 "rlcp_probe_accuracy.png"):
        assert (out1 / name).is_file() and (out1 / name).stat().st_size > 0, name
    r = json.loads((out1 / "results.json").read_text())
    assert [s["name"] for s in r["systems"]] == ["original", "rlcp"]
    assert "--npo-dir" in r["skipped"]["npo"]
    assert r["seed"] == 3 and r["git"]["commit"] and r["wall_seconds"] > 0
    assert r["template_split"]["facts"] == "test"
    for system in ("original", "rlcp"):
        facts = r["facts"][system]
        assert set(facts) == {"forget", "locality_same", "locality_other", "tofu"}
        assert facts["forget"]["n"] == N_TEST_TEMPLATES * len(CITIES) and facts["forget"]["floor"] == pytest.approx(1 / len(CITIES))
        g = r["gsm8k"][system]
        assert g["n"] == 3 and g["format"] == "fewshot" and len(g["items"]) == 3
        assert 0 <= g["mean_tokens"] <= 16
        rob = r["robustness"][system]
        assert len(rob["attack_facts"]) == 1 and len(rob["heldout_facts"]) == 4
        for p in [*facts.values(), g["accuracy"], g["cot_rate"], rob["before"]["heldout"], rob["after"]["heldout"]]:
            assert 0 <= p["acc"] <= 1 and p["ci95"][0] <= p["acc"] <= p["ci95"][1]
    assert "forget_samples" not in r["training_curves"]["rlcp"][0]
    assert r["analysis"]["rlcp"]["chance"] == 0.2 and "rlcp_probe_accuracy.png" in r["plots"]
    assert "phase_transition_rlcp.png" not in r["plots"]  # analyze's own phase plot is used instead
    report = (out1 / "report.md").read_text()
    for heading in ("## Fact QA", "## GSM8K", "## Relearning attack", "## Skipped systems"):
        assert heading in report
    # 2: in-process, same seed -> the same numbers (one system, to keep the test short)
    from benchmarks import run

    argv = list(args)
    argv[argv.index("--systems") + 1 : argv.index("--suite")] = ["rlcp"]
    assert run.main([*argv, "--out", str(out2)]) == 0
    r2 = json.loads((out2 / "results.json").read_text())
    for suite in ("facts", "gsm8k", "robustness"):
        assert _numbers(r[suite]["rlcp"]) == _numbers(r2[suite]["rlcp"]), suite


def test_resume_keeps_finished_systems_and_reruns_the_rest(bench_inputs, tmp_path):
    """An interrupted benchmark (results.json written after each system) continues with --resume: finished
    systems are kept as they were, missing ones run, changed settings or changed weights are not reused."""
    from benchmarks import run

    d, args = bench_inputs
    argv = list(args)
    argv[argv.index("--systems") + 1 : argv.index("--suite")] = ["original", "rlcp"]
    argv[argv.index("--suite") + 1 : argv.index("--suite") + 2] = ["facts", "gsm8k"]
    argv += ["--no-tofu", "--out", str(tmp_path / "o")]
    assert run.main(argv) == 0
    results_file = tmp_path / "o" / "results.json"
    full = json.loads(results_file.read_text())
    cut = json.loads(results_file.read_text())
    del cut["gsm8k"]["rlcp"]  # as if killed during rlcp's GSM8K
    for system in ("original", "rlcp"):  # a mark: kept entries are copied, not recomputed
        cut["facts"][system]["forget"]["mark"] = "kept"
    cut["invocation_seconds"] = [7.0]
    cut["git"] = {"commit": "0123abc", "dirty": False}  # as if made at another checkout, before invocation_git
    del cut["invocation_git"]
    results_file.write_text(json.dumps(cut))

    assert run.main([*argv, "--resume"]) == 0
    resumed = json.loads(results_file.read_text())
    assert resumed["facts"]["original"]["forget"]["mark"] == resumed["facts"]["rlcp"]["forget"]["mark"] == "kept"
    assert resumed["gsm8k"]["original"] == full["gsm8k"]["original"]
    assert _numbers(resumed["gsm8k"]["rlcp"]) == _numbers(full["gsm8k"]["rlcp"])  # recomputed, same seed
    assert resumed["invocation_seconds"][0] == 7.0 and len(resumed["invocation_seconds"]) == 2
    assert resumed["wall_seconds"] == pytest.approx(sum(resumed["invocation_seconds"]))
    assert [g["commit"] for g in resumed["invocation_git"]] == ["0123abc", full["git"]["commit"]]
    assert resumed["git"] == full["git"]
    assert "## GSM8K" in (tmp_path / "o" / "report.md").read_text()
    assert "earlier invocations at 0123abc" in (tmp_path / "o" / "report.md").read_text()

    # new weights in a run dir: that system is evaluated again, the others are kept
    cfg = d / "rlcp" / "config.json"
    os.utime(cfg, ns=(cfg.stat().st_atime_ns, cfg.stat().st_mtime_ns + 10**9))
    assert run.main([*argv, "--resume"]) == 0
    again = json.loads(results_file.read_text())
    assert again["facts"]["original"]["forget"]["mark"] == "kept" and "mark" not in again["facts"]["rlcp"]["forget"]
    assert _numbers(again["facts"]["rlcp"]) == _numbers(full["facts"]["rlcp"])

    with pytest.raises(SystemExit, match="n_gsm8k: 3 there, 2 now"):
        run.main([*argv[: argv.index("--n-gsm8k") + 1], "2", *argv[argv.index("--n-gsm8k") + 2 :], "--resume"])


def test_run_rejects_bad_arguments_all_at_once(tmp_path, capsys):
    from benchmarks import run

    with pytest.raises(SystemExit):
        run.parse_args(["--out", str(tmp_path), "--n-gsm8k", "-1", "--batch-size", "0", "--facts", "missing.json"])
    err = capsys.readouterr().err
    assert "--n-gsm8k" in err and "--batch-size" in err and "missing.json" in err


def test_bridge_systems_through_the_loop(bench_inputs, tmp_path):
    """just-rag and tool systems run through bridge's loop against a store (hash embedder: no model)."""
    from benchmarks import run
    from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts

    d, args = bench_inputs
    store = KnowledgeStore(tmp_path / "store", StoreConfig(embedder="hash", index="numpy"))
    ingest_facts(store, [(c, "country", k) for c, k in CITIES], source="test")
    store.close()
    argv = [a for a in args]
    argv[argv.index("--systems") + 1 : argv.index("--suite")] = ["original+just-rag", "rlcp+tool"]
    argv[argv.index("--suite") + 1 : argv.index("--suite") + 2] = ["facts", "gsm8k"]
    assert run.main([*argv, "--store", str(tmp_path / "store"), "--no-tofu", "--gsm8k-systems", "rlcp+tool",
                     "--out", str(tmp_path / "o")]) == 0
    r = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [s["name"] for s in r["systems"]] == ["original+just-rag", "rlcp+tool"] and r["store"]
    assert list(r["gsm8k"]) == ["rlcp+tool"] and r["gsm8k"]["rlcp+tool"]["n"] == 3  # only the --gsm8k-systems
    for name in ("original+just-rag", "rlcp+tool"):
        forget = r["facts"][name]["forget"]
        assert forget["n"] == N_TEST_TEMPLATES * len(CITIES) and 0 <= forget["acc"] <= 1 and 0 <= forget["lookup_rate"] <= 1
