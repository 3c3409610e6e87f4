"""Masked-diffusion training: restore the masked positions of a corrupted window.

The loss is the cross-entropy over the selected positions only, averaged over masked tokens. Only
the hidden states of those positions reach the LM head, so no (B, T, V) logits are computed.
"""

import torch
import torch.nn.functional as F

from masking import MaskingStrategy
from trainer.batches import TokenWindows
from trainer.objectives.base import Batch, Objective
from trainer.vocab import Vocabulary

SNR_CLAMP = 100.0


class UnmaskingObjective(Objective):
    def __init__(self, strategy: MaskingStrategy, vocab: Vocabulary):
        self.strategy, self.vocab = strategy, vocab

    def make_batch(self, windows: TokenWindows, rows: int, generator: torch.Generator) -> Batch:
        tokens = windows.sample(rows, generator)
        masked = self.strategy(tokens, mask_id=self.vocab.mask_id, base_vocab_size=self.vocab.base_size,
                               generator=generator)
        # The flat indices are found here, on the CPU side of the stream, so the training step
        # gathers masked positions without a device-to-host sync.
        predict_at = masked.mask.flatten().nonzero().squeeze(1)
        return Batch(inputs=masked.corrupted, targets=tokens.flatten()[predict_at],
                     predict_at=predict_at, mask=masked.mask)

    def loss(self, model, batch: Batch) -> torch.Tensor:
        logits = model(batch.inputs, predict_at=batch.predict_at)
        # A batch without a single masked position contributes zero loss (and zero gradient).
        return F.cross_entropy(logits.float(), batch.targets, reduction="sum") / max(batch.num_targets, 1)

    @torch.no_grad()
    def evaluate(self, model, batches: list[Batch]) -> dict[str, float]:
        losses, p_correct, snr, correct, ratios = [], [], [], [], []
        for batch in batches:
            logits = model(batch.inputs, predict_at=batch.predict_at).float()
            losses.append(F.cross_entropy(logits, batch.targets, reduction="none"))
            probs = logits.softmax(-1)
            p_true = probs.gather(1, batch.targets[:, None]).squeeze(1)
            p_wrong = probs.scatter(1, batch.targets[:, None], 0.0).amax(1)
            p_correct.append(p_true)
            snr.append((p_true / (p_wrong + 1e-10)).clamp(max=SNR_CLAMP))
            correct.append(logits.argmax(-1) == batch.targets)
            ratios.append(batch.mask.float().mean(1))
        p_correct, snr, ratios = torch.cat(p_correct), torch.cat(snr), torch.cat(ratios)
        metrics = {
            "loss": torch.cat(losses).mean(),  # token-weighted over the whole set
            "p_correct": p_correct.mean(),
            "model_vs_random": p_correct.mean() * self.vocab.size,
            "accuracy": torch.cat(correct).float().mean(),
            "snr_mean": snr.mean(),
            "snr_median": snr.median(),
            "mask_ratio_mean": ratios.mean(),
            "mask_ratio_min": ratios.min(),
            "mask_ratio_max": ratios.max(),
        }
        values = torch.stack(list(metrics.values())).tolist()  # one host sync for all metrics
        return dict(zip(metrics, values))
