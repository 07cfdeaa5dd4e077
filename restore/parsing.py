"""Face parsing (facexlib's ParseNet, ``parsing_parsenet.pth``) for the paste-back blend mask.

The official GFPGAN and CodeFormer tools blend restored faces with a mask built from this network's
19-class parsing of the restored crop (see :func:`restore.blend.parsing_face_mask`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.errors import WrongModelError
from restore.convert import check_faces, faces_to_device

PARSENET_SIZE = 512  # pixels, input and output side of the released ParseNet
PARSING_CLASSES = 19  # channels of the parsing map


def build_parsenet() -> torch.nn.Module:
    """An untrained ParseNet with the layout of ``parsing_parsenet.pth``."""
    # facexlib is imported here: its package __init__ pulls in all its models (seconds of import time).
    from facexlib.parsing.parsenet import ParseNet

    return ParseNet(in_size=PARSENET_SIZE, out_size=PARSENET_SIZE, parsing_ch=PARSING_CLASSES)


def load_parser(path: str | Path, device: str | torch.device = "cpu") -> FaceParser:
    """Load ``parsing_parsenet.pth`` (a bare state dict) onto ``device``.

    Raises ``MissingWeightsError`` / ``WeightsError`` for unreadable files and ``WrongModelError`` when the
    file holds another network.
    """
    path = Path(path)
    state = load_state_dict(path, "face-parsing network")
    model = build_parsenet()
    expected = set(model.state_dict())
    if set(state) != expected:
        missing = sorted(expected - set(state))
        raise WrongModelError(
            f"{path} is not a ParseNet face-parsing checkpoint ({len(missing)} ParseNet parameters "
            f"missing, e.g. {missing[:1]}); use facexlib's parsing_parsenet.pth"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WrongModelError(
            f"{path} has ParseNet's parameter names but other shapes ({str(exc).splitlines()[-1].strip()}); "
            "use facexlib's parsing_parsenet.pth"
        ) from exc
    device = torch.device(device)
    return FaceParser(model.eval().requires_grad_(False).to(device), device)


class FaceParser:
    """ParseNet on aligned face crops."""

    def __init__(self, model: torch.nn.Module, device: torch.device, size: int = PARSENET_SIZE) -> None:
        self.model = model
        self.device = device
        self.size = size  # pixels, side of the network's input and output (512 when loaded)

    def parse(self, faces: np.ndarray) -> np.ndarray:
        """Face-parsing class maps of restored crops.

        ``faces``: ``(N, S, S, 3) uint8`` BGR; crops of another size than the network's are resized
        bilinearly first (as facexlib does). Returns ``(N, size, size) int64`` classes 0..18, the argmax of
        ParseNet's parsing output, computed in float32 on every device.
        """
        check_faces(faces, None)
        if len(faces) == 0:
            return np.zeros((0, self.size, self.size), np.int64)
        if faces.shape[1] != self.size:
            size = (self.size, self.size)
            faces = np.stack([cv2.resize(face, size, interpolation=cv2.INTER_LINEAR) for face in faces])
        return self.parse_on_device(faces_to_device(faces, self.device)).cpu().numpy()

    def parse_on_device(self, faces: torch.Tensor) -> torch.Tensor:
        """:meth:`parse` of network inputs already on :attr:`device`: ``(N, 3, size, size)`` float32 as
        :func:`restore.convert.pixels_to_tensor` makes them. Returns ``(N, size, size) int64`` there."""
        with torch.inference_mode():
            parsing = self.model(faces)[0]
        return parsing.argmax(dim=1)
