"""The probe sweep and the causal trace, on the tiny model: shapes, bounds, and that they can fail."""

import json
import os

import numpy as np
import pytest
from joblib import delayed

from common.facts import Fact
from neuralcpu.facts import FactSets
from neuralcpu.locate import _prompts, causal_trace, main, probe_sweep, site_states
from neuralcpu.probes import fit_site_probe, run_fits

FORGET = [Fact("Alphaville", "country", "Norland"), Fact("Betatown", "country", "Sudria"), Fact("Gammaburg", "country", "Estavia")]
OTHERS = [Fact(c, "country", k) for k, cs in {"Norland": ["Nordby", "Norwick", "Nolund"], "Sudria": ["Sudham", "Sorvik", "Salta"],
                                               "Estavia": ["Estrel", "Evora", "Ebbing"]}.items() for c in cs]


@pytest.fixture(scope="module")
def tiny(context_tiny_qwen2_dir):
    from neuralcpu.models import load_model

    model, tok = load_model(context_tiny_qwen2_dir)
    return model.eval(), tok


def test_site_states_differ_between_subject_and_last_token(tiny):
    model, tok = tiny
    states = site_states(model, tok, [("Alphaville is located in the country of", "Alphaville")])
    assert states["subject"].shape == states["last"].shape == (5, 1, 64)  # 4 blocks + embeddings
    assert not np.allclose(states["subject"][1:], states["last"][1:])


def test_probe_sweep_reports_both_positions_and_families_within_bounds(tiny):
    model, tok = tiny
    sweep = probe_sweep(model, tok, FactSets(FORGET, []), OTHERS, split="test")
    assert sweep["chance"] == pytest.approx(1 / 3) and sweep["layers"] == [0, 1, 2, 3]
    for kind in ("linear", "mlp"):
        for pos in ("subject", "last"):
            assert len(sweep[kind][pos]) == 4 and all(0.0 <= a <= 1.0 for a in sweep[kind][pos])
    json.dumps(sweep)  # plain numbers only


def test_probe_sweep_numbers_do_not_depend_on_the_jobs(tiny):
    """Two fits at a time in worker processes give the serial sweep's numbers, every family, position and block."""
    model, tok = tiny
    serial = probe_sweep(model, tok, FactSets(FORGET, []), OTHERS, split="test", jobs=1)
    parallel = probe_sweep(model, tok, FactSets(FORGET, []), OTHERS, split="test", jobs=2)
    assert serial == parallel
    assert len({a for kind in ("linear", "mlp") for pos in ("subject", "last") for a in serial[kind][pos]}) > 1


def test_the_probe_module_leaves_torch_out_of_the_workers():
    """A worker imports the module of the function it runs: without torch it starts in ~1 s, not ~7 s."""
    import subprocess
    import sys

    code = "import sys, neuralcpu.probes; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_probe_fitted_in_a_worker_process_is_the_one_fitted_here(tiny):
    """Why the sweep's numbers do not depend on the jobs, at full precision: each family's weights and
    probabilities are bit for bit the same from a worker as from this process (same seed, one BLAS thread)."""
    model, tok = tiny
    prompts, y = _prompts(OTHERS, "train", tok, FactSets(FORGET, []).class_index)
    x = site_states(model, tok, prompts)["subject"][2]  # (N, C) at block 1
    kinds = ("linear", "mlp")
    here = [fit_site_probe(k, x, y) for k in kinds]
    there = run_fits([delayed(fit_site_probe)(k, x, y) for k in kinds], jobs=2)
    for a, b in zip(here, there):
        weights = lambda p: [p[-1].coef_, p[-1].intercept_] if hasattr(p[-1], "coef_") else p[-1].coefs_ + p[-1].intercepts_
        assert all(np.array_equal(u, v) for u, v in zip(weights(a), weights(b), strict=True))
        assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert os.getpid() not in run_fits([delayed(os.getpid)() for _ in range(2)], jobs=2)  # they ran elsewhere


def test_locate_cli_rejects_a_jobs_count_below_one():
    with pytest.raises(SystemExit):
        main(["--model", "m", "--facts", "f.json", "--out", "o", "--probe-jobs", "0"])


def test_probe_sweep_reads_a_planted_object_code(tiny_qwen2_dir):
    """Subjects whose last word names their class: a linear probe fitted on other subjects reads the object
    at the subject's last token (and cannot, at chance, where nothing is planted: the test above)."""
    from neuralcpu.models import load_model

    model, tok = load_model(tiny_qwen2_dir)  # small weights: a state stays close to its token's embedding
    words = {"Norland": "Tokyo", "Sudria": "Question", "Estavia": "Japan"}
    forget = [Fact(f"New {w}", "country", k) for k, w in words.items()]
    others = [Fact(f"{a} {w}", "country", k) for k, w in words.items() for a in ("Old", "Big", "Far", "Red", "Low")]
    sweep = probe_sweep(model, tok, FactSets(forget, []), others, split="test", kinds=("linear",))
    assert max(sweep["linear"]["subject"]) >= 0.9, sweep["linear"]


def test_causal_trace_restoring_everything_at_the_top_recovers_the_clean_run(tiny):
    model, tok = tiny
    trace = causal_trace(model, tok, FORGET, noise_scale=3.0)
    assert trace["n"] == 3 and len(trace["subject"]) == len(trace["last"]) == 4
    # Restoring the last block's output at the last token gives back the clean logits exactly.
    assert trace["last"][-1] == pytest.approx(1.0, abs=1e-3)
    assert trace["clean"] != pytest.approx(trace["corrupt"])
