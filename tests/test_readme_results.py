"""The README's results tables are generated from docs/results/*.json and cannot drift."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import readme_results  # noqa: E402


def test_committed_readme_matches_the_committed_results():
    rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"], capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr


def test_results_file_without_its_command_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"commit": "abc", "machine": "m", "table": {"title": "T", "columns": ["a"], "rows": [[1]]}}))
    with pytest.raises(readme_results.ResultsFileError, match="command"):
        readme_results.render_file(tmp_path / "r.json")


def test_rows_must_match_the_header(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"command": "c", "commit": "abc", "machine": "m",
                                                 "table": {"title": "T", "columns": ["a", "b"], "rows": [[1]]}}))
    with pytest.raises(readme_results.ResultsFileError, match="rows\\[0\\]"):
        readme_results.render_file(tmp_path / "r.json")


def test_render_and_check_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    data = {"command": "python -m neuralcpu rlcp", "commit": "0123456789abcdef", "machine": "cpu", "seeds": [0, 1],
            "table": {"title": "T", "columns": ["target", "value"], "rows": [["forget", 0.031]], "notes": ["n=90"]}}
    (results / "r.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_results.START}\n{readme_results.END}\n")
    assert readme_results.main(["--readme", str(readme), "--results", str(results)]) == 0
    text = readme.read_text()
    assert "| forget | 0.03 |" in text and "0123456789" in text and "n=90" in text
    assert readme_results.main(["--check", "--readme", str(readme), "--results", str(results)]) == 0
    data["table"]["rows"][0][1] = 0.5
    (results / "r.json").write_text(json.dumps(data))
    assert readme_results.main(["--check", "--readme", str(readme), "--results", str(results)]) == 1
