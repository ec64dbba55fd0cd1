"""The model side of the loop: greedy generation that stops when the layout says so, streaming chunks to a callback.

Any callable with the signature of `HFGenerator.__call__` can drive the loop; tests use scripted fakes.

    gen = HFGenerator(*load_model("smollm2-135m"))
    gen("The city of Tokyo is in the country of", stop=lambda text: "\\n" in text, on_text=print)
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from transformers import TextStreamer

from neuralcpu.generation import generate_ids


class Generator(Protocol):
    """What the loop needs from a model: prompt text in, generated text out (it may run past `stop`)."""

    def __call__(self, prompt: str, *, stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str], None] | None = None, add_special_tokens: bool = True) -> str: ...


class _CallbackStreamer(TextStreamer):
    """transformers' TextStreamer, but each finished chunk goes to a callback instead of stdout."""

    def __init__(self, tokenizer, callback: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)  # it is fed new tokens only
        self.callback = callback

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.callback(text)


class HFGenerator:
    """Greedy decoding with a Hugging Face causal LM; streams chunks through `on_text` as they are decoded.

    Args:
        model, tokenizer: from `neuralcpu.models.load_model`.
        max_new_tokens: budget per generation (one loop step).
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, batch_size: int = 16):
        self.model, self.tokenizer, self.max_new_tokens, self.batch_size = model, tokenizer, max_new_tokens, batch_size

    def __call__(self, prompt: str, *, stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str], None] | None = None, add_special_tokens: bool = True) -> str:
        """Greedy continuation of `prompt`, ending at EOS, when `stop(text)` is true, or at `max_new_tokens`.

        Args:
            prompt: the full prompt text.
            stop: called with the text generated so far after every token; True ends generation.
            on_text: called with each decoded chunk while generating.
            add_special_tokens: let the tokenizer add BOS (completion prompts) or not (rendered chat templates).
        """
        streamer = _CallbackStreamer(self.tokenizer, on_text) if on_text else None
        text = self._generate([prompt], stop, add_special_tokens,
                              (lambda i, t: streamer.put(torch.tensor([t]))) if streamer else None)[0]
        if streamer:
            streamer.end()  # flush the last partial word
        return text

    def many(self, prompts: list[str], *, stop: Callable[[str], bool] | None = None,
             add_special_tokens: bool = True) -> list[str]:
        """`__call__` for many prompts: at most `batch_size` run at once, each row stopping on its own.

        A row that stops leaves the batch (`neuralcpu.generation.greedy_decode`); the outputs match the
        one-at-a-time ones up to the numerics of padding.
        """
        return self._generate(prompts, stop, add_special_tokens)

    def _generate(self, prompts: list[str], stop, add_special_tokens: bool, on_token=None) -> list[str]:
        tok = self.tokenizer
        new = generate_ids(self.model, tok, prompts, self.max_new_tokens, self.batch_size,
                           (lambda i, ids: stop(tok.decode(ids, skip_special_tokens=True))) if stop else None,
                           add_special_tokens=add_special_tokens, on_token=on_token)
        return tok.batch_decode(new, skip_special_tokens=True)
