"""ImageNet weights for the ported models: torchvision state dict -> Flax.

  python -m fer_jax.convert --arch=vgg16 --src=vgg16.pth --out=weights/vgg16

writes <out>/variables.msgpack (Flax `params` and `batch_stats`, via
flax.serialization) and <out>/converted.json (arch, source, parameter count).
A run loads it with `--config.model.init_from=<out>`: every parameter whose
name and shape match is replaced, the rest (the classifier for the FER
classes, the heads of fer_jax/models/heads.py) keeps its fresh
initialisation.

The mapping is by name: the ports name their modules after torchvision's
state-dict keys, with numeric parts joined on (`layer1.0.downsample.1` ->
`layer1_0/downsample_1`); conv weights go OIHW -> HWIO, linear weights are
transposed, BatchNorm weight / bias / running_mean / running_var become
scale / bias (params) and mean / var (batch_stats). VGG's first classifier
layer also has its inputs permuted from torch's NCHW flatten to the port's
NHWC one. torch is needed only to read the .pth (the `torch` extra).

A `--src` ending in .h5 is Keras applications' VGG16 weights instead
(fer_jax/convert/keras_h5.py, the `keras` extra). converted.json records the
input normalisation the weights expect ('imagenet' for torchvision's,
'caffe' for Keras's); a run whose config.data.normalization differs stops
before training.

`swin_tiny` takes timm's swin_tiny_patch4_window7_224 weights
(fer_jax/convert/timm_swin.py): a .pth as above or a .safetensors (the
`safetensors` package's numpy reader, no torch); the keys map the same way,
the attention's relative_position_bias_table as it is, and the buffers timm
computes (relative_position_index, attn_mask) are skipped.
"""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from fer_jax import models
from fer_jax.convert import keras_h5, reading, timm_swin
from fer_jax.errors import UserError

VARIABLES = 'variables.msgpack'
META = 'converted.json'

# arch -> its final classifier layer (re-initialised for the FER classes;
# '/' between nested module names).
ARCHS = {'mobilenet_v2': 'classifier_1', 'resnet18': 'fc', 'resnet50': 'fc',
         'shufflenet_v2': 'fc', 'vgg16': 'classifier_6',
         'swin_tiny': 'head/fc'}
# arch -> torchvision.models' builder, where the names differ.
TORCHVISION_BUILDERS = {'shufflenet_v2': 'shufflenet_v2_x1_0'}
# What torchvision's ImageNet weights expect (config.data.normalization).
TORCHVISION_NORMALIZATION = 'imagenet'


def how_to_obtain(arch: str) -> str:
  """One sentence: how to get and convert the weights of `arch`."""
  if arch in timm_swin.ARCHS:
    return timm_swin.how_to_obtain(arch)
  builder = TORCHVISION_BUILDERS.get(arch, arch)
  source = f"torchvision.models.{builder}(weights='IMAGENET1K_V1')"
  return (f'on a machine with internet, save them with `import torch, '
          f'torchvision; torch.save({source}.state_dict(), "{arch}.pth")`, '
          f'then run `python -m fer_jax.convert --arch={arch} '
          f'--src={arch}.pth --out=weights/{arch}` and set '
          f'--config.model.init_from=weights/{arch}')


def _check_arch(arch: str) -> None:
  if arch not in ARCHS:
    raise UserError(f'--arch={arch!r}: converted weights exist for '
                    f'{", ".join(sorted(ARCHS))}.')


def read_torch_state_dict(path: str, arch: str) -> dict[str, np.ndarray]:
  """A torchvision .pth state dict (or a checkpoint holding one) as numpy."""
  torch = reading.library_for(path, 'torch', 'torch', how_to_obtain(arch))
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    # Not torch's text: it runs over several lines, and for a file that is
    # no safe pickle it suggests weights_only=False, which runs its code.
    raise UserError(f'{path} is not a torch state dict that torch.load '
                    f'reads with weights_only=True ({type(e).__name__}); '
                    f'{how_to_obtain(arch)}.') from None
  for key in ('state_dict', 'model'):
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
  if not isinstance(state, dict):
    raise UserError(f'{path} holds a {type(state).__name__}, not a state '
                    f'dict; {how_to_obtain(arch)}.')
  return {k.removeprefix('module.'): v.detach().cpu().numpy()
          for k, v in state.items() if hasattr(v, 'detach')}


def _module_path(key: str) -> tuple[list[str], str]:
  """'layer1.0.downsample.1.weight' -> (['layer1_0', 'downsample_1'],
  'weight')."""
  *parts, leaf = key.split('.')
  names = []
  for part in parts:
    if part.isdigit() and names:
      names[-1] += f'_{part}'
    else:
      names.append(part)
  return names, leaf


def from_torchvision(arch: str, state_dict: dict[str, np.ndarray]) -> dict:
  """{'params', 'batch_stats'} of the `arch` port from a torchvision state
  dict (timm's for swin_tiny); fails naming the mismatches if it is not
  that architecture's."""
  _check_arch(arch)
  if arch in timm_swin.ARCHS:
    state_dict = timm_swin.normalise(state_dict)
  flat = {}
  for key, value in state_dict.items():
    names, leaf = _module_path(key)
    value = np.asarray(value, np.float32)
    if leaf == 'num_batches_tracked':
      continue
    if leaf == 'weight' and value.ndim == 4:  # Conv: OIHW -> HWIO.
      flat[('params', *names, 'kernel')] = value.transpose(2, 3, 1, 0)
    elif leaf == 'weight' and value.ndim == 2:  # Linear: transposed.
      kernel = value.T
      if arch == 'vgg16' and names == ['classifier_0']:
        # torch flattens [C=512, 7 * 7], the port [7 * 7, C]: kernel
        # [(hw, c), out] = weight[out, (c, hw)], in one copy of its 400 MB
        # (two copies, a reshape and then the transpose, took 2-3x as long).
        kernel = value.reshape(len(value), -1, 7 * 7).transpose(2, 1, 0)
        kernel = kernel.reshape(-1, len(value))
      flat[('params', *names, 'kernel')] = kernel
    elif leaf == 'weight' and value.ndim == 1:  # BatchNorm.
      flat[('params', *names, 'scale')] = value
    elif leaf == 'bias':
      flat[('params', *names, 'bias')] = value
    elif leaf == 'running_mean':
      flat[('batch_stats', *names, 'mean')] = value
    elif leaf == 'running_var':
      flat[('batch_stats', *names, 'var')] = value
    else:
      flat[('params', *names, leaf)] = value  # Reported as unexpected below.

  final = ARCHS[arch]
  num_classes = flat.get(('params', *final.split('/'), 'bias'),
                         np.zeros(1000)).shape[0]
  model = models.create(arch, num_classes)
  expected = traverse_util.flatten_dict(
      models.variable_shapes(model, (1, 224, 224, 3)))
  missing = sorted('/'.join(k) for k in expected.keys() - flat.keys())
  unexpected = sorted('/'.join(k) for k in flat.keys() - expected.keys())
  wrong = sorted(f'{"/".join(k)} {flat[k].shape} (expected '
                 f'{expected[k].shape})'
                 for k in expected.keys() & flat.keys()
                 if flat[k].shape != expected[k].shape)
  if missing or unexpected or wrong:
    problems = '; '.join(f'{what}: {", ".join(keys[:3])}'
                         + (f' and {len(keys) - 3} more' if len(keys) > 3
                            else '')
                         for what, keys in (('missing', missing),
                                            ('unexpected', unexpected),
                                            ('wrong shapes', wrong)) if keys)
    library = timm_swin.FORMAT if arch in timm_swin.ARCHS else 'torchvision'
    raise UserError(f'The state dict is not a {library} {arch} one '
                    f'({problems}); {how_to_obtain(arch)}.')
  return traverse_util.unflatten_dict(flat)


def read(src: str, arch: str) -> tuple[dict, dict]:
  """(variables, meta) converted for the `arch` port from `src`: a Keras
  .h5 (keras_h5), a .safetensors or a torchvision (timm for swin_tiny) .pth;
  meta has the source's `format` and the `normalization` its weights
  expect, for converted.json."""
  if src.lower().endswith('.h5'):
    return keras_h5.read(src, arch), {'format': keras_h5.FORMAT,
                                      'normalization': keras_h5.NORMALIZATION}
  if src.lower().endswith('.safetensors'):
    state_dict = timm_swin.read_safetensors(src, how_to_obtain(arch))
  else:
    state_dict = read_torch_state_dict(src, arch)
  variables = from_torchvision(arch, state_dict)
  if arch in timm_swin.ARCHS:
    return variables, {'format': timm_swin.FORMAT,
                       'normalization': timm_swin.NORMALIZATION}
  return variables, {'format': 'torchvision',
                     'normalization': TORCHVISION_NORMALIZATION}


def save(out: str, variables: dict, meta: dict) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, VARIABLES), 'wb') as f:
    f.write(serialization.msgpack_serialize(variables))
  with open(os.path.join(out, META), 'w') as f:
    json.dump(meta, f, indent=2)


def read_meta(path: str, arch: str, normalization: str | None = None) -> dict:
  """converted.json of a converted-weights directory, checked against the
  model `arch` it is to initialise and, if given, the run's
  config.data.normalization (when the file records what its weights
  expect)."""
  meta_path = os.path.join(path, META)
  if not (os.path.isfile(meta_path)
          and os.path.isfile(os.path.join(path, VARIABLES))):
    raise UserError(f'config.model.init_from={path!r} holds no converted '
                    f'weights ({META} and {VARIABLES}); to make them, '
                    f'{how_to_obtain(arch)}.')
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get('arch') != arch:
    raise UserError(f'config.model.init_from={path!r} holds {meta.get("arch")}'
                    f' weights, but config.model.name is {arch!r}.')
  expected = meta.get('normalization')
  if normalization is not None and expected not in (None, normalization):
    raise UserError(f'config.model.init_from={path!r} holds '
                    f'{meta.get("format", "converted")} weights that expect '
                    f'{expected!r} input normalisation, but '
                    f'config.data.normalization is {normalization!r}; set '
                    f'--config.data.normalization={expected}.')
  return meta


def load(path: str, arch: str) -> dict:
  """The converted {'params', 'batch_stats'} in `path` (numpy arrays)."""
  read_meta(path, arch)
  with open(os.path.join(path, VARIABLES), 'rb') as f:
    return serialization.msgpack_restore(f.read())


def init_from(path: str, arch: str, params, batch_stats) -> tuple:
  """(params, batch_stats) with every leaf that `path`'s converted weights
  have under the same name and shape replaced by the converted one; the
  others (the classifier for the FER classes, custom heads) are kept."""
  return merge(load(path, arch), params, batch_stats, path)


def merge(pretrained: dict, params, batch_stats, source: str) -> tuple:
  """(params, batch_stats) with every leaf that `pretrained` ({'params',
  'batch_stats'}) has under the same name and shape replaced by its value;
  fails if none matches. `source` names them in messages."""
  flat_pretrained = traverse_util.flatten_dict(pretrained)
  kept = []

  def merged(collection, tree):
    flat = traverse_util.flatten_dict(tree)
    for key, value in flat.items():
      new = flat_pretrained.get((collection, *key))
      if new is not None and new.shape == value.shape:
        flat[key] = jnp.asarray(new, value.dtype)
      else:
        kept.append('/'.join((collection, *key)))
    return traverse_util.unflatten_dict(flat) if flat else tree

  params, batch_stats = (merged('params', params),
                         merged('batch_stats', batch_stats))
  total = len(jax.tree.leaves((params, batch_stats)))
  if len(kept) == total:
    raise UserError(f'config.model.init_from={source!r}: no parameter of the '
                    'model matches its weights (names and shapes differ).')
  logging.info('Loaded %d of %d arrays from %s; these keep their '
               'initialisation: %s.', total - len(kept), total, source,
               ', '.join(kept) or 'none')
  return params, batch_stats
