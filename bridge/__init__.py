"""bridge: the tool-calling loop in which a logic core (neuralcpu) fetches facts from a store (symbolic_ram).

    python -m bridge.chat --model smollm2-135m --store stores/geo         # REPL
    python -m bridge.evaluate --model runs/rlcp --store stores/geo         # tool-call rate, accuracy per mode

Library use: `Bridge(generator, make_format(tokenizer, tool_schemas(tools)), tools).ask(question, mode)`.
"""

from .loop import MODES, Bridge, LoopResult, Observation, run_tool, tool_schemas
from .prompts import ChatFormat, CompletionFormat, make_format

__all__ = ["Bridge", "LoopResult", "Observation", "MODES", "run_tool", "tool_schemas", "make_format",
           "CompletionFormat", "ChatFormat"]
