import jax
import jax.numpy as jnp
import pytest

from fer_jax import models
from fer_jax.errors import UserError


def _init(model, size=48, channels=1):
  return model.init(jax.random.key(0), jnp.zeros((2, size, size, channels)))


def test_resnet_small_parameter_count_matches_reference_study():
  variables = _init(models.create('resnet_small', 7))
  num_params = sum(x.size for x in jax.tree.leaves(variables['params']))
  assert num_params < 500_000
  assert abs(num_params - 418_000) < 5_000  # The study's ~418k.


def test_resnet_small_outputs_logits_and_pre_logits():
  model = models.create('resnet_small', 5, dropout=0.2, pooling='gap')
  variables = _init(model)
  logits, state = model.apply(variables, jnp.ones((3, 48, 48, 1)),
                              mutable=['intermediates'])
  assert logits.shape == (3, 5)
  (pre_logits,) = state['intermediates']['pre_logits']
  assert pre_logits.shape == (3, 128)


def test_dropout_is_active_only_in_training():
  model = models.create('resnet_small', 7, dropout=0.5)
  variables = _init(model)
  x = jax.random.uniform(jax.random.key(1), (2, 48, 48, 1))
  eval_a = model.apply(variables, x)
  eval_b = model.apply(variables, x)
  train_a, _ = model.apply(variables, x, train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(2)})
  train_b, _ = model.apply(variables, x, train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(3)})
  assert jnp.array_equal(eval_a, eval_b)
  assert not jnp.allclose(train_a, train_b)


def test_unknown_model_lists_the_choices():
  with pytest.raises(UserError, match='resnet_small'):
    models.create('resnet_smal', 7)


def test_unknown_model_setting_names_it():
  with pytest.raises(UserError, match='config.model.widht'):
    models.create('resnet_small', 7, widht=3)
