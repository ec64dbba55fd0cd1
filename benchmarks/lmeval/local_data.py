"""GSM8K from local JSONL files for the lm-eval tasks in this folder (their `custom_dataset`)."""

from __future__ import annotations

import os
from pathlib import Path

from neuralcpu.data import SHARED_GSM8K, DataFileError, jsonl_rows

SPLITS = ("train", "test")


def resolve_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding {train,test}.jsonl: `path`, else $GSM8K_DIR, else the shared copy beside the
    checkout. Raises DataFileError naming the folder and the missing file when one is absent."""
    folder = Path(path or os.environ.get("GSM8K_DIR") or SHARED_GSM8K)
    for split in SPLITS:
        if not (folder / f"{split}.jsonl").is_file():
            raise DataFileError(f"{folder / (split + '.jsonl')}: no such file; the lm-eval GSM8K tasks read "
                                f"{{train,test}}.jsonl from --gsm8k-dir, $GSM8K_DIR or {SHARED_GSM8K}")
    return folder


def load_gsm8k_local(gsm8k_dir: str | None = None, **_metadata):
    """A datasets.DatasetDict {"train", "test"} of {"question", "answer"} rows read from `gsm8k_dir`
    (lm-eval passes the task's metadata as keyword arguments; `gsm8k_dir` is ours, the rest is ignored).
    A malformed line raises DataFileError naming file:line:field."""
    from datasets import Dataset, DatasetDict

    folder = resolve_dir(gsm8k_dir)
    return DatasetDict({split: Dataset.from_list([{"question": r["question"], "answer": r["answer"]}
                                                  for _, r in jsonl_rows(folder / f"{split}.jsonl", ("question", "answer"))])
                        for split in SPLITS})
