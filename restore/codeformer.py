"""CodeFormer's forward pass in stages, so that each stage can run in the precision it tolerates.

CodeFormer restores a face in two halves: an encoder and a transformer *choose* one codebook entry for
each of the 16x16 latent cells (a top-1 over 1024 logits), then a generator *paints* the face from those
codes, fused with the encoder's features at 32-256 px by ``fidelity`` (``w``). The halves differ in
how they take reduced precision:

- The choice does not tolerate it. Under bfloat16 autocast near-tied logits flip: on a seeded
  official-layout checkpoint and a real face crop, one flipped code of 256 moved the restored face by
  6.7 grey levels mean, four by 14, and a face on video flickers where a code flips between frames.
  :func:`choose_codes` therefore always runs in float32.
- The painting does: the generator's blocks from 64 to 256 px (about 70 % of its time) run in the
  compute dtype, while the cheap blocks below 64 px (where a rounding error would be magnified by every
  later block) and the full-size ones (memory-bound, barely faster in bfloat16) stay in float32, and so
  does the feature stream between blocks. Measured on that crop: 0.53-0.62 grey levels mean off float32
  over five frames, against 16-20 for the whole network under autocast.

In float32 the staged forward computes exactly what spandrel's ``CodeFormer.forward`` computes (the
tests compare them bit for bit), with ``adain=True`` and the codebook's top-1 as the official
inference does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Generator blocks whose input is in [LOW, HIGH] pixels run in the compute dtype (see the module doc).
REDUCED_PRECISION_INPUT_SIZES = (64, 256)
LATENT_SIDE = 16  # latent cells per side (512 px input / 2**5)
ADAIN_EPS = 1e-5  # CodeFormer's calc_mean_std


@dataclass
class CodeChoice:
    """What the encoder and transformer hand the generator: the quantised features, already
    renormalised to the encoder's statistics (AdaIN), and the encoder's features by size for the fusion."""

    quantised: torch.Tensor  # (N, 256, 16, 16) float32
    encoder_features: dict[str, torch.Tensor]  # "32" / "64" / "128" / "256" -> (N, C, s, s) float32
    codes: torch.Tensor  # (N, 256, 1) int64, the chosen codebook entries


def forward_codeformer_staged(model: torch.nn.Module, x: torch.Tensor, fidelity: float) -> torch.Tensor:
    """CodeFormer on ``x`` ``(N, 3, 512, 512)`` in ``[-1, 1]``: codes in float32, the 64-256 px generator
    blocks in the enclosing autocast's dtype (float32 without one). Returns ``(N, 3, 512, 512)``."""
    return generate_face(model, choose_codes(model, x), fidelity)


def choose_codes(model: torch.nn.Module, x: torch.Tensor) -> CodeChoice:
    """The encoder, the transformer and the top-1 code per latent cell, in float32 whatever autocast is on."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        fused_at = {model.fuse_encoder_block[size]: size for size in model.connect_list}
        features = {}
        for index, block in enumerate(model.encoder.blocks):
            x = block(x)
            if index in fused_at:
                features[fused_at[index]] = x.clone()
        positions = model.position_emb.unsqueeze(1).repeat(1, x.shape[0], 1)
        query = model.feat_emb(x.flatten(2).permute(2, 0, 1))  # (HW, N, C)
        for layer in model.ft_layers:
            query = layer(query, query_pos=positions)
        logits = model.idx_pred_layer(query).permute(1, 0, 2)  # (N, HW, codebook size)
        _, codes = torch.topk(torch.softmax(logits, dim=2), 1, dim=2)
        shape = [x.shape[0], LATENT_SIDE, LATENT_SIDE, model.quantize.emb_dim]
        quantised = model.quantize.get_codebook_feat(codes, shape=shape)
        return CodeChoice(adaptive_instance_normalization(quantised, x), features, codes)


@dataclass(frozen=True)
class GeneratorSegment:
    """Consecutive generator blocks ``[start, stop)`` that run in one precision: ``reduced`` = in the
    compute dtype (their inputs are 64-256 px), else float32."""

    start: int
    stop: int
    reduced: bool


def generator_segments(model: torch.nn.Module) -> list[GeneratorSegment]:
    """The generator's blocks cut where their precision changes (below 64 px, 64-256 px, 512 px)."""
    low, high = REDUCED_PRECISION_INPUT_SIZES
    segments: list[GeneratorSegment] = []
    for index, side in enumerate(block_input_sides(model)):
        reduced = low <= side <= high
        if segments and segments[-1].reduced == reduced:
            segments[-1] = GeneratorSegment(segments[-1].start, index + 1, reduced)
        else:
            segments.append(GeneratorSegment(index, index + 1, reduced))
    return segments


def block_input_sides(model: torch.nn.Module) -> list[int]:
    """The side in pixels of each generator block's input: the latent side, doubled by every upsampling
    block before it (spandrel's ``Upsample``)."""
    sides, side = [], LATENT_SIDE
    for block in model.generator.blocks:
        sides.append(side)
        if type(block).__name__ == "Upsample":
            side *= 2
    return sides


def generate_face(model: torch.nn.Module, choice: CodeChoice, fidelity: float) -> torch.Tensor:
    """The generator from ``choice``, fusing the encoder's features after the connected blocks; the
    reduced-precision segment under the enclosing autocast, the others in float32."""
    x = choice.quantised
    autocast_on = torch.is_autocast_enabled(x.device.type)
    for segment in generator_segments(model):
        with torch.autocast(x.device.type, enabled=autocast_on and segment.reduced):
            x = run_generator_segment(model, segment, x, choice.encoder_features, fidelity)
    return x


def run_generator_segment(
    model: torch.nn.Module,
    segment: GeneratorSegment,
    x: torch.Tensor,
    encoder_features: dict[str, torch.Tensor],
    fidelity: float | torch.Tensor,
) -> torch.Tensor:
    """``segment``'s blocks on ``x``, each output fused with the encoder's feature of its size where the
    block is connected and cast to float32 (the stream between blocks). ``fidelity`` may be a 0-d tensor
    (an input of a converted graph); a float 0 skips the fusion, which then adds exactly nothing."""
    fuse_after = {model.fuse_generator_block[size]: size for size in model.connect_list}
    for index in range(segment.start, segment.stop):
        x = model.generator.blocks[index](x)
        if index in fuse_after and (isinstance(fidelity, torch.Tensor) or fidelity > 0):
            size = fuse_after[index]
            x = model.fuse_convs_dict[size](encoder_features[size], x, fidelity)
        x = x.float()
    return x


def adaptive_instance_normalization(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """``content`` with each channel moved to the mean and standard deviation of ``style``'s channel
    (unbiased variance plus CodeFormer's epsilon, as its ``calc_mean_std``)."""
    content_mean, content_std = _channel_mean_std(content)
    style_mean, style_std = _channel_mean_std(style)
    return (content - content_mean) / content_std * style_std + style_mean


def _channel_mean_std(feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, c = feature.shape[:2]
    flat = feature.reshape(n, c, -1)
    std = (flat.var(dim=2) + ADAIN_EPS).sqrt().view(n, c, 1, 1)
    return flat.mean(dim=2).view(n, c, 1, 1), std
