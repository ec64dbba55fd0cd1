"""bridge: the tool-calling loop in which a logic core (neuralcpu) fetches facts from a store (symbolic_ram).

    python -m bridge.chat --model qwen2.5-coder-0.5b --store stores/geo    # REPL (/trace shows the last calls)
    python -m bridge.evaluate --model runs/rlcp --store stores/geo         # tool-call rate, accuracy per mode
    python -m bridge.toolsft --model smollm2-135m --store stores/geo --out runs/toolsft --chains 100

Library use: `Bridge(generator, make_format(tokenizer, tool_schemas(tools)), tools).ask(question, mode)`
with `tools = make_bridge_tools(store)` (lookup with fallbacks, the graph's follow, search).
"""

from .loop import MODES, Bridge, LoopResult, Observation, run_tool, tool_schemas
from .prompts import ChatFormat, CompletionFormat, make_format
from .tools import FOLLOW_TOOL, StoreTools, make_bridge_tools

__all__ = ["Bridge", "LoopResult", "Observation", "MODES", "run_tool", "tool_schemas", "make_format",
           "CompletionFormat", "ChatFormat", "make_bridge_tools", "StoreTools", "FOLLOW_TOOL"]
