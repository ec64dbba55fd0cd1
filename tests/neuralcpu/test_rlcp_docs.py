"""docs/rlcp.md's flag reference against RLCPConfig: every flag is described, and every default the
page states as a number ("`--lam-max` (2)", or a table row "| `--steps` | 60 |") is the config's."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from neuralcpu.rlcp import RLCPConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "rlcp.md"
NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
STATED = [re.compile(r"`(--[a-z0-9-]+)` \((" + NUMBER + r")[):,; ]"),        # `--flag` (2)
          re.compile(r"\| `(--[a-z0-9-]+)`[^|]*\| (" + NUMBER + r") \|")]   # | `--flag` | 60 |


def _defaults() -> dict[str, object]:
    return {"--" + f.name.replace("_", "-"): f.default for f in dataclasses.fields(RLCPConfig)}


def test_every_rlcp_flag_is_described():
    text = DOC.read_text(encoding="utf-8")
    assert [flag for flag in _defaults() if f"`{flag}" not in text and f"{flag}`" not in text] == []


def test_the_defaults_the_page_states_are_the_configs():
    text, defaults = DOC.read_text(encoding="utf-8"), _defaults()
    stated = [(m.group(1), m.group(2)) for pattern in STATED for m in pattern.finditer(text) if m.group(1) in defaults]
    assert len(stated) >= 20  # the reference states most defaults this way; a format change must not pass silently
    wrong = [(flag, value, defaults[flag]) for flag, value in stated if float(value) != float(defaults[flag])]
    assert wrong == []
