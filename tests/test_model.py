import math

import numpy as np
import pytest
import torch

from model.item_embeddings import AlphaFuseEmbedding, IDEmbedding
from model.recommender import RecommenderConfig, _sample_negatives, build_recommender
from model.sasrec import SASRec, SASRecConfig


def tiny_cfg(**kw: object) -> RecommenderConfig:
    sas = SASRecConfig(hidden_dim=8, num_blocks=2, num_heads=2, dropout=0.0, max_len=6)
    return RecommenderConfig(sasrec=sas, d_n=3, **kw)  # type: ignore[arg-type]


def test_padding_row_is_zero_and_ids_only_touch_null_space() -> None:
    torch.manual_seed(0)
    language = torch.randn(5, 8)
    emb = AlphaFuseEmbedding(language, d_n=3, id_init="normal")
    table = emb()
    assert torch.equal(table[0], torch.zeros(8))
    torch.testing.assert_close(table[1:, :5], language[:, :5])  # semantic coordinates = language exactly
    # a training step moves only the ID parameters, which live in the last d_n coordinates
    opt = torch.optim.SGD(emb.parameters(), lr=1.0)
    before = emb().detach().clone()
    (emb()[1:] * torch.randn(5, 8)).sum().backward()
    opt.step()
    after = emb().detach()
    assert torch.equal(after[:, :5], before[:, :5])
    assert not torch.equal(after[1:, 5:], before[1:, 5:])
    assert [n for n, p in emb.named_parameters() if p.requires_grad] == ["ids"]


def test_unfrozen_language_is_the_ablation() -> None:
    emb = AlphaFuseEmbedding(torch.randn(4, 6), d_n=2, freeze_language=False)
    assert {n for n, _ in emb.named_parameters()} == {"language", "ids"}


@pytest.mark.parametrize("state", ["residual", "increments"])
def test_sasrec_is_causal_and_padding_invariant(state: str) -> None:
    torch.manual_seed(0)
    cfg = SASRecConfig(hidden_dim=8, num_blocks=2, num_heads=2, dropout=0.0, max_len=6, state=state)
    net = SASRec(cfg).eval()
    seq = torch.randn(1, 4, 8)
    real = torch.ones(1, 4, dtype=torch.bool)
    full = net(seq, real)
    # causality: changing a later item never changes earlier states
    seq2 = seq.clone()
    seq2[0, 3] = torch.randn(8)
    torch.testing.assert_close(net(seq2, real)[0, :3], full[0, :3])
    # prefix equivalence: the state at position j equals the state of the prefix fed alone
    for j in range(4):
        torch.testing.assert_close(net.last_state(seq[:, : j + 1], real[:, : j + 1])[0], full[0, j])
    # left and right padding, with garbage in the padded slots, change nothing
    left = torch.cat([torch.randn(1, 2, 8), seq], dim=1)
    left_real = torch.cat([torch.zeros(1, 2, dtype=torch.bool), real], dim=1)
    right = torch.cat([seq, torch.randn(1, 2, 8)], dim=1)
    right_real = torch.cat([real, torch.zeros(1, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(net.last_state(left, left_real)[0], full[0, 3])
    torch.testing.assert_close(net.last_state(right, right_real)[0], full[0, 3])
    assert torch.equal(net(left, left_real)[0, :2], torch.zeros(2, 8))


def test_increments_state_leaves_the_input_embedding_out() -> None:
    torch.manual_seed(0)
    cfg = SASRecConfig(hidden_dim=8, dropout=0.0, max_len=4, state="increments")
    net = SASRec(cfg).eval()
    for block in net.blocks:  # blocks that add nothing: the state no longer depends on the items
        torch.nn.init.zeros_(block.attn.out.weight), torch.nn.init.zeros_(block.attn.out.bias)
        torch.nn.init.zeros_(block.ffn[-1].weight), torch.nn.init.zeros_(block.ffn[-1].bias)
    real = torch.ones(2, 3, dtype=torch.bool)
    states = net.last_state(torch.randn(2, 3, 8), real)
    torch.testing.assert_close(states[0], states[1])
    residual = SASRec(SASRecConfig(hidden_dim=8, dropout=0.0, max_len=4)).eval()
    residual.load_state_dict(net.state_dict())  # same weights, the state keeps the residual stream
    states = residual.last_state(torch.randn(2, 3, 8), real)
    assert not torch.allclose(states[0], states[1])
    with pytest.raises(ValueError, match="state must be one of"):
        SASRecConfig(hidden_dim=8, state="skip")


def test_sasrec_rejects_empty_history_and_long_windows() -> None:
    net = SASRec(SASRecConfig(hidden_dim=4, max_len=3)).eval()
    with pytest.raises(ValueError, match="at least one real item"):
        net.last_state(torch.randn(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_len"):
        net(torch.randn(1, 4, 4), torch.ones(1, 4, dtype=torch.bool))


def test_user_vectors_read_last_real_item_not_last_slot() -> None:
    torch.manual_seed(0)
    model = build_recommender(tiny_cfg(item_embedding="id"), num_items=9, language=None).eval()
    with torch.no_grad():
        right_padded = model.user_vectors(torch.tensor([[3, 4, 0, 0], [5, 0, 0, 0]]))
        left_padded = model.user_vectors(torch.tensor([[0, 0, 3, 4], [0, 0, 0, 5]]))
    torch.testing.assert_close(right_padded, left_padded)
    assert not torch.allclose(right_padded[0], right_padded[1])


def test_histories_longer_than_window_keep_most_recent() -> None:
    model = build_recommender(tiny_cfg(item_embedding="id"), num_items=20, language=None).eval()
    long = torch.arange(1, 11)[None]  # 10 items, window 6
    with torch.no_grad():
        torch.testing.assert_close(model.user_vectors(long), model.user_vectors(long[:, -6:]))


@pytest.mark.parametrize("loss", ["ce", "sampled-softmax", "infonce", "bce"])
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_losses_are_finite_and_train(loss: str, similarity: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(loss=loss, similarity=similarity, negatives=4, softmax_negatives=6, item_embedding="alphafuse")
    model = build_recommender(cfg, num_items=12, language=torch.randn(12, 8))
    inputs = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5]])
    targets = torch.tensor([[0, 2, 3, 4], [0, 0, 5, 6]])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    first = model.loss(inputs, targets)
    for _ in range(30):
        opt.zero_grad()
        model.loss(inputs, targets).backward()
        opt.step()
    last = model.loss(inputs, targets)
    assert math.isfinite(first.item()) and last.item() < first.item()


def test_ce_loss_matches_manual_softmax() -> None:
    torch.manual_seed(0)
    model = build_recommender(tiny_cfg(loss="ce", item_embedding="id"), 7, None).eval()
    inputs, targets = torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]])
    hidden = model.backbone(model.items()[inputs], inputs > 0)[0]  # (3, D)
    logits = hidden @ model.items()[1:].T
    expected = -torch.log_softmax(logits, -1)[torch.arange(3), targets[0] - 1].mean()
    torch.testing.assert_close(model.loss(inputs, targets), expected)


def test_sampled_softmax_tends_to_full_softmax_ce() -> None:
    """With many logQ-corrected negatives the sampled loss estimates full CE, whatever the sampler."""
    torch.manual_seed(0)
    inputs, targets = torch.tensor([[1, 2, 3], [0, 4, 5]]), torch.tensor([[2, 3, 4], [0, 5, 6]])
    full = build_recommender(tiny_cfg(loss="ce", item_embedding="id"), 9, None).eval()
    expected = full.loss(inputs, targets)
    cfg = tiny_cfg(loss="sampled-softmax", softmax_negatives=200_000, item_embedding="id")
    sampled = build_recommender(cfg, 9, None)
    sampled.load_state_dict(full.state_dict())
    sampled.eval()
    # a skewed sampler: the correction, not the sampler, is what makes the estimate right
    sampled.set_item_popularity(torch.tensor([50.0, 0, 3, 9, 0, 1, 20, 4, 0]))
    got = sampled.loss(inputs, targets, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=0)  # sampling noise at this k is ~3e-3
    with pytest.raises(ValueError, match="popularity"):
        sampled.set_item_popularity(torch.ones(3))


def test_sampled_softmax_state_dict_has_no_sampler() -> None:
    model = build_recommender(tiny_cfg(loss="sampled-softmax", item_embedding="id"), 5, None)
    assert "sampling_probs" not in model.state_dict()


def test_negatives_never_hit_the_target() -> None:
    targets = torch.randint(1, 6, (500,))
    neg = _sample_negatives(targets, 5, 16, torch.Generator().manual_seed(0))
    assert (neg != targets[:, None]).all() and neg.min() >= 1 and neg.max() <= 5
    assert set(neg[targets == 3].unique().tolist()) == {1, 2, 4, 5}


def test_id_embedding_variant_and_config_validation() -> None:
    assert IDEmbedding(4, 8)().shape == (5, 8)
    with pytest.raises(ValueError, match="item_embedding"):
        RecommenderConfig(item_embedding="no-such-variant")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs language"):
        build_recommender(tiny_cfg(), 3, None)
    with pytest.raises(ValueError, match="num_heads"):
        SASRecConfig(hidden_dim=8, num_heads=3)


def test_neighbour_ids_average_the_nearest_trained_items_by_cosine_of_the_semantic_part() -> None:
    from model.item_embeddings import neighbour_ids

    rng = np.random.default_rng(0)
    trained, ids = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    query = np.vstack([trained[4] * 3.0, rng.standard_normal(3)])  # a scaled copy finds item 4 first
    got = neighbour_ids(torch.tensor(query), torch.tensor(trained), torch.tensor(ids), k=2).numpy()
    unit = trained / np.linalg.norm(trained, axis=1, keepdims=True)
    for q, row in zip(query, got, strict=True):
        nearest = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:2]
        np.testing.assert_allclose(row, ids[nearest].mean(0), rtol=1e-5)
    assert np.argsort(-(unit @ query[0]))[0] == 4
    # a catalogue too large for one (C, N) similarity block is searched in blocks, with the same answer
    big = torch.randn(2**23 + 1, 1)
    big_ids = torch.arange(2**23 + 1, dtype=torch.float32).unsqueeze(1)
    signs = torch.tensor([[1.0], [-1.0], [2.0]])
    out = neighbour_ids(signs, big, big_ids, k=1)  # 3 queries, blocks of 1: three blocks
    for row, s in zip(out, signs, strict=True):  # cosine in 1-d is the sign: any item of the query's sign
        assert float(big[int(row.item())].sign()) == float(s.sign())
    # the fused table: a folded-in copy of a trained item's language row gets ids of its neighbours
    emb = AlphaFuseEmbedding(torch.tensor(np.hstack([trained, rng.standard_normal((7, 2))])), d_n=2)
    with torch.no_grad():
        emb.ids.copy_(torch.tensor(ids))
    x = emb.fold_in(emb.language[4:5], "neighbours")
    torch.testing.assert_close(x[0, 3:], emb.language[4, 3:] + emb.split("neighbours").cold_ids_of(x)[0])
    torch.testing.assert_close(x[0, :3], emb.language[4, :3])  # the semantic part is z's, untouched


def test_id_dropout_trains_a_share_of_rows_with_their_neighbours_id_part_and_leaves_eval_alone() -> None:
    from model.item_embeddings import neighbour_ids

    torch.manual_seed(0)
    lang = torch.randn(60, 8)
    emb = AlphaFuseEmbedding(lang, d_n=4, id_dropout=0.5)
    with torch.no_grad():
        emb.ids.normal_()
    emb.train()
    table = emb()[1:]
    replaced = ((table[:, 4:] - lang[:, 4:]) - emb.ids).abs().gt(1e-6).any(1)
    assert 0.25 < replaced.float().mean().item() < 0.75
    for i in torch.nonzero(replaced).squeeze(1).tolist()[:5]:  # v0 of `neighbours`, the item itself left out
        others = [j for j in range(60) if j != i]
        v0 = neighbour_ids(lang[i : i + 1, :4], lang[others, :4], emb.ids[others].detach())
        torch.testing.assert_close(table[i, 4:], lang[i, 4:] + v0[0])
    torch.testing.assert_close(table[:, :4], lang[:, :4])  # the semantic part is never touched
    table.sum().backward()
    assert emb.ids.grad is not None and emb.ids.grad.abs().sum() > 0
    emb.eval()
    torch.testing.assert_close(emb()[1:, 4:], lang[:, 4:] + emb.ids.detach())
    with pytest.raises(ValueError, match="id_dropout"):
        AlphaFuseEmbedding(lang, d_n=4, id_dropout=1.0)
