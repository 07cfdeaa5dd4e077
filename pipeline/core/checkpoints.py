"""Reading checkpoint files safely, in one place.

Every checkpoint in the project is read by :func:`load_checkpoint` (``torch.load`` with
``weights_only=True``, so a pickle that would run code is refused before anything runs) and unwrapped
by :func:`canonicalize_state_dict` (``params_ema`` / ``params`` / ``state_dict`` wrappers, DataParallel
``module.`` prefixes). Failures become :class:`~pipeline.core.errors.WeightsError` with a one-line message.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import MissingWeightsError, WeightsError

# Wrapper keys seen in released checkpoints, tried in this order (GFPGAN/CodeFormer keep the EMA copy).
STATE_DICT_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net")
# What torch's weights-only unpickler names when it refuses a file (a global or an opcode).
_REFUSED = re.compile(r"(Unsupported (?:global: GLOBAL \S+|operand \d+|class \S+)|\w+ is not supported)")


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Read ``path`` onto the CPU with ``weights_only=True``; return the raw top-level dict.

    ``what`` names the model in error messages (e.g. ``"Wav2Lip generator"``).
    """
    path = Path(path)
    if not path.exists():
        raise MissingWeightsError(f"{what} file not found: {path}")
    if path.is_dir():
        raise WeightsError(f"{what} path is a directory, expected a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} file is empty: {path} (delete it and fetch it again)")
    try:
        with warnings.catch_warnings():  # torch's note on unusual pickle protocols; the refusal says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{what} file {path} was refused by the safe loader: it holds objects other than tensors "
            f"({_refusal_reason(exc)}); unpickling such objects can run code; use the checkpoint from its "
            "official source (python -m pipeline.weights fetch)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise WeightsError(
            f"{what} file {path} is corrupt or truncated ({_first_sentence(exc)}); "
            "delete it and fetch it again (python -m pipeline.weights fetch)"
        ) from exc
    if not isinstance(data, Mapping):
        raise WeightsError(f"{what} file {path} does not hold a state dict (found {type(data).__name__})")
    return dict(data)


def canonicalize_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap a loaded checkpoint to a plain ``name -> tensor`` dict without ``module.`` prefixes."""
    state = checkpoint
    for key in STATE_DICT_WRAPPER_KEYS:
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and inner and _looks_like_state_dict(inner):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError("checkpoint holds no tensors")
    return {_strip_prefix(k): v for k, v in tensors.items()}


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """:func:`load_checkpoint` then :func:`canonicalize_state_dict`."""
    try:
        return canonicalize_state_dict(load_checkpoint(path, what))
    except WeightsError as exc:
        if str(exc) == "checkpoint holds no tensors":
            raise WeightsError(f"{what} file {path} holds no tensors") from exc
        raise


def _looks_like_state_dict(mapping: Mapping[str, Any]) -> bool:
    return any(isinstance(v, torch.Tensor) for v in mapping.values())


def _strip_prefix(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _refusal_reason(exc: BaseException) -> str:
    """The object torch's safe unpickler refused ("Unsupported global: GLOBAL os.system", ...)."""
    match = _REFUSED.search(str(exc))
    return match.group(1).strip() if match else "objects the safe loader does not allow"


def _first_sentence(exc: BaseException) -> str:
    line = _first_line(exc)
    return line.split(". ", 1)[0].rstrip(".")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
