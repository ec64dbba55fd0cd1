"""Loss terms for unlearning: the gradient-reversal layer and probes (RLCP's forget stream), the
forget losses of the baselines, and the retain-side token losses (LM loss, KL to the anchor)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by -lam (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, float(lam))


def normalize(h: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer norm: residual streams carry a few huge dimensions that swamp a raw probe."""
    return F.layer_norm(h.float(), h.shape[-1:])


class LayerProbes(nn.Module):
    """One linear probe per chosen layer, predicting the fact's object class from the residual stream."""

    def __init__(self, layers: list[int], hidden_size: int, num_classes: int):
        super().__init__()
        self.layers = list(layers)
        self.probes = nn.ModuleList(nn.Linear(hidden_size, num_classes) for _ in layers)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """feats[i]: (B, C) state at layer self.layers[i] -> list of (B, K) logits."""
        return [probe(normalize(h)) for probe, h in zip(self.probes, feats)]

    def reset(self) -> None:
        for p in self.probes:
            p.reset_parameters()


def adversarial_loss(probes: LayerProbes, feats: list[torch.Tensor], labels: torch.Tensor, lam: float,
                     objective: str) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """RLCP's forget stream. Returns (probe_loss, backbone_loss, per-layer probe accuracy).

    probe_loss trains the probes (cross-entropy) on detached features. backbone_loss reaches only the
    backbone, through the gradient-reversal layer:
      "ce":      the paper's plain reversal; the backbone maximises the probes' cross-entropy (unbounded).
      "uniform": bounded; the backbone maximises -CE(uniform, probe(h)), i.e. pushes every probe's
                 prediction toward uniform. Minimum at chance, so it cannot blow the representation up.
    """
    probe_logits = probes([h.detach() for h in feats])
    probe_loss = sum(F.cross_entropy(lg, labels) for lg in probe_logits) / len(feats)
    acc = [(lg.argmax(-1) == labels).float().mean().item() for lg in probe_logits]
    rev_logits = []
    for probe, h in zip(getattr(probes, "module", probes).probes, feats):  # unwrap DDP under accelerate launch  # probe weights detached: this term moves the backbone only
        rev_logits.append(F.linear(normalize(grad_reverse(h, lam)), probe.weight.detach(), probe.bias.detach()))
    if objective == "ce":
        backbone = sum(F.cross_entropy(lg, labels) for lg in rev_logits) / len(feats)
    elif objective == "uniform":
        # The reversal negates the gradient, so the sign here is flipped: net, the backbone *minimises*
        # the cross-entropy from uniform to the probe's prediction (maximum entropy, bounded).
        backbone = -sum(-F.log_softmax(lg, -1).mean(-1).mean() for lg in rev_logits) / len(feats)
    else:
        raise ValueError(f"unknown adversarial objective {objective!r}; use 'ce' or 'uniform'")
    return probe_loss, backbone, acc


def group_scatter(h: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(between-class, total) scatter per sample of normalised states h (B, C), measured inside each group.

    Groups are the prompt templates: the template moves every state, so class means are compared
    within a template. With one city per class, "between-class within template" is all the variation
    that tells the cities apart.
    """
    h = normalize(h)
    between = h.new_zeros(())
    total = h.new_zeros(())
    for g in groups.unique():
        hg, yg = h[groups == g], labels[groups == g]
        mu = hg.mean(0, keepdim=True)
        onehot = F.one_hot(yg, int(labels.max()) + 1).float()  # (b, K)
        counts = onehot.sum(0)
        present = counts > 0
        class_mu = (onehot.T @ hg)[present] / counts[present, None]  # (k, C)
        between = between + (counts[present, None] * (class_mu - mu) ** 2).sum()
        total = total + ((hg - mu) ** 2).sum()
    return between / len(h), total / len(h)


def class_mean_loss(feats: list[torch.Tensor], labels: torch.Tensor, groups: torch.Tensor | None = None,
                    scale: list[float] | None = None) -> torch.Tensor:
    """Between-class scatter of the states, within each group, relative to `scale` (0 = class means equal).

    Equal class-conditional means is the condition under which no linear probe beats chance (LEACE,
    Belrose et al. 2023, https://arxiv.org/abs/2306.03819); this term attacks every probe at once.
    `scale[i]` is a fixed reference scatter for layer i (RLCP passes the original model's total scatter,
    so the loss reads "fraction of the original class signal left" and cannot be lowered by inflating
    noise); without it the current total scatter is used.
    """
    groups = torch.zeros_like(labels) if groups is None else groups
    loss = 0.0
    for i, h in enumerate(feats):
        between, total = group_scatter(h, labels, groups)
        loss = loss + between / (scale[i] if scale is not None else total.clamp_min(1e-6))
    return loss / len(feats)


def _standardise(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """x standardised with ref's per-dimension mean and std (as sklearn's StandardScaler fitted on ref),
    then scaled so kernel entries are O(1) whatever the width: the ridge alphas mean the same everywhere."""
    return (x - ref.mean(0)) / ref.std(0).clamp_min(1e-4) / x.shape[1] ** 0.5


def _ridge_readout(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
                   alphas: tuple[float, ...], squared: bool = False) -> list[torch.Tensor]:
    """Per ridge strength: how much ridge regression fitted on (xtr, one-hot ytr), in closed form, reads
    the classes of xte. That is the cosine, per row, between its prediction and the centred one-hot of
    yte (0 = the prediction carries no class), averaged over rows and clipped at 0, so that reading the
    class backwards gains nothing. `squared`: the mean of the squared cosines instead, 0 only when no
    row's prediction leans toward its own class or away from it; on the mean, rows read backwards can
    offset rows still read right. Differentiable through the fit and the prediction."""
    xtr_mean, ytr_mean = xtr.mean(0), ytr.mean(0)
    xtr, xte, ytr = xtr - xtr_mean, xte - xtr_mean, ytr - ytr_mean
    gram = xtr @ xtr.T  # (m, m): the dual form, as there are fewer prompts than dimensions
    eye = torch.eye(len(gram), device=gram.device)
    target = yte - yte.mean(-1, keepdim=True)  # centred per row: one class up, the rest down
    out = []
    for a in alphas:
        pred = xte @ (xtr.T @ torch.linalg.solve(gram + a * eye, ytr))  # (t, K)
        pred = pred - pred.mean(-1, keepdim=True)  # a per-row offset never changes the argmax
        # per row: a prompt whose prediction is small but points at its class is still read right
        cos = (pred * target).sum(-1) / (pred.norm(dim=-1) * target.norm(dim=-1)).clamp_min(1e-8)
        out.append(cos.pow(2).mean() if squared else cos.mean().clamp_min(0))
    return out


def heldout_ridge_loss(feats: list[torch.Tensor], labels: torch.Tensor, groups: torch.Tensor,
                       alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> torch.Tensor:
    """How well the *best* linear probe, fitted on some templates, still reads the class on a held-out one.

    Per layer and per template g: standardise the states (as a post-hoc probe does), fit ridge
    regression from states to one-hot classes on every other template, in closed form, and predict
    template g (`_ridge_readout`), averaged over templates, ridge strengths and layers. It is
    differentiable through the fit, so the backbone faces the optimal probe every step instead of a
    trained probe that lags it, and it is scored across templates, as the analysis scores its fresh probes.
    """
    y = F.one_hot(labels, int(labels.max()) + 1).float()
    terms = []
    for h in feats:
        x = _standardise(h.float(), h.float())
        for g in groups.unique():
            tr, te = groups != g, groups == g
            terms += _ridge_readout(x[tr], y[tr], x[te], y[te], alphas)
    return torch.stack(terms).mean()


def transfer_ridge_loss(feats: list[torch.Tensor], labels: torch.Tensor, fit_feats: list[torch.Tensor],
                        fit_labels: torch.Tensor, alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> torch.Tensor:
    """How well a linear probe of the class fitted on *other* subjects reads it on these.

    fit_feats[i]/fit_labels: states of other subjects of the same classes at layer i (RLCP passes the
    current model's states, without gradient, of other cities of each forget country: Osaka for Japan);
    feats[i]/labels: the forget subjects' states (Tokyo). Per layer, ridge regression from states
    (standardised on the fit set) to one-hot classes is fitted in closed form and read on `feats`
    (`_ridge_readout`, squared cosines), averaged over ridge strengths and layers. With one forget
    subject per class, a probe fitted on the forget subjects themselves reads which subject the prompt
    names; one fitted on other subjects can only read what they share with it: the class (the country).
    The cosines are squared because, clipped on their mean, the term reached 0 on Qwen's block 16 while
    the refitted probe still picked out 4-5 of 30 prompts, offset by rows it read backwards. Squared,
    no prompt gains by leaning either way (clipped per row, leaning backwards would be free).
    """
    num_classes = max(int(labels.max()), int(fit_labels.max())) + 1
    y, y_fit = F.one_hot(labels, num_classes).float(), F.one_hot(fit_labels, num_classes).float()
    terms = []
    for h, f in zip(feats, fit_feats):
        f = f.float().to(h.device)
        terms += _ridge_readout(_standardise(f, f), y_fit.to(h.device), _standardise(h.float(), f), y.to(h.device), alphas,
                                squared=True)
    return torch.stack(terms).mean()


def state_drift(feats: list[torch.Tensor], anchor_feats: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean squared distance per dimension between normalised states and the anchor's, over mask (B, T)
    positions, averaged over layers: 0 when the layers' states are unchanged."""
    m = mask.bool()
    return sum(F.mse_loss(normalize(h)[m], normalize(a)[m]) for h, a in zip(feats, anchor_feats)) / len(feats)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(label) for next-token prediction. logits (B, T, V), labels (B, T) with -100 = ignore.

    Returns (logp (B, T-1), mask (B, T-1)).
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    logp = torch.gather(F.log_softmax(logits, -1), 2, labels.clamp_min(0)[..., None]).squeeze(-1)
    return logp * mask, mask


def labelled_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions whose next token is labelled, (B, T) bool, and those next tokens (N,) in row-major
    order: logits gathered at these positions pair with these targets."""
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != -100
    return positions, labels[:, 1:][positions[:, :-1]]


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled tokens."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp_min(1)


def kl_to_anchor(logits: torch.Tensor, anchor_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(anchor || current) per token, averaged over mask (B, T) positions (over every row of (N, V)
    logits when mask is None)."""
    logq = F.log_softmax(logits.float(), -1)
    logp = F.log_softmax(anchor_logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (B, T) or (N,)
    if mask is None:
        return kl.mean()
    return (kl * mask).sum() / mask.sum().clamp_min(1)


# --- Baseline forget losses. Each takes the forget batch's per-sequence answer log-probs. -------------

def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of answer-token log-probs per sequence, (B,)."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(-1)


def unlikelihood_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unlikelihood training (Welleck et al. 2019, https://arxiv.org/abs/1908.04319): -log(1 - p(token))."""
    logp, mask = token_logprobs(logits, labels)
    p = logp.exp().clamp(max=1 - 1e-6)
    return -(torch.log1p(-p) * mask).sum() / mask.sum().clamp_min(1)


def gradient_difference_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient difference (Liu et al. 2022, https://arxiv.org/abs/2203.12817): ascend the forget NLL.

    The retain-side descent is the shared retain stream. Bounded below by log(1e-6) per token so the
    ascent cannot run off to infinity.
    """
    logp, mask = token_logprobs(logits, labels)
    return (logp.clamp_min(math.log(1e-6)) * mask).sum() / mask.sum().clamp_min(1)


def npo_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al. 2024, https://arxiv.org/abs/2404.05868).

    L = -(2/beta) * E[log sigmoid(-beta * (log pi(y|x) - log pi_ref(y|x)))].
    """
    ratio = sequence_logprob(logits, labels) - sequence_logprob(ref_logits, labels).detach()
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()
