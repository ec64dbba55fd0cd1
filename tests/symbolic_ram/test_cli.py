"""`python -m symbolic_ram`: every subcommand, run in-process through main()."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from symbolic_ram.cli import build_parser, main


@pytest.fixture
def kb(tmp_path):
    path = tmp_path / "kb"
    assert main(["init", str(path), "--embedder", "hash"]) == 0
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_subcommand_has_help():
    sub = build_parser()._subparsers._group_actions[0]
    assert set(sub.choices) >= {"init", "ingest", "query", "search", "stats", "verify", "delete"}
    for name, parser in sub.choices.items():
        assert parser.description and parser.format_help().count("\n") > 3, name


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "symbolic_ram", "verify", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "drift" in out.stdout


def test_ingest_query_search_verify_delete(kb, tmp_path, capsys):
    facts = tmp_path / "mine.jsonl"
    facts.write_text('{"subject": "Lagos", "relation": "country", "object": "Nigeria"}\n'
                     '{"subject": "Nigeria", "relation": "capital", "object": "Abuja"}\n'
                     'oops\n', encoding="utf-8")
    code, out, _ = run(capsys, "ingest", kb, facts, "--provenance", '{"run": "r7"}')
    assert code == 0 and "added 2" in out and f"{facts}:3: invalid JSON" in out
    code, out, _ = run(capsys, "query", kb, "LAGOS", "--json")
    got = json.loads(out)
    assert code == 0 and got[0]["object"] == "Nigeria" and got[0]["provenance"]["run"] == "r7"
    assert got[0]["source"] == "mine.jsonl"
    code, out, _ = run(capsys, "search", kb, "Lagos country Nigeria", "-k", "1")
    assert code == 0 and "Lagos -country-> Nigeria" in out
    code, out, _ = run(capsys, "path", kb, "Lagos", "Abuja")
    assert code == 0 and out.count("\n") == 2
    code, out, _ = run(capsys, "stats", kb)
    assert code == 0 and json.loads(out)["facts"] == 2
    code, out, _ = run(capsys, "verify", kb)
    assert code == 0 and out.startswith("OK: 2 facts")
    code, out, _ = run(capsys, "delete", kb, "--subject", "lagos")
    assert code == 0 and "deleted 1 fact" in out
    code, out, _ = run(capsys, "query", kb, "Lagos")
    assert "(no facts)" in out
    code, _, err = run(capsys, "delete", kb)
    assert code == 2 and "at least one" in err


def test_reject_flag_writes_nothing(kb, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Lagos,country,Nigeria\nbroken\n", encoding="utf-8")
    code, _, err = run(capsys, "ingest", kb, bad, "--on-error", "reject")
    assert code == 2 and f"{bad}:2" in err
    _, out, _ = run(capsys, "stats", kb)
    assert json.loads(out)["facts"] == 0


def test_verify_reports_drift_and_repairs(kb, tmp_path, capsys):
    facts = tmp_path / "f.csv"
    facts.write_text("a,r,b\nc,r,d\n", encoding="utf-8")
    run(capsys, "ingest", kb, facts)
    con = sqlite3.connect(kb / "facts.sqlite")
    (fid,) = con.execute("SELECT id FROM facts WHERE subject = 'c'").fetchone()
    con.execute("DELETE FROM facts WHERE id = ?", (fid,))
    con.commit()
    con.close()
    code, out, _ = run(capsys, "verify", kb, "--json")
    assert code == 1 and json.loads(out)["extra_in_index"] == [fid]
    code, out, _ = run(capsys, "verify", kb, "--repair")
    assert code == 0 and "after repair:\nOK" in out


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    code, _, err = run(capsys, "query", tmp_path / "missing", "x")
    assert code == 2 and err.startswith("error: no knowledge store")
    code, _, err = run(capsys, "init", tmp_path / "kb2", "--embedder", "hash")
    code, _, err = run(capsys, "ingest", tmp_path / "kb2", tmp_path / "nope.jsonl")
    assert code == 2 and "neither a built-in source" in err


def test_reject_refuses_a_bad_file_before_opening_the_store(kb, tmp_path, capsys, monkeypatch):
    from symbolic_ram import cli

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subject": "Lagos", "relation": "country", "object": "Nigeria"}\n{"subject": "Kano"}\n', encoding="utf-8")
    opened = []
    real_open = cli._open
    monkeypatch.setattr(cli, "_open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    code, _, err = run(capsys, "ingest", kb, bad, "--on-error", "reject")
    assert code == 2 and f"{bad}:2" in err and opened == []  # the embedder would load in _open's store
    good = tmp_path / "good.jsonl"
    good.write_text('{"subject": "Lagos", "relation": "country", "object": "Nigeria"}\n', encoding="utf-8")
    assert run(capsys, "ingest", kb, good, "--on-error", "reject")[0] == 0 and opened == [1]
