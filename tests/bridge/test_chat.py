"""`python -m bridge.chat`: argument checks, `--question --json`, and the REPL driven through a pty."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from world import WORLD

import pytest
from fakes import LookupModel

import bridge.chat as chat

HERE = Path(__file__).parent
REPO = HERE.parents[1]
Q = "The city of Tokyo is in the country of"


def test_arguments_are_checked_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        chat.parse_args(["--store", str(tmp_path / "none"), "--json", "--max-steps", "0", "--mode", "oracle"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    for problem in ("no knowledge store", "--json needs --question", "--max-steps must be >= 1", "'oracle' is not one of"):
        assert problem in err


def test_tool_mode_needs_a_store(capsys):
    with pytest.raises(SystemExit):
        chat.parse_args(["--question", "x"])
    assert "--mode tool needs --store" in capsys.readouterr().err


def test_run_dir_names_its_store(tmp_path, store_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "rlcp_config.json").write_text(json.dumps({"store": str(store_dir)}))
    assert chat.parse_args(["--model", str(tmp_path / "run"), "--question", "x"]).store == str(store_dir)


def test_question_json(monkeypatch, capsys, store_dir):
    monkeypatch.setattr(chat, "load_generator", lambda *a: (LookupModel(), None))
    assert chat.main(["--store", str(store_dir), "--question", Q, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout is the JSON and nothing else
    assert out["answer"] == "Japan." and out["mode"] == "tool" and out["stop_reason"] == "answer"
    assert out["calls"] == [{"name": "lookup", "arguments": {"subject": "Tokyo", "relation": "country"},
                             "raw": '{"name": "lookup", "arguments": {"subject": "Tokyo", "relation": "country"}}',
                             "error": None}]
    assert out["observations"][0]["facts"][0]["object"] == "Japan" and out["answered_without_lookup"] is False
    assert chat.main(["--store", str(store_dir), "--question", Q, "--json", "--mode", "closed"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] is None and out["calls"] == [] and out["stop_reason"] == "no_answer"


def test_question_json_with_the_tiny_model(tiny_qwen2_dir, store_dir):
    """The real entry point in a subprocess: model loading, the store, JSON on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.chat", "--model", str(tiny_qwen2_dir), "--store", str(store_dir),
         "--question", Q, "--json", "--max-new-tokens", "8", "--max-steps", "2"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["question"] == Q and out["mode"] == "tool" and 1 <= out["steps"] <= 2


class Terminal:
    """A process on a pseudo-terminal: type lines into it and wait for output, as a user would."""

    def __init__(self, argv: list[str], env: dict):
        self.fd, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.seen, self.pos = "", 0

    def expect(self, pattern: str, timeout: float = 150) -> str:
        """Wait until `pattern` appears in output not yet consumed; return the output up to its end."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.seen[self.pos:])
            if m:
                chunk = self.seen[self.pos: self.pos + m.end()]
                self.pos += m.end()
                return chunk
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{self.seen[-3000:]}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data and self.proc.poll() is not None:
                    raise AssertionError(f"process exited ({self.proc.returncode}) before {pattern!r}:\n{self.seen[-3000:]}")
                self.seen += data.decode("utf-8", "replace").replace("\r\n", "\n")

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\r").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=120)  # a starved machine can be slow to tear torch down
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.fd)


def _env(tmp_path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb", "BRIDGE_HISTORY": str(tmp_path / "history"),
            "PYTHONPATH": str(REPO)}


def test_repl_through_a_pty(tmp_path, store_dir):
    term = Terminal([sys.executable, str(HERE / "scripted_chat.py"), "--store", str(store_dir)], _env(tmp_path))
    try:
        term.expect(r"\[tool\] you> ")
        term.type("/facts tokyo")
        assert "Tokyo -country-> Japan" in term.expect(r"\[tool\] you> ")
        term.type(Q)
        out = term.expect(r"\[tool\] you> ")
        assert "-> lookup(subject='Tokyo', relation='country')" in out  # the lookup as it happens
        assert "<- Tokyo -country-> Japan" in out  # and its result
        assert re.search(r"answer: Japan\.\s+\[tool, 2 steps, 1 call\]", out)
        term.type("/mode closed")
        assert "mode: closed" in term.expect(r"\[closed\] you> ")
        term.type(Q)
        out = term.expect(r"\[closed\] you> ")
        assert "no answer" in out and "-> lookup" not in out  # closed mode never fetches
        term.type("/mode oracle")
        assert "unknown mode 'oracle'" in term.expect(r"\[closed\] you> ")
        term.type("/history")
        out = term.expect(r"\[closed\] you> ")
        assert "1. " + Q + " -> Japan." in out and "2. " + Q in out
        term.type("/reset")
        assert "conversation reset" in term.expect(r"\[closed\] you> ")
        term.type("/history")
        assert "(empty)" in term.expect(r"\[closed\] you> ")
        term.type("/quit")
        term.expect("bye")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert "/facts tokyo" in (tmp_path / "history").read_text()  # readline history was saved


def test_repl_with_the_tiny_model_streams_and_quits_on_eof(tmp_path, tiny_qwen2_dir, store_dir):
    term = Terminal([sys.executable, "-m", "bridge.chat", "--model", str(tiny_qwen2_dir), "--store", str(store_dir),
                     "--max-new-tokens", "8", "--max-steps", "2"], _env(tmp_path))
    try:
        term.expect(rf"bridge: model .* \(completion layout\), store .* \({len(WORLD)} facts\)")
        term.expect(r"\[tool\] you> ")
        term.type(Q)
        out = term.expect(r"\[tool\] you> ", timeout=200)
        assert "model: " in out and re.search(r"(answer: |no answer).*\[tool, \d steps?", out)
        os.write(term.fd, b"\x04")  # Ctrl-D
        term.expect("bye")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_repl_trace_shows_the_last_answers_calls_and_fallbacks(store):
    import io

    from fakes import Scripted

    from bridge.chat import repl
    from bridge.loop import Bridge
    from bridge.prompts import CompletionFormat
    from bridge.tools import make_bridge_tools
    from common.toolcall import render_lookup

    call = " " + render_lookup("Tokio", "country")  # misspelt: the question names Tokyo
    bridge = Bridge(Scripted(call, " Japan."), CompletionFormat(), make_bridge_tools(store))
    lines = iter(["/trace", Q, "/trace", "/quit"])
    out = io.StringIO()
    assert repl(bridge, out=out, read=lambda prompt: next(lines)) == 0
    text = out.getvalue()
    assert "(no answer yet)" in text
    assert "the question names 'Tokyo'" in text and "[matched_by question_span]" in text  # shown, then traced
    assert "(matched by question_span)" in text  # the fact line as it happened
    assert "answer: 'Japan.' by the model; status: store" in text
