"""DreamRec (Yang et al., NeurIPS 2023, arXiv 2310.20453): next-item recommendation as guided diffusion.

A causal transformer (model/sasrec.py) encodes the history into a condition c; an MLP denoiser predicts the
target item's embedding x_0 from (x_t, c, t); classifier-free guidance mixes conditional and unconditional
predictions at sampling time; the generated x_0 is ranked against the item table by inner product
(Yang et al., NeurIPS 2023; README "DreamRec"). The schedule maths lives in model/diffusion.py and
`DreamRecConfig` in model/config.py; this file holds only the networks.

Sampling starts from ONE fixed noise vector x_{T-1} drawn from `sample_seed` and shared by every row, and
DDIM with eta = 0 is deterministic, so a history's vector depends on that history alone: the same request
gets the same answer whatever else the service batches with it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from model.base import Recommender
from model.config import RecommenderConfig
from model.diffusion import NoiseSchedule, guided_x0
from model.item_embeddings import ItemEmbedding
from model.sasrec import SASRec


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of integer steps (Vaswani et al. 2017, sec. 3.5, as in DDPM): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([args.sin(), args.cos()], dim=-1)


class Denoiser(nn.Module):
    """f(x_t, c, t) -> predicted x_0: an MLP over [x_t, c, step MLP(sin(t))], as in DreamRec's code.

    The first layer is linear in the concatenation, W [x; c; e(t)] + b = W_x x + W_c c + (W_t e(t) + b), so
    sampling computes the c and t parts once per request and only W_x x_t at each step.
    """

    def __init__(self, dim: int, time_embed_dim: int, mult: int) -> None:
        super().__init__()
        self.dim, self.time_embed_dim = dim, time_embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim),
        )
        self.inp = nn.Linear(3 * dim, mult * dim)  # on [x_t, c, e(t)]
        self.out = nn.Linear(mult * dim, dim)

    def condition_features(self, c: Tensor) -> Tensor:
        """W_c c: (B, D) -> (B, H)."""
        return F.linear(c, self.inp.weight[:, self.dim : 2 * self.dim])

    def step_features(self, t: Tensor) -> Tensor:
        """W_t e(t) + b: (S,) integer steps -> (S, H)."""
        e = self.time_mlp(timestep_embedding(t, self.time_embed_dim))  # (S, D)
        return F.linear(e, self.inp.weight[:, 2 * self.dim :], self.inp.bias)

    def head(self, x_t: Tensor, features: Tensor) -> Tensor:
        """x_0 from x_t (B, D) and condition + step features (k B, H): x_t is shared by the k groups of rows."""
        x = F.linear(x_t, self.inp.weight[:, : self.dim])  # (B, H)
        return self.out(F.gelu(x.repeat(features.shape[0] // x.shape[0], 1) + features))  # (k B, D)

    def forward(self, x_t: Tensor, c: Tensor, t: Tensor) -> Tensor:
        """x_t, c: (B, D); t: (B,). Returns the predicted x_0 (B, D)."""
        return self.head(x_t, self.condition_features(c) + self.step_features(t))


class DreamRec(Recommender):
    def __init__(self, cfg: RecommenderConfig, items: ItemEmbedding) -> None:
        super().__init__()
        dim = cfg.sasrec.hidden_dim
        if items.dim != dim:
            raise ValueError(f"item dim {items.dim} != backbone hidden_dim {dim}")
        if cfg.similarity != "dot":
            raise ValueError(f"DreamRec ranks by inner product; similarity must be 'dot', got {cfg.similarity!r}")
        d = cfg.dreamrec
        self.cfg = cfg
        self.items = items
        self.encoder = SASRec(cfg.sasrec)
        self.null_condition = nn.Parameter(torch.randn(dim))  # (D,) the "no history" condition
        self.denoiser = Denoiser(dim, d.time_embed_dim, d.denoiser_mult)
        self.schedule = NoiseSchedule(d.schedule())
        # Inference-only knob (not saved): the trainer may validate with fewer steps than the artifact uses.
        self.sampling_steps = d.sampling_steps

    def _conditions(self, histories: Tensor, table: Tensor) -> Tensor:
        histories = histories[:, -self.cfg.sasrec.max_len :]
        return self.encoder.last_state(F.embedding(histories, table), histories > 0)  # (B, D)

    def initial_noise(self) -> Tensor:
        """x_{T-1}: one (D,) vector from `sample_seed`, the same for every history and every call."""
        gen = torch.Generator().manual_seed(self.cfg.dreamrec.sample_seed)
        return torch.randn(self.cfg.sasrec.hidden_dim, generator=gen)

    @torch.no_grad()
    def sample(self, c: Tensor, steps: int | None = None) -> Tensor:
        """Guided deterministic DDIM (Song et al. 2021, eq. 12, eta = 0) from the shared x_{T-1}.

        c: (B, D) conditions. Each step runs the denoiser on 2B rows, [c; null], and combines the two halves
        with `guided_x0`. Returns the generated x_0 (B, D).
        """
        steps = self.sampling_steps if steps is None else steps
        w = self.cfg.dreamrec.guidance
        b, dim = c.shape
        x_t = self.initial_noise().to(device=c.device, dtype=c.dtype).expand(b, dim)  # (B, D)
        timesteps = self.schedule.inference_timesteps(steps)  # (S,) from T - 1 down to 0
        conds = c if w == 0.0 else torch.cat([c, self.null_condition.to(c.dtype).expand(b, dim)])  # (2B | B, D)
        cond_feats = self.denoiser.condition_features(conds)  # (2B | B, H), the same at every step
        step_feats = self.denoiser.step_features(timesteps.to(c.device))  # (S, H)
        ts = timesteps.tolist()
        x0 = x_t
        for i, t in enumerate(ts):
            x0 = self.denoiser.head(x_t, cond_feats + step_feats[i])  # (2B | B, D)
            if w != 0.0:
                x0_cond, x0_uncond = x0.chunk(2)
                x0 = guided_x0(x0_cond, x0_uncond, w)
            x_t = self.schedule.ddim_step(x_t, x0, t, ts[i + 1] if i + 1 < len(ts) else None)
        return x0

    def encode_with_table(self, histories: Tensor, table: Tensor) -> Tensor:
        """Generated x_0 (B, D) for each history; history items are embedded from `table` (N' + 1, D)."""
        return self.sample(self._conditions(histories, table))

    def item_vectors(self) -> Tensor:
        """(N, D) fused item rows, unnormalised: DreamRec maps x_0 to items by inner product."""
        return self.items()[1:]

    def loss(self, inputs: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """MSE between f(x_t, c or null, t) and x_0 = table[target] at every position with a target (> 0).

        The causal encoder makes each position's state the condition of its prefix, so one window trains
        every prefix. x_0 is read from the live table, so gradients reach the target's ID coordinates.
        """
        table = self.items()  # (N + 1, D)
        inputs = inputs[:, -self.cfg.sasrec.max_len :]
        targets = targets[:, -self.cfg.sasrec.max_len :]
        hidden = self.encoder(F.embedding(inputs, table), inputs > 0)  # (B, L, D)
        keep = targets > 0
        c = hidden[keep]  # (M, D)
        x0 = F.embedding(targets[keep], table)  # (M, D)
        m, device = x0.shape[0], x0.device
        draw = generator.device if generator is not None else device  # a generator draws on its own device
        t = self.schedule.sample_timesteps(m, generator, device=draw).to(device)  # (M,) in 0..T-1
        noise = torch.randn(x0.shape, generator=generator, device=draw).to(device=device, dtype=x0.dtype)
        drop = (torch.rand(m, generator=generator, device=draw) < self.cfg.dreamrec.p_uncond).to(device)
        c = torch.where(drop[:, None], self.null_condition.expand_as(c), c)
        x_t = self.schedule.add_noise(x0, noise, t)  # Ho et al. 2020, eq. 4
        return F.mse_loss(self.denoiser(x_t, c, t), x0)
