"""The LRS2-layout dataset both trainings read, with the official sampling rules and a resumable sampler.

Layout (written by :mod:`wav2lip.training.preprocess`): ``<data_root>/<video_id>/<utterance>/<n>.jpg`` (face
crop of video frame n, any size, BGR JPEG) and ``audio.wav`` beside them; ``train.txt`` / ``val.txt``
list ``<video_id>/<utterance>`` per line (only the first word of a line counts, as in LRS2's lists).

Sampling follows Rudrabha/Wav2Lip's ``color_syncnet_train.py`` and ``wav2lip_train.py`` Dataset: an
utterance is drawn at random (utterances with at most 15 frames are skipped), a frame ``id`` and a
different "wrong" frame are drawn, the 5-frame window starting at each is read and resized to 96x96.
Mel windows are 16 steps starting at ``int(80 * (n / fps))`` with the official frame offsets (HEAD,
after the August 2020 "audio indexing off by one step" fix): the sync window of frames ``id .. id+4``
uses ``n = id``, so it equals the inference chunk of frame ``id``; the generator's per-frame windows for
frames ``id .. id+4`` use ``n = id - 1 .. id + 3``. A draw whose windows do not exist is redrawn.

Every random choice of sample number ``k`` comes from ``numpy.random.default_rng([seed, k])``, so a
sample does not depend on the worker that makes it, and :class:`ResumableSampler` resumes the stream
exactly at any global step.
"""

from __future__ import annotations

import collections
import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.core.errors import InputError
from wav2lip.audio import MEL_FRAMES_PER_SECOND, MEL_STEP_SIZE, load_wav, melspectrogram
from wav2lip.face_input import faces_to_unit, mask_lower_half, syncnet_face_input
from wav2lip.models.syncnet import SYNCNET_T
from wav2lip.training.config import DataConfig

MAX_FRAMES_SKIPPED = 3 * SYNCNET_T  # utterances with this many frames or fewer are never drawn
SYNC_MEL_FRAME_OFFSET = 0  # official HEAD: the sync mel window of frames id..id+4 starts at frame id
INDIV_MEL_FRAME_OFFSET = -1  # official get_segmented_mels: frame id + k uses the window of id + k - 1
MAX_DRAWS = 1000  # redraws before a sample is declared impossible (official: retries forever)
AUDIO_FILE = "audio.wav"
FRAME_SUFFIX = ".jpg"


# --- file lists --------------------------------------------------------------------------------------


def read_filelist(path: str | Path, data_root: str | Path) -> list[Path]:
    """The utterance folders listed in ``path`` (``<video_id>/<utterance>`` per line) under ``data_root``.

    Blank lines are ignored, only the first word of a line is used. Folders that do not exist are left
    out with one warning. Raises InputError when the list is missing or names no existing folder.
    """
    path, root = Path(path), Path(data_root)
    if not path.is_file():
        raise InputError(
            f"file list not found: {path}; run `python -m wav2lip.preprocess ... --make-filelists 0.95` "
            "or set data.train_filelist / data.val_filelist"
        )
    names = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    folders = [root / name for name in names]
    present = [folder for folder in folders if folder.is_dir()]
    if len(present) < len(folders):
        missing = next(f for f in folders if not f.is_dir())
        warnings.warn(
            f"{len(folders) - len(present)} of {len(folders)} utterances of {path} are not under {root} "
            f"(first: {missing}); they are skipped",
            stacklevel=2,
        )
    if not present:
        raise InputError(f"file list {path} names no utterance folder that exists under {root}")
    return present


def crop_method(folders: list[Path]) -> str | None:
    """The one crop method (``"crops"`` of each folder's ``done.json``, see the preprocessing) of
    ``folders``; None when none records one. Raises InputError when they mix methods or detectors
    (``"detector"``; "unrecorded" in folders preprocessed before it was recorded), since official and
    tracked crops, and S3FD and RetinaFace boxes, frame the face differently."""
    import json

    makers: dict[tuple[str, str], Path] = {}
    for folder in folders:
        done = folder / "done.json"
        if done.is_file():
            record = json.loads(done.read_text(encoding="utf-8"))
            maker = (record.get("crops", "tracked"), record.get("detector", "unrecorded"))
            makers.setdefault(maker, folder)
    if len(makers) > 1:
        examples = ", ".join(f"{m!r} crops by {d!r} ({f})" for (m, d), f in sorted(makers.items()))
        raise InputError(
            f"the file lists mix face crops made by different methods or detectors: {examples}; "
            "preprocess all utterances one way (the same --official-crops and --detector) into one folder"
        )
    return next(iter(makers), (None, None))[0]


# --- pure window rules ---------------------------------------------------------------------------------


def mel_start(frame_number: int, fps: float) -> int:
    """First mel column of the window of video frame ``frame_number``: ``int(80 * (n / fps))``."""
    return int(MEL_FRAMES_PER_SECOND * (frame_number / float(fps)))


def sync_mel_start(window_start: int, fps: float) -> int:
    """Mel column where the sync window of the 5 frames starting at ``window_start`` begins."""
    return mel_start(window_start + SYNC_MEL_FRAME_OFFSET, fps)


def indiv_mel_starts(window_start: int, fps: float) -> list[int] | None:
    """Mel columns of the generator's window for each of the 5 frames, or None when one would start
    before the audio (the official check rejects ``window_start < 1``)."""
    first = window_start + INDIV_MEL_FRAME_OFFSET
    if first < 0:
        return None
    return [mel_start(first + k, fps) for k in range(SYNCNET_T)]


def crop_mel(mel_t: np.ndarray, start: int) -> np.ndarray | None:
    """Rows ``start .. start+16`` of a time-major ``(T, 80)`` mel as ``(80, 16)``; None when short."""
    window = mel_t[start : start + MEL_STEP_SIZE]
    if len(window) != MEL_STEP_SIZE:
        return None
    return np.ascontiguousarray(window.T, dtype=np.float32)


def window_ids(frame_ids: frozenset[int], start: int) -> list[int] | None:
    """``[start .. start+4]`` when all five frames exist, else None."""
    ids = list(range(start, start + SYNCNET_T))
    return ids if all(i in frame_ids for i in ids) else None


# --- datasets ------------------------------------------------------------------------------------------


class _LRS2Windows(Dataset):
    """Shared reading of frames, windows and mels; subclasses define one sample."""

    def __init__(self, utterances: list[Path], config: DataConfig, seed: int) -> None:
        if not utterances:
            raise InputError("the dataset has no utterances")
        self.utterances = list(utterances)
        self.config = config
        self.seed = int(seed)
        self._frames: dict[Path, tuple[int, ...]] = {}
        self._mels: collections.OrderedDict[Path, np.ndarray] = collections.OrderedDict()

    def __len__(self) -> int:
        """Number of utterances (one 'epoch' draws this many samples, as the official Dataset)."""
        return len(self.utterances)

    def rng(self, sample: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(sample)])

    def frame_ids(self, utterance: Path) -> tuple[int, ...]:
        """Sorted frame numbers ``n`` of the ``<n>.jpg`` files in ``utterance`` (cached)."""
        if utterance not in self._frames:
            ids = [int(p.stem) for p in utterance.glob(f"*{FRAME_SUFFIX}") if p.stem.isdigit()]
            self._frames[utterance] = tuple(sorted(ids))
        return self._frames[utterance]

    def read_faces(self, utterance: Path, ids: list[int]) -> np.ndarray | None:
        """``(5, S, S, 3) uint8`` BGR faces resized to ``img_size`` (bilinear), None if one is unreadable."""
        size = self.config.img_size
        faces = []
        for frame_id in ids:
            image = cv2.imread(str(utterance / f"{frame_id}{FRAME_SUFFIX}"))
            if image is None or image.size == 0:
                return None
            faces.append(cv2.resize(image, (size, size)))
        return np.stack(faces)

    def mel_t(self, utterance: Path) -> np.ndarray:
        """Time-major ``(T, 80) float32`` mel of the utterance's audio (LRU-cached per process)."""
        if utterance in self._mels:
            self._mels.move_to_end(utterance)
            return self._mels[utterance]
        mel = melspectrogram(load_wav(utterance / AUDIO_FILE)).T
        if self.config.mel_cache_size > 0:
            self._mels[utterance] = mel
            while len(self._mels) > self.config.mel_cache_size:
                self._mels.popitem(last=False)
        return mel

    def draw_frames(self, rng: np.random.Generator) -> tuple[Path, frozenset[int], int, int] | None:
        """An utterance and two different frame ids (right, wrong), or None to redraw."""
        utterance = self.utterances[int(rng.integers(len(self.utterances)))]
        ids = self.frame_ids(utterance)
        if len(ids) <= MAX_FRAMES_SKIPPED:
            return None
        right = ids[int(rng.integers(len(ids)))]
        wrong = right
        while wrong == right:
            wrong = ids[int(rng.integers(len(ids)))]
        return utterance, frozenset(ids), right, wrong

    def __getitem__(self, sample: int):
        rng = self.rng(sample)
        for _ in range(MAX_DRAWS):
            item = self.make_sample(rng)
            if item is not None:
                return item
        raise InputError(
            f"no valid {SYNCNET_T}-frame window found in {MAX_DRAWS} draws from {len(self)} utterances "
            f"(e.g. {self.utterances[0]}); check that the folders hold consecutive <n>.jpg frames "
            "and an audio.wav as long as the video"
        )

    def make_sample(self, rng: np.random.Generator):
        raise NotImplementedError


class SyncNetDataset(_LRS2Windows):
    """Samples for the expert: ``(faces (15, 48, 96), mel (1, 80, 16), label (1,))`` float32.

    Faces: lower halves of 5 consecutive frames in [0, 1], frame t in channels 3t..3t+2. With
    probability 1/2 the window starts at the drawn frame (label 1), else at the wrong frame (label 0);
    the mel is always the drawn frame's sync window.
    """

    def make_sample(self, rng: np.random.Generator):
        drawn = self.draw_frames(rng)
        if drawn is None:
            return None
        utterance, frame_ids, right, wrong = drawn
        in_sync = bool(rng.integers(2))
        ids = window_ids(frame_ids, right if in_sync else wrong)
        faces = self.read_faces(utterance, ids) if ids else None
        if faces is None:
            return None
        mel = crop_mel(self.mel_t(utterance), sync_mel_start(right, self.config.fps))
        if mel is None:
            return None
        window = torch.from_numpy(faces_to_unit(faces)).permute(1, 0, 2, 3)  # (3, T, S, S)
        x = syncnet_face_input(window.unsqueeze(0))[0]
        label = torch.tensor([1.0 if in_sync else 0.0])
        return x, torch.from_numpy(mel).unsqueeze(0), label


class Wav2LipDataset(_LRS2Windows):
    """Samples for the generator: ``(x (6, 5, 96, 96), indiv_mels (5, 1, 80, 16), mel (1, 80, 16),
    gt (3, 5, 96, 96))`` float32.

    ``x`` channels 0-2: the drawn window with rows 48.. zeroed, 3-5: the wrong window (reference);
    ``gt``: the drawn window; faces in [0, 1] BGR; ``mel``: the sync window for the expert.
    """

    def make_sample(self, rng: np.random.Generator):
        drawn = self.draw_frames(rng)
        if drawn is None:
            return None
        utterance, frame_ids, right, wrong = drawn
        right_ids, wrong_ids = window_ids(frame_ids, right), window_ids(frame_ids, wrong)
        if right_ids is None or wrong_ids is None:
            return None
        window, reference = self.read_faces(utterance, right_ids), self.read_faces(utterance, wrong_ids)
        if window is None or reference is None:
            return None
        mels = self.mels_for(utterance, right)
        if mels is None:
            return None
        gt = torch.from_numpy(faces_to_unit(window)).permute(1, 0, 2, 3)  # (3, T, S, S)
        ref = torch.from_numpy(faces_to_unit(reference)).permute(1, 0, 2, 3)
        x = torch.cat([mask_lower_half(gt), ref], dim=0)
        sync_mel, indiv = mels
        return x, indiv, sync_mel, gt

    def mels_for(self, utterance: Path, right: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        mel_t = self.mel_t(utterance)
        sync_mel = crop_mel(mel_t, sync_mel_start(right, self.config.fps))
        starts = indiv_mel_starts(right, self.config.fps)
        if sync_mel is None or starts is None:
            return None
        indiv = [crop_mel(mel_t, s) for s in starts]
        if any(m is None for m in indiv):
            return None
        indiv_t = torch.from_numpy(np.stack(indiv)).unsqueeze(1)  # (T, 1, 80, 16)
        return torch.from_numpy(sync_mel).unsqueeze(0), indiv_t


# --- sampling ------------------------------------------------------------------------------------------


class ResumableSampler(Sampler[int]):
    """Endless sample numbers for one process, starting at global batch ``start_batch``.

    Global batch ``b`` holds sample numbers ``b * B * W .. (b + 1) * B * W - 1`` (``B`` the per-process
    batch size, ``W`` the world size); process ``rank`` takes the ``rank``-th block of ``B`` of them.
    Resuming at global step ``s`` with ``start_batch = s`` continues the exact stream.
    """

    def __init__(self, start_batch: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or start_batch < 0:
            raise ValueError(f"bad sampler setup: {start_batch=} {batch_size=} {rank=} {world_size=}")
        self.start_batch, self.batch_size = start_batch, batch_size
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        for batch in itertools.count(self.start_batch):
            first = (batch * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)


def epoch_of(global_step: int, batch_size: int, world_size: int, n_utterances: int) -> int:
    """Epochs completed after ``global_step`` steps: samples drawn // utterances (the official epoch
    length is one DataLoader pass, ``len(dataset) = number of utterances`` samples)."""
    return (global_step * batch_size * world_size) // max(1, n_utterances)
