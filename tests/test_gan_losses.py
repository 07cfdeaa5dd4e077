"""GAN losses from logits in float32: the official values in float32, finite gradients where a float16
sigmoid saturates, and the loss scale in the training log."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tests.conftest import exact_float32
from wav2lip.models import Wav2LipDiscQual
from wav2lip.training import objectives

# Logits across the range where float32 BCE on probabilities is still accurate.
LOGITS = torch.linspace(-8.0, 8.0, 33).unsqueeze(1)


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_bce_from_logits_has_the_float32_value_of_bce_on_probabilities(target):
    expected = F.binary_cross_entropy(torch.sigmoid(LOGITS), torch.full_like(LOGITS, target))
    torch.testing.assert_close(objectives.bce_logits(LOGITS, target), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("logit", "target"), [(9.0, 0.0), (12.0, 0.0), (-18.0, 1.0)])
def test_saturated_float16_logits_give_the_float32_gradient(logit, target):
    """In float16 sigmoid(9) is exactly 1.0: BCE on that probability has an infinite gradient, and the
    sigmoid's backward turns it into NaN. From the logits the gradient is sigmoid(x) - target."""
    half = torch.tensor([[logit]], dtype=torch.float16, requires_grad=True)
    prob = torch.sigmoid(half).float()
    F.binary_cross_entropy(prob, torch.full_like(prob, target)).backward()
    assert not torch.isfinite(half.grad).all()  # the failure the logits avoid
    half.grad = None
    loss = objectives.bce_logits(half, target)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    expected = torch.sigmoid(torch.tensor(logit)) - target
    torch.testing.assert_close(half.grad.float(), expected.view(1, 1), rtol=1e-3, atol=1e-3)


def test_discriminator_logits_are_its_probability_before_the_sigmoid():
    disc = Wav2LipDiscQual().eval()
    faces = torch.rand(2, 3, 2, 96, 96)
    with torch.no_grad():
        prob, logit = disc(faces), disc(faces, logits=True)
        loss = disc.perceptual_forward(faces)
    assert logit.shape == prob.shape == (4, 1)
    torch.testing.assert_close(torch.sigmoid(logit), prob)
    torch.testing.assert_close(loss, F.binary_cross_entropy(prob, torch.ones_like(prob)))


def test_loss_scales_of_active_scalers_are_logged():
    active = torch.amp.GradScaler("cpu", init_scale=1024.0)
    inactive = torch.amp.GradScaler("cpu", enabled=False)
    scales = objectives.scaler_scales({"loss_scale": active, "disc_loss_scale": inactive, "none": None})
    assert scales == {"loss_scale": 1024.0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 autocast and its loss scaler need CUDA")
def test_a_saturated_discriminator_under_amp_skips_no_step():
    """A discriminator whose logits are far above 8.3 (float16's sigmoid is then 1.0) trains under
    float16 autocast: the scaler finds finite gradients, so its scale stays and the weights move."""
    device = torch.device("cuda")
    disc = Wav2LipDiscQual().to(device)
    with torch.no_grad():
        disc.binary_pred[0].bias.fill_(30.0)
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-4)
    scaler = objectives.make_scaler(device, True)
    before = disc.binary_pred[0].bias.detach().clone()
    with exact_float32():
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            with objectives.autocast(device, True):
                loss = objectives.bce_logits(
                    disc(torch.rand(2, 3, 2, 96, 96, device=device), logits=True), 0.0
                )
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            assert scaler.get_scale() >= scale, "the scaler skipped a step (inf/NaN gradients)"
    assert torch.isfinite(loss) and not torch.equal(disc.binary_pred[0].bias, before)


def test_exact_float32_turns_tf32_off_and_restores_it():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with exact_float32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved


@pytest.mark.gpu
def test_gpu_tests_run_without_tf32():
    """The conftest fixture applies to every ``gpu`` test (this one needs no GPU to show it)."""
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
