"""Trained models from run directories, and batched jitted forward passes."""

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import cpu_convolutions, metrics, models, rundir
from fer_jax.data.preprocess import InputSpec
from fer_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A restored checkpoint with what is needed to run it on raw faces."""
  model: nn.Module
  variables: dict
  input_spec: InputSpec
  class_names: tuple[str, ...]
  loop: dict  # The training loop's state at that checkpoint (epoch, ...).
  # For its jitted forward passes: the run's config.cpu_convolutions.
  compiler_options: dict[str, str] | None = None


def load_trained(run: rundir.RunDir, kind: str = 'best') -> TrainedModel:
  """Restores the `kind` checkpoint's model of `run`, no optimizer needed."""
  if not os.path.isfile(run.file(rundir.DATASET)):
    # Training writes it once the data is loaded, before the first step.
    raise UserError(f'{run.path} has no {rundir.DATASET}: its training '
                    'stopped before loading the data, so it holds no model; '
                    'resume it with python -m fer_jax.main '
                    f'--workdir={run.path} ..., or give a run that finished '
                    'its first epoch.')
  config = run.load_config()
  info = run.read_json(rundir.DATASET)
  spec = InputSpec.from_json(info['input_spec'])
  class_names = tuple(info['class_names'])
  settings = config.model.to_dict()
  model = models.create(settings.pop('name'), len(class_names), **settings)
  # Shapes only (compiling init would cost seconds), placed on one device
  # whatever mesh the checkpoint was written from.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  template = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      models.variable_shapes(
          model, (1, spec.image_size, spec.image_size, spec.channels)))
  restored = run.restore(
      kind, model=template,
      if_none_readable='train the run again, or give another run (for the '
      'model packaged with fer_jax: reinstall fer_jax).')
  return TrainedModel(
      model, restored['model'], spec, class_names, restored['loop'],
      cpu_convolutions.compiler_options(cpu_convolutions.setting(config)))


def ten_crops(images: jnp.ndarray, crop_fraction: float) -> jnp.ndarray:
  """[N, H, W(, C)] -> [10, N, H, W(, C)]: the four corner crops and the
  centre crop of `crop_fraction` of the size, resized back to H x W, and
  their mirror images."""
  height, width = images.shape[1:3]
  crop_h, crop_w = round(crop_fraction * height), round(crop_fraction * width)
  starts = [(0, 0), (0, width - crop_w), (height - crop_h, 0),
            (height - crop_h, width - crop_w),
            ((height - crop_h) // 2, (width - crop_w) // 2)]
  crops = []
  for top, left in starts:
    crop = images[:, top:top + crop_h, left:left + crop_w].astype(jnp.float32)
    crop = jax.image.resize(crop, images.shape, 'bilinear')
    crops += [crop, jnp.flip(crop, axis=2)]
  return jnp.stack(crops)


def make_logits_fn(model: nn.Module, input_spec: InputSpec,
                   ten_crop: bool = False, crop_fraction: float = 44 / 48,
                   compiler_options: dict[str, str] | None = None):
  """`logits_fn(variables, uint8 images) -> logits`, jitted once with
  `compiler_options` (cpu_convolutions.compiler_options).

  With `ten_crop`, the returned "logits" are the log of the class
  probabilities averaged over the ten crops (`ten_crops`), so argmax and
  cross-entropy apply unchanged.
  """

  def forward(variables, images):
    return model.apply(variables, input_spec(images), train=False)

  if not ten_crop:
    return jax.jit(forward, compiler_options=compiler_options)

  @functools.partial(jax.jit, compiler_options=compiler_options)
  def ten_crop_logits(variables, images):
    crops = ten_crops(images, crop_fraction)
    log_probabilities = jax.nn.log_softmax(
        jax.vmap(forward, (None, 0))(variables, crops))
    # The log of the mean probability, without underflowing to log(0) (an
    # infinite loss) where every crop gives a class almost nothing.
    return (jax.nn.logsumexp(log_probabilities, axis=0)
            - jnp.log(len(log_probabilities)))

  return ten_crop_logits


def batched_logits(logits_fn, variables, images: np.ndarray,
                   batch_size: int) -> np.ndarray:
  """Logits of all `images`, in batches of one size (the last one
  zero-padded) so the function compiles once whatever the number of images:
  `batch_size`, or for fewer images the smallest power of two that holds
  them (a split of 16 faces does not pay for a batch of 512, and the
  compiled shapes stay few)."""
  batch_size = min(batch_size, 1 << max(len(images) - 1, 0).bit_length())
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    padding = batch_size - len(chunk)
    if padding:
      chunk = np.concatenate(
          [chunk, np.zeros((padding,) + chunk.shape[1:], chunk.dtype)])
    outputs.append(logits_fn(variables, chunk))
  # One transfer at the end: the loop above only dispatches.
  logits = np.concatenate(jax.device_get(outputs))
  return logits[:len(images)]


def forward_mflops(logits_fn, variables, image: np.ndarray) -> float:
  """XLA's cost analysis of the jitted forward pass on `image` ([1, H, W]);
  a multiply-add counts as two FLOPs.

  Of the program lowered for the CPU, whatever device runs it: compiled for
  a GPU, its convolutions become cuDNN calls that the analysis does not
  count (resnet_small's 512 MFLOPs read 3.4 on the H200), and a GPU's
  lowered program has no cost analysis (the CUDA plugin does not offer it).
  Only shapes travel: nothing is copied to the CPU."""
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  on_cpu = lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=cpu)
  cost = logits_fn.lower(*jax.tree.map(on_cpu, (variables, image))
                         ).cost_analysis()
  return cost['flops'] / 1e6


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean cross-entropy on the host (validation loss, unweighted)."""
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return float(-log_probs[np.arange(len(labels)), labels].mean())


def evaluate(logits_fn, variables, images: np.ndarray, labels: np.ndarray,
             class_names: tuple[str, ...], batch_size: int) -> dict:
  """Loss and classification metrics of `variables` on labelled images."""
  logits = batched_logits(logits_fn, variables, images, batch_size)
  result = metrics.classification_metrics(labels, logits.argmax(-1),
                                          class_names)
  result['loss'] = softmax_cross_entropy(logits, labels)
  return result
