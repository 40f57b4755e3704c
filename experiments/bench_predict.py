"""Predictor latency: per face (first call with compile, steady state) and
face detection on a 640x480 and a 4000x3000 photo.

  python experiments/bench_predict.py --workdir=runs/resnet_small

The photos are matplotlib's Grace Hopper portrait, scaled and padded; the faces are
its face crop, repeated. Prints one Markdown table (milliseconds).
"""

import time

import cv2
import matplotlib.cbook
import numpy as np
from absl import app, flags

from fer_jax import cli
from fer_jax.predict import detect, predictor

import timing  # experiments/timing.py, beside this script.

flags.DEFINE_string('workdir', None, 'Training run directory.')
flags.DEFINE_integer('repeats', 20, 'Timed calls per figure (median).')
flags.mark_flags_as_required(['workdir'])

PHOTO = str(matplotlib.cbook.get_sample_data('grace_hopper.jpg',
                                             asfileobj=False))


def main(argv):
  del argv
  with cli.exits_on_user_errors():
    _benchmark()


def _benchmark() -> None:
  repeats = flags.FLAGS.repeats
  rows = []
  for ten_crop in (False, True):
    model = predictor.Predictor.from_workdir(flags.FLAGS.workdir,
                                             ten_crop=ten_crop)
    crop = np.full((1, model.input_size, model.input_size), 128, np.uint8)
    for faces in (1, 32):
      crops = np.repeat(crop, faces, axis=0)
      start = time.perf_counter()
      model.classify(crops)  # Compiles this batch shape.
      first = 1000 * (time.perf_counter() - start)
      steady = timing.median_ms(lambda: model.classify(crops), repeats)  # pylint: disable=cell-var-from-loop
      rows.append((f'classify {faces} face(s)'
                   f'{", ten-crop" if ten_crop else ""}', first, steady,
                   steady / faces))
  haar = detect.HaarDetector()
  grey = cv2.imread(PHOTO, cv2.IMREAD_GRAYSCALE)
  for width, height in ((640, 480), (4000, 3000)):
    # The portrait scaled to the photo's height, centred on grey.
    scale = height / grey.shape[0]
    portrait = cv2.resize(grey, None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_CUBIC)[:, :width]
    photo = np.full((height, width), 128, np.uint8)
    left = (width - portrait.shape[1]) // 2
    photo[:, left:left + portrait.shape[1]] = portrait
    start = time.perf_counter()
    found = len(detect.find_faces(photo, haar, 32))
    first = 1000 * (time.perf_counter() - start)
    steady = timing.median_ms(lambda: detect.find_faces(photo, haar, 32), repeats)  # pylint: disable=cell-var-from-loop
    rows.append((f'detect {width}x{height} ({found} face)', first, steady,
                 steady / max(found, 1)))
  print('| what | first call ms | steady ms | steady ms per face |')
  print('|---|---|---|---|')
  for what, first, steady, per_face in rows:
    print(f'| {what} | {first:.1f} | {steady:.1f} | {per_face:.2f} |')


if __name__ == '__main__':
  app.run(main)
