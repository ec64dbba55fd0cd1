"""RLCP's loss streams and the unlearning baselines as small loss objects on shared plumbing.

`Runner` is the plumbing every stream uses: encoding, the trained model's forward pass through the
frozen-prefix cache, the frozen anchor's forward pass (and its cached outputs on the locality prompts),
and the next-token loss on a batch's targets. Each stream is one class with one `__call__`, in the
shape of open-unlearning's methods; `neuralcpu.rlcp.step` sums what they return:

    terms, logs = stream(runner, rng, step, lam)
    # terms: {name: (weight, loss tensor)}, summed in order into the step's loss
    # logs:  {name: float or list of floats}, what metrics.jsonl and the progress bar show

Every stream draws its batch from a fixed pool with the step's `rng`, so that a resumed run replays the
same samples; the streams run (and draw) in the order `neuralcpu.rlcp.streams_for` lists them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from neuralcpu import losses
from neuralcpu.facts import fact_prompts
from neuralcpu.prefix_cache import AnchorReference
from neuralcpu.training import Site, encode, site_feats

Terms = dict[str, tuple[float, torch.Tensor]]


class Runner:
    """The shared plumbing of the streams: one object per run.

    trained: the module that trains (the whole model, or with `prefix` the `DeepSuffix` of the blocks
    from `first` up, possibly wrapped by accelerate); anchor: the frozen original (its `DeepSuffix`
    with `prefix`); prefix: the `PrefixCache` of the frozen blocks below `first`, or None; sites: the
    probe sites the streams read states at; accel: the run's Accelerator (device, autocast, backward).
    `tokens` counts the tokens of every batch encoded (what train_bench reports per step)."""

    def __init__(self, tokenizer, trained, anchor, prefix, first: int, sites: list[Site], accel):
        self.tokenizer, self.trained, self.anchor, self.prefix = tokenizer, trained, anchor, prefix
        self.first, self.sites, self.accel, self.device = first, sites, accel, accel.device
        self.tokens = 0
        # The anchor's outputs on the locality prompts, which recur every step, are computed once per prompt.
        self.locality_reference = AnchorReference(lambda batch, at: self.anchor_forward(batch, hidden=True, positions=at),
                                                  sites)

    def encode(self, pairs: list[tuple[str, str]], max_len: int = 256, subjects: list[str] | None = None) -> dict:
        """`neuralcpu.training.encode` of (prompt, target) pairs with this run's tokenizer."""
        batch = encode(self.tokenizer, pairs, max_len, subjects=subjects)
        self.tokens += int(batch["attention_mask"].sum())
        return batch

    def forward(self, batch, hidden=False, net=None, head=True, positions=None, states=None):
        """Logits and hidden states (indexed as transformers does) of the trained model, or of `net`.

        head=False skips the LM head (only hidden states are needed); `positions` (B, T) bool computes
        logits (N, V) only there. The vocabulary projection costs as much as several blocks here.
        `states`: the batch's frozen-prefix states when the caller already has them (else the cache's)."""
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        with self.accel.autocast():
            if self.prefix is None:
                out = (net or self.trained)(input_ids=ids, attention_mask=mask, output_hidden_states=hidden,
                                            **({} if head else {"logits_to_keep": 1}))
                logits = out.logits if positions is None or not head else out.logits[positions.to(self.device)]
                return SimpleNamespace(logits=logits, hidden_states=out.hidden_states)
            logits, hs = (net or self.trained)(self.prefix(ids, mask) if states is None else states, mask, head=head,
                                               positions=None if positions is None else positions.to(self.device))
            return SimpleNamespace(logits=logits, hidden_states=[None] * self.first + hs)

    @torch.no_grad()
    def anchor_forward(self, batch, hidden=False, head=True, positions=None, states=None):
        """`forward` of the frozen original, without gradient: the KL anchor and NPO's reference."""
        return self.forward(batch, hidden, net=self.anchor, head=head, positions=positions, states=states)

    def one_off_prefix(self, batch) -> torch.Tensor | None:
        """The batch's frozen-prefix states computed once for the trained and the anchor forward of text that
        rarely repeats (GSM8K), not kept in the run-long cache; None without a prefix cache."""
        if self.prefix is None:
            return None
        with self.accel.autocast():
            return self.prefix(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), cache=False)

    def feats(self, hidden_states, batch) -> list[torch.Tensor]:
        """The states at the run's probe sites, (B, C) per site."""
        return site_feats(hidden_states, batch, self.sites)

    def answer_loss(self, batch) -> torch.Tensor:
        """Next-token loss on the labelled tokens, with logits computed only where they are read."""
        at, targets = losses.labelled_positions(batch["labels"])
        return F.cross_entropy(self.forward(batch, positions=at).logits, targets.to(self.device))


# ----------------------------------------------------------------------------- 1. forget ---------------

def draw_per_object(facts: list, k: int, rng: random.Random) -> list:
    """`k` facts of each object drawn at random (all of an object's facts if it has fewer), objects in order
    of first appearance."""
    by_object: dict[str, list] = {}
    for f in facts:
        by_object.setdefault(f.object, []).append(f)
    return [f for fs in by_object.values() for f in rng.sample(fs, min(k, len(fs)))]


class OtherCityProbe:
    """The other-city class term: a ridge probe of the object, fitted in closed form on the *current*
    model's states (without gradient) of other subjects of the forget objects (Osaka for Tokyo -> Japan),
    must not read it on the forget prompts (`losses.transfer_ridge_loss`). Against a probe fitted once on
    the original's states, the trained blocks moved these cities' country code along with the forget
    cities' and a refitted probe read it again.

    cities: the fit subjects; classes: object -> class index; sample / templates: cities per object and
    training templates per city drawn every step (0: all); seed: the run's seed (the draws have their own
    rng, so that the knobs leave every other stream's samples as they are)."""

    def __init__(self, runner: Runner, cities: list, classes: dict[str, int], sample: int, templates: int, seed: int):
        self.cities, self.classes, self.sample, self.templates, self.seed = cities, classes, sample, templates, seed
        self.batch, self.y = self.fit_set(runner)

    def fit_set(self, runner: Runner, rng: random.Random | None = None) -> tuple[dict, torch.Tensor]:
        """The term's fit prompts and classes: every city under every training template, or with `rng`,
        `sample` cities per object and `templates` templates per city drawn with it (0: all)."""
        cities = self.cities if rng is None or not self.sample else draw_per_object(self.cities, self.sample, rng)
        prompts = []
        for f in cities:
            templated = fact_prompts(f, "train", runner.tokenizer)
            if rng is not None and 0 < self.templates < len(templated):
                templated = rng.sample(templated, self.templates)
            prompts += templated
        return (runner.encode([(p.text, "") for p in prompts], subjects=[p.fact.subject for p in prompts]),
                torch.tensor([self.classes[p.fact.object] for p in prompts]).to(runner.device))

    def __call__(self, runner: Runner, feats: list[torch.Tensor], y: torch.Tensor, step: int) -> torch.Tensor:
        if self.sample > 0 or self.templates > 0:  # a new draw every step: the prefix cache still serves its prompts
            self.batch, self.y = self.fit_set(runner, random.Random(f"country-probe-{self.seed}-{step}"))
        with torch.no_grad():
            hs = runner.forward(self.batch, hidden=True, head=False).hidden_states
        return losses.transfer_ridge_loss(feats, y, runner.feats(hs, self.batch), self.y)


@dataclass
class AdversarialForget:
    """RLCP's forget stream (arXiv 2601.10810): the forget prompts' states at every probe site (the last
    prompt token of the GRL layers, the subject's last token of the middle blocks). Linear probes learn
    the object class from them (`probe_steps` updates a step, so they keep up with the backbone); the
    backbone gets their reversed, scaled gradient (`losses.adversarial_loss`), the class-mean term
    (`losses.class_mean_loss`, against the original's scatter `class_scale`), and optionally the held-out
    ridge probe and the other-city term, each scaled by the GRL lambda. The probes always train (their
    accuracy is logged, also when the stream's weights are 0).

    pool: (prompt, class, template group, subject) rows; templates / batch: template groups and prompts
    drawn every step (0: all)."""

    pool: list[tuple[str, int, int, str]]
    probes: torch.nn.Module
    probe_opt: torch.optim.Optimizer
    class_scale: list[float] | None
    templates: int = 0
    batch: int = 0
    probe_steps: int = 4
    reset_every: int = 0
    objective: str = "uniform"
    w_forget: float = 1.0
    w_class_mean: float = 1.0
    w_heldout: float = 0.0
    w_other_city: float = 0.0
    other_city: OtherCityProbe | None = None

    def __call__(self, runner: Runner, rng: random.Random, step: int, lam: float) -> tuple[Terms, dict]:
        if self.reset_every and step % self.reset_every == 0 and step > 0:
            runner.accel.unwrap_model(self.probes).reset()
        # Every fact under every training template by default: class means are then compared within
        # each template on the same subjects every step (the class-mean term needs that to be defined).
        chosen = self.pool
        groups_all = sorted({g for _, _, g, _ in self.pool})
        if 0 < self.templates < len(groups_all):
            drawn = set(rng.sample(groups_all, self.templates))
            chosen = [row for row in self.pool if row[2] in drawn]
        if 0 < self.batch < len(chosen):
            chosen = rng.sample(chosen, self.batch)
        batch = runner.encode([(p, "") for p, _, _, _ in chosen], subjects=[s for *_, s in chosen])
        feats = runner.feats(runner.forward(batch, hidden=True, head=False).hidden_states, batch)  # each (B, C)
        y = torch.tensor([y for _, y, _, _ in chosen]).to(runner.device)
        groups = torch.tensor([g for _, _, g, _ in chosen]).to(runner.device)
        for _ in range(self.probe_steps):  # let the probes catch up with the moving backbone
            p_loss, _, _ = losses.adversarial_loss(self.probes, feats, y, lam, self.objective)
            self.probe_opt.zero_grad()
            runner.accel.backward(p_loss)
            self.probe_opt.step()
        _, adv, acc = losses.adversarial_loss(self.probes, feats, y, lam, self.objective)
        class_mean = losses.class_mean_loss(feats, y, groups, self.class_scale)
        terms = {"adversarial": (self.w_forget, adv), "class_mean": (self.w_class_mean * lam, class_mean)}
        logs = {"probe_acc": acc, "probe_loss": p_loss.item(), "class_mean": class_mean.item()}
        if self.w_heldout > 0:
            heldout = losses.heldout_ridge_loss(feats, y, groups)
            terms["heldout_probe"] = (self.w_heldout * lam, heldout)
            logs["heldout_probe"] = heldout.item()
        if self.other_city is not None:
            country = self.other_city(runner, feats, y, step)
            terms["country_probe"] = (self.w_other_city * lam, country)
            logs["country_probe"] = country.item()
        return terms, logs


@dataclass
class ForgetTargets:
    """The plumbing of the streams that train a target after forget prompts: `batch` rows of the pool of
    ((prompt, target), class, group, subject) drawn every step, encoded."""

    pool: list
    batch: int
    weight: float

    def sample(self, runner: Runner, rng: random.Random) -> dict:
        return runner.encode([pair for pair, _, _, _ in rng.sample(self.pool, min(self.batch, len(self.pool)))])


class LookupRequest(ForgetTargets):
    """RLCP's retrieval signal: a closed-book forget prompt continues with a lookup call (common.toolcall)."""

    def __call__(self, runner: Runner, rng: random.Random, step: int, lam: float) -> tuple[Terms, dict]:
        retrieval = runner.answer_loss(self.sample(runner, rng))
        return {"retrieval": (self.weight, retrieval)}, {"retrieval_loss": retrieval.item()}


class BaselineForget(ForgetTargets):
    """A baseline's forget stream: its loss on the forget answers (the pool's targets), in place of RLCP's
    adversarial stream; the retain, locality and RAG streams stay as they are."""

    def loss(self, runner: Runner, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, runner: Runner, rng: random.Random, step: int, lam: float) -> tuple[Terms, dict]:
        batch = self.sample(runner, rng)
        logits = runner.forward(batch).logits
        f_loss = self.loss(runner, batch, logits, batch["labels"].to(runner.device))
        return {"forget": (self.weight, f_loss)}, {"forget_loss": f_loss.item()}


class Unlikelihood(BaselineForget):
    """Unlikelihood training (Welleck et al. 2019, https://arxiv.org/abs/1908.04319): -log(1 - p(answer))."""

    def loss(self, runner, batch, logits, labels):
        return losses.unlikelihood_loss(logits, labels)


class GradDiff(BaselineForget):
    """Gradient difference (Liu et al. 2022, https://arxiv.org/abs/2203.12817): ascend the forget NLL; the
    descent on retained data is the shared retain stream."""

    def loss(self, runner, batch, logits, labels):
        return losses.gradient_difference_loss(logits, labels)


@dataclass
class NPO(BaselineForget):
    """Negative Preference Optimization (Zhang et al. 2024, https://arxiv.org/abs/2404.05868), against the
    frozen original as the reference model."""

    beta: float = 0.1

    def loss(self, runner, batch, logits, labels):
        return losses.npo_loss(logits, runner.anchor_forward(batch).logits, labels, self.beta)


# ----------------------------------------------------------------------------- 2. retain ---------------

@dataclass
class RetainLM:
    """The logic the model keeps: next-token loss on GSM8K solutions and KL(original || current) on all
    their tokens. pool: (prompt, solution) pairs; batch / max_len: pairs per step and their token cap."""

    pool: list[tuple[str, str]]
    batch: int
    max_len: int
    w_lm: float = 1.0
    w_kl: float = 1.0

    def __call__(self, runner: Runner, rng: random.Random, step: int, lam: float) -> tuple[Terms, dict]:
        batch = runner.encode(rng.sample(self.pool, min(self.batch, len(self.pool))), self.max_len)
        states = runner.one_off_prefix(batch)  # shared by both forwards below
        logits = runner.forward(batch, states=states).logits  # (B, T, V)
        retain = losses.lm_loss(logits, batch["labels"].to(runner.device))
        ref = runner.anchor_forward(batch, states=states).logits
        kl = losses.kl_to_anchor(logits, ref, batch["attention_mask"].to(runner.device))
        return {"retain_lm": (self.w_lm, retain), "kl": (self.w_kl, kl)}, {"retain_loss": retain.item(), "kl": kl.item()}


@dataclass
class LocalityKL:
    """The facts the model keeps: KL(original || current) on locality prompts where the answer is read (the
    last prompt token and the answer's tokens; the GSM8K KL anchors the rest of the distribution), and
    the drift of their states at the probe sites from the original's (RMU's retain term): the erasure
    has to spare the untouched cities. pool: ((prompt, answer), subject) rows."""

    pool: list[tuple[tuple[str, str], str]]
    batch: int
    w_kl: float = 1.0
    w_states: float = 1.0

    def __call__(self, runner: Runner, rng: random.Random, step: int, lam: float) -> tuple[Terms, dict]:
        drawn = rng.sample(self.pool, min(self.batch, len(self.pool)))
        batch = runner.encode([pair for pair, _ in drawn], subjects=[s for _, s in drawn])
        at, _ = losses.labelled_positions(batch["labels"])  # (B, T) bool
        out = runner.forward(batch, hidden=True, positions=at)
        ref_logits, ref_states = runner.locality_reference(batch, at)
        kl = losses.kl_to_anchor(out.logits, ref_logits)
        drift = losses.state_drift(runner.feats(out.hidden_states, batch), list(ref_states),
                                   torch.ones(len(batch["last"]), dtype=torch.bool, device=runner.device))
        return ({"kl_locality": (self.w_kl, kl), "locality_drift": (self.w_states, drift)},
                {"kl_locality": kl.item(), "locality_drift": drift.item()})


# ----------------------------------------------------------------------------- 3. RAG ------------------

@dataclass
class RagAnswer:
    """RAG adaptation: with the fact in context, the answer must still follow. pool: (prompt, answer)."""

    pool: list[tuple[str, str]]
    batch: int
    weight: float

    def __call__(self, runner: Runner, rng: random.Random, step: int, lam: float) -> tuple[Terms, dict]:
        rag = runner.answer_loss(runner.encode(rng.sample(self.pool, min(self.batch, len(self.pool)))))
        return {"rag": (self.weight, rag)}, {"rag_loss": rag.item()}
