"""Faces and emotions through a video: frames, face tracks, smoothing, and an
annotated copy.

A track follows a face from frame to frame by the nearest box centre; with
`smooth` > 0 its class probabilities are an exponential moving average,
p = smooth * p_before + (1 - smooth) * p_frame.
"""

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

from fer_jax.errors import UserError
from fer_jax.predict import annotate, opencv
from fer_jax.predict.opencv import cv2
from fer_jax.predict.predictor import Face, FacePredictor

VIDEO_EXTENSIONS = frozenset(('.mp4', '.avi', '.mov', '.mkv'))
# A box continues a track if its centre is within this fraction of the
# track's box side; a track unseen for more processed frames ends.
MAX_CENTRE_SHIFT = 0.5
MAX_MISSED = 5


class UnreadableVideo(UserError):
  """A path that gives no video frames; `reason` says why in a few words."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'{path}: {reason}')
    self.reason = reason


def is_video(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@dataclasses.dataclass
class _Track:
  number: int
  box: np.ndarray
  probs: np.ndarray
  missed: int = 0


class Tracker:
  """Face tracks by nearest box centre, with smoothed probabilities."""

  def __init__(self, smooth: float = 0.0):
    if not 0 <= smooth < 1:
      raise UserError(f'--smooth={smooth} must be in [0, 1) (0: off).')
    self._smooth = smooth
    self._tracks: list[_Track] = []
    self._next = 0

  def update(self, boxes: np.ndarray,
             probs: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(track number, smoothed probabilities) for each box of a frame."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    pairs = []
    for t, track in enumerate(self._tracks):
      centre = track.box[:2] + track.box[2:] / 2
      reach = MAX_CENTRE_SHIFT * track.box[2:].max()
      for b, distance in enumerate(np.linalg.norm(centres - centre, axis=1)):
        if distance <= reach:
          pairs.append((distance, t, b))
    matched_tracks, matched = set(), {}
    for _, t, b in sorted(pairs):  # Greedy, nearest first.
      if t not in matched_tracks and b not in matched:
        matched_tracks.add(t)
        matched[b] = self._tracks[t]
    for track in self._tracks:
      track.missed += 1
    result = []
    for b, (box, p) in enumerate(zip(boxes, probs)):
      track = matched.get(b)
      if track is None:
        track = _Track(self._next, box, p)
        self._next += 1
        self._tracks.append(track)
      else:
        track.box = box
        track.probs = self._smooth * track.probs + (1 - self._smooth) * p
      track.missed = 0
      result.append((track.number, track.probs))
    self._tracks = [t for t in self._tracks if t.missed <= MAX_MISSED]
    return result


@dataclasses.dataclass(frozen=True)
class Frame:
  """The faces of one processed frame, each with its track number."""
  index: int
  time_s: float
  faces: list[Face]
  tracks: list[int]


def _writer(path: str, fps: float, width: int, height: int):
  """An mp4 cv2.VideoWriter at `path` ('.mp4' appended unless there)."""
  path = annotate.output_path(path, ('.mp4',))
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                           (width, height))
  if not writer.isOpened():
    raise UserError(f'Cannot write the video {path}; choose another --out.')
  return writer


def frames(model: FacePredictor, path: str, every: int = 1,
           smooth: float = 0.0, out: str | None = None) -> Iterator[Frame]:
  """The faces of frames 0, `every`, 2 * `every`, ... of the video at `path`;
  with `out`, writes an annotated copy there (each frame with the faces of
  the last processed one). UnreadableVideo if the file gives no frame."""
  if every < 1:
    raise UserError(f'--every={every} must be at least 1.')
  opencv.require('Reading videos')
  tracker = Tracker(smooth)
  if not os.path.isfile(path):
    raise UnreadableVideo(path, 'no such file')
  capture = cv2.VideoCapture(path)
  writer = None
  try:
    if not capture.isOpened():
      raise UnreadableVideo(path, 'not a video OpenCV can open')
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    faces: list[Face] = []
    index = -1
    while True:
      index += 1
      if out is None and index % every:
        if not capture.grab():  # Skips decoding.
          break
        continue
      ok, bgr = capture.read()
      if not ok:
        if index == 0:
          raise UnreadableVideo(path, 'no frame could be read (empty or '
                                'damaged video)')
        break
      rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
      if index % every == 0:
        time_s = (index / fps if fps > 0 else
                  capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
        found = model.predict(rgb)
        tracked = tracker.update(
            np.array([f.box for f in found]).reshape(-1, 4),
            np.array([list(map(f.probs.get, model.class_names))
                      for f in found]))
        faces = [model.face(f.box, p) for f, (_, p) in zip(found, tracked)]
        yield Frame(index, round(time_s, 3), faces,
                    [number for number, _ in tracked])
      if out is not None:
        if writer is None:
          writer = _writer(out, fps if fps > 0 else 25.0, bgr.shape[1],
                           bgr.shape[0])
        writer.write(annotate.draw(rgb, faces))
  finally:
    capture.release()
    if writer is not None:
      writer.release()
