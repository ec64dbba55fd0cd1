"""The README's results tables, and the tables of docs pages, are generated from docs/results/*.json and cannot drift."""

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
    args = ["--readme", str(readme), "--results", str(results), "--pages"]
    assert readme_results.main(args) == 0
    text = readme.read_text()
    assert "| forget | 0.03 |" in text and "0123456789" in text and "n=90" in text
    assert readme_results.main(["--check", *args]) == 0
    data["table"]["rows"][0][1] = 0.5
    (results / "r.json").write_text(json.dumps(data))
    assert readme_results.main(["--check", *args]) == 1


def _page_setup(tmp_path, monkeypatch, view="two_writers"):
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    data = {"command": "python benchmarks/store_load.py", "commit": "0123456789abcdef", "machine": "cpu", "seed": 0,
            "two_writers": {"runs": 3, "ok": 3, "lost_facts": 0, "lost_vectors": 0, "burned_ids": 0,
                            "details": [{"facts": 3500}] * 3}}
    (results / "load.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text(f"{readme_results.START}\n{readme_results.END}\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(f"intro\n<!-- results:load.json {view} -->\nstale text\n{readme_results.END}\noutro\n")
    return data, results, readme, page


def test_a_page_block_is_its_view_of_the_named_file(tmp_path, monkeypatch):
    data, results, readme, page = _page_setup(tmp_path, monkeypatch)
    args = ["--readme", str(readme), "--results", str(results), "--pages", str(page)]
    assert readme_results.main(["--check", *args]) == 1  # "stale text" is not the table
    assert readme_results.main(args) == 0
    text = page.read_text()
    assert "stale text" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| 3 | 3 | 0 | 0 | 0 | 3,500 |" in text
    assert "[`docs/results/load.json`](results/load.json)" in text  # linked from the page's own folder
    assert readme_results.main(["--check", *args]) == 0
    data["two_writers"]["lost_vectors"] = 7
    (results / "load.json").write_text(json.dumps(data))
    assert readme_results.main(["--check", *args]) == 1


def test_a_page_naming_an_unknown_view_or_file_is_refused(tmp_path, monkeypatch):
    _, results, _, page = _page_setup(tmp_path, monkeypatch, view="no_such_view")
    with pytest.raises(readme_results.ResultsFileError, match="no_such_view"):
        readme_results.updated_page(page, page.read_text(), results)
    page.write_text(page.read_text().replace("load.json no_such_view", "gone.json two_writers"))
    with pytest.raises(readme_results.ResultsFileError, match="gone.json"):
        readme_results.updated_page(page, page.read_text(), results)


def test_a_gsm8k_paired_result_becomes_a_table_with_its_paired_tests(tmp_path, monkeypatch):
    from benchmarks.gsm8k_paired import paired, side_summary

    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    rec = lambda ok, cot: {"correct": ok, "cot": cot, "pred": "1", "tokens": 100, "capped": False, "seconds": 6.0}
    a = [rec(i % 4 == 0, True) for i in range(40)]
    b = [rec(i % 5 == 0, i % 2 == 0) for i in range(40)]
    data = {"command": "python -m benchmarks.gsm8k_paired", "commit": "0123456789", "machine": "cpu", "seed": 0,
            "config": {"a": "qwen", "b": "runs/rlcp", "n_problems": 40, "seed": 0, "prompt": "qwen-boxed", "max_new_tokens": 384},
            "models": {"a": side_summary(a), "b": side_summary(b)},
            "paired": {"accuracy": paired([r["correct"] for r in a], [r["correct"] for r in b]),
                       "cot": paired([r["cot"] for r in a], [r["cot"] for r in b])}}
    path = tmp_path / "gsm8k_qwen.json"
    path.write_text(json.dumps(data))
    text = readme_results.render_file(path)
    assert "| qwen | 0.250 (10/40) [" in text and "| runs/rlcp | 0.200 (8/40) [" in text
    assert f"accuracy, paired (B − A): {0.2 - 0.25:+.3f}" in text and "McNemar p" in text and "CoT rate, paired" in text
