"""Masked-diffusion training: restore the masked positions of a corrupted window.

The loss is the cross-entropy over the selected positions only, averaged over masked tokens. Only
the hidden states of those positions reach the LM head, so no (B, T, V) logits are computed.
Batches mix the curriculum's stages; every row remembers its stage, so evaluation reports each
stage exactly.
"""

import math

import torch
import torch.nn.functional as F

from trainer.batches import TokenWindows
from trainer.curriculum import Curriculum, Stage
from trainer.objectives.base import Batch, Objective
from trainer.vocab import Vocabulary

SNR_CLAMP = 100.0


class UnmaskingObjective(Objective):
    def __init__(self, curriculum: Curriculum, vocab: Vocabulary):
        self.curriculum, self.vocab = curriculum, vocab

    def make_batch(self, windows: TokenWindows, rows: int, generator: torch.Generator, stage: int = 0) -> Batch:
        plan = [(i, self.curriculum.train[i], n) for i, n in self.curriculum.training_rows(stage, rows)]
        return self._assemble(*self._masked_rows(windows, plan, generator))

    def validation_set(self, windows: TokenWindows, samples: int, batch_size: int,
                       generator: torch.Generator) -> list[Batch]:
        """Equal samples for every validation stage (rounded up), packed into batches of batch_size."""
        stages = self.curriculum.validation
        per_stage = math.ceil(samples / len(stages))
        rows = self._masked_rows(windows, [(i, stage, per_stage) for i, stage in enumerate(stages)], generator)
        return [self._assemble(*(part[start:start + batch_size] for part in rows))
                for start in range(0, len(rows[0]), batch_size)]

    def _masked_rows(self, windows: TokenWindows, plan: list[tuple[int, Stage, int]], generator: torch.Generator):
        """Sample and mask `n` windows for each (stage index, stage, n) of the plan."""
        tokens, corrupted, mask, row_stage = [], [], [], []
        for index, stage, n in plan:
            x = windows.sample(n, generator)
            masked = stage.strategy(x, mask_id=self.vocab.mask_id, base_vocab_size=self.vocab.base_size,
                                    generator=generator)
            tokens.append(x), corrupted.append(masked.corrupted), mask.append(masked.mask)
            row_stage.append(torch.full((n,), index))
        return torch.cat(tokens), torch.cat(corrupted), torch.cat(mask), torch.cat(row_stage)

    @staticmethod
    def _assemble(tokens, corrupted, mask, row_stage) -> Batch:
        # The flat indices are found here, on the CPU side of the stream, so the training step
        # gathers masked positions without a device-to-host sync.
        predict_at = mask.flatten().nonzero().squeeze(1)
        return Batch(inputs=corrupted, targets=tokens.flatten()[predict_at], predict_at=predict_at,
                     mask=mask, row_stage=row_stage)

    def loss(self, model, batch: Batch) -> torch.Tensor:
        logits = model(batch.inputs, predict_at=batch.predict_at)
        # A batch without a single masked position contributes zero loss (and zero gradient).
        return F.cross_entropy(logits.float(), batch.targets, reduction="sum") / max(batch.num_targets, 1)

    @torch.no_grad()
    def evaluate(self, model, batches: list[Batch]) -> dict[str, float]:
        """Overall metrics (token-weighted) and the same metrics for every validation stage."""
        per_token, per_row = self._collect(model, batches)
        metrics = self._summary(per_token, per_row)
        for stage in range(len(self.curriculum.validation)):
            in_stage = self._summary({k: v[per_token["stage"] == stage] for k, v in per_token.items()},
                                     {k: v[per_row["stage"] == stage] for k, v in per_row.items()})
            metrics.update({f"stage_{stage}_{name}": value for name, value in in_stage.items()})
        values = torch.stack(list(metrics.values())).tolist()  # one host sync for all metrics
        return dict(zip(metrics, values))

    def _collect(self, model, batches: list[Batch]) -> tuple[dict, dict]:
        """Per masked token: loss, p(correct), signal-to-noise, top-1 hit, stage. Per row: ratio, stage."""
        token_parts, row_parts = [], []
        for batch in batches:
            logits = model(batch.inputs, predict_at=batch.predict_at).float()
            probs = logits.softmax(-1)
            p_true = probs.gather(1, batch.targets[:, None]).squeeze(1)
            p_wrong = probs.scatter(1, batch.targets[:, None], 0.0).amax(1)
            token_parts.append({
                "loss": F.cross_entropy(logits, batch.targets, reduction="none"),
                "p_correct": p_true,
                "snr": (p_true / (p_wrong + 1e-10)).clamp(max=SNR_CLAMP),
                "correct": (logits.argmax(-1) == batch.targets).float(),
                "stage": batch.row_stage[batch.predict_at // batch.inputs.size(1)],
            })
            row_parts.append({"ratio": batch.mask.float().mean(1), "stage": batch.row_stage})
        concat = lambda parts: {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return concat(token_parts), concat(row_parts)

    def _summary(self, per_token: dict, per_row: dict) -> dict[str, torch.Tensor]:
        p_correct = per_token["p_correct"].mean()
        return {
            "loss": per_token["loss"].mean(),  # token-weighted
            "p_correct": p_correct,
            "model_vs_random": p_correct * self.vocab.size,
            "accuracy": per_token["correct"].mean(),
            "snr_mean": per_token["snr"].mean(),
            "snr_median": _median(per_token["snr"]),
            "mask_ratio_mean": per_row["ratio"].mean(),
            "mask_ratio_min": per_row["ratio"].min(),
            "mask_ratio_max": per_row["ratio"].max(),
        }


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median, or NaN for a stage that masked nothing (torch.median rejects empty input)."""
    return values.median() if values.numel() else values.new_tensor(math.nan)
