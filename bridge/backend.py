"""The model side of the loop: greedy generation that stops when the layout says so, streaming chunks to a callback.

Any callable with the signature of `HFGenerator.__call__` can drive the loop; tests use scripted fakes.

    gen = HFGenerator(*load_model("smollm2-135m"))
    gen("The city of Tokyo is in the country of", stop=lambda text: "\\n" in text, on_text=print)
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from neuralcpu.generation import greedy_decode


class Generator(Protocol):
    """What the loop needs from a model: prompt text in, generated text out (it may run past `stop`)."""

    def __call__(self, prompt: str, *, stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str], None] | None = None, add_special_tokens: bool = True) -> str: ...


class _TextStop(StoppingCriteria):
    """Stop row i of a (left-padded) batch once `done(its generated text so far)` says so (the layout
    decides: a closed call, an answer line); rows already done are not decoded again."""

    def __init__(self, tokenizer, prompt_len: int, done: Callable[[str], bool], rows: int):
        self.tokenizer, self.prompt_len, self.done = tokenizer, prompt_len, done
        self.stopped = [False] * rows

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        for i, row in enumerate(input_ids[:, self.prompt_len:]):  # input_ids (B, T)
            if not self.stopped[i]:
                self.stopped[i] = self.done(self.tokenizer.decode(row, skip_special_tokens=True))
        return torch.tensor(self.stopped, dtype=torch.bool, device=input_ids.device)


class _CallbackStreamer(TextStreamer):
    """transformers' TextStreamer, but each finished chunk goes to a callback instead of stdout."""

    def __init__(self, tokenizer, callback: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
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

    def _generate(self, enc, stop: Callable[[str], bool] | None, streamer=None) -> torch.Tensor:
        """Greedy-generate from a tokenized (left-padded) batch; return the new tokens (B, T_new)."""
        tok, T = self.tokenizer, enc["input_ids"].shape[1]  # input_ids (B, T)
        out = self.model.generate(
            **enc, max_new_tokens=self.max_new_tokens,
            do_sample=False, temperature=None, top_p=None, top_k=None,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_TextStop(tok, T, stop, len(enc["input_ids"]))]) if stop else None,
            streamer=streamer,
        )
        return out[:, T:]

    @torch.inference_mode()
    def __call__(self, prompt: str, *, stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str], None] | None = None, add_special_tokens: bool = True) -> str:
        """Greedy continuation of `prompt`, ending at EOS, when `stop(text)` is true, or at `max_new_tokens`.

        Args:
            prompt: the full prompt text.
            stop: called with the text generated so far after every token; True ends generation.
            on_text: called with each decoded chunk while generating.
            add_special_tokens: let the tokenizer add BOS (completion prompts) or not (rendered chat templates).
        """
        tok = self.tokenizer
        enc = tok(prompt, return_tensors="pt", add_special_tokens=add_special_tokens).to(self.model.device)
        new = self._generate(enc, stop, _CallbackStreamer(tok, on_text) if on_text else None)
        return tok.decode(new[0], skip_special_tokens=True)

    @torch.inference_mode()
    def many(self, prompts: list[str], *, stop: Callable[[str], bool] | None = None,
             add_special_tokens: bool = True) -> list[str]:
        """`__call__` for many prompts: left-padded batches of `batch_size`, each row stopping on its own.

        A row that stops leaves the batch (`neuralcpu.generation.greedy_decode`); the outputs match the
        one-at-a-time ones up to the numerics of padding.
        """
        tok, outs = self.tokenizer, []
        end_ids = {tok.pad_token_id, tok.eos_token_id} - {None}
        row_stop = (lambda row, ids: stop(tok.decode(ids, skip_special_tokens=True))) if stop else None
        side, tok.padding_side = tok.padding_side, "left"  # decoder-only: every prompt must end at the last position
        try:
            for i in range(0, len(prompts), self.batch_size):
                enc = tok(prompts[i : i + self.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=add_special_tokens).to(self.model.device)
                new = greedy_decode(self.model, enc["input_ids"], enc["attention_mask"], self.max_new_tokens,
                                    end_ids, row_stop)
                outs += tok.batch_decode(new, skip_special_tokens=True)
        finally:
            tok.padding_side = side
        return outs
