"""Wav2Lip networks: official parameter layout, forward contracts, loading through our loaders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.errors import MissingWeightsError, WrongModelError
from tests.conftest import load_layout
from wav2lip import identify_checkpoint, load_discriminator, load_generator, load_syncnet
from wav2lip.face_input import syncnet_face_input
from wav2lip.models import SyncNet, Wav2Lip, Wav2LipDiscQual

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

MODELS = {
    "wav2lip_generator": (Wav2Lip, "wav2lip_generator", load_generator),
    "syncnet_expert": (SyncNet, "syncnet_color_expert", load_syncnet),
    "wav2lip_disc_qual": (Wav2LipDiscQual, "wav2lip_disc_qual", load_discriminator),
}


def fan_in_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights scaled by 1/sqrt(fan-in) and non-trivial batch-norm statistics.

    Unlike a fixed scale this keeps activations O(1) through the deep nets, so outputs vary with their
    inputs (a fixed 0.05 scale leaves the generator's audio path dead and the discriminator saturated).
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = 1.0 + 0.1 * torch.rand(value.shape, generator=gen)
        elif key.endswith(("running_mean", "bias")):
            out[key] = 0.05 * noise
        elif value.dim() == 4:  # conv / transposed-conv kernel
            out[key] = noise / math.sqrt(value[0].numel())
        else:  # batch-norm scale
            out[key] = 1.0 + 0.1 * noise
    return out


@pytest.fixture(scope="module")
def seeded_models() -> dict[str, torch.nn.Module]:
    """One eval-mode module of each network with seeded weights (distinct seeds)."""
    models = {}
    for seed, (kind, (cls, _, _)) in enumerate(MODELS.items()):
        module = cls()
        module.load_state_dict(fan_in_state_dict(module, seed=seed + 1))
        models[kind] = module.eval()
    return models


def _sample_inputs(kind: str, batch: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(7)
    mel = torch.rand(batch, 1, 80, 16, generator=gen) * 8 - 4
    if kind == "wav2lip_generator":
        return mel, torch.rand(batch, 6, 96, 96, generator=gen)
    if kind == "syncnet_expert":
        return mel, torch.rand(batch, 15, 48, 96, generator=gen)
    return (torch.rand(batch, 3, 2, 96, 96, generator=gen),)


def _outputs(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(*inputs)
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("kind", list(MODELS))
def test_state_dict_matches_official_layout(kind):
    cls, layout_name, _ = MODELS[kind]
    with torch.device("meta"):
        module = cls()
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()}
    official = {k: (v["shape"], v["dtype"]) for k, v in load_layout(layout_name).items()}
    assert sorted(ours) == sorted(official)
    assert ours == official


def test_generator_single_frame_contract(seeded_models):
    mel, faces = _sample_inputs("wav2lip_generator", batch=3)
    out = _outputs(seeded_models["wav2lip_generator"], (mel, faces))[0]
    assert out.shape == (3, 3, 96, 96)
    assert out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 0  # depends on its input, not a constant


def test_generator_sequence_form_equals_frame_by_frame(seeded_models):
    model = seeded_models["wav2lip_generator"]
    gen = torch.Generator().manual_seed(3)
    mels = torch.rand(2, 2, 1, 80, 16, generator=gen) * 8 - 4  # (B, T, 1, 80, 16)
    faces = torch.rand(2, 6, 2, 96, 96, generator=gen)  # (B, 6, T, 96, 96)
    seq = _outputs(model, (mels, faces))[0]
    assert seq.shape == (2, 3, 2, 96, 96)
    for t in range(2):
        frame = _outputs(model, (mels[:, t], faces[:, :, t]))[0]
        torch.testing.assert_close(seq[:, :, t], frame, atol=1e-5, rtol=0)


def test_generator_output_depends_on_audio(seeded_models):
    model = seeded_models["wav2lip_generator"]
    mel, faces = _sample_inputs("wav2lip_generator", batch=1)
    a = _outputs(model, (mel, faces))[0]
    b = _outputs(model, (torch.full_like(mel, -4.0), faces))[0]
    assert (a - b).abs().max() > 1e-3


def test_syncnet_embeddings_are_unit_vectors(seeded_models):
    audio_emb, face_emb = _outputs(seeded_models["syncnet_expert"], _sample_inputs("syncnet_expert", 3))
    assert audio_emb.shape == (3, 512) and face_emb.shape == (3, 512)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(face_emb.norm(dim=1), torch.ones(3))


def test_syncnet_face_input_takes_lower_halves_in_time_order():
    faces = torch.zeros(1, 3, 5, 96, 96)
    for t in range(5):
        faces[:, :, t, 48:] = t + 1  # lower half of frame t
        faces[:, :, t, :48] = -1  # upper half must be dropped
    x = syncnet_face_input(faces)
    assert x.shape == (1, 15, 48, 96)
    for t in range(5):
        assert torch.all(x[:, 3 * t : 3 * t + 3] == t + 1)


def test_discriminator_judges_only_the_lower_half(seeded_models):
    disc = seeded_models["wav2lip_disc_qual"]
    (faces,) = _sample_inputs("wav2lip_disc_qual", batch=2)
    base = _outputs(disc, (faces,))[0]
    assert base.shape == (4, 1)  # (T * B, 1)
    upper = faces.clone()
    upper[:, :, :, :48] = 0.5
    torch.testing.assert_close(_outputs(disc, (upper,))[0], base, atol=0, rtol=0)
    lower = faces.clone()
    lower[:, :, :, 48:] = 0.5
    assert not torch.equal(_outputs(disc, (lower,))[0], base)


def test_discriminator_time_major_rows(seeded_models):
    disc = seeded_models["wav2lip_disc_qual"]
    (faces,) = _sample_inputs("wav2lip_disc_qual", batch=2)  # (B=2, 3, T=2, 96, 96)
    out = _outputs(disc, (faces,))[0]
    single = _outputs(disc, (faces[1:2, :, 0:1],))[0]  # clip 1, step 0 -> row 0 * B + 1
    torch.testing.assert_close(out[1:2], single, atol=1e-6, rtol=0)


def test_perceptual_forward_is_bce_against_real(seeded_models):
    disc = seeded_models["wav2lip_disc_qual"]
    (faces,) = _sample_inputs("wav2lip_disc_qual", batch=2)
    with torch.no_grad():
        pred = disc(faces)
        loss = disc.perceptual_forward(faces)
    assert 0.01 < pred.mean() < 0.99
    torch.testing.assert_close(loss, -torch.log(pred).mean())
    torch.testing.assert_close(loss, F.binary_cross_entropy(pred, torch.ones_like(pred)))


@pytest.mark.parametrize(
    ("kind", "wrapped"),
    [
        ("wav2lip_generator", True),
        ("syncnet_expert", True),
        ("syncnet_expert", False),
        ("wav2lip_disc_qual", True),
        ("wav2lip_disc_qual", False),
    ],
)
def test_loader_reproduces_saved_module_exactly(kind, wrapped, seeded_models, tmp_path):
    source = seeded_models[kind]
    state = source.state_dict()
    if wrapped:  # the official training scripts' layout, saved from a DataParallel model
        payload = {
            "state_dict": {"module." + k: v for k, v in state.items()},
            "optimizer": None,
            "global_step": 1234,
            "global_epoch": 5,
        }
    else:
        payload = dict(state)
    path = tmp_path / f"{kind}.pth"
    torch.save(payload, path)
    loaded = MODELS[kind][2](path, device="cpu")
    path.unlink()
    assert not loaded.training
    assert isinstance(loaded, type(source))
    inputs = _sample_inputs(kind)
    for ours, theirs in zip(_outputs(loaded, inputs), _outputs(source, inputs)):
        assert torch.equal(ours, theirs)


def test_half_precision_copy_loads_as_float32_parameters(seeded_models, tmp_path):
    source = seeded_models["wav2lip_generator"]
    path = tmp_path / "wav2lip_half.pth"
    half = {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    torch.save({"state_dict": half}, path)
    loaded = load_generator(path, device="cpu")
    assert all(isinstance(p, torch.nn.Parameter) and p.dtype == torch.float32 for p in loaded.parameters())
    counters = [b for name, b in loaded.named_buffers() if name.endswith("num_batches_tracked")]
    assert counters and all(b.dtype == torch.int64 for b in counters)
    weight = loaded.face_encoder_blocks[0][0].conv_block[0].weight
    expected = source.face_encoder_blocks[0][0].conv_block[0].weight.half().float()
    assert torch.equal(weight, expected)


def test_generator_loader_names_the_syncnet_file(seeded_models, tmp_path):
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": seeded_models["syncnet_expert"].state_dict()}, path)
    with pytest.raises(WrongModelError, match="lip-sync expert"):
        load_generator(path)


def test_syncnet_loader_names_the_generator_file(seeded_models, tmp_path):
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": seeded_models["wav2lip_generator"].state_dict()}, path)
    with pytest.raises(WrongModelError, match="Wav2Lip generator"):
        load_syncnet(path)


def test_generator_loader_names_a_gfpgan_file(tmp_path):
    # Official GFPGAN key names (tiny tensors: only the names identify the network).
    names = load_layout("gfpgan_v1_clean_512")
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": {k: torch.zeros(1) for k in names}}, path)
    with pytest.raises(WrongModelError, match="GFPGAN"):
        load_generator(path)


def test_modified_generator_is_refused_with_the_difference(seeded_models, tmp_path):
    state = dict(seeded_models["wav2lip_generator"].state_dict())
    del state["output_block.1.bias"]
    state["output_block.1.weight"] = torch.zeros(3, 32, 3, 3)
    path = tmp_path / "wav2lip_variant.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WrongModelError, match=r"1 missing keys.*1 shape mismatches"):
        load_generator(path)


def test_missing_file_is_a_missing_weights_error(tmp_path):
    with pytest.raises(MissingWeightsError):
        load_generator(tmp_path / "nope.pth")


def test_identify_checkpoint(seeded_models):
    for kind, module in seeded_models.items():
        assert identify_checkpoint(module.state_dict()) == kind
    assert identify_checkpoint({k: torch.zeros(1) for k in load_layout("codeformer")}) is None
    partial = dict(seeded_models["wav2lip_disc_qual"].state_dict())
    partial.pop("binary_pred.0.bias")
    assert identify_checkpoint(partial) is None


def _real_weights(name: str) -> Path:
    return WEIGHTS_DIR / name


@pytest.mark.real_weights
@pytest.mark.skipif(not _real_weights("wav2lip_gan.pth").is_file(), reason="weights/wav2lip_gan.pth absent")
def test_real_generator_loads_and_identifies():
    path = _real_weights("wav2lip_gan.pth")
    assert identify_checkpoint(load_state_dict(path)) == "wav2lip_generator"
    model = load_generator(path)
    mel, faces = _sample_inputs("wav2lip_generator", batch=1)
    out = _outputs(model, (mel, faces))[0]
    assert out.shape == (1, 3, 96, 96) and torch.isfinite(out).all()


@pytest.mark.real_weights
@pytest.mark.skipif(
    not _real_weights("lipsync_expert.pth").is_file(), reason="weights/lipsync_expert.pth absent"
)
def test_real_syncnet_loads_and_identifies():
    path = _real_weights("lipsync_expert.pth")
    assert identify_checkpoint(load_state_dict(path)) == "syncnet_expert"
    audio_emb, face_emb = _outputs(load_syncnet(path), _sample_inputs("syncnet_expert", 1))
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generator_on_cuda_matches_cpu(seeded_models):
    model = seeded_models["wav2lip_generator"]
    mel, faces = _sample_inputs("wav2lip_generator", batch=2)
    cpu = _outputs(model, (mel, faces))[0]
    cuda_model = Wav2Lip().cuda().eval()
    cuda_model.load_state_dict(model.state_dict())
    gpu = _outputs(cuda_model, (mel.cuda(), faces.cuda()))[0].cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=0)


def test_inference_form_folds_every_batch_norm_and_computes_the_same(seeded_models, tmp_path):
    from wav2lip import load_generator_for_inference
    from wav2lip.models.fusion import FusedConvReLU, fold_batch_norms, is_folded

    source = seeded_models["wav2lip_generator"]
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    plain, folded = load_generator(path), load_generator_for_inference(path)
    assert not is_folded(plain) and is_folded(folded)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU)) for m in folded.modules())
    assert sum(isinstance(m, FusedConvReLU) for m in folded.modules()) == 50
    inputs = _sample_inputs("wav2lip_generator")
    (reference,) = _outputs(plain, inputs)
    with torch.inference_mode():  # the fused oneDNN operations
        fused = folded(*inputs)
    with torch.enable_grad():  # the same blocks as separate operations (the path off the CPU)
        separate = folded(*inputs).detach()
    assert reference.std() > 0.01
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(separate, reference, atol=1e-5, rtol=1e-4)
    state = folded.state_dict()
    assert fold_batch_norms(folded) is folded and folded.state_dict().keys() == state.keys()  # idempotent


def test_prepacked_onednn_weights_compute_the_same_and_follow_weight_changes(seeded_models, tmp_path):
    from wav2lip import load_generator_for_inference
    from wav2lip.models.fusion import FusedConvReLU

    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": seeded_models["wav2lip_generator"].state_dict()}, path)
    model = load_generator_for_inference(path)
    blocks = [m for m in model.modules() if isinstance(m, FusedConvReLU)]
    keys = model.state_dict().keys()

    def forward(prepack: bool, batch: int) -> torch.Tensor:
        for block in blocks:
            block.prepack = prepack
        with torch.inference_mode():
            return model(*_sample_inputs("wav2lip_generator", batch=batch))

    packed = forward(True, batch=4)
    assert all(block._packed is not None and block._packed[1].is_mkldnn for block in blocks)
    assert model.state_dict().keys() == keys  # the packed copies are not state
    torch.testing.assert_close(packed, forward(False, batch=4), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(forward(True, batch=3), forward(False, batch=3), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # a changed weight is packed again, not served stale
        blocks[0].conv.weight.mul_(-1.0)
    changed = forward(True, batch=4)
    assert (changed - packed).abs().max() > 1e-3
    torch.testing.assert_close(changed, forward(False, batch=4), atol=1e-5, rtol=1e-4)


def test_bfloat16_inference_form_is_within_a_grey_level_of_float32(seeded_models, tmp_path):
    from wav2lip import load_generator_for_inference

    source = seeded_models["wav2lip_generator"]
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    stored = load_generator_for_inference(path, "cpu", "bf16")
    head = stored.output_block[1].layer
    assert head.weight.dtype == torch.float32
    assert {p.dtype for name, p in stored.named_parameters() if not name.startswith("output_block.1.")} == {
        torch.bfloat16
    }
    mel, faces = _sample_inputs("wav2lip_generator", batch=4)
    with torch.inference_mode():
        low = stored(mel.bfloat16(), faces.bfloat16().contiguous(memory_format=torch.channels_last))
    (reference,) = _outputs(source, (mel, faces))
    assert low.dtype == torch.float32
    grey = (low - reference).abs() * 255
    assert grey.mean() < 1.0 and grey.max() < 12, (grey.mean().item(), grey.max().item())
