"""Mixed precision and the losses both trainers use (computed in float32)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.devices import float16_autocast

autocast = float16_autocast  # ``amp`` is CUDA only: a no-op context on the CPU


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A loss scaler that is active only on CUDA with ``enabled``; elsewhere it passes losses and steps
    through unchanged (``scale`` returns the loss, ``step`` calls ``optimizer.step``)."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def cosine_loss(audio_emb: torch.Tensor, face_emb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The official expert loss: BCE of the cosine similarity of ``(B, 512)`` embeddings vs ``(B, 1)``
    labels in {0, 1}. Computed in float32 outside autocast; the similarity is clamped to [0, 1] (the
    embeddings are non-negative, so only rounding can leave that range)."""
    with torch.autocast(audio_emb.device.type, enabled=False):
        sim = nn.functional.cosine_similarity(audio_emb.float(), face_emb.float())
        return nn.functional.binary_cross_entropy(sim.clamp(0.0, 1.0).unsqueeze(1), label.float())


def bce_logits(logit: torch.Tensor, target_value: float) -> torch.Tensor:
    """Binary cross-entropy of ``sigmoid(logit)`` for logits ``(N, 1)`` against a constant target, in
    float32 from the logits: the same value as BCE on probabilities, but with a finite gradient where a
    float16 sigmoid would have saturated to exactly 0 or 1 (logit above about 8.3 or below about -17)."""
    with torch.autocast(logit.device.type, enabled=False):
        logit = logit.float()
        target = torch.full_like(logit, float(target_value))
        return nn.functional.binary_cross_entropy_with_logits(logit, target)


def scaler_scales(scalers: dict[str, torch.amp.GradScaler | None]) -> dict[str, float]:
    """``{name: current loss scale}`` of each active scaler, for the training log. A scale that keeps
    falling means the scaler is skipping steps on inf/NaN gradients."""
    return {name: float(s.get_scale()) for name, s in scalers.items() if s is not None and s.is_enabled()}
