"""Scripted stand-ins for a model, so the loop's control flow is tested deterministically."""

from __future__ import annotations

import re

from common.toolcall import render_lookup


def stream(text: str, stop, on_text, chunk: int = 5) -> str:
    """Emit `text` in chunks as a real generator would, stopping once `stop(text so far)` is true."""
    out = ""
    for i in range(0, len(text), chunk):
        out += text[i : i + chunk]
        if on_text:
            on_text(text[i : i + chunk])
        if stop and stop(out):
            break
    return out


class Scripted:
    """Returns the given generations in order ("" once they run out) and records every prompt."""

    def __init__(self, *outputs: str):
        self.outputs, self.prompts = list(outputs), []

    def __call__(self, prompt, *, stop=None, on_text=None, add_special_tokens=True):
        self.prompts.append(prompt)
        return stream(self.outputs.pop(0) if self.outputs else "", stop, on_text)


class LookupModel:
    """Behaves like a logic core trained for the completion layout.

    For "The city of X is in the country of" it answers from a context sentence "X is a city in Y." on
    the prompt's last line when there is one, else it asks for the fact. Anything else: "I don't know."
    It keeps talking after its answer, so the loop's cut is exercised too.
    """

    QUESTION = re.compile(r"The city of (.+?) is in the country of$")

    def __init__(self):
        self.prompts = []

    def text_for(self, prompt: str) -> str:
        last = prompt.rsplit("\n", 1)[-1]
        q = self.QUESTION.search(last)
        if not q:
            return " I don't know. Really."
        subject = q.group(1)
        ctx = re.search(re.escape(subject) + r" is a city in (.+?)\. ", last)
        if ctx:
            return f" {ctx.group(1).split('.')[0]}. It is a big city."
        return " " + render_lookup(subject, "country") + " and then more text"

    def __call__(self, prompt, *, stop=None, on_text=None, add_special_tokens=True):
        self.prompts.append(prompt)
        return stream(self.text_for(prompt), stop, on_text)
