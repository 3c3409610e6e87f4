"""GPT-style language model: a transformer trunk (under ``transformer.``) plus a tied LM head.

The trunk lives entirely in ``self.transformer`` so that its state-dict entries share the
``transformer.`` prefix and can be moved between models with different heads.
"""

import dataclasses
import math

import torch
from torch import nn

from .blocks import Block, layer_norm
from .config import GPTConfig

INIT_STD = 0.02


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()  # the config may have been edited after construction
        # A private copy, so crop_block_size never edits a config the caller still holds.
        self.config = dataclasses.replace(config)

        trunk = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.positions == "learned":
            trunk["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        trunk["drop"] = nn.Dropout(config.dropout)
        trunk["h"] = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        trunk["ln_f"] = layer_norm(config)
        self.transformer = nn.ModuleDict(trunk)

        if config.head == "lm":
            # Tied input/output embeddings: fewer parameters, and a small char-level vocabulary
            # gains nothing from separate matrices.
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.lm_head.weight = self.transformer.wte.weight
        elif config.head == "token_classifier":
            self.classifier_head = nn.Linear(config.n_embd, config.num_classes, bias=False)
        else:
            # reads the hidden state of the first position, where the input holds [CLS]
            self.scorer_head = nn.Linear(config.n_embd, 1, bias=True)

        self.apply(self._init_weights)
        # Scale down the projections that write into the residual stream: each block adds two
        # of them, so without this the stream's variance grows with depth (GPT-2 scheme).
        proj_std = INIT_STD / math.sqrt(2 * config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=proj_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> final trunk activations (B, T, n_embd), after ln_f."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        seq_len = idx.size(1)
        if seq_len > self.config.block_size:
            raise ValueError(f"sequence length {seq_len} exceeds block_size {self.config.block_size}")
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            positions = torch.arange(seq_len, dtype=torch.long, device=idx.device)
            x = x + self.transformer.wpe(positions)  # (T, C) broadcasts over the batch
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, predict_at: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position logits (B, T, V or classes), or (N, ...) for the N flat positions
        ``b * T + t`` in ``predict_at``; for the sequence scorer, scores in (0, 1) of shape (B,).

        Selecting positions before the head avoids computing logits nobody reads, which
        matters when only a few positions per sequence carry a loss (e.g. masked tokens).
        """
        hidden = self.hidden_states(idx)
        if self.config.head == "sequence_scorer":
            return torch.sigmoid(self.scorer_head(hidden[:, 0]).squeeze(-1))
        if predict_at is not None:
            if predict_at.dim() != 1:
                raise ValueError(f"predict_at must be a 1-D tensor of flat indices, got {tuple(predict_at.shape)}")
            # index_select with precomputed indices keeps the output shape known on the host;
            # a boolean mask would force a device->host sync to learn how many rows survive.
            hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, predict_at)
        head = self.lm_head if self.config.head == "lm" else self.classifier_head
        return head(hidden)

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The transformer trunk: everything under ``transformer.`` (with a tied LM head, its weight too)."""
        return list(self.transformer.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        trunk = {id(p) for p in self.trunk_parameters()}
        return [p for p in self.parameters() if id(p) not in trunk]

    def num_params(self, exclude_positional: bool = True) -> int:
        """Unique parameter count (the tied embedding once), optionally without wpe.

        Learned position embeddings are excluded by default because they cost no matmul
        FLOPs, so leaving them out gives the count that FLOP estimates should use.
        """
        total = sum(p.numel() for p in self.parameters())  # parameters() dedups tied weights
        if exclude_positional and "wpe" in self.transformer:
            total -= self.transformer.wpe.weight.numel()
        return total

    def param_groups(
        self, weight_decay: float, params: list[nn.Parameter] | None = None, prefix: str = ""
    ) -> list[dict]:
        """Optimizer groups: matrices (and embeddings) decay; biases and norm gains do not.

        Only trainable parameters are included (of ``params``, default all), each exactly once
        (the tied embedding is one parameter). Both groups are always returned, possibly empty,
        so callers can rely on the names (``prefix`` + "decay" / "no_decay").
        """
        decay, no_decay = [], []
        for param in self.parameters() if params is None else params:
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
        return [
            {"name": f"{prefix}decay", "params": decay, "weight_decay": weight_decay},
            {"name": f"{prefix}no_decay", "params": no_decay, "weight_decay": 0.0},
        ]

    def estimate_flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the matmuls (forward + backward) plus attention.

        The attention term, 12 * L * H * Q * T, counts the score and weighted-sum matmuls
        over a full block of T tokens (PaLM appendix B).
        """
        cfg = self.config
        n = self.num_params()
        attention = 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * cfg.block_size
        return float(6 * n + attention)

    @torch.no_grad()
    def crop_block_size(self, block_size: int) -> None:
        """Shrink the maximum sequence length, e.g. to fine-tune on shorter contexts."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in [1, {self.config.block_size}], got {block_size}")
        self.config.block_size = block_size
        if "wpe" in self.transformer:
            wpe = self.transformer.wpe
            wpe.weight = nn.Parameter(wpe.weight[:block_size].clone(), requires_grad=wpe.weight.requires_grad)
            wpe.num_embeddings = block_size
        for block in self.transformer.h:
            block.attn.crop_block_size(block_size)


def estimate_mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s as a fraction of the hardware's peak FLOP/s."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return flops_per_token * tokens_per_second / peak_flops
