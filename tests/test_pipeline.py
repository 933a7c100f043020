"""End to end: tiny real-text data -> train -> artifact -> load -> same scores; fold-in identity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main as cli_main
from model.artifact import ArtifactError, load_artifact
from training.data import load_dataset
from training.encoders import embed_items, encoder_from_identity
from training.evaluate import case_scores, evaluate_cases
from training.splits import split_loo
from training.train import training_windows


def test_artifact_round_trip_gives_identical_scores(tiny_artifact: Path, tiny_data: Path) -> None:
    art = load_artifact(tiny_artifact)
    again = load_artifact(tiny_artifact)
    index = {item: row + 1 for row, item in enumerate(art.item_ids)}
    split = split_loo(load_dataset(tiny_data))
    histories = [[index[i] for i in c.history] for c in split.test[:10]]
    torch.testing.assert_close(case_scores(art.model, histories), case_scores(again.model, histories), rtol=0, atol=0)
    # the stored table is what the model ranks against
    with torch.no_grad():
        np.testing.assert_allclose(art.model.item_vectors().numpy(), art.item_table, atol=1e-6)
    stored = json.loads((tiny_artifact / "metrics.json").read_text())
    assert evaluate_cases(art.model, split.test, index) == pytest.approx(stored["test"])


def test_fold_in_reproduces_the_language_part_of_each_row(tiny_artifact: Path) -> None:
    art = load_artifact(tiny_artifact)
    assert art.projection is not None and art.encoder_identity is not None
    encoder = encoder_from_identity(art.encoder_identity)
    records = dict(zip(art.item_ids, art.item_records, strict=True))
    emb = embed_items(encoder, art.item_ids, records, cache_dir=None, progress=False)
    folded = art.projection.apply(emb)  # (N, k)
    language = art.model.items.language.numpy()
    np.testing.assert_allclose(folded, language, atol=2e-4, rtol=0)
    # each stored row = language part + IDs in the last d_n coordinates only
    table = art.model.items()[1:].detach().numpy()
    d_s = art.projection.d_s
    np.testing.assert_allclose(table[:, :d_s], folded[:, :d_s], atol=2e-4)
    np.testing.assert_allclose(table[:, d_s:] - art.model.items.ids.detach().numpy(), folded[:, d_s:], atol=2e-4)


def test_language_scale_is_stored_and_older_artifacts_load_at_scale_one(tiny_artifact: Path, tmp_path: Path) -> None:
    art = load_artifact(tiny_artifact)
    assert art.projection is not None
    assert art.projection.language_scale == pytest.approx(1 / np.sqrt(16))  # SASRec default: 1/sqrt(kept)
    assert art.manifest["null_space"]["language_scale"] == art.projection.language_scale
    # an artifact written before the field existed was trained on unscaled coordinates
    old = tmp_path / "old"
    shutil.copytree(tiny_artifact, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["projection"]["language_scale"]
    del manifest["recommender"]["softmax_negatives"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    older = load_artifact(old)
    assert older.projection is not None and older.projection.language_scale == 1.0
    emb = np.random.default_rng(0).normal(size=(2, older.projection.input_dim))
    np.testing.assert_allclose(older.projection.apply(emb) * art.projection.language_scale, art.projection.apply(emb))


def test_load_rejects_corrupted_and_incomplete_artifacts(tiny_artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_artifact, bad)
    (bad / "item_table.npy").write_bytes((bad / "item_table.npy").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="checksum mismatch.*item_table.npy"):
        load_artifact(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing files: model.safetensors"):
        load_artifact(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(bad)


def test_training_windows_cover_every_target_once() -> None:
    inputs, targets = training_windows([[1, 2, 3, 4, 5, 6, 7], [8, 9]], max_len=3)
    pairs = {(int(i), int(t)) for row_i, row_t in zip(inputs, targets, strict=True)
             for i, t in zip(row_i, row_t, strict=True) if t > 0}
    assert pairs == {(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (8, 9)}
    assert int((targets > 0).sum()) == 7


def test_cli_train_and_evaluate(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("hidden-dim: 8\nd_n: 4\nepochs: 2\nmax_len: 5\nitem_embedding: id\n")
    out = tmp_path / "model"
    code = cli_main(["train", "--config", str(config), "--data", str(tiny_data), "--protocol", "loo",
                     "--out", str(out), "--batch-size", "8"])
    assert code == 0
    summary = capsys.readouterr().out
    trained = json.loads((out / "metrics.json").read_text())
    assert set(trained) == {"valid", "test"} and "ndcg@20" in trained["test"]
    # a short summary: rounded test metrics, the selection, where the artifact is and how to serve it, once
    assert summary.startswith("trained in ") and "best epoch " in summary
    assert f"{trained['test']['ndcg@20']:.4f}" in summary and repr(trained["test"]["ndcg@20"]) not in summary
    assert summary.count(str(out)) == 2  # "artifact: ..." and the serve command
    assert summary.rstrip().splitlines()[-1].endswith(f"-m cli serve --artifact {out}")
    # every input defaults to what the artifact records (data, protocol, split, seed)
    assert cli_main(["evaluate", "--artifact", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for split in ("valid", "test"):
        assert evaluated[split] == pytest.approx(trained[split])
    # flags override: the cold-users protocol is another split, so other numbers
    assert cli_main(["evaluate", "--artifact", str(out), "--protocol", "cold-users"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["cases"] != trained["test"]["cases"]


def test_train_logs_progress_lines_when_stderr_is_not_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from training.progress import EpochProgress

    with caplog.at_level(logging.INFO, logger="training.progress"):
        progress = EpochProgress(3, 5, 100, terminal=False)
        for _ in range(100):
            progress.step(2.0)
        progress.close()
        short = EpochProgress(1, 5, 9, terminal=False)  # below 10 steps only the epoch summary says anything
        for _ in range(9):
            short.step(1.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 9 and lines[0].startswith("epoch 3/5: 10% (10/100 steps), loss 2.0000")
    assert lines[-1].startswith("epoch 3/5: 90% (90/100 steps)") and "left in this epoch" in lines[-1]


def test_train_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "METHOD.md" not in text and "(default: '')" not in text and "(default: None)" not in text
    assert "(required; or in --config)" in text and "(default: cold-users)" in text and "(default: on)" in text


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["evaluate", "--artifact", str(tmp_path), "--data", str(tmp_path), "--protocol", "loo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alphafuse: error:") and "manifest.json" in err and "\n" not in err
    bad = tmp_path / "c.toml"
    bad.write_text("epochz = 3\n")
    assert cli_main(["train", "--config", str(bad)]) == 2
    assert "unknown keys: epochz" in capsys.readouterr().err
