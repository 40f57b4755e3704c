"""Model zoo: a name -> Flax module table, and construction from a config."""

import dataclasses

import flax.linen as nn
import jax

from fer_jax.errors import UserError
from fer_jax.models import resnet_small

MODELS: dict[str, type[nn.Module]] = {
    'resnet_small': resnet_small.ResNetSmall,
}


def create(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds model `name`; `kwargs` are its fields (config.model minus name)."""
  if name not in MODELS:
    raise UserError(f'Unknown model {name!r}: choose config.model.name from '
                    f'{", ".join(sorted(MODELS))}.')
  cls = MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {
      'num_classes', 'parent', 'name'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a setting of '
                    f'{name}; its settings are {", ".join(sorted(fields))}.')
  return cls(num_classes=num_classes, **kwargs)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
