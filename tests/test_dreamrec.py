"""DreamRec: guided DDIM sampling, seeded batch-independent generation, gradients into IDs, the artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from model.artifact import load_artifact
from model.config import DreamRecConfig
from model.diffusion import NoiseSchedule, guided_x0
from model.dreamrec import DreamRec, timestep_embedding
from model.item_embeddings import AlphaFuseEmbedding
from model.recommender import RecommenderConfig, build_recommender
from model.sasrec import SASRecConfig
from training.config import TrainConfig
from training.data import load_dataset
from training.encoders import embed_items, encoder_from_identity
from training.evaluate import case_scores, evaluate_cases
from training.splits import split_loo
from training.train import fit_item_projection, run_training

D, N = 8, 10


def tiny_model(item_embedding: str = "alphafuse", **dream: Any) -> DreamRec:
    torch.manual_seed(0)
    dream = {"num_steps": 20, "sampling_steps": 5, "time_embed_dim": 4, **dream}
    cfg = RecommenderConfig(
        item_embedding=item_embedding,  # type: ignore[arg-type]
        backbone="dreamrec",
        sasrec=SASRecConfig(hidden_dim=D, num_blocks=1, num_heads=2, dropout=0.0, max_len=6),
        dreamrec=DreamRecConfig(**dream),
        d_n=3,
    )
    language = None if item_embedding == "id" else torch.randn(N, D)
    model = build_recommender(cfg, N, language)
    assert isinstance(model, DreamRec)
    return model.eval()


HISTORIES = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 0, 0, 0, 0, 4], [5, 6, 7, 8, 9, 10], [0, 0, 2, 2, 9, 1]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_steps": 10, "sampling_steps": 11}, "sampling_steps"),
        ({"p_uncond": 1.0}, "p_uncond"),
        ({"guidance": -1.0}, "guidance"),
        ({"p_uncond": 0.0}, "needs an unconditional model"),
        ({"time_embed_dim": 5}, "time_embed_dim"),
        ({"beta_schedule": "quadratic"}, "beta_schedule"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DreamRecConfig(**kwargs)


def test_config_round_trips_and_dreamrec_ranks_by_dot() -> None:
    cfg = RecommenderConfig(backbone="dreamrec", dreamrec=DreamRecConfig(guidance=2.0, sampling_steps=7))
    assert RecommenderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="similarity must be 'dot'"):
        RecommenderConfig(backbone="dreamrec", similarity="cosine")


def test_timestep_embedding_is_sinusoidal() -> None:
    e = timestep_embedding(torch.tensor([0, 3]), 6)
    torch.testing.assert_close(e[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    freqs = 10000.0 ** (-torch.arange(3) / 3)
    torch.testing.assert_close(e[1], torch.cat([(3 * freqs).sin(), (3 * freqs).cos()]))


def test_sampling_matches_guided_ddim_oracle() -> None:
    """One history: the model's batched [c; null] sampler = NoiseSchedule.sample with two separate denoiser
    calls combined by guided_x0, from the noise that `sample_seed` draws."""
    model = tiny_model(guidance=3.0, sample_seed=7)  # 5 strided steps of T = 20
    hist = HISTORIES[:1]
    c = model.encoder.last_state(torch.nn.functional.embedding(hist, model.items()), hist > 0)

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        null = model.null_condition.expand_as(c)
        return guided_x0(model.denoiser(x_t, c, t), model.denoiser(x_t, null, t), 3.0)

    schedule = NoiseSchedule(model.cfg.dreamrec.schedule())
    with torch.no_grad():
        expected = schedule.sample(guided, (1, D), 5, generator=torch.Generator().manual_seed(7))
        got = model.user_vectors(hist)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_guidance_formula_and_timesteps_used_in_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A denoiser that returns its condition makes the output exactly (1 + w) c - w null."""
    model = tiny_model(guidance=5.0, num_steps=20, sampling_steps=20)
    seen: list[int] = []

    def step_features(t: Tensor) -> Tensor:
        seen.extend(t.tolist())
        return torch.zeros(len(t), D)

    monkeypatch.setattr(model.denoiser, "condition_features", lambda c: c)
    monkeypatch.setattr(model.denoiser, "step_features", step_features)
    monkeypatch.setattr(model.denoiser, "head", lambda x_t, f: f + 0 * x_t.repeat(len(f) // len(x_t), 1))
    with torch.no_grad():
        c = model.encoder.last_state(torch.nn.functional.embedding(HISTORIES, model.items()), HISTORIES > 0)
        out = model.user_vectors(HISTORIES)
    torch.testing.assert_close(out, 6.0 * c - 5.0 * model.null_condition.expand_as(c))
    assert seen == list(range(19, -1, -1))  # every step, starting at T - 1, never beyond it


def test_denoiser_split_first_layer_equals_the_concatenated_mlp() -> None:
    model = tiny_model()
    f = model.denoiser
    x, c, t = torch.randn(3, D), torch.randn(3, D), torch.tensor([0, 7, 19])
    e = f.time_mlp(timestep_embedding(t, f.time_embed_dim))
    expected = f.out(torch.nn.functional.gelu(f.inp(torch.cat([x, c, e], dim=-1))))
    torch.testing.assert_close(f(x, c, t), expected)


def test_sampling_is_seeded_and_batch_independent() -> None:
    model = tiny_model()
    with torch.no_grad():
        batch = model.user_vectors(HISTORIES)
        torch.testing.assert_close(model.user_vectors(HISTORIES), batch, rtol=0, atol=0)
        for row in range(len(HISTORIES)):
            alone = HISTORIES[row : row + 1]
            alone = alone[:, (alone[0] > 0).nonzero()[0, 0] :]  # no padding at all
            torch.testing.assert_close(model.user_vectors(alone)[0], batch[row], rtol=1e-5, atol=1e-5)
        other = tiny_model(sample_seed=1)
        other.load_state_dict(model.state_dict())
        assert not torch.allclose(other.user_vectors(HISTORIES), batch)  # the seed picks x_{T-1}


def test_encode_with_an_extended_table_embeds_cold_items_in_histories() -> None:
    model = tiny_model()
    with torch.no_grad():
        table = model.items()
        extended = torch.cat([table, torch.randn(1, D)])  # a cold item, index N + 1
        torch.testing.assert_close(model.encode_with_table(HISTORIES, extended), model.user_vectors(HISTORIES))
        cold = torch.tensor([[1, 2, N + 1]])
        assert not torch.allclose(model.encode_with_table(cold, extended), model.user_vectors(cold[:, :2]))


def test_training_timesteps_stay_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(num_steps=5, sampling_steps=5)
    seen: list[Tensor] = []
    forward = model.denoiser.forward

    def record(x_t: Tensor, c: Tensor, t: Tensor) -> Tensor:
        seen.append(t.clone())
        return forward(x_t, c, t)

    monkeypatch.setattr(model.denoiser, "forward", record)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        model.loss(HISTORIES[:, :-1], HISTORIES[:, 1:], generator=gen)
    t = torch.cat(seen)
    assert int(t.min()) == 0 and int(t.max()) == 4  # the whole range 0..T-1 is trained, nothing beyond


def test_gradient_reaches_target_ids_in_the_null_space_only() -> None:
    model = tiny_model(p_uncond=0.5)
    items = model.items
    assert isinstance(items, AlphaFuseEmbedding)
    inputs, targets = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 7]])  # item 7 is only ever a target
    model.loss(inputs, targets, generator=torch.Generator().manual_seed(0)).backward()
    assert items.ids.grad is not None and items.ids.grad[7 - 1].abs().sum() > 0
    assert items.ids.grad[[4, 5, 8, 9]].abs().sum() == 0  # untouched items get nothing
    before = items().detach().clone()
    torch.optim.SGD([items.ids], lr=1.0).step()
    moved = (items().detach() - before).abs()
    assert moved[:, : items.d_s].sum() == 0 and moved[7, items.d_s :].sum() > 0


def test_gradient_reaches_target_row_of_an_id_table() -> None:
    model = tiny_model("id")
    model.loss(torch.tensor([[1, 2]]), torch.tensor([[2, 7]]), generator=torch.Generator().manual_seed(0)).backward()
    weight = model.items.weight
    assert isinstance(weight, torch.Tensor) and weight.grad is not None and weight.grad[7 - 1].abs().sum() > 0


def test_loss_decreases_on_a_tiny_problem() -> None:
    model = tiny_model(p_uncond=0.1).train()
    inputs, targets = HISTORIES[:, :-1], HISTORIES[:, 1:]

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(model.loss(inputs, targets, generator=torch.Generator().manual_seed(123)))

    start = fixed_loss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = model.loss(inputs, targets, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.25 * start


def test_whitened_text_has_no_ids_and_nothing_trainable() -> None:
    model = tiny_model("whitened-text")
    assert isinstance(model.items, AlphaFuseEmbedding) and model.items.d_n == 0
    assert not [n for n, p in model.items.named_parameters() if p.requires_grad and p.numel()]


def test_projection_rules_per_backbone() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 12)) * np.linspace(1.0, 0.01, 12)  # a decaying spectrum
    base: dict[str, Any] = {"data": "x", "backbone": "dreamrec", "scale": 2.0}
    s = fit_item_projection(TrainConfig(**base, threshold=-1, d_n=5), emb, None).eigenvalues
    by_threshold = fit_item_projection(TrainConfig(**base, threshold=float(s[8])), emb, None)
    assert (by_threshold.output_dim, by_threshold.d_s, by_threshold.d_n) == (12, 8, 4)  # S <= s[8]: 4 dirs
    by_dim = fit_item_projection(TrainConfig(**base, threshold=-1, d_n=5), emb, None)
    assert (by_dim.output_dim, by_dim.d_n) == (12, 5)  # no clipping
    whitened = fit_item_projection(TrainConfig(**base, item_embedding="whitened-text"), emb, None)
    assert (whitened.output_dim, whitened.d_n) == (12, 0)
    sasrec = fit_item_projection(TrainConfig(data="x", hidden_dim=6, d_n=2), emb, None)
    assert (sasrec.output_dim, sasrec.d_n) == (6, 2)
    # on SASRec the whitened text table has the width of every other variant
    sas_whitened = fit_item_projection(TrainConfig(data="x", hidden_dim=6, item_embedding="whitened-text"), emb, None)
    assert (sas_whitened.output_dim, sas_whitened.d_n) == (6, 0)


@pytest.fixture(scope="module")
def dreamrec_artifact(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dreamrec") / "model"
    cfg = TrainConfig(
        data=str(tiny_data), protocol="loo", out=str(out), backbone="dreamrec", epochs=1, patience=1,
        max_len=6, batch_size=16, diffusion_steps=50, sampling_steps=5, eval_sampling_steps=2,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    run_training(cfg)
    return out


def test_dreamrec_artifact_round_trip_gives_identical_scores(dreamrec_artifact: Path, tiny_data: Path) -> None:
    art = load_artifact(dreamrec_artifact)
    assert isinstance(art.model, DreamRec) and art.config.dreamrec.sampling_steps == 5
    manifest = art.manifest
    assert manifest["null_space"]["rule"] == "threshold"
    assert manifest["projection"]["d_n"] == manifest["null_space"]["d_n"] == art.model.items.d_n
    assert manifest["dim"] == 384  # hidden = encoder dimension: no clipping
    index = {item: row + 1 for row, item in enumerate(art.item_ids)}
    split = split_loo(load_dataset(tiny_data))
    histories = [[index[i] for i in c.history] for c in split.test[:10]]
    again = load_artifact(dreamrec_artifact)
    torch.testing.assert_close(case_scores(art.model, histories), case_scores(again.model, histories), rtol=0, atol=0)
    stored = json.loads((dreamrec_artifact / "metrics.json").read_text())
    assert evaluate_cases(art.model, split.test, index) == pytest.approx(stored["test"])


def test_dreamrec_fold_in_reproduces_the_language_part(dreamrec_artifact: Path) -> None:
    art = load_artifact(dreamrec_artifact)
    assert art.projection is not None and art.encoder_identity is not None
    records = dict(zip(art.item_ids, art.item_records, strict=True))
    emb = embed_items(encoder_from_identity(art.encoder_identity), art.item_ids, records, None, progress=False)
    folded = art.projection.apply(emb)  # (N, d_l)
    items = art.model.items
    assert isinstance(items, AlphaFuseEmbedding)
    np.testing.assert_allclose(folded, items.language.numpy(), atol=2e-4, rtol=0)
    table = art.item_table
    d_s = art.projection.d_s
    np.testing.assert_allclose(table[:, :d_s], folded[:, :d_s], atol=2e-4)
    np.testing.assert_allclose(table[:, d_s:] - items.ids.detach().numpy(), folded[:, d_s:], atol=2e-4)


def test_id_rows_start_at_the_noise_scale_for_dreamrec_and_unit_norm_for_sasrec() -> None:
    # At 1/sqrt(D) the ID targets sat far below the N(0, I) noise and ID DreamRec collapsed on Toys.
    torch.manual_seed(0)
    n, d = 4000, 64
    sas = RecommenderConfig(item_embedding="id", sasrec=SASRecConfig(hidden_dim=d))
    dream = RecommenderConfig(item_embedding="id", backbone="dreamrec", sasrec=SASRecConfig(hidden_dim=d))
    assert float(build_recommender(sas, n, None).item_vectors().detach().std()) == pytest.approx(d**-0.5, rel=0.02)
    assert float(build_recommender(dream, n, None).item_vectors().detach().std()) == pytest.approx(1.0, rel=0.02)
    explicit = RecommenderConfig(
        item_embedding="id", backbone="dreamrec", sasrec=SASRecConfig(hidden_dim=d), id_std=0.3
    )
    assert float(build_recommender(explicit, n, None).item_vectors().detach().std()) == pytest.approx(0.3, rel=0.02)
    with pytest.raises(ValueError, match="id_std"):
        RecommenderConfig(id_std=-1.0)


def test_learning_rate_defaults_by_backbone() -> None:
    assert TrainConfig(data="x").learning_rate() == 1e-3
    assert TrainConfig(data="x", backbone="dreamrec").learning_rate() == 1e-4
    assert TrainConfig(data="x", backbone="dreamrec", lr=5e-4).learning_rate() == 5e-4
    with pytest.raises(ValueError, match="lr must be"):
        TrainConfig(data="x", lr=-1.0)
