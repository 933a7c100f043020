"""The paper's SASRec baselines (MoRec, WhitenRec, UniSRec, RLMRec-Con/-Gen, LLM-ESR) as item embeddings:
modules on tiny tensors, then tiny end-to-end trainings through the real pipeline, artifact and service.

The end-to-end runs use a precomputed embedding matrix (the `npy:` encoder) instead of MiniLM: the tests
then know E exactly, which is what fold-in must reproduce, and no language model is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch.nn import functional as F

from cli.main import build_parser
from model.artifact import Artifact, load_artifact
from model.item_embeddings import (
    UNISREC_EXPERTS,
    AlphaFuseEmbedding,
    FoldInUnsupported,
    LLMESREmbedding,
    RLMRecEmbedding,
    UniSRecEmbedding,
)
from model.projection import identity_projection
from model.recommender import RecommenderConfig, SequentialRecommender, build_recommender
from model.sasrec import SASRec, SASRecConfig
from service.app import create_app
from service.errors import FoldInUnavailable
from service.ranker import NewItem, Query, Ranker
from service.settings import ServiceSettings
from service.store import StoredItem
from tests.conftest import write_tiny_dataset
from training.config import TrainConfig
from training.data import load_dataset
from training.evaluate import case_scores, pad_histories
from training.splits import split_loo
from training.train import fit_item_projection, run_training

BASELINES = ["morec", "whitenrec", "unisrec", "rlmrec-con", "rlmrec-gen", "llmesr"]
FOLDABLE = ["morec", "whitenrec", "unisrec", "llmesr"]
H, D_L, N = 8, 12, 10  # module tests: hidden, language width, items

INPUTS = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 5, 6, 7], [8, 9, 10, 1, 2]])
TARGETS = torch.tensor([[0, 2, 3, 4, 5], [0, 0, 6, 7, 8], [9, 10, 1, 2, 3]])


def tiny_cfg(kind: str, **kw: Any) -> RecommenderConfig:
    sas = SASRecConfig(hidden_dim=H, num_blocks=1, num_heads=2, dropout=0.0, max_len=6)
    return RecommenderConfig(item_embedding=kind, sasrec=sas, language_dim=D_L, **kw)  # type: ignore[arg-type]


def tiny_language(seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(N, D_L, generator=torch.Generator().manual_seed(seed)), dim=-1)


def tiny_model(kind: str, **kw: Any) -> SequentialRecommender:
    torch.manual_seed(0)
    model = build_recommender(tiny_cfg(kind, **kw), N, tiny_language())
    assert isinstance(model, SequentialRecommender)
    return model


def expected_item_parameters(kind: str, n: int, d_l: int, h: int) -> int:
    """Trainable parameters of the item embedding alone (the SASRec backbone comes on top)."""
    adapter = d_l * h + h  # Linear(d_l, h)
    mid = (d_l + h) // 2  # RLMRec's MLP width
    return {
        "morec": adapter,
        "whitenrec": adapter,
        # K experts: b_k (d_l) + W_k (d_l x h); gate W_g (d_l x K), no bias; ID table (n x h)
        "unisrec": UNISREC_EXPERTS * (d_l + d_l * h) + d_l * UNISREC_EXPERTS + n * h,
        # ID table + sigma_down: d_l -> mid -> h
        "rlmrec-con": n * h + (d_l * mid + mid) + (mid * h + h),
        # ID table + sigma_up: h -> mid -> d_l + the mask token
        "rlmrec-gen": n * h + (h * mid + mid) + (mid * d_l + d_l) + h,
        # semantic adapter + collaborative ID table
        "llmesr": adapter + n * h,
    }[kind]


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------------
# modules


@pytest.mark.parametrize("kind", BASELINES)
def test_builds_with_a_zero_padding_row_and_the_right_widths(kind: str) -> None:
    model = tiny_model(kind).eval()
    width = 2 * H if kind == "llmesr" else H
    table = model.items()
    assert table.shape == (N + 1, width) and torch.equal(table[0], torch.zeros(width))
    with torch.no_grad():
        assert model.item_vectors().shape == (N, width)
        assert model.user_vectors(INPUTS).shape == (len(INPUTS), width)
        assert case_scores(model, [[1, 2], [3]]).shape == (2, N)


@pytest.mark.parametrize("kind", BASELINES)
def test_a_few_steps_reduce_the_training_loss(kind: str) -> None:
    model = tiny_model(kind)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)

    def loss() -> torch.Tensor:  # the same mask draw each time, so rlmrec-gen's values are comparable
        return model.loss(INPUTS, TARGETS, generator=torch.Generator().manual_seed(0))

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert math.isfinite(first) and loss().item() < first


@pytest.mark.parametrize("kind", BASELINES)
def test_language_is_a_frozen_buffer_that_training_leaves_alone(kind: str) -> None:
    model = tiny_model(kind)
    items = model.items
    before = items.language.clone()  # type: ignore[union-attr]
    assert not any("language" in name for name, _ in model.named_parameters())
    assert not items.language.requires_grad  # type: ignore[union-attr]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.loss(INPUTS, TARGETS).backward()
    opt.step()
    assert torch.equal(items.language, before)  # type: ignore[union-attr]
    # rlmrec's text only trains: it is not part of what an artifact stores
    assert ("items.language" in model.state_dict()) == (not kind.startswith("rlmrec"))


@pytest.mark.parametrize("kind", BASELINES)
def test_parameter_counts_follow_the_formula(kind: str) -> None:
    model = tiny_model(kind)
    backbone = trainable(SASRec(model.cfg.sasrec))
    assert trainable(model.backbone) == backbone
    assert trainable(model.items) == expected_item_parameters(kind, N, D_L, H)
    assert trainable(model) == backbone + expected_item_parameters(kind, N, D_L, H)


@pytest.mark.parametrize("mode", ["con", "gen"])
def test_rlmrec_alignment_is_finite_reaches_the_id_table_and_is_weighted(mode: str) -> None:
    model = tiny_model(f"rlmrec-{mode}", align_weight=0.3)
    items = cast(RLMRecEmbedding, model.items)
    # enough real positions that 15% of them are several items (InfoNCE over one candidate is 0)
    batch = torch.randint(1, N + 1, (8, 6), generator=torch.Generator().manual_seed(0))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    table = items()
    aux = items.aux_loss(table, inputs, targets, model._hidden, torch.Generator().manual_seed(0))
    assert aux is not None and math.isfinite(aux.item()) and aux.item() > 0
    aux.backward()
    assert items.weight.grad is not None and items.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in items.mlp.parameters())
    if mode == "gen":  # the masked positions are re-encoded by the backbone, from the mask token
        assert items.mask_token.grad is not None and items.mask_token.grad.abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    # the recommender adds it with align_weight to the plain next-item loss, which is `id`'s
    gen = torch.Generator().manual_seed(1)
    total = model.loss(inputs, targets, generator=gen)
    table = items()
    plain = model._next_item_loss(table, inputs, targets, None)
    again = items.aux_loss(table, inputs, targets, model._hidden, torch.Generator().manual_seed(1))
    assert again is not None
    torch.testing.assert_close(total, plain + 0.3 * again)


def test_rlmrec_gen_masks_a_share_of_real_positions_and_never_treats_a_duplicate_as_a_negative() -> None:
    model = tiny_model("rlmrec-gen")
    items = cast(RLMRecEmbedding, model.items)
    seen: list[torch.Tensor] = []

    def encode(seq: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        seen.append(seq.detach())
        return model._hidden(seq, real)

    # the same item everywhere: every masked pair is the same item, so only the diagonal may count
    same = torch.tensor([[3, 3, 3, 3, 3, 3]] * 4)
    aux = items.aux_loss(items(), same, same, encode, torch.Generator().manual_seed(0))
    assert aux is not None and aux.item() == pytest.approx(0.0, abs=1e-6)  # one candidate: log(1) = 0
    masked = (seen[0] == items.mask_token.detach()).all(-1)
    assert int(masked.sum()) == max(1, int(24 * 0.15))  # RLMRec's mask ratio for Amazon, of real positions


def test_unisrec_is_the_moe_of_parametric_whitenings_plus_an_id_embedding() -> None:
    model = tiny_model("unisrec")
    items = cast(UniSRecEmbedding, model.items)
    with torch.no_grad():
        items.gate.normal_()
        items.expert_bias.normal_()
        e = items.language
        gates = torch.softmax(e @ items.gate, dim=-1)  # (N, K)
        experts = torch.stack([(e - items.expert_bias[k]) @ items.expert_weight[k] for k in range(UNISREC_EXPERTS)], 1)
        expected = (gates[..., None] * experts).sum(1) + items.ids
        torch.testing.assert_close(items()[1:], expected, rtol=1e-5, atol=1e-6)


def test_llmesr_scores_are_the_sum_of_the_two_views_through_one_shared_encoder() -> None:
    model = tiny_model("llmesr").eval()
    items = cast(LLMESREmbedding, model.items)
    history = torch.tensor([[0, 0, 1, 4, 7]])
    with torch.no_grad():
        table = items()
        sem, col = table[:, :H], table[:, H:]
        h_sem = model.backbone.last_state(F.embedding(history, sem), history > 0)  # the same SASRec weights
        h_col = model.backbone.last_state(F.embedding(history, col), history > 0)
        expected = h_sem @ sem[1:].T + h_col @ col[1:].T
        torch.testing.assert_close(case_scores(model, [[1, 4, 7]]), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.user_vectors(history), torch.cat([h_sem, h_col], 1))


def test_llmesr_collaborative_view_enters_the_user_vector_through_the_encoder() -> None:
    model = tiny_model("llmesr").eval()
    items = cast(LLMESREmbedding, model.items)
    history = torch.tensor([[0, 0, 1, 4, 7]])
    with torch.no_grad():
        before = model.user_vectors(history)
        # item 4's collaborative row; not a constant shift, which the pre-norm LayerNorm would remove
        items.ids[3] += torch.randn(H, generator=torch.Generator().manual_seed(1))
        after = model.user_vectors(history)
    torch.testing.assert_close(after[:, :H], before[:, :H])  # the semantic view does not see it
    assert (after[:, H:] - before[:, H:]).abs().max() > 1e-3
    # and gradient reaches exactly the history's collaborative rows, through the encoder
    items.ids.grad = None
    # a random readout: the sum over features of a LayerNorm output is constant, so its gradient is rounding noise
    readout = torch.randn(2 * H, generator=torch.Generator().manual_seed(2))
    (model.user_vectors(history) @ readout).sum().backward()
    assert items.ids.grad is not None
    touched = set(torch.nonzero(items.ids.grad.abs().sum(1)).flatten().tolist())
    assert touched == {0, 3, 6}


def test_llmesr_collaborative_view_starts_from_the_given_init() -> None:
    init = torch.randn(N, H)
    model = build_recommender(tiny_cfg("llmesr"), N, tiny_language(), collaborative=init)
    torch.testing.assert_close(cast(LLMESREmbedding, model.items).ids.detach(), init)
    with pytest.raises(ValueError, match="collaborative init has shape"):
        build_recommender(tiny_cfg("llmesr"), N, tiny_language(), collaborative=torch.zeros(N, H + 1))
    with pytest.raises(ValueError, match="for item_embedding 'llmesr', not 'morec'"):
        build_recommender(tiny_cfg("morec"), N, tiny_language(), collaborative=init)


@pytest.mark.parametrize("kind", FOLDABLE)
def test_module_fold_in_is_the_forward_rule_on_new_rows(kind: str) -> None:
    model = tiny_model(kind).eval()
    items = model.items
    with torch.no_grad():
        table = items()[1:]
        folded = items.fold_in(items.language, "zeros")  # type: ignore[arg-type]
        mean = items.fold_in(items.language[:2], "mean")  # type: ignore[arg-type, index]
    ids = getattr(items, "ids", None)
    if kind == "unisrec":
        assert ids is not None
        torch.testing.assert_close(folded, table - ids.detach())  # the ID part of a new item is zero
        torch.testing.assert_close(mean, table[:2] - ids.detach()[:2] + ids.detach().mean(0))
    elif kind == "llmesr":
        assert ids is not None
        torch.testing.assert_close(folded[:, :H], table[:, :H])
        assert torch.equal(folded[:, H:], torch.zeros(N, H))
        torch.testing.assert_close(mean[:, H:], ids.detach().mean(0).expand(2, H))
    else:
        torch.testing.assert_close(folded, table)
        torch.testing.assert_close(mean, table[:2])  # no ID part: nothing for "mean" to add
    with pytest.raises(ValueError, match="cold_id"):
        items.fold_in(items.language, "median")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["rlmrec-con", "rlmrec-gen", "id"])
def test_id_row_variants_cannot_fold_in(kind: str) -> None:
    model = build_recommender(tiny_cfg(kind), N, None if kind == "id" else tiny_language())
    with pytest.raises(FoldInUnsupported, match="no language projection" if kind == "id" else "ID rows only"):
        model.items.fold_in(torch.zeros(1, D_L))


def test_baselines_are_sasrec_only_and_align_weight_is_checked() -> None:
    with pytest.raises(ValueError, match="SASRec baseline"):
        RecommenderConfig(item_embedding="morec", backbone="dreamrec")
    with pytest.raises(ValueError, match="SASRec baseline"):
        TrainConfig(data="x", item_embedding="llmesr", backbone="dreamrec")
    with pytest.raises(ValueError, match="align_weight"):
        TrainConfig(data="x", align_weight=-1.0)
    assert (
        TrainConfig(data="x", item_embedding="rlmrec-gen", align_weight=0.5)
        .recommender_config(8, 4, num_items=3)
        .align_weight
        == 0.5
    )
    args = build_parser().parse_args(["train", "--item-embedding", "rlmrec-con", "--align-weight", "0.2"])
    assert (args.item_embedding, args.align_weight) == ("rlmrec-con", 0.2)


def test_language_inputs_per_variant() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 16)).astype(np.float32) * np.linspace(2.0, 0.1, 16, dtype=np.float32)
    ident = identity_projection(emb)
    assert np.array_equal(ident.apply(emb), emb.astype(np.float64))  # Z = E, exactly
    assert (ident.input_dim, ident.output_dim, ident.d_n) == (16, 16, 0)
    for kind in ("morec", "unisrec", "llmesr", "rlmrec-con", "rlmrec-gen"):
        p = fit_item_projection(TrainConfig(data="x", item_embedding=kind, hidden_dim=8), emb, None)
        assert np.array_equal(p.basis, np.eye(16)) and not p.mean.any() and p.language_scale == 1.0
    # whitenrec: every direction kept and whitened, none clipped, at the language scale 1/sqrt(d_l)
    white = fit_item_projection(TrainConfig(data="x", item_embedding="whitenrec", hidden_dim=8), emb, None)
    z = white.apply(emb)
    assert (white.output_dim, white.d_n) == (16, 0)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(16) / 16, atol=1e-9)


# --------------------------------------------------------------------------------------------------------
# end to end: the real pipeline on tiny data with a precomputed embedding matrix

E2E_DIM, E2E_HIDDEN = 16, 8


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny themed dataset and an embedding matrix (E2E_DIM wide) with one direction per theme."""
    root = tmp_path_factory.mktemp("baselines")
    data = write_tiny_dataset(root / "data")
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, E2E_DIM))
    themes = {t: i for i, t in enumerate(dict.fromkeys(i.split("-")[0] for i in ids))}
    emb = np.stack([centres[themes[i.split("-")[0]]] + 0.3 * rng.normal(size=E2E_DIM) for i in ids])
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    np.save(root / "emb.npy", emb)
    (root / "ids.json").write_text(json.dumps(ids))
    return {
        "root": root,
        "data": data,
        "ids": ids,
        "emb": emb,
        "encoder": f"npy:{root / 'emb.npy'}:{root / 'ids.json'}",
    }


_ARTIFACTS: dict[str, Path] = {}


def trained(e2e: dict[str, Any], kind: str) -> Path:
    """A tiny artifact of `kind`, trained once per module through `run_training`."""
    if kind not in _ARTIFACTS:
        out = e2e["root"] / "artifacts" / kind
        cfg = TrainConfig(
            data=str(e2e["data"]),
            protocol="loo",
            out=str(out),
            encoder=e2e["encoder"],
            cache_dir="",
            item_embedding=kind,
            epochs=3,
            patience=3,
            hidden_dim=E2E_HIDDEN,
            d_n=4,
            max_len=8,
            batch_size=16,
        )
        run_training(cfg)
        _ARTIFACTS[kind] = out
    return _ARTIFACTS[kind]


@pytest.fixture(scope="module", autouse=True)
def _forget_artifacts() -> Iterator[None]:
    yield
    _ARTIFACTS.clear()


@pytest.mark.parametrize("kind", ["morec", "llmesr", "rlmrec-con", "whitenrec", "unisrec", "rlmrec-gen"])
def test_pipeline_trains_saves_and_reloads(e2e: dict[str, Any], kind: str) -> None:
    path = trained(e2e, kind)
    art = load_artifact(path)
    manifest = art.manifest
    width = 2 * E2E_HIDDEN if kind == "llmesr" else E2E_HIDDEN
    assert manifest["dim"] == width and art.item_table.shape == (len(e2e["ids"]), width)
    assert manifest["recommender"]["language_dim"] == E2E_DIM
    n = len(e2e["ids"])
    backbone = trainable(SASRec(art.model.cfg.sasrec))
    expected = backbone + expected_item_parameters(kind, n, E2E_DIM, E2E_HIDDEN)
    assert manifest["training"]["trainable_parameters"] == expected == trainable(art.model)
    # only the variants that can fold in keep a projection; rlmrec's text trained and is gone
    assert (manifest["projection"] is None) == kind.startswith("rlmrec")
    if art.projection is not None:
        assert art.projection.input_dim == art.projection.output_dim == E2E_DIM
    # the reloaded model scores as the saved table says, and metrics are real numbers
    split = split_loo(load_dataset(e2e["data"]))
    index = {item: row + 1 for row, item in enumerate(art.item_ids)}
    histories = [[index[i] for i in c.history] for c in split.test[:8]]
    np.testing.assert_allclose(
        case_scores(art.model, histories).numpy(),
        case_scores(load_artifact(path).model, histories).numpy(),
        rtol=0,
        atol=0,
    )
    metrics = json.loads((path / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["ndcg@20"] <= 1.0


def test_llmesr_collaborative_view_started_from_the_whitened_pca(e2e: dict[str, Any]) -> None:
    from training.train import prepare, whitened_pca

    cfg = TrainConfig(
        data=str(e2e["data"]),
        protocol="loo",
        encoder=e2e["encoder"],
        cache_dir="",
        item_embedding="llmesr",
        hidden_dim=E2E_HIDDEN,
    )
    prep = prepare(cfg)
    assert prep.language is not None and prep.collaborative is not None
    np.testing.assert_array_equal(prep.language, e2e["emb"])  # the semantic view reads E itself
    expected = whitened_pca(cfg, e2e["emb"], None).apply(e2e["emb"]).astype(np.float32)
    np.testing.assert_array_equal(prep.collaborative, expected)
    assert prep.collaborative.shape == (len(e2e["ids"]), E2E_HIDDEN)


def _text_part(art: Artifact) -> np.ndarray:
    """What fold-in must reproduce for a trained item: its row without the part only training gives it."""
    items = art.model.items
    with torch.no_grad():
        table = items()[1:].numpy()
        if isinstance(items, UniSRecEmbedding):
            return table - items.ids.numpy()
        if isinstance(items, LLMESREmbedding):
            return np.concatenate([table[:, : items.view_dim], np.zeros_like(table[:, items.view_dim :])], 1)
    return table


@pytest.mark.parametrize("kind", FOLDABLE)
def test_service_fold_in_reproduces_the_training_time_vector(e2e: dict[str, Any], kind: str) -> None:
    art = load_artifact(trained(e2e, kind))
    ranker = Ranker(art)  # a precomputed-matrix encoder: new items come with their `embedding`
    rows = [art.item_ids.index(i) for i in ("lego-2", "doll-4", "outdoor-0")]
    new = [NewItem(f"again-{r}", {"title": "x"}, e2e["emb"][r].tolist()) for r in rows]
    # equal up to float32 summation order (a GEMM over 3 rows vs over the catalogue): ~1e-7
    np.testing.assert_allclose(ranker.fold_in(new), _text_part(art)[rows], rtol=1e-5, atol=1e-6)
    mean = Ranker(art, cold_id="mean").fold_in(new[:1])[0]
    ids = getattr(art.model.items, "ids", None)
    if ids is not None:  # unisrec / llmesr: the mean trained ID row stands in for the missing one
        np.testing.assert_allclose(
            mean[-E2E_HIDDEN:] - _text_part(art)[rows[0], -E2E_HIDDEN:], ids.detach().mean(0), rtol=1e-5, atol=1e-6
        )


def test_llmesr_serves_its_double_width_vectors_through_faiss(e2e: dict[str, Any]) -> None:
    art = load_artifact(trained(e2e, "llmesr"))
    ranker = Ranker(art)
    assert ranker.dim == 2 * E2E_HIDDEN and ranker._index.d == 2 * E2E_HIDDEN
    history = ["lego-0", "lego-1", "puzzle-2"]
    rows = [art.item_ids.index(i) + 1 for i in history]
    offline = case_scores(art.model, [rows]).numpy()[0]
    got = dict(ranker.recommend(Query(history, k=ranker.size, exclude_history=False)).items)
    np.testing.assert_allclose([got[i] for i in art.item_ids], offline, rtol=1e-5, atol=1e-5)
    # a cold item folded in and then used inside a history scores as the offline model would
    x = ranker.fold_in([NewItem("cold", {"title": "x"}, e2e["emb"][0].tolist())])
    ranker.apply([StoredItem("cold", {"title": "x"}, x[0], seq=1)])
    with torch.no_grad():
        table = torch.cat([art.model.items(), torch.from_numpy(x)])  # (N + 2, 2 hidden)
        user = art.model.encode_with_table(pad_histories([[rows[0], ranker.row_of("cold")]], ranker.max_len), table)
    expected = (user @ table[1:].T).numpy()[0]
    got = dict(ranker.recommend(Query(["lego-0", "cold"], k=ranker.size, exclude_history=False)).items)
    np.testing.assert_allclose([got[i] for i in ranker.item_ids()], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["rlmrec-con", "rlmrec-gen"])
def test_rlmrec_ranker_refuses_cold_items_with_its_reason(e2e: dict[str, Any], kind: str) -> None:
    art = load_artifact(trained(e2e, kind))
    ranker = Ranker(art)
    assert len(ranker.recommend(Query(["lego-0"], k=3)).items) == 3
    with pytest.raises(FoldInUnavailable, match=f"item_embedding '{kind}'.*ID rows only"):
        ranker.fold_in([NewItem("new", {"title": "x"}, e2e["emb"][0].tolist())])


def test_rlmrec_service_answers_409_and_says_so_once_at_startup(
    e2e: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServiceSettings(artifact=trained(e2e, "rlmrec-con"), store=tmp_path / "store.sqlite3")
    with caplog.at_level(logging.WARNING, logger="service.ranker"), TestClient(create_app(settings)) as client:
        assert client.post("/recommend", json={"history": ["lego-0"], "k": 2}).status_code == 200
        r = client.post("/items", json={"items": [{"item_id": "new", "title": "LEGO Castle"}]})
        assert r.status_code == 409
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "'rlmrec-con'" in detail and "ID rows only" in detail
    said = [rec.getMessage() for rec in caplog.records if "cold items are unavailable" in rec.getMessage()]
    assert len(said) == 1 and "'rlmrec-con'" in said[0]


def test_older_artifacts_without_the_new_config_fields_still_load(e2e: dict[str, Any], tmp_path: Path) -> None:
    path = trained(e2e, "alphafuse")
    old = tmp_path / "old"
    shutil.copytree(path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("language_dim", "align_weight"):
        del manifest["recommender"][key]
    del manifest["training"]["trainable_parameters"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    art, older = load_artifact(path), load_artifact(old)
    assert older.config.language_dim == 0 and older.projection is not None
    with torch.no_grad():
        torch.testing.assert_close(older.model.item_vectors(), art.model.item_vectors(), rtol=0, atol=0)


def test_quality_benchmark_resume_ignores_fields_added_with_their_old_behaviour() -> None:
    """A run recorded before `align_weight` existed still counts as done for the same config."""
    import sys

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(root))
    try:
        from quality import VARIANT_ORDER, comparable
    finally:
        sys.path.remove(str(root))
    new = TrainConfig(data="x", item_embedding="alphafuse").to_dict()
    old = {k: v for k, v in new.items() if k != "align_weight"}
    assert comparable(old) == comparable(new)
    assert comparable({**new, "align_weight": 0.5}) != comparable(new)
    assert set(BASELINES) <= set(VARIANT_ORDER)


# --------------------------------------------------------------------------------------------------------
# AlphaFuse with RLMRec-Gen's masked text reconstruction as a regulariser (`masked_text`)


def test_alphafuse_masked_text_adds_a_weighted_reconstruction_and_leaves_the_item_rows_alone() -> None:
    plain = build_recommender(tiny_cfg("alphafuse", d_n=3), N, tiny_language()[:, :H])
    torch.manual_seed(0)
    cfg = tiny_cfg("alphafuse", d_n=3, masked_text=True, align_weight=0.4)
    model = build_recommender(cfg, N, tiny_language()[:, :H])
    assert isinstance(model, SequentialRecommender) and isinstance(plain, SequentialRecommender)
    items = cast(AlphaFuseEmbedding, model.items)
    # the rows it serves and folds in are AlphaFuse's own: the head and mask token only train
    torch.testing.assert_close(items(), plain.items(), rtol=0, atol=0)
    batch = torch.randint(1, N + 1, (8, 6), generator=torch.Generator().manual_seed(0))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    aux = items.aux_loss(items(), inputs, targets, model._hidden, torch.Generator().manual_seed(0))
    assert aux is not None and math.isfinite(aux.item()) and aux.item() > 0
    aux.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in items.text_head.parameters())
    assert items.mask_token.grad is not None and items.mask_token.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert items.ids.grad is not None and items.ids.grad.abs().sum() > 0  # through the unmasked positions
    model.zero_grad()
    total = model.loss(inputs, targets, generator=torch.Generator().manual_seed(1))
    table = items()
    again = items.aux_loss(table, inputs, targets, model._hidden, torch.Generator().manual_seed(1))
    assert again is not None
    torch.testing.assert_close(total, model._next_item_loss(table, inputs, targets, None) + 0.4 * again)
    # without it there is no auxiliary term at all
    assert plain.items.aux_loss(plain.items(), inputs, targets, plain._hidden, None) is None


def test_masked_text_is_refused_outside_alphafuse_on_sasrec() -> None:
    for kw in ({"item_embedding": "id"}, {"item_embedding": "rlmrec-gen"}, {"backbone": "dreamrec"}):
        with pytest.raises(ValueError, match="masked_text is for item_embedding 'alphafuse'"):
            TrainConfig(data="x", masked_text=True, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="masked_text is for item_embedding 'alphafuse'"):
        RecommenderConfig(item_embedding="llminit", masked_text=True)
    args = build_parser().parse_args(["train", "--masked-text"])
    assert args.masked_text is True


def test_alphafuse_with_masked_text_trains_saves_reloads_and_folds_in(e2e: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "mt"
    cfg = TrainConfig(
        data=str(e2e["data"]), protocol="loo", out=str(out), encoder=e2e["encoder"], cache_dir="",
        item_embedding="alphafuse", masked_text=True, epochs=2, patience=2, hidden_dim=E2E_HIDDEN, d_n=4,
        max_len=8, batch_size=16,
    )
    run_training(cfg)
    art = load_artifact(out)
    assert art.config.masked_text is True and art.projection is not None
    d_s = E2E_HIDDEN - 4
    mid = (E2E_HIDDEN + d_s) // 2
    head = (E2E_HIDDEN * mid + mid) + (mid * d_s + d_s) + E2E_HIDDEN  # text head + mask token
    n = len(e2e["ids"])
    expected = trainable(SASRec(art.model.cfg.sasrec)) + n * 4 + head
    assert art.manifest["training"]["trainable_parameters"] == expected == trainable(art.model)
    # fold-in of a trained item's own text gives its language part, as without the head
    row = art.item_ids.index(e2e["ids"][0])
    z = torch.from_numpy(art.projection.apply(e2e["emb"][:1]).astype(np.float32))
    language = art.model.items.language
    assert isinstance(language, torch.Tensor)
    torch.testing.assert_close(art.model.items.fold_in(z), language[row : row + 1], rtol=1e-5, atol=1e-6)
