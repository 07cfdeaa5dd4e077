"""Loading a face-restoration checkpoint and running it on aligned 512x512 face crops.

:func:`load_restorer` reads the file with the project's safe loader (``weights_only=True``), lets
spandrel recognise the architecture from the parameter names and rebuild it, and wraps the network in a
:class:`FaceRestorer`. Supported: GFPGAN v1.3 / v1.4 (``GFPGANv1Clean``), CodeFormer and RestoreFormer
(the architectures spandrel and spandrel-extra-arches know). Any other file is a
:class:`~pipeline.core.errors.WrongModelError` that says what the file looks like.

Determinism: the official GFPGAN tool draws fresh StyleGAN noise on every call, so the same face never
comes out the same twice, which flickers on video. Here GFPGAN always uses the noise maps stored in the
checkpoint (``randomize_noise=False``): the output depends only on the input face, not on the random
state, the batch size or the other faces in the batch. CodeFormer and RestoreFormer draw no noise;
CodeFormer chooses its codebook entries in float32 whatever the precision (:mod:`restore.codeformer`),
so reduced precision cannot flip them from one frame to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import spandrel
import spandrel_extra_arches
import torch

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.devices import (
    PRECISION_DTYPES,
    cpu_has_native_bf16,
    place_model,
    precision_autocast,
    resolve_precision,
    to_channels_last,
)
from pipeline.core.errors import ConfigError, WrongModelError
from pipeline.core.finite import NonFiniteFrames
from restore.codeformer import forward_codeformer_staged
from restore.convert import RESTORE_FACE_SIZE, check_faces, faces_to_device, output_to_pixels
from restore.openvino_backend import (
    BACKENDS,
    compile_for_cpu,
    openvino_available,
    openvino_precision,
    use_openvino,
)

# spandrel architecture id -> our name for the restorer
RESTORER_KINDS = {"GFPGAN": "gfpgan", "CodeFormer": "codeformer", "RestoreFormer": "restoreformer"}

# Restorers run channels-last (CodeFormer: 3.0 instead of 3.5 s per face on 2 CPU cores, outputs within
# one grey level). GFPGAN cannot: its network flattens feature maps with view(), which needs the default
# layout.
CHANNELS_LAST_KINDS = frozenset({"codeformer"})

# Checkpoints of this project's other models, recognised by the top-level modules they must all hold.
OTHER_MODEL_SIGNATURES = (
    ("a Wav2Lip generator", {"face_encoder_blocks", "audio_encoder", "face_decoder_blocks"}),
    ("a Wav2Lip visual-quality discriminator", {"face_encoder_blocks", "binary_pred"}),
    ("a Wav2Lip lip-sync expert (SyncNet)", {"face_encoder", "audio_encoder"}),
    ("an S3FD face detector", {"conv3_3_norm_mbox_conf"}),
    ("a RetinaFace face detector", {"ClassHead", "LandmarkHead"}),
    ("a ParseNet face-parsing network", {"out_mask_conv"}),
)


def load_restorer(
    path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32", backend: str = "torch"
) -> FaceRestorer:
    """Load a GFPGAN / CodeFormer / RestoreFormer checkpoint onto ``device``.

    ``precision``: "auto" / "fp32" / "bf16" / "fp16", resolved against spandrel's ``supports_half`` /
    ``supports_bfloat16`` flags (GFPGAN, CodeFormer and RestoreFormer: no float16, which gives black
    blotches and CodeFormer flicker) by :func:`~pipeline.core.devices.resolve_precision`.
    ``backend``: "torch", "openvino" or "auto" (:func:`restore.openvino_backend.use_openvino`: GFPGAN and
    CodeFormer on the CPU run on OpenVINO when it is installed: GFPGAN in float32, CodeFormer's code choice
    in float32 and its 64-256 px generator blocks in the resolved precision).
    Raises ``MissingWeightsError`` / ``WeightsError`` for unreadable files and ``WrongModelError`` for
    files that hold another model.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"restore.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    path = Path(path)
    state = load_state_dict(path, "face restorer")
    descriptor = describe_state_dict(state, path)
    kind = RESTORER_KINDS.get(descriptor.architecture.id)
    if kind is None:
        raise WrongModelError(
            f"{path} holds a {descriptor.architecture.name} {descriptor.purpose} model, not a face "
            "restorer; use GFPGANv1.4.pth, GFPGANv1.3.pth or codeformer.pth"
        )
    model, device = place_model(descriptor.model, device)
    if kind in CHANNELS_LAST_KINDS:
        to_channels_last(model)
    if use_openvino(backend, kind, device, precision):
        if not openvino_available():
            raise ConfigError("restore.backend openvino needs the openvino package (see requirements.txt)")
        chosen = openvino_precision(kind, precision, cpu_has_native_bf16())
        forward = compile_for_cpu(model, _FORWARDS[kind], kind, path, precision=chosen)
        return FaceRestorer(model, kind, device, chosen, forward=forward)
    chosen = resolve_precision(precision, device, descriptor.supports_half, descriptor.supports_bfloat16)
    return FaceRestorer(model, kind, device, chosen)


def describe_state_dict(state: dict[str, torch.Tensor], path: Path) -> spandrel.ModelDescriptor:
    """Let spandrel recognise and rebuild the network in ``state`` (WrongModelError when it cannot)."""
    spandrel_extra_arches.install(ignore_duplicates=True)
    try:
        return spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise WrongModelError(
            f"{path} {_looks_like(state)}, not a face restorer; "
            "use GFPGANv1.4.pth, GFPGANv1.3.pth or codeformer.pth"
        ) from exc
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WrongModelError(
            f"{path} resembles a known restorer but its parameters do not fit it ({first}); "
            "GFPGAN v1 and v1.2 files are not supported: use GFPGANv1.3.pth or GFPGANv1.4.pth"
        ) from exc


def _looks_like(state: dict[str, torch.Tensor]) -> str:
    modules = {key.split(".", 1)[0] for key in state}
    for name, needed in OTHER_MODEL_SIGNATURES:
        if needed <= modules:
            return f"holds {name}"
    sample = ", ".join(sorted(modules)[:4])
    return f"holds a model spandrel does not recognise (top-level modules: {sample})"


class FaceRestorer:
    """A loaded face-restoration network and the official pre/post-processing around it."""

    def __init__(
        self,
        model: torch.nn.Module,
        kind: str,
        device: torch.device,
        precision: str = "fp32",
        face_size: int = RESTORE_FACE_SIZE,
        forward: Callable[[torch.nn.Module, torch.Tensor, float], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.kind = kind  # "gfpgan" | "codeformer" | "restoreformer"
        self.device = device
        # (test doubles of "gfpgan" without a StyleGAN decoder have no noise to cast)
        has_decoder = kind == "gfpgan" and hasattr(model, "stylegan_decoder")
        self._style_noise = StyleNoise(model) if has_decoder else None
        self.precision = precision  # "fp32" | "bf16" | "fp16", already resolved for this network
        self.face_size = face_size  # pixels, side of the aligned crops the network takes (512 when loaded)
        self._forward = forward or _FORWARDS[kind]  # another back-end's forward (OpenVINO), else torch's
        self.backend = "torch" if forward is None else "openvino"
        self.memory_format = torch.channels_last if kind in CHANNELS_LAST_KINDS else torch.contiguous_format
        self.nonfinite = NonFiniteFrames("face restoration")

    @property
    def precision(self) -> str:
        """ "fp32" | "bf16" | "fp16", already resolved for this network; setting it also casts GFPGAN's
        noise injection (:class:`StyleNoise`) to that compute type."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = value
        if self._style_noise is not None:
            self._style_noise.cast(PRECISION_DTYPES.get(value, torch.float32))

    def __repr__(self) -> str:
        return (
            f"FaceRestorer(kind={self.kind!r}, device={self.device}, precision={self.precision!r}, "
            f"backend={self.backend!r})"
        )

    def restore_aligned(
        self, faces: np.ndarray, fidelity: float = 0.5, frame_numbers: np.ndarray | None = None
    ) -> np.ndarray:
        """Restore aligned FFHQ-style crops in one batch.

        ``faces``: ``(N, 512, 512, 3) uint8`` BGR. ``fidelity``: CodeFormer's ``w`` in ``[0, 1]`` (higher is
        more faithful to the input and steadier on video, lower is sharper); GFPGAN and RestoreFormer
        ignore it. Returns ``(N, 512, 512, 3) uint8`` BGR. Deterministic for a given device and dtype.
        A face the network returns NaN or infinity for keeps its input pixels; :attr:`nonfinite` warns
        once and lists ``frame_numbers`` (default: positions in ``faces``) of those faces.
        """
        return self.restore_aligned_on_device(faces, fidelity, frame_numbers)[0]

    def restore_aligned_on_device(
        self, faces: np.ndarray, fidelity: float = 0.5, frame_numbers: np.ndarray | None = None
    ) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`restore_aligned`, and the same faces as a ``(N, 512, 512, 3) uint8`` BGR tensor on
        :attr:`device` (what a parser on that device takes without a second upload)."""
        check_faces(faces, self.face_size)
        if not 0.0 <= fidelity <= 1.0:
            raise ConfigError(f"restore.fidelity must be in [0, 1], got {fidelity}")
        if len(faces) == 0:
            return faces.copy(), torch.from_numpy(faces.copy()).to(self.device)
        inputs = faces_to_device(faces, self.device).contiguous(memory_format=self.memory_format)
        output = self.run_network(inputs, fidelity)
        pixels, replaced = output_to_pixels(output, faces)
        numbers = np.arange(len(faces)) if frame_numbers is None else np.asarray(frame_numbers)
        self.nonfinite.report(numbers[replaced])
        return np.ascontiguousarray(pixels.cpu().numpy()), pixels

    def run_network(self, inputs: torch.Tensor, fidelity: float) -> torch.Tensor:
        """The network alone, on its back-end, in :attr:`precision`: ``(N, 3, S, S)`` in ``[-1, 1]`` ->
        the same shape (what the benchmarks time)."""
        with torch.inference_mode(), precision_autocast(self.device, self.precision):
            return self._forward(self.model, inputs, fidelity)


class StyleNoise:
    """GFPGAN's noise injection in a chosen dtype, the checkpoint's float32 values kept.

    Every StyleConv of the StyleGAN2 decoder adds ``strength * noise_map + bias`` to its convolution:
    the stored noise maps are float32 buffers and strength and bias float32 parameters, so under
    bf16 / fp16 autocast each StyleConv output is promoted to float32: float32 activations between the
    decoder's layers (twice the bytes) and a cast back before every convolution. :meth:`cast` stores
    them in the compute dtype (and back to exactly the checkpoint's values for float32). The modulated
    convolutions keep float32 weights: autocast casts them per call, and the demodulation stays float32.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.decoder = model.stylegan_decoder
        # Looked up by name at each cast: Module.to() replaces buffers with new tensors.
        self.float32 = {name: tensor.detach().clone() for name, tensor in self._tensors().items()}

    def cast(self, dtype: torch.dtype) -> None:
        """Hold the noise maps, strengths and biases in ``dtype`` (float32: the checkpoint's values)."""
        for name, tensor in self._tensors().items():
            if tensor.dtype != dtype:
                owner_name, _, attribute = name.rpartition(".")
                owner = self.decoder.get_submodule(owner_name)
                value = self.float32[name].to(tensor.device, dtype)
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.data = value
                else:
                    setattr(owner, attribute, value)

    def _tensors(self) -> dict[str, torch.Tensor]:
        noises = {f"noises.{name}": buffer for name, buffer in self.decoder.noises.named_buffers()}
        convs = {"style_conv1": self.decoder.style_conv1}
        convs.update({f"style_convs.{i}": conv for i, conv in enumerate(self.decoder.style_convs)})
        injected = {f"{c}.{t}": getattr(conv, t) for c, conv in convs.items() for t in ("weight", "bias")}
        return {**noises, **injected}


def forward_gfpgan(model: torch.nn.Module, x: torch.Tensor, fidelity: float) -> torch.Tensor:
    """GFPGANv1Clean with the checkpoint's stored noise maps (no fresh noise, no flicker)."""
    return model(x, return_rgb=False, randomize_noise=False)[0]


def forward_codeformer(model: torch.nn.Module, x: torch.Tensor, fidelity: float) -> torch.Tensor:
    """CodeFormer with ``w = fidelity`` and AdaIN on the code features (spandrel always applies it), the
    whole network in one call (what :func:`restore.codeformer.forward_codeformer_staged` equals in
    float32; under autocast this one also chooses its codes in the reduced precision)."""
    return model(x, weight=fidelity)[0]


def forward_restoreformer(model: torch.nn.Module, x: torch.Tensor, fidelity: float) -> torch.Tensor:
    """RestoreFormer: input and output in ``[-1, 1]`` like GFPGAN (GFPGANer's ``arch='RestoreFormer'``)."""
    return model(x)[0]


def torch_forward(kind: str) -> Callable[[torch.nn.Module, torch.Tensor, float], torch.Tensor]:
    """The torch forward the pipeline runs for a restorer of ``kind`` (``(model, faces, fidelity)``)."""
    return _FORWARDS[kind]


_FORWARDS: dict[str, Callable[[torch.nn.Module, torch.Tensor, float], torch.Tensor]] = {
    "gfpgan": forward_gfpgan,
    "codeformer": forward_codeformer_staged,  # codes always chosen in float32
    "restoreformer": forward_restoreformer,
}
