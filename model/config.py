"""The recommender's configuration: `RecommenderConfig`, the backbone configs it holds and the names it accepts.

Its own module, importing no model code that takes a config, so that the backbones (model/recommender.py,
model/dreamrec.py) and their base class (model/base.py) can all name `RecommenderConfig` while
model/recommender.py builds them: the model package's imports stay acyclic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from model.diffusion import BetaSchedule, ScheduleConfig
from model.item_embeddings import UNISREC_INIT_STD, IdInit
from model.sasrec import SASRecConfig

ItemEmbeddingKind = Literal[
    "alphafuse", "id", "llminit", "whitened-text", "morec", "whitenrec", "unisrec", "rlmrec-con", "rlmrec-gen",
    "llmesr",
]
Backbone = Literal["sasrec", "dreamrec"]
LossKind = Literal["ce", "sampled-softmax", "infonce", "bce"]
Similarity = Literal["dot", "cosine"]
ITEM_EMBEDDINGS: tuple[str, ...] = get_args(ItemEmbeddingKind)
BACKBONES: tuple[str, ...] = get_args(Backbone)
LOSSES: tuple[str, ...] = get_args(LossKind)
# Variants whose item rows are the projection's coordinates Z themselves (plus IDs): their width is Z's.
LANGUAGE_TABLE_VARIANTS: tuple[str, ...] = ("alphafuse", "llminit", "whitened-text")
# The paper's other SASRec baselines: text passes through trained modules (or only shapes training), their
# width is hidden_dim whatever the language input's, and they are defined for the SASRec backbone only.
SASREC_BASELINES: tuple[str, ...] = ("morec", "whitenrec", "unisrec", "rlmrec-con", "rlmrec-gen", "llmesr")


@dataclass(frozen=True)
class DreamRecConfig:
    num_steps: int = 2000  # T, diffusion steps (paper: 2000)
    beta_schedule: BetaSchedule = "linear"  # how beta_t grows with t (paper: linear)
    beta_start: float = 1e-4  # beta at t = 0
    beta_end: float = 0.02  # beta at t = T - 1
    p_uncond: float = 0.1  # probability of training with the null condition (classifier-free guidance)
    guidance: float = 5.0  # w in x0 = (1 + w) f(x_t, c, t) - w f(x_t, null, t)
    sampling_steps: int = 50  # strided DDIM steps at inference, <= num_steps
    denoiser_mult: int = 2  # denoiser MLP inner width = denoiser_mult * D
    time_embed_dim: int = 128  # sinusoidal timestep features (even) before the step MLP
    sample_seed: int = 0  # seeds the single shared starting noise x_{T-1}

    def __post_init__(self) -> None:
        self.schedule()  # ScheduleConfig validates num_steps and the betas
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0.0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance!r}")
        if self.guidance > 0.0 and self.p_uncond == 0.0:
            raise ValueError("guidance > 0 needs an unconditional model: p_uncond must be > 0")
        if isinstance(self.sampling_steps, bool) or not 1 <= self.sampling_steps <= self.num_steps:
            raise ValueError(
                f"sampling_steps must be an integer in [1, num_steps={self.num_steps}], got {self.sampling_steps!r}"
            )
        if self.denoiser_mult < 1:
            raise ValueError(f"denoiser_mult must be >= 1, got {self.denoiser_mult!r}")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even and >= 2, got {self.time_embed_dim!r}")
        if self.sample_seed < 0:
            raise ValueError(f"sample_seed must be >= 0, got {self.sample_seed!r}")

    def schedule(self) -> ScheduleConfig:
        return ScheduleConfig(
            num_steps=self.num_steps, beta_schedule=self.beta_schedule, beta_start=self.beta_start,
            beta_end=self.beta_end,
        )


@dataclass(frozen=True)
class RecommenderConfig:
    item_embedding: ItemEmbeddingKind = "alphafuse"  # how item vectors are made (see item_embeddings.py)
    backbone: Backbone = "sasrec"  # sasrec (discriminative) or dreamrec (diffusion)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)  # also DreamRec's history encoder
    dreamrec: DreamRecConfig = field(default_factory=DreamRecConfig)  # used by backbone "dreamrec" only
    loss: LossKind = "ce"  # SASRec: full softmax CE, sampled softmax (logQ), sampled InfoNCE, or BCE
    negatives: int = 64  # InfoNCE negatives per positive
    softmax_negatives: int = 8192  # sampled softmax: negatives shared by a batch, drawn by popularity
    temperature: float = 0.07  # divides cosine logits; unused for dot similarity
    similarity: Similarity = "dot"  # training and ranking use the same one
    freeze_language: bool = True  # AlphaFuse: language coordinates frozen (False = ablation)
    id_init: IdInit = "zeros"  # AlphaFuse null-space ID initialisation
    # AlphaFuse: share of item rows whose ID part a training step replaces by its neighbours' mean (the
    # `neighbours` cold-ID rule, the item itself left out), so the model learns to rank rows as fold-in makes them.
    id_dropout: float = 0.0
    # Init std of trainable ID rows; 0 = by backbone (see `id_init_std`).
    id_std: float = 0.0
    d_n: int = 64  # AlphaFuse null-space width hosting IDs
    # Width of the language rows the item embedding reads (Z, or E for the adapter baselines); 0 = none, or
    # the item width (artifacts from before the field, whose language rows were always as wide as the items).
    language_dim: int = 0
    align_weight: float = 0.1  # rlmrec-*, masked_text: weight of the alignment loss added to the recommendation loss
    # AlphaFuse: add RLMRec-Gen's masked-item text reconstruction (of the semantic-rich coordinates) as a loss
    masked_text: bool = False

    def __post_init__(self) -> None:
        if self.item_embedding not in ITEM_EMBEDDINGS:
            raise ValueError(f"item_embedding must be one of {ITEM_EMBEDDINGS}, got {self.item_embedding!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {self.similarity!r}")
        if self.negatives <= 0 or self.softmax_negatives <= 0 or self.temperature <= 0:
            raise ValueError("negatives, softmax_negatives and temperature must be positive")
        if not (math.isfinite(self.id_std) and self.id_std >= 0.0):
            raise ValueError(f"id_std must be a finite number >= 0 (0 = by backbone), got {self.id_std!r}")
        if self.backbone == "dreamrec" and self.similarity != "dot":
            raise ValueError(f"dreamrec ranks by inner product: similarity must be 'dot', got {self.similarity!r}")
        if self.backbone != "sasrec" and self.item_embedding in SASREC_BASELINES:
            raise ValueError(f"item_embedding {self.item_embedding!r} is a SASRec baseline: backbone must be 'sasrec'")
        if not (math.isfinite(self.id_dropout) and 0.0 <= self.id_dropout < 1.0):
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout!r}")
        if self.language_dim < 0:
            raise ValueError(f"language_dim must be >= 0, got {self.language_dim!r}")
        if self.masked_text and (self.item_embedding != "alphafuse" or self.backbone != "sasrec"):
            raise ValueError(
                "masked_text is for item_embedding 'alphafuse' on the sasrec backbone (rlmrec-gen has its own), "
                f"not {self.item_embedding!r} on {self.backbone!r}"
            )
        if not (math.isfinite(self.align_weight) and self.align_weight >= 0.0):
            raise ValueError(f"align_weight must be a finite number >= 0, got {self.align_weight!r}")

    def id_init_std(self, item_embedding: str) -> float:
        """The std that trainable ID rows start from.

        SASRec only compares directions through a softmax, so the usual 1/sqrt(D) row norm of ~1 suits it.
        DreamRec regresses x_0 = the target's row under N(0, I) noise, so the rows must live at the noise's
        scale, as in DreamRec's own code: from 1/sqrt(D) the targets sat near zero signal-to-noise and the
        MSE toward a trainable table shrank them to a point (Toys N@20 0.0004, chance level). Unit variance
        only slows that shrinkage; nothing in the plain objective stops it (benchmarks/RESULTS.md).
        AlphaFuse's optional normal init is the method's N(0, 1) at language scale 1; training passes the
        projection's language scale as `id_std` (TrainConfig.recommender_config), keeping IDs at Z's scale.

        The SASRec baselines' ID tables start as `id`'s does (RLMRec's table is `id`'s; LLM-ESR's collaborative
        view only when no PCA init is given), except UniSRec's ID embedding, which keeps UniSRec's own 0.02,
        the scale of its experts' initial output it is added to.
        """
        if self.id_std > 0.0:
            return self.id_std
        if item_embedding == "unisrec":
            return UNISREC_INIT_STD
        if item_embedding in ("id", "rlmrec-con", "rlmrec-gen", "llmesr") and self.backbone == "sasrec":
            return 1.0 / math.sqrt(self.sasrec.hidden_dim)
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecommenderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown recommender config keys: {sorted(unknown)}")
        values = dict(raw)
        if isinstance(values.get("sasrec"), dict):
            values["sasrec"] = SASRecConfig(**values["sasrec"])
        if isinstance(values.get("dreamrec"), dict):
            values["dreamrec"] = DreamRecConfig(**values["dreamrec"])
        return cls(**values)
