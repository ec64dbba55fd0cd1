"""The lm-eval GSM8K tasks of benchmarks/lmeval/: lm-eval's own prompts, filters and metrics on local
files, and the "neuralcpu" lm-eval model running them on the tiny random Qwen2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from benchmarks import lmeval_adapter  # noqa: E402
from benchmarks.lmeval.local_data import load_gsm8k_local, resolve_dir  # noqa: E402
from neuralcpu.data import DataFileError  # noqa: E402

ROWS = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(8)]
# The keys our copies may change: the name, the data source, the grouping tag and lm-eval's bookkeeping.
OURS = {"task", "tag", "dataset_path", "dataset_name", "custom_dataset", "metadata"}


@pytest.fixture
def gsm8k_dir(tmp_path):
    for split, rows in (("train", ROWS), ("test", ROWS[:5])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.mark.parametrize("ours, theirs", [("gsm8k_local.yaml", "gsm8k.yaml"), ("gsm8k_cot_local.yaml", "gsm8k-cot.yaml")])
def test_task_yaml_is_lm_evals_own(ours, theirs):
    """Prompts, few-shot setup, filters and metrics equal the installed lm-eval's task, key by key."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    mine = load_yaml(lmeval_adapter.TASK_DIR / ours, resolve_func=False)
    ref = load_yaml(Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / theirs, resolve_func=False)
    assert {k: v for k, v in mine.items() if k not in OURS} == {k: v for k, v in ref.items() if k not in OURS}
    assert "custom_dataset" in mine and mine["task"].endswith("_local")


def test_task_reads_the_local_files(gsm8k_dir):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(lmeval_adapter.TASK_DIR), include_defaults=False,
                          metadata={"gsm8k_dir": str(gsm8k_dir)})
    task = manager.load(["gsm8k_local"])["tasks"]["gsm8k_local"]
    docs = list(task.test_docs())
    assert [d["question"] for d in docs] == [r["question"] for r in ROWS[:5]]
    assert len(list(task.training_docs())) == len(ROWS)
    assert task.doc_to_text(docs[1]) == "Question: What is 1 plus 1?\nAnswer:"


def test_missing_or_bad_files_name_the_path(tmp_path, gsm8k_dir):
    with pytest.raises(DataFileError, match=str(tmp_path / "nope" / "train.jsonl")):
        resolve_dir(tmp_path / "nope")
    (gsm8k_dir / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DataFileError, match=r"test.jsonl:1: field 'answer'"):
        load_gsm8k_local(str(gsm8k_dir))
    with pytest.raises(ValueError, match="unknown task"):
        lmeval_adapter.evaluate("unused", ["gsm8k"], 2, str(gsm8k_dir))


def test_adapter_runs_lm_eval_on_the_tiny_model(tiny_qwen2_dir, gsm8k_dir):
    """lm-eval end to end on 2 documents of each task: the registered model, our generator, lm-eval's scoring."""
    results = lmeval_adapter.evaluate(str(tiny_qwen2_dir), ["gsm8k_local", "gsm8k_cot_local"], limit=2,
                                      gsm8k_dir=str(gsm8k_dir), batch_size=2, max_gen_toks=6, log_samples=True)
    table = lmeval_adapter.summary(results)
    for task in ("gsm8k_local", "gsm8k_cot_local"):
        assert table[task]["n"] == 2
        assert 0.0 <= table[task]["exact_match,strict-match"] <= 1.0
        sample = results["samples"][task][0]
        assert sample["arguments"][0][0].count("Question:" if task == "gsm8k_local" else "Q:") == (6 if task == "gsm8k_local" else 9)
        assert len(sample["resps"][0][0]) > 0  # something was generated, within the 6-token cap


def test_adapter_generates_what_hf_generates(context_tiny_qwen2_dir):
    """The adapter's generate_until (our generator) gives the same greedy text as HFLM's (model.generate)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = lmeval_adapter.NeuralCPULM(str(context_tiny_qwen2_dir), batch_size=2, max_gen_toks=10)
    reqs = [Instance("generate_until", {}, (ctx, {"until": ["Question:"], "do_sample": False}), i)
            for i, ctx in enumerate(["Question: What is 3 plus 4?\nAnswer:", "The city of Tokyo is"])]
    ours = lm.generate_until(reqs, disable_tqdm=True)
    theirs = HFLM.generate_until(lm, reqs, disable_tqdm=True)
    assert ours == theirs and all(ours)
    with pytest.raises(ValueError, match="greedily only"):
        lm.generate_until([Instance("generate_until", {}, ("x", {"do_sample": True}), 0)], disable_tqdm=True)
