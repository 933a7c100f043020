import math

import pytest

from training.config import PRESETS, TrainConfig, config_with_preset


def test_backbone_defaults_resolve_per_backbone() -> None:
    sas, dream = TrainConfig(data="x"), TrainConfig(data="x", backbone="dreamrec")
    assert (sas.resolved_batch_size(), sas.resolved_dropout(), sas.learning_rate()) == (64, 0.3, 1e-3)
    assert (dream.resolved_batch_size(), dream.resolved_dropout(), dream.learning_rate()) == (256, 0.1, 1e-4)
    assert sas.language_scale_for(128) == pytest.approx(1 / math.sqrt(128)) and dream.language_scale_for(384) == 1.0
    assert sas.recommender_config(128, 96, num_items=10).sasrec.dropout == 0.3
    explicit = TrainConfig(data="x", batch_size=32, dropout=0.0, language_scale=0.5)
    assert (explicit.resolved_batch_size(), explicit.resolved_dropout()) == (32, 0.0)
    assert explicit.language_scale_for(128) == 0.5
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(data="x", dropout=1.0)


def test_loss_auto_is_full_softmax_up_to_the_catalogue_limit() -> None:
    cfg = TrainConfig(data="x", full_softmax_max_items=1000)
    assert cfg.recommender_config(16, 8, num_items=1000).loss == "ce"
    assert cfg.recommender_config(16, 8, num_items=1001).loss == "sampled-softmax"
    assert TrainConfig(data="x", loss="infonce").recommender_config(16, 8, num_items=10).loss == "infonce"


def test_paper_preset_under_explicit_values() -> None:
    paper = config_with_preset("paper", {"data": "x", "epochs": 3})
    assert (paper.loss, paper.similarity, paper.language_scale, paper.d_n, paper.batch_size) == (
        "infonce", "cosine", 1.0, 64, 256
    )
    assert paper.epochs == 3 and paper.patience == 50  # explicit values win, the rest comes from the preset
    assert config_with_preset("default", {"data": "x"}) == TrainConfig(data="x")
    # DreamRec's defaults are its paper settings: the preset leaves them alone
    dream = TrainConfig(data="x", backbone="dreamrec")
    assert config_with_preset("paper", {"data": "x", "backbone": "dreamrec"}) == dream
    assert set(PRESETS["paper"]) == {"sasrec", "dreamrec"}
    with pytest.raises(ValueError, match="unknown preset"):
        config_with_preset("fast", {})


def test_alphafuse_normal_id_init_follows_the_language_scale() -> None:
    cfg = TrainConfig(data="x", id_init="normal")
    assert cfg.recommender_config(128, 96, num_items=5, language_scale=0.1).id_std == 0.1
    assert TrainConfig(data="x", item_embedding="id").recommender_config(128, 96, num_items=5).id_std == 0.0
    assert TrainConfig(data="x", id_std=2.0).recommender_config(128, 96, num_items=5, language_scale=0.1).id_std == 2.0
