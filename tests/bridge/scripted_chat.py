"""`python -m bridge.chat` with the model replaced by tests/bridge/fakes.LookupModel (for the pty REPL test).

    python tests/bridge/scripted_chat.py --store <dir> [chat arguments]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bridge.chat  # noqa: E402
from fakes import LookupModel  # noqa: E402

bridge.chat.load_generator = lambda model, dtype, max_new_tokens: (LookupModel(), None)

if __name__ == "__main__":
    sys.exit(bridge.chat.main(sys.argv[1:]))
