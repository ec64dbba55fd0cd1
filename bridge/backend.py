"""The model side of the loop: greedy generation that stops when the layout says so, streaming chunks to a callback.

Any callable with the signature of `HFGenerator.__call__` can drive the loop; tests use scripted fakes.

    gen = HFGenerator(*load_model("smollm2-135m"))
    gen("The city of Tokyo is in the country of", stop=lambda text: "\\n" in text, on_text=print)
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer


class Generator(Protocol):
    """What the loop needs from a model: prompt text in, generated text out (it may run past `stop`)."""

    def __call__(self, prompt: str, *, stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str], None] | None = None, add_special_tokens: bool = True) -> str: ...


class _TextStop(StoppingCriteria):
    """Stop when `done(generated text so far)` says so (the layout decides: a closed call, an answer line)."""

    def __init__(self, tokenizer, prompt_len: int, done: Callable[[str], bool]):
        self.tokenizer, self.prompt_len, self.done = tokenizer, prompt_len, done

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_len:], skip_special_tokens=True)  # input_ids (1, T)
        return torch.tensor([self.done(text)], dtype=torch.bool, device=input_ids.device)


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

    def __init__(self, model, tokenizer, max_new_tokens: int = 64):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens

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
        out = self.model.generate(
            **enc,  # input_ids (1, T)
            max_new_tokens=self.max_new_tokens,
            do_sample=False, temperature=None, top_p=None, top_k=None,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_TextStop(tok, enc["input_ids"].shape[1], stop)]) if stop else None,
            streamer=_CallbackStreamer(tok, on_text) if on_text else None,
        )
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
