"""The media layer of all three packages: probe, seek, decode and write videos (PyAV), PNG/JPEG image codecs.

* :mod:`~alchemist_data.media.probe`: :class:`VideoError`, :class:`VideoInfo`, :func:`probe`; opening local paths
  and URIs (``s3://``, ``gs://``, ``file://``) through :mod:`alchemist_data.storage`; the time convention.
* :mod:`~alchemist_data.media.reference_frames`: the frames at 5/50/95 % of a clip by accurate seeking.
* :mod:`~alchemist_data.media.clip`: a clip resampled to a frame rate, and full decodes.
* :mod:`~alchemist_data.media.lowres`: every frame at thumbnail size (shot detection), PyAV or decord.
* :mod:`~alchemist_data.media.read`: the benchmark's readers (generated videos, clip cutting, frame at a time).
* :mod:`~alchemist_data.media.write`: :func:`write_video`.
* :mod:`~alchemist_data.media.image`: PNG/JPEG bytes <-> arrays.
"""

from alchemist_data.media.clip import decode_all_frames, decode_clip
from alchemist_data.media.image import decode_image, encode_jpg, encode_png
from alchemist_data.media.lowres import LOWRES_BACKENDS, decode_all_frames_lowres
from alchemist_data.media.probe import VideoError, VideoInfo, probe
from alchemist_data.media.read import DecodedVideo, cut_clip, frame_at_time, read_frames_at_rate
from alchemist_data.media.reference_frames import SEEK_MODES, reference_frames
from alchemist_data.media.write import write_video

__all__ = [
    "LOWRES_BACKENDS",
    "SEEK_MODES",
    "DecodedVideo",
    "VideoError",
    "VideoInfo",
    "cut_clip",
    "decode_all_frames",
    "decode_all_frames_lowres",
    "decode_clip",
    "decode_image",
    "encode_jpg",
    "encode_png",
    "frame_at_time",
    "probe",
    "read_frames_at_rate",
    "reference_frames",
    "write_video",
]
