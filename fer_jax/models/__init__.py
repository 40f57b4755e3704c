"""Model zoo: a name -> Flax module table, and construction from a config."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.errors import UserError
from fer_jax.models import mobilenetv2_small, resnet_small

MODELS: dict[str, type[nn.Module]] = {
    'mobilenetv2_small': mobilenetv2_small.MobileNetV2Small,
    'resnet_small': resnet_small.ResNetSmall,
}


# config.train.compute_dtype -> the models' `dtype` (activations and compute;
# parameters stay float32).
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def create(name: str, num_classes: int, *, compute_dtype: str = 'float32',
           **kwargs) -> nn.Module:
  """Builds model `name`; `kwargs` are its fields (config.model minus name).

  `compute_dtype` (config.train.compute_dtype) other than 'float32' needs a
  model with a `dtype` field.
  """
  if name not in MODELS:
    raise UserError(f'Unknown model {name!r}: choose config.model.name from '
                    f'{", ".join(sorted(MODELS))}.')
  if compute_dtype not in COMPUTE_DTYPES:
    raise UserError(f'config.train.compute_dtype={compute_dtype!r} must be '
                    f'one of {tuple(COMPUTE_DTYPES)}.')
  cls = MODELS[name]
  all_fields = {f.name for f in dataclasses.fields(cls)}
  fields = all_fields - {'num_classes', 'parent', 'name', 'dtype'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a setting of '
                    f'{name}; its settings are {", ".join(sorted(fields))}'
                    + ('; set the compute dtype with config.train.compute_dtype'
                       if unknown[0] == 'dtype' else '') + '.')
  if compute_dtype != 'float32':
    if 'dtype' not in all_fields:
      raise UserError(f'config.train.compute_dtype={compute_dtype!r}: model '
                      f'{name} has no dtype field and only computes in '
                      "float32; use compute_dtype='float32'.")
    kwargs['dtype'] = COMPUTE_DTYPES[compute_dtype]
  return cls(num_classes=num_classes, **kwargs)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
