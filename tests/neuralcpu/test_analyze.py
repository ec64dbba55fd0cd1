"""`python -m neuralcpu analyze` on a tiny run: per-layer probes, effective rank, perplexity, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from neuralcpu.analyze import (above_chance_p, decodability, effective_rank, fit_probe, labelled_states,
                               last_token_states, main, other_city_facts, per_layer_probes, solution_perplexity,
                               split_heldout_city)
from common.facts import Fact
from neuralcpu.facts import FactSets, geonames_cities_in, invented_subjects, known_facts, same_country_facts
from neuralcpu.rlcp import train
from tests.neuralcpu.test_rlcp import CITIES, tiny_cfg


def test_effective_rank_counts_directions():
    rng = np.random.default_rng(0)
    assert effective_rank(rng.normal(size=(200, 1)) @ rng.normal(size=(1, 16))) < 1.5  # one direction
    assert effective_rank(rng.normal(size=(200, 16))) > 12  # isotropic


def test_last_token_states_do_not_depend_on_the_batch(tiny_qwen2_dir):
    """A prompt's states are the same alone and left-padded in a batch, also under learned absolute
    positions (GPT-2), where the pads would shift every position unless the ids start at each row's
    first token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    qwen = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    prompts = ["Tokyo is a city in the country of", "Lagos is in", "The city of Cairo lies in the country of"]
    for model in (qwen, gpt2):
        batched = last_token_states(model, tok, prompts, batch_size=3)
        alone = last_token_states(model, tok, prompts, batch_size=1)
        assert batched.shape == (model.config.num_hidden_layers + 1, 3, model.config.hidden_size)
        np.testing.assert_allclose(batched, alone, atol=1e-4)
        assert np.abs(alone[-1, 0] - alone[-1, 1]).max() > 1e-3  # the rows differ: no constant state passes


def test_solution_perplexity_matches_hf_loss(tiny_qwen2_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    prompt, solution = "Question: what is two plus two?\nAnswer:", " 2+2=4\n#### 4"
    p_ids = tok(prompt).input_ids
    ids = torch.tensor([p_ids + tok(solution, add_special_tokens=False).input_ids])
    labels = ids.clone()
    labels[0, : len(p_ids)] = -100  # HF averages over the solution tokens only
    with torch.no_grad():
        ref = math.exp(model(input_ids=ids, labels=labels).loss.item())
    assert abs(solution_perplexity(model, tok, [(prompt, solution)]) - ref) < 1e-3 * ref
    # batched, padded and reordered by length: the same token-weighted mean as one pair at a time
    pairs = [(prompt, solution), ("Q: 1+1?\nA:", " 2"), ("Question: a long one, three times four?\nAnswer:", " 3*4=12\n#### 12")]
    one_by_one = solution_perplexity(model, tok, pairs, batch_size=1)
    assert abs(solution_perplexity(model, tok, pairs, batch_size=3) - one_by_one) < 1e-4 * one_by_one
    assert abs(one_by_one - ref) > 1e-3 * ref  # the other pairs count


def test_analyze_cli_writes_every_figure(tiny_qwen2_dir, tmp_path, capsys):
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "run", steps=2, eval_every=2, ckpt_every=2)
    train(cfg)
    assert main(["--original", str(tiny_qwen2_dir), "--run", cfg.out, "--gsm8k-path", cfg.gsm8k_path,
                 "--n-texts", "4", "--n-ppl", "4"]) == 0
    res = json.loads((tmp_path / "run" / "analysis" / "analysis.json").read_text())
    n_layers = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).config.num_hidden_layers
    for key in ("before", "after"):
        assert len(res[key]["probe_acc"]) == len(res[key]["effective_rank"]) == n_layers + 1
        control = res[key]["probe_acc_invented_subjects"]  # on the GRL blocks 2, 3 only: hidden states 3, 4
        assert len(control) == n_layers + 1 and [l for l, a in enumerate(control) if a is not None] == [3, 4]
        assert all(0.0 <= a <= 1.0 for a in res[key]["probe_acc"] + control[3:5])
        # the synthetic facts' countries are made up: no other cities, no same-country locality
        assert res[key]["probe_acc_other_cities"] is None and res[key]["same_country_acc"] is None
        assert res[key]["p_other_cities"] is None
        assert res[key]["gsm8k_perplexity"] > 1.0
    assert res["gsm8k_perplexity_ratio"] == res["after"]["gsm8k_perplexity"] / res["before"]["gsm8k_perplexity"]
    assert res["grl_layers"] == [2, 3] and res["chance"] == 1 / 6 and res["reference_layers"] == "grl"
    for png in ("probe_accuracy.png", "effective_rank.png", "phase_transition.png"):
        assert (tmp_path / "run" / "analysis" / png).stat().st_size > 1000
    assert "perplexity" in capsys.readouterr().out
    # the committed-results summary of a run reads the analysis: test split, every target a row
    from benchmarks import rlcp_report

    out = tmp_path / "rlcp_tiny.json"
    assert rlcp_report.main(["--runs", cfg.out, "--out", str(out), "--command", "test"]) == 0
    data = json.loads(out.read_text())
    assert data["split"] == "test" and data["seeds"] == [0] and data["commit"] and data["machine"]
    rows = {r[0]: r for r in data["table"]["rows"]}
    forget = res["after"]["heldout"]["forget"]["acc"]
    assert rows["forget closed-book acc, test families (≤ 0.05)"][2] == f"{forget:.2f}"
    assert all(len(r) == len(data["table"]["columns"]) for r in data["table"]["rows"])


def test_invented_subjects_are_distinct_and_reproducible():
    names = invented_subjects(40)
    assert len(set(names)) == 40 and names == invented_subjects(40)
    assert names != invented_subjects(40, seed=1)
    assert all(n[0].isupper() and n[1:].islower() for n in names)


def test_geonames_cities_in_skips_excluded_cities_and_ones_named_after_the_country():
    facts = geonames_cities_in(["Japan", "Mexico", "Atlantis"], 3, exclude={"Tokyo"})
    assert [f.object for f in facts] == ["Japan"] * 3 + ["Mexico"] * 3  # Atlantis: not a country
    subjects = [f.subject for f in facts]
    assert "Tokyo" not in subjects and "Yokohama" == subjects[0]  # the next most populous
    assert not any("Mexico" in s for s in subjects)  # Mexico City would give the answer away
    assert all(f.relation == "country" for f in facts)


def test_the_other_city_term_fits_on_cities_the_analysis_never_fits_on():
    from neuralcpu.facts import ANALYSIS_OTHER_CITIES, other_cities

    facts = FactSets([Fact("Tokyo", "country", "Japan"), Fact("Shanghai", "country", "China")],
                     [Fact("Osaka", "country", "Japan")])
    analysis = other_city_facts(facts)
    term = other_cities(facts, 3, skip=ANALYSIS_OTHER_CITIES)
    assert [f.object for f in term] == ["Japan"] * 3 + ["China"] * 3
    assert len(analysis) == 2 * ANALYSIS_OTHER_CITIES
    assert not {f.subject for f in term} & {f.subject for f in analysis}
    assert not {f.subject for f in term + analysis} & {"Tokyo", "Shanghai", "Osaka"}


def test_other_city_split_holds_out_one_city_per_country():
    others = geonames_cities_in(["Japan", "Kenya", "Chile"], 4)
    fit, groups, heldout = split_heldout_city(others)
    assert [f.object for f in heldout] == ["Japan", "Kenya", "Chile"]
    assert heldout[0].subject == "Tokyo"  # the most populous is the one held out
    assert not {f.subject for f in fit} & {f.subject for f in heldout}
    assert sorted(set(groups)) == [1, 2, 3]  # each group: one city of every country
    assert all(sorted(f.object for f, g in zip(fit, groups) if g == k) == ["Chile", "Japan", "Kenya"] for k in (1, 2, 3))


def test_above_chance_p_is_the_binomial_tail():
    # 30 prompts, 15 classes: 2 right is what chance expects; 4 right (0.13) is over chance + 0.05, yet
    # P(X >= 4) = 1 - sum_{k<4} C(30,k) p^k (1-p)^(30-k) = 0.136 for a probe that reads nothing
    tail = lambda k: sum(math.comb(30, j) * (1 / 15) ** j * (14 / 15) ** (30 - j) for j in range(k, 31))
    p = above_chance_p([None, 0 / 30, 2 / 30, 4 / 30, 7 / 30, 30 / 30], 30, 1 / 15)
    assert p[0] is None and p[1] == 1.0
    for got, k in zip(p[2:], (2, 4, 7, 30)):
        assert math.isclose(got, tail(k), rel_tol=1e-9), (got, k)
    assert 0.13 < p[3] < 0.14 and p[4] < 0.005


def test_other_city_probes_need_real_countries(tiny_qwen2_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    invented = FactSets([Fact(c, "country", k) for c, k in CITIES], [])
    assert other_city_facts(invented) is None  # made-up countries have no other cities
    real = FactSets([Fact(n, "country", k) for n, k in zip(invented_subjects(4), ["Japan", "Kenya", "Chile", "Egypt"])], [])
    others = other_city_facts(real, per_country=3)
    assert len(others) == 12 and not {f.subject for f in others} & {f.subject for f in real.forget}
    out = decodability(model, tok, real, others)
    res, p = out["probe_acc_other_cities"], out["p_other_cities"]
    n = model.config.num_hidden_layers + 1
    assert set(res) == {"forget_cities", "heldout_cities", "invented_subjects"}
    assert all(len(v) == n and all(0.0 <= a <= 1.0 for a in v) for v in res.values())
    from common.relations import load_relation

    n_prompts = 4 * len(load_relation("country").select("test", "completion"))  # 4 cities x the test templates
    assert set(p) == set(res) and all(p[k] == above_chance_p(res[k], n_prompts, 1 / 4) for k in res)


def test_reference_probes_fit_only_the_layers_asked_and_match_one_fit(tiny_qwen2_dir):
    """The control and the country probe on some layers: None elsewhere, and each number what one probe
    fitted on that layer alone scores (the parallel fits keep layers and test sets apart)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    real = FactSets([Fact(n, "country", k) for n, k in zip(invented_subjects(4, seed=3), ["Japan", "Kenya", "Chile", "Egypt"])], [])
    others = other_city_facts(real, per_country=3)
    res = decodability(model, tok, real, others, reference_layers=[1, 3])
    n = model.config.num_hidden_layers + 1
    assert all(a is not None for a in res["probe_acc"]) and len(res["probe_acc"]) == n
    country = res["probe_acc_other_cities"]
    for accs in [res["probe_acc_invented_subjects"], *country.values()]:
        assert [l for l, a in enumerate(accs) if a is not None] == [1, 3]
    fit, groups, heldout = split_heldout_city(others)
    tr_x, tr_y, tr_g = labelled_states(model, tok, fit, "train", real.class_index, groups)
    for key, facts in (("forget_cities", real.forget), ("heldout_cities", heldout)):
        te_x, te_y, _ = labelled_states(model, tok, facts, "test", real.class_index)
        for l in (1, 3):
            assert country[key][l] == float((fit_probe(tr_x[l], tr_y, tr_g).predict(te_x[l]) == te_y).mean())
    assert per_layer_probes((tr_x, tr_y, tr_g), {"acc": (te_x, te_y)}, [])["acc"] == [None] * n
    # one fit after another in this process: the parallel fits' numbers
    serial = per_layer_probes((tr_x, tr_y, tr_g), {"acc": (te_x, te_y)}, [1, 3], jobs=1)
    assert serial == per_layer_probes((tr_x, tr_y, tr_g), {"acc": (te_x, te_y)}, [1, 3], jobs=2)


def test_a_random_model_passes_the_forget_set_probe_on_invented_subjects(tiny_qwen2_dir):
    """The issue's probe protocol, with one subject per class, reads the class from a model that knows
    nothing: the prompt names a different subject for each class. This is why the control exists."""
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    facts = FactSets([Fact(c, "country", k) for c, k in CITIES], [])
    acc = decodability(model, tok, facts)["probe_acc_invented_subjects"]
    # chance 1/6; fitted on the training families and read on the structurally different test families
    # (a passage, a form), a random model's subject identity still carries at well over twice chance
    assert max(acc[1:]) >= 0.4, acc
    assert acc[0] <= 0.5, acc  # the embedding of the last token ("of") is the same for every subject


def test_smollm2_probes_read_invented_subjects_and_the_country_of_unseen_cities(smollm2):
    """On the real default model: the issue's protocol reads made-up subjects as well as real ones, and
    a probe fitted on other cities of the same countries reads the country of cities it never saw."""
    model, tok = smollm2
    facts = FactSets([Fact(c, "country", k) for c, k in [("Tokyo", "Japan"), ("Cairo", "Egypt"), ("Moscow", "Russia"),
                                                          ("Mumbai", "India"), ("Nairobi", "Kenya"), ("Lima", "Peru")]], [])
    res = decodability(model, tok, facts, other_city_facts(facts, per_country=4))
    control, country = res["probe_acc_invented_subjects"], res["probe_acc_other_cities"]
    # chance 1/6: the subject's identity, no fact in it (fitted on the training families, read on the
    # structurally different test families)
    assert min(control[-8:]) >= 0.5, control
    assert max(country["forget_cities"][-8:]) >= 0.5, country  # a country code shared across cities
    assert country["forget_cities"][0] <= 0.34, country  # the last token's embedding ("of") names no city
    assert max(country["invented_subjects"]) <= 0.5, country  # made-up names have no country to read


def test_same_country_locality_facts_are_known_cities_of_the_forget_countries(smollm2):
    model, tok = smollm2
    forget = [Fact("Tokyo", "country", "Japan"), Fact("Cairo", "country", "Egypt")]
    facts, untouched = same_country_facts(model, tok, forget, per_country=2, untouched_per_country=1)
    assert not {f.subject for f in facts} & {f.subject for f in untouched}
    counts = {k: sum(f.object == k for f in facts) for k in ("Japan", "Egypt")}
    assert counts["Japan"] == 2 and 0 <= counts["Egypt"] <= 2 and len(facts) == sum(counts.values())
    assert not {"Tokyo", "Cairo"} & {f.subject for f in facts}
    assert known_facts(model, tok, facts) == facts  # each one passes the known-fact screen
    assert same_country_facts(model, tok, forget, per_country=0) == ([], [])
