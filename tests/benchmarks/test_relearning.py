"""The k-fold relearning attack (benchmarks/relearning.py): folds, the invented-facts control, the
attack's rotation and weight restore, and a whole CLI run on the tiny random Qwen2."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from benchmarks import relearning
from common.facts import Fact, normalize_name
from neuralcpu.facts import FactSets

ROOT = Path(__file__).resolve().parents[2]

CITIES = [("Shanghai", "China"), ("Istanbul", "Turkey", ("Türkiye",)), ("Lahore", "Pakistan"), ("Mumbai", "India"),
          ("Lagos", "Nigeria"), ("Tokyo", "Japan"), ("Cairo", "Egypt"), ("Lima", "Peru"), ("Bogota", "Colombia"),
          ("Tehran", "Iran"), ("Dhaka", "Bangladesh"), ("Moscow", "Russia", ("Russian Federation",))]
FORGET = [Fact(c[0], "country", c[1], c[2] if len(c) > 2 else ()) for c in CITIES]


@pytest.mark.parametrize("n,k", [(12, 5), (15, 5), (5, 5), (7, 2)])
def test_folds_cover_every_fact_once_and_never_train_on_their_own(n, k):
    facts = FORGET[:n] if n <= len(FORGET) else FORGET + [Fact(f"City{i}", "country", "Peru") for i in range(n - len(FORGET))]
    folds = relearning.fold_split(facts, k, seed=3)
    assert len(folds) == k and all(folds)
    assert Counter(f for fold in folds for f in fold) == Counter(facts)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for (train, held), fold in zip(relearning.rotations(folds), folds):
        assert held == fold and not set(train) & set(held)
        assert set(train) | set(held) == set(facts)
    assert relearning.fold_split(facts, k, seed=3) == folds
    assert relearning.fold_split(facts, k, seed=4) != folds or n == k


def test_fold_split_refuses_too_few_facts():
    with pytest.raises(ValueError, match="5 folds need at least 5"):
        relearning.fold_split(FORGET[:4], 5, seed=0)


def test_invented_facts_are_deterministic_unknown_places_with_the_forget_answers():
    a, b = relearning.invented_facts(FORGET, seed=0), relearning.invented_facts(FORGET, seed=0)
    assert a == b and len(a) == len(FORGET)
    assert relearning.invented_facts(FORGET, seed=1) != a
    known = relearning.known_place_names()
    assert normalize_name("Lahore") in known and normalize_name("Nigeria") in known
    assert not [f.subject for f in a if normalize_name(f.subject) in known]
    assert len({f.subject for f in a}) == len(a) and not {f.subject for f in a} & {f.subject for f in FORGET}
    assert Counter(f.object for f in a) == Counter(f.object for f in FORGET)  # same answers: same chance
    assert any(f.object != g.object for f, g in zip(a, FORGET))  # permuted, not copied
    aliases = {f.object: f.aliases for f in FORGET}
    assert all(f.aliases == aliases[f.object] and f.relation == "country" for f in a)


def test_invented_facts_skip_names_geonames_knows(monkeypatch):
    from neuralcpu.facts import invented_subjects

    first = invented_subjects(3, 0)
    monkeypatch.setattr(relearning, "known_place_names", lambda: frozenset(normalize_name(n) for n in first))
    facts = relearning.invented_facts(FORGET[:5], seed=0)
    assert len(facts) == 5 and not {f.subject for f in facts} & set(first)


def test_config_validation_lists_every_problem():
    cfg = relearning.RelearnConfig(folds=1, lrs="1e-5,x", steps=0)
    with pytest.raises(ValueError) as e:
        cfg.validate()
    assert "--folds" in str(e.value) and "--steps" in str(e.value) and "--lrs" in str(e.value)
    assert relearning.RelearnConfig().lr_grid == [1e-5, 3e-5, 1e-4]


def test_attack_trains_on_the_other_folds_and_restores_the_weights(tiny_qwen2_dir, monkeypatch):
    from neuralcpu.models import load_model

    model, tok = load_model(tiny_qwen2_dir)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen, real = [], relearning.relearn

    def spy(model, tokenizer, facts, steps, lr, seed, batch_size):
        assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())  # a fresh copy per fold
        seen.append((list(facts), lr))
        return real(model, tokenizer, facts, steps, lr, seed, batch_size)

    monkeypatch.setattr(relearning, "relearn", spy)
    cfg = relearning.RelearnConfig(folds=3, lrs="1e-3,3e-3", steps=2, batch_size=4)
    r = relearning.attack(model, tok, FORGET[:6], cfg, log=lambda *_: None)
    assert [lr for _, lr in seen] == [1e-3] * 3 + [3e-3] * 3
    for (train, _), fold in zip(seen, r["by_lr"]["0.001"]["folds"]):
        assert len(train) == 4 and not {f.subject for f in train} & set(fold["held_out"])
    for lr in ("0.001", "0.003"):
        got = r["by_lr"][lr]
        assert sorted(s for fold in got["folds"] for s in fold["held_out"]) == sorted(f.subject for f in FORGET[:6])
        assert got["n"] == r["before"]["n"] == sum(n for _, n in got["per_fact"].values()) > 0
        assert got["k"] == sum(fold["k"] for fold in got["folds"])
    assert r["best_lr"] in ("0.001", "0.003") and 0 <= r["chance"] <= 1
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())  # restored at the end


def test_recovery_is_the_share_of_the_original_and_above_the_floor():
    u = {"per_fact": {"a": [1, 4], "b": [1, 4]}}
    o = {"per_fact": {"a": [3, 4], "b": [1, 4]}}
    c = {"per_fact": {"x": [0, 4], "y": [1, 4]}}
    r = relearning.recovery(u, o, c, seed=0, reps=200)
    assert r["recovery"] == pytest.approx(0.25 / 0.5)
    assert r["recovery_above_floor"] == pytest.approx((0.25 - 0.125) / (0.5 - 0.125))
    lo, hi = r["recovery_ci95"]
    assert lo <= r["recovery"] <= hi
    assert relearning.recovery(u, {"per_fact": {"a": [0, 4], "b": [0, 4]}}, None, seed=0, reps=10)["recovery"] is None


def test_cli_run_on_the_tiny_model_writes_a_renderable_result(tiny_qwen2_dir, tmp_path, monkeypatch):
    facts = tmp_path / "facts.json"
    FactSets(FORGET[:5], []).save(facts)
    out = tmp_path / "relearning.json"
    assert relearning.main(["--model", str(tiny_qwen2_dir), "--original", str(tiny_qwen2_dir), "--facts", str(facts),
                            "--out", str(out), "--lrs", "1e-3", "--steps", "2", "--batch-size", "4"]) == 0
    r = json.loads(out.read_text())
    for key in ("command", "commit", "machine", "seed", "table", "config", "attacks", "recovery", "control_facts"):
        assert key in r, key
    assert r["complete"] and r["seed"] == 0 and "benchmarks/relearning.py" in r["command"]
    assert set(r["attacks"]) == {"unlearned", "original", "control"}
    assert {k: r["config"][k] for k in ("folds", "lrs", "steps", "batch_size")} == {"folds": 5, "lrs": "1e-3", "steps": 2,
                                                                                    "batch_size": 4}
    n_prompts = r["attacks"]["unlearned"]["before"]["n"]
    assert n_prompts == 5 * 8  # 8 test-split completion templates per city; the tiny tokenizer has no chat template
    assert r["attacks"]["control"]["folds"] != r["attacks"]["original"]["folds"]  # invented subjects
    t = r["table"]
    assert len(t["rows"]) == 2 and all(len(row) == len(t["columns"]) for row in t["rows"])
    assert any(f"N = {n_prompts}" in note for note in t["notes"])

    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_results

    monkeypatch.setattr(readme_results, "ROOT", tmp_path)  # it names the file relative to the repository root
    text = readme_results.render_file(out)
    assert "Relearning attack" in text and text.count("\n| ") == 3  # the header and two rows


def test_cli_names_a_missing_facts_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        relearning.main(["--model", str(tmp_path / "run"), "--out", str(tmp_path / "r.json")])
    assert e.value.code == 2 and "facts.json: no such file" in capsys.readouterr().err
