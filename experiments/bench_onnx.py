"""Per-face latency of the predictor's JAX and ONNX backends on this CPU.

  python experiments/bench_onnx.py --workdir=runs/resnet_small
  python experiments/bench_onnx.py --model=mobilenetv2_small  # Random weights.

Classifies batches of 1 and 32 grey 48x48 face crops (no detection: see
bench_predict.py for that) with `Predictor` (jitted JAX) and `OnnxPredictor`
(onnxruntime on the file python -m fer_jax.export writes). Without
--workdir the model of the default config has random weights, which cost the
same. Prints one Markdown table (milliseconds, median of --repeats calls).
"""

import functools
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fer_jax import config as config_lib
from fer_jax import cli, inference, models, rundir
from fer_jax.data.preprocess import InputSpec
from fer_jax.export import onnx_export
from fer_jax.predict import onnx_predictor, predictor

import timing  # experiments/timing.py, beside this script.

flags.DEFINE_string('workdir', None, 'Training run directory (optional).')
flags.DEFINE_string('model', 'resnet_small',
                    'Without --workdir: the model, default config, random '
                    'weights.')
flags.DEFINE_integer('repeats', 20, 'Timed calls per figure (median).')

CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')


def _trained() -> inference.TrainedModel:
  if flags.FLAGS.workdir:
    return inference.load_trained(
        rundir.RunDir(flags.FLAGS.workdir, create=False))
  settings = config_lib.default_config().model.to_dict()
  settings.pop('name')
  settings.pop('init_from', None)
  model = models.create(flags.FLAGS.model, len(CLASSES), **settings)
  spec = InputSpec(48, 1, (127.5,), (127.5,))
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 48, 48, 1)))
  return inference.TrainedModel(model, variables, spec, CLASSES, {})


def main(argv):
  del argv
  with cli.exits_on_user_errors():
    _benchmark()


def _benchmark() -> None:
  trained = _trained()
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, 'model.onnx')
    with open(path, 'wb') as f:
      f.write(onnx_export.to_onnx(trained).SerializeToString())
    size_mb = os.path.getsize(path) / 1e6
    backends = {
        'jax': predictor.Predictor(trained, detect_faces=False),
        'onnx': onnx_predictor.OnnxPredictor(path, detect_faces=False),
    }
    rows = []
    for faces in (1, 32):
      crops = np.random.default_rng(0).integers(0, 256, (faces, 48, 48),
                                                np.uint8)
      for name, model in backends.items():
        start = time.perf_counter()
        model.classify(crops)  # JAX compiles this batch shape.
        first = 1000 * (time.perf_counter() - start)
        # pylint: disable-next=cell-var-from-loop
        steady = timing.median_ms(lambda: model.classify(crops), flags.FLAGS.repeats)
        rows.append((name, faces, first, steady, steady / faces))
  # onnxruntime runs on the CPU here; JAX on its default backend.
  print(f'{flags.FLAGS.workdir or flags.FLAGS.model}: ONNX file '
        f'{size_mb:.2f} MB, {os.cpu_count()} CPU cores, JAX on '
        f'{jax.default_backend()}')
  print()
  print('| backend | faces per call | first call ms | steady ms | '
        'steady ms per face |')
  print('|---|---|---|---|---|')
  for name, faces, first, steady, per_face in rows:
    print(f'| {name} | {faces} | {first:.1f} | {steady:.2f} | '
          f'{per_face:.3f} |')


if __name__ == '__main__':
  app.run(main)
