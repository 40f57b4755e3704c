"""Model zoo: a name -> Flax module table, and construction from a config."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.errors import UserError
from fer_jax.models import mobilenet_v2, mobilenetv2_small, resnet
from fer_jax.models import resnet_small, vgg, vgg_fer
from fer_jax.models import shufflenet_v2
from fer_jax.models import swin

MODELS: dict[str, type[nn.Module]] = {
    'mobilenetv2_small': mobilenetv2_small.MobileNetV2Small,
    'resnet_small': resnet_small.ResNetSmall,
    # From scratch at 48x48 (Khaireddin & Chen's VGGNet).
    'vgg_fer': vgg_fer.VGGFer,
    # Ports of torchvision's ImageNet models (fer_jax.convert loads weights).
    'mobilenet_v2': mobilenet_v2.MobileNetV2,
    'resnet18': resnet.ResNet18,
    'resnet50': resnet.ResNet50,
    'shufflenet_v2': shufflenet_v2.ShuffleNetV2,
    'vgg16': vgg.VGG16,
    # A port of timm's swin_tiny_patch4_window7_224.
    'swin_tiny': swin.SwinTiny,
}


# config.train.compute_dtype -> the models' `dtype` (activations and compute;
# parameters stay float32).
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


# Module fields that are not config.model settings.
_NOT_SETTINGS = frozenset({'num_classes', 'parent', 'name', 'dtype'})


def setting_names(cls: type[nn.Module]) -> set[str]:
  """The fields of model class `cls` that config.model sets."""
  return {f.name for f in dataclasses.fields(cls)} - _NOT_SETTINGS


def create(name: str, num_classes: int, *, compute_dtype: str = 'float32',
           **kwargs) -> nn.Module:
  """Builds model `name`; `kwargs` are its fields (config.model minus name).

  `compute_dtype` (config.train.compute_dtype) other than 'float32' needs a
  model with a `dtype` field.
  """
  # The weights to start from (train/warm_start.py), not a model field.
  kwargs.pop('init_from', None)
  if name not in MODELS:
    raise UserError(f'Unknown model {name!r}: choose config.model.name from '
                    f'{", ".join(sorted(MODELS))}.')
  if compute_dtype not in COMPUTE_DTYPES:
    raise UserError(f'config.train.compute_dtype={compute_dtype!r} must be '
                    f'one of {tuple(COMPUTE_DTYPES)}.')
  cls = MODELS[name]
  fields = setting_names(cls)
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a setting of '
                    f'{name}; its settings are {", ".join(sorted(fields))}'
                    + ('; set the compute dtype with config.train.compute_dtype'
                       if unknown[0] == 'dtype' else '') + '.')
  if compute_dtype != 'float32':
    if 'dtype' not in {f.name for f in dataclasses.fields(cls)}:
      raise UserError(f'config.train.compute_dtype={compute_dtype!r}: model '
                      f'{name} has no dtype field and only computes in '
                      "float32; use compute_dtype='float32'.")
    kwargs['dtype'] = COMPUTE_DTYPES[compute_dtype]
  return cls(num_classes=num_classes, **kwargs)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def variable_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
  """`model`'s variables as jax.ShapeDtypeStructs for float32 inputs of
  `input_shape`: traced, nothing computed or compiled."""
  return jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct(input_shape, jnp.float32))


# Top-level modules that are a classifier whatever their parameters.
HEAD_NAMES = ('head', 'classifier', 'fc', 'logits')


@dataclasses.dataclass(frozen=True)
class ParameterGroups:
  """A model's top-level modules, in the order they run: `blocks` (each a
  tuple of module names) then `head` (the classifier's module names)."""
  blocks: tuple[tuple[str, ...], ...]
  head: tuple[str, ...]

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(n for block in self.blocks for n in block) + self.head


def _is_dense(tree) -> bool:
  return (isinstance(tree, dict) and set(tree) <= {'kernel', 'bias'}
          and getattr(tree.get('kernel'), 'ndim', 0) == 2)


def _is_norm(tree) -> bool:
  return all(leaf.ndim <= 1 for leaf in jax.tree.leaves(tree))


def parameter_groups(model: nn.Module,
                     input_shape: tuple[int, ...]) -> ParameterGroups:
  """`model`'s parameters as blocks and a head, for freezing in phases.

  Generic over the zoo: the top-level submodules in the order they are
  created (traced, nothing computed). The head is the trailing run of dense
  layers (or of modules named as in HEAD_NAMES); every other module starts a
  block, except a module of vectors only (a norm layer) which joins the
  block before it: resnet_small is [Conv_0 + BatchNorm_0], [ResidualBlock_0],
  [ResidualBlock_1] and head [Dense_0 (+ hidden Dense)].
  """
  modules = []

  def init(x):
    variables = model.init(jax.random.key(0), x, train=False)
    # The dict keeps creation order here; a jitted result would sort it.
    modules.extend(variables['params'].items())
    return variables

  jax.eval_shape(init, jax.ShapeDtypeStruct(input_shape, jnp.float32))
  head_start = len(modules)
  while head_start > 1 and (_is_dense(modules[head_start - 1][1])
                            or modules[head_start - 1][0] in HEAD_NAMES
                            or _is_norm(modules[head_start - 1][1])):
    head_start -= 1
  # A norm layer before the first dense one belongs to the block it follows.
  while head_start < len(modules) and _is_norm(modules[head_start][1]):
    head_start += 1
  blocks = []
  for name, tree in modules[:head_start]:
    if blocks and _is_norm(tree):
      blocks[-1].append(name)
    else:
      blocks.append([name])
  return ParameterGroups(tuple(map(tuple, blocks)),
                         tuple(name for name, _ in modules[head_start:]))
