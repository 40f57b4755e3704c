"""A training run's model as an ONNX graph of raw grey face crops.

  python -m fer_jax.export --workdir=runs/resnet_small --out=model.onnx \
      [--checkpoint=best]

The graph takes float32 [N, 48, 48, 1] grey face crops with values 0-255
(48: FER2013's face size, what training fed every model), resizes them to
the model's input size and normalises them as the run's InputSpec does
(channels repeated for 3-channel models), and returns class probabilities
[N, classes]; N is dynamic. The ONNX metadata holds `classes` (a JSON list),
`input_size` (the crops' side, 48), `input_spec` (JSON, with the model's
own size) and `config` (the run's config.json text). Conversion is
jax2onnx's (pip install ".[onnx]").
"""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import inference, rundir
from fer_jax.data import sources
from fer_jax.errors import UserError
from fer_jax.predict import onnx_predictor, predictor

INPUT_NAME = 'faces'
OUTPUT_NAME = 'probabilities'


def probabilities_fn(trained: inference.TrainedModel):
  """float32 [N, H, W, 1] grey 0-255 -> probabilities [N, classes], as the
  predictor computes them (the InputSpec resizes to the model's size)."""

  def probabilities(faces):
    logits = trained.model.apply(trained.variables, trained.input_spec(faces),
                                 train=False)
    return jax.nn.softmax(logits, axis=-1)

  return probabilities


def _resize_matrix(source: int, target: int) -> np.ndarray:
  """[target, source]: jax.image.resize's bilinear map along one axis (the
  resize of the identity; it is linear and separable)."""
  return np.asarray(jax.image.resize(np.eye(source, dtype=np.float32),
                                     (target, source), 'bilinear'))


def _graph_fn(trained: inference.TrainedModel):
  """`probabilities_fn` on [N, 48, 48, 1] faces (sources.IMAGE_SIZE), in a
  form jax2onnx converts: it converts jax.image.resize only for a fixed
  batch size, so the resize to another model size is two matrix products."""
  probabilities = probabilities_fn(trained)
  size = trained.input_spec.image_size
  if size == sources.IMAGE_SIZE:
    return probabilities
  matrix = _resize_matrix(sources.IMAGE_SIZE, size)

  def resized_probabilities(faces):
    return probabilities(jnp.einsum('hi,nijc,wj->nhwc', matrix, faces,
                                    matrix))

  return resized_probabilities


def to_onnx(trained: inference.TrainedModel, config_text: str = ''):
  """The ONNX ModelProto of `trained`, with its metadata."""
  try:
    import jax2onnx  # pylint: disable=import-outside-toplevel
    import onnx  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError('Exporting needs jax2onnx and onnx: pip install '
                    '".[onnx]".') from None
  # jax2onnx logs a warning for each shape it leaves untyped: noise here.
  serde_logger = logging.getLogger('onnx_ir.serde')
  level = serde_logger.level
  serde_logger.setLevel(logging.ERROR)
  face_size = sources.IMAGE_SIZE
  try:
    model = jax2onnx.to_onnx(
        _graph_fn(trained), [('N', face_size, face_size, 1)],
        model_name='fer_jax', input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME])
  except TypeError as e:
    if 'pool' not in str(e):
      raise
    # jax2onnx's stand-in for nn.max_pool / avg_pool is keyword-only.
    raise UserError(f'jax2onnx cannot convert this model ({e}); its '
                    'nn.max_pool / nn.avg_pool calls must pass window_shape '
                    'and strides as keywords.') from None
  finally:
    serde_logger.setLevel(level)
  # The converter's intermediate shape annotations can disagree with the
  # ops (NHWC vs NCHW); onnxruntime infers them itself, so drop them.
  del model.graph.value_info[:]
  metadata = {
      onnx_predictor.CLASSES_KEY: json.dumps(list(trained.class_names)),
      onnx_predictor.INPUT_SIZE_KEY: str(face_size),
      'input_spec': json.dumps(trained.input_spec.to_json()),
      onnx_predictor.CONFIG_KEY: config_text,
  }
  for key, value in metadata.items():
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
  model.producer_name = 'fer_jax'
  onnx.checker.check_model(model)
  # Against the predictor's JAX path: this checks the resize too.
  _check_against_jax(model, probabilities_fn(trained), face_size)
  return model


def _check_against_jax(model, probabilities, size: int,
                       tolerance: float = 1e-4) -> None:
  """UserError unless onnxruntime's probabilities of random faces match
  JAX's: the converter can get an op wrong without failing."""
  import onnxruntime  # pylint: disable=import-outside-toplevel
  faces = np.random.default_rng(0).integers(0, 256, (3, size, size, 1))
  faces = faces.astype(np.float32)
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(
      model.SerializeToString(), options,
      providers=['CPUExecutionProvider'])
  got, = session.run(None, {INPUT_NAME: faces})
  difference = float(np.abs(got - np.asarray(
      jax.jit(probabilities)(faces))).max())
  if not difference <= tolerance:
    raise UserError(f'The ONNX graph gives probabilities up to {difference:.3g}'
                    ' away from JAX\'s on random faces (the converter got an '
                    'op wrong; max_pool with explicit padding is a known '
                    'case); nothing written.')


def export(workdir: str | None, out: str, checkpoint: str = 'best') -> str:
  """Writes the `checkpoint` model of run `workdir` (default: the shipped
  model) to the ONNX file `out`; returns its path."""
  if checkpoint not in predictor.CHECKPOINTS:
    raise UserError(f'--checkpoint={checkpoint!r} is not one of '
                    f'{predictor.CHECKPOINTS}.')
  if workdir and not os.path.isdir(workdir):
    raise UserError(f'--workdir={workdir}: no such directory; give the '
                    'directory of a training run.')
  run = rundir.RunDir(workdir or predictor.pretrained_workdir(), create=False)
  trained = inference.load_trained(run, checkpoint)
  with open(run.file(rundir.CONFIG)) as f:
    config_text = f.read()
  model = to_onnx(trained, config_text)
  folder = os.path.dirname(os.path.abspath(out))
  tmp = out + '.tmp'
  try:
    os.makedirs(folder, exist_ok=True)
    with open(tmp, 'wb') as f:
      f.write(model.SerializeToString())
    os.replace(tmp, out)
  except OSError as e:
    raise UserError(f'Cannot write --out={out} ({e.strerror}); choose '
                    'another path.') from None
  return out
