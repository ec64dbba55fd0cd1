"""The sklearn probes of `analyze` and `locate`, fitted on states already collected, several at a time.

Nothing here imports torch: a joblib worker process has to import the module of the function it runs,
and importing torch takes ~6 s on the 2-core machine, which ate most of the gain of two fits at once on
small sweeps. Each fit holds a one-thread BLAS limit, so `jobs` fits at a time use `jobs` cores and never
oversubscribe them, and a fit computes bit for bit the same numbers in a worker as in this process
(tests/neuralcpu/test_locate.py).
"""

from __future__ import annotations

import os
import warnings

import numpy as np


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), the default `jobs`."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_fits(calls: list, jobs: int | None = None, desc: str = "probes") -> list:
    """Run joblib `delayed` fit calls, `jobs` at a time (None: `usable_cores()`), results in the calls' order.

    jobs=1 runs them one after another in this process (joblib's sequential backend); more run them in
    loky worker processes, which stay up between calls (joblib reuses the executor)."""
    from joblib import Parallel
    from tqdm.auto import tqdm

    if not calls:
        return []
    jobs = min(len(calls), jobs or usable_cores())
    return list(tqdm(Parallel(n_jobs=jobs, return_as="generator")(calls), total=len(calls), desc=desc))


def _one_thread():
    """One BLAS/OpenMP thread: the fits are tiny, and threads fighting torch's idle OpenMP workers made
    them ~8x slower (5.6 s vs 0.7 s per layer measured on SmolLM2's 90 prompts)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def site_probe(kind: str, seed: int = 0):
    """`locate`'s unfitted probe: "linear" (logistic regression, C=0.1) or "mlp" (one hidden layer of 256)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-2, max_iter=300,
                                                         early_stopping=False, random_state=seed))


def fit_site_probe(kind: str, train_x: np.ndarray, train_y: np.ndarray):
    """`site_probe(kind)` fitted on (train_x (N, C), train_y (N,)) with one thread."""
    with _one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the small fits
        return site_probe(kind).fit(train_x, train_y)


def score_site_probe(kind: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy on (test_x, test_y) of `fit_site_probe(kind, train_x, train_y)`: one cell of the probe sweep."""
    probe = fit_site_probe(kind, train_x, train_y)
    with _one_thread():
        return float((probe.predict(test_x) == test_y).mean())


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, train_groups: np.ndarray):
    """Standardised logistic-regression probe, C chosen by leave-one-group-out CV (groups: templates or cities)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = list(LeaveOneGroupOut().split(train_x, train_y, train_groups))
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=cv, max_iter=2000, tol=1e-3))
    with warnings.catch_warnings(), _one_thread():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.8 announces an attribute change; we use none
        return clf.fit(train_x, train_y)


def score_probe(train_x, train_y, train_groups, tests: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Accuracy on each test set {key: (states, labels)} of `fit_probe(train_x, train_y, train_groups)`."""
    clf = fit_probe(train_x, train_y, train_groups)
    return {key: float((clf.predict(x) == y).mean()) for key, (x, y) in tests.items()}
