"""Keras applications' VGG16 weights (legacy HDF5, .h5) -> the vgg16 port.

Reads `vgg16_weights_tf_dim_ordering_tf_kernels.h5` as Keras downloads it
(`keras.applications.VGG16(weights='imagenet')` saves it under
~/.keras/models/), its `_notop` variant (the 13 conv layers only: the
classifier keeps its initialisation) or a whole model saved with
`model.save('model.h5')` (the same weights under `model_weights`). The layout
is Keras 2's: the root's `layer_names` attribute lists the layers, each
layer's group lists its arrays in a `weight_names` attribute, kernel then
bias (`block1_conv1/block1_conv1/kernel:0`); layers without weights (input,
pooling, flatten) have none. Arrays are matched by layer name and by their
order in `weight_names`, not by their own names, which differ between Keras
versions.

The mapping is exact: Keras's conv kernels are already HWIO and its dense
kernels [in, out], as Flax's; its `flatten` before fc1 is channels-last
(H, W, C) as is the port's, so unlike torchvision's fc1 nothing is permuted.
The weights expect Keras's 'caffe' preprocessing (BGR, 0-255 minus the
ImageNet channel means, no scaling): config.data.normalization='caffe'.
Needs h5py only (the `keras` extra).
"""

import numpy as np
from flax import traverse_util

from fer_jax import models
from fer_jax.convert import reading
from fer_jax.errors import UserError
from fer_jax.models import vgg

# What the weights expect (config.data.normalization), and their format.
NORMALIZATION = 'caffe'
FORMAT = 'keras'
ARCHS = ('vgg16',)


def _conv_layers() -> dict[str, str]:
  """Keras layer name -> the port's module: block<b>_conv<c> -> features_i,
  i the conv's position in torchvision's `features` Sequential."""
  names, index, block, conv = {}, 0, 1, 1
  for layer in vgg.VGG16_LAYERS:
    if layer == 'M':
      index, block, conv = index + 1, block + 1, 1
    else:
      names[f'block{block}_conv{conv}'] = f'features_{index}'
      index, conv = index + 2, conv + 1
  return names


CONV_LAYERS = _conv_layers()
DENSE_LAYERS = {'fc1': 'classifier_0', 'fc2': 'classifier_3',
                'predictions': 'classifier_6'}


def how_to_obtain(arch: str) -> str:
  """One sentence: how to get and convert Keras's weights of `arch`."""
  return ('on a machine with internet, `import keras; '
          "keras.applications.VGG16(weights='imagenet')` downloads "
          '~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5 '
          "(include_top=False: ..._notop.h5); then run `python -m "
          f'fer_jax.convert --arch={arch} --src=<that .h5> '
          f'--out=weights/{arch}` and set '
          f'--config.model.init_from=weights/{arch} '
          f'--config.data.normalization={NORMALIZATION}')


def _strings(group, name: str) -> list[str]:
  """A list-of-strings attribute, joined from Keras's chunks (`name0`,
  `name1`, ...) when it was too long for one HDF5 attribute."""
  if name in group.attrs:
    values = list(group.attrs[name])
  else:
    values, chunk = [], 0
    while f'{name}{chunk}' in group.attrs:
      values.extend(group.attrs[f'{name}{chunk}'])
      chunk += 1
  return [v.decode('utf8') if isinstance(v, bytes) else str(v)
          for v in values]


def _check_arch(arch: str) -> None:
  if arch not in ARCHS:
    raise UserError(f'--arch={arch}: Keras .h5 weights convert for '
                    f'{", ".join(ARCHS)} only; for {arch} convert '
                    "torchvision's .pth.")


def read_layers(path: str, arch: str) -> dict[str, list[np.ndarray]]:
  """{layer name: its arrays in `weight_names` order} of the layers with
  weights in a Keras legacy .h5 weights (or whole-model) file."""
  h5py = reading.library_for(path, 'h5py', 'keras', how_to_obtain(arch))
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise UserError(f'{path} is not an HDF5 file ({e}); '
                    f'{how_to_obtain(arch)}.') from None
  with f:
    root = f['model_weights'] if 'model_weights' in f else f
    layer_names = _strings(root, 'layer_names')
    if not layer_names:
      raise UserError(f'{path} holds no Keras weights (no layer_names '
                      f'attribute); {how_to_obtain(arch)}.')
    layers = {}
    for name in layer_names:
      if name not in root:
        raise UserError(f'{path} lists layer {name!r} but has no group for '
                        f'it; {how_to_obtain(arch)}.')
      group = root[name]
      weight_names = _strings(group, 'weight_names')
      if weight_names:
        try:
          layers[name] = [np.asarray(group[w], np.float32)
                          for w in weight_names]
        except KeyError:
          raise UserError(f'{path}: layer {name!r} lists arrays '
                          f'{weight_names} that it does not hold; '
                          f'{how_to_obtain(arch)}.') from None
  return layers


def _expected(arch: str, num_classes: int) -> dict:
  model = models.create(arch, num_classes)
  return traverse_util.flatten_dict(
      models.variable_shapes(model, (1, 224, 224, 3))['params'])


def from_keras(arch: str, layers: dict[str, list[np.ndarray]],
               path: str) -> dict:
  """{'params'} of the `arch` port from read_layers' arrays: all 16 weighted
  layers of Keras's VGG16, or its 13 conv layers (include_top=False, the
  `_notop` file). Fails naming the layers or shapes that do not fit."""
  _check_arch(arch)
  known = {**CONV_LAYERS, **DENSE_LAYERS}
  unexpected = [name for name in layers if name not in known]
  missing = [name for name in CONV_LAYERS if name not in layers]
  top = [name for name in DENSE_LAYERS if name in layers]
  if top:  # All of the classifier or (notop) none of it.
    missing += [name for name in DENSE_LAYERS if name not in layers]
  if unexpected or missing:
    problems = '; '.join(
        f'{what}: {", ".join(names[:4])}'
        + (f' and {len(names) - 4} more' if len(names) > 4 else '')
        for what, names in (('missing layers', missing),
                            ('unexpected layers', unexpected)) if names)
    raise UserError(f'{path} is not Keras VGG16 weights ({problems}); '
                    f'{how_to_obtain(arch)}.')
  num_classes = layers['predictions'][-1].shape[-1] if top else 1000
  expected = _expected(arch, num_classes)
  flat, wrong = {}, []
  for name, arrays in layers.items():
    module = known[name]
    if len(arrays) != 2:
      wrong.append(f'{name} has {len(arrays)} arrays (expected a kernel and '
                   'a bias)')
      continue
    for leaf, value in zip(('kernel', 'bias'), arrays):
      if value.shape != expected[(module, leaf)].shape:
        wrong.append(f'{name} {leaf} {value.shape} (expected '
                     f'{expected[(module, leaf)].shape})')
      flat[(module, leaf)] = value
  if wrong:
    raise UserError(f'{path} is not Keras VGG16 weights (wrong shapes: '
                    f'{", ".join(wrong[:3])}'
                    + (f' and {len(wrong) - 3} more' if len(wrong) > 3
                       else '')
                    + f'); {how_to_obtain(arch)}.')
  return {'params': traverse_util.unflatten_dict(flat)}


def read(path: str, arch: str) -> dict:
  """{'params'} of the `arch` port from the Keras .h5 file `path`."""
  _check_arch(arch)
  return from_keras(arch, read_layers(path, arch), path)
