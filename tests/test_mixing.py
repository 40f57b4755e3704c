"""Mixup / CutMix: the images, lambda, the mixed loss and the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import fakedata
from fer_jax import models
from fer_jax.config import default_config
from fer_jax.data import preprocess
from fer_jax.errors import UserError
from fer_jax.train import mixing, optim, step

# Per-example constant images: any pixel tells whose it is (or a blend).
IMAGES = jnp.broadcast_to(jnp.arange(8, dtype=jnp.float32)[:, None, None,
                                                           None],
                          (8, 12, 16, 1))
mix = jax.jit(mixing.mix, static_argnums=(2, 3))


def test_mixed_loss_is_the_lambda_weighted_combination():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  labels = jnp.array([0, 1, 2, 3, 0, 1])
  partners = labels[::-1]
  targets = jax.nn.one_hot(labels, 4)
  weights = jnp.asarray(rng.uniform(0.5, 2, 4), jnp.float32)
  lam = 0.3
  loss = step.mixed_loss(logits, targets, labels, lam, class_weights=weights,
                         label_smoothing=0.1)
  expected = (lam * step.cross_entropy(logits, targets, weights[labels], 0.1)
              + (1 - lam) * step.cross_entropy(
                  logits, jax.nn.one_hot(partners, 4), weights[partners],
                  0.1))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  # Equal weights: the cross-entropy against mixed, smoothed targets.
  mixed_targets = optax.smooth_labels(lam * targets + (1 - lam)
                                      * jax.nn.one_hot(partners, 4), 0.1)
  np.testing.assert_allclose(
      step.mixed_loss(logits, targets, labels, lam,
                      class_weights=jnp.ones(4), label_smoothing=0.1),
      optax.softmax_cross_entropy(logits, mixed_targets).mean(), rtol=1e-6)
  np.testing.assert_allclose(  # lam 1: the plain loss.
      step.mixed_loss(logits, targets, labels, 1.0, class_weights=weights,
                      label_smoothing=0.1),
      step.classification_loss(logits, targets, labels, weights, 0.1),
      rtol=1e-6)


def test_mixup_blends_each_image_with_the_reversed_batch():
  lams = []
  for seed in range(20):
    out, lam = mix(IMAGES, jax.random.key(seed), 0.4, 0.0)
    np.testing.assert_allclose(out, lam * IMAGES + (1 - lam) * IMAGES[::-1],
                               atol=1e-5)
    lams.append(float(lam))
  assert 0 <= min(lams) and max(lams) <= 1
  assert min(lams) < 0.2 and max(lams) > 0.8  # Beta(0.4, 0.4): U-shaped.


def test_cutmix_pastes_one_box_and_corrects_lambda_to_its_area():
  for seed in range(20):
    out, lam = map(np.asarray, mix(IMAGES, jax.random.key(seed), 0.0, 1.0))
    pasted = out != np.asarray(IMAGES)
    np.testing.assert_array_equal(out[pasted], np.asarray(IMAGES[::-1])[pasted])
    box = pasted[0, ..., 0]
    assert (pasted == box[None, ..., None]).all()  # The same box for all.
    np.testing.assert_allclose(1 - lam, box.mean(), atol=1e-6)
    if box.any():
      rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
      assert box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()


def test_both_alphas_switch_between_mixup_and_cutmix_per_batch():
  kinds = set()
  for seed in range(20):
    out, lam = mix(IMAGES, jax.random.key(seed), 0.4, 1.0)
    blended = np.allclose(out, lam * IMAGES + (1 - lam) * IMAGES[::-1],
                          atol=1e-5)
    pasted = np.isin(np.asarray(out - IMAGES), 0) | np.isclose(
        out, IMAGES[::-1])
    assert blended or pasted.all()
    kinds.add('mixup' if blended and not pasted.all() else 'cutmix')
  assert kinds == {'mixup', 'cutmix'}


@pytest.mark.parametrize('alpha', [0.2, 1.0, 4.0])
def test_symmetric_beta_draws_beta_alpha_alpha(alpha):
  keys = jax.random.split(jax.random.key(0), 20_000)
  draws = np.asarray(jax.jit(jax.vmap(
      lambda key: mixing.symmetric_beta(key, alpha)))(keys))
  # float32 like the draws: at alpha = 0.2 about 2% of them round to 1.0.
  reference = np.random.default_rng(0).beta(alpha, alpha, 20_000)
  assert np.isfinite(draws).all() and ((draws >= 0) & (draws <= 1)).all()
  assert stats.ks_2samp(draws, reference.astype(np.float32)).pvalue > 0.01


@pytest.mark.parametrize('alphas', [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mixing_has_no_while_loop_on_a_gpu(alphas):
  # A GPU waits on the host at every loop iteration (mixing.py's docstring);
  # jax.random.beta lowers to two loops there. Lowering needs no GPU.
  lowered = jax.jit(mixing.mix, static_argnums=(2, 3)).trace(
      IMAGES, jax.random.key(0), *alphas).lower(lowering_platforms=('cuda',))
  assert 'stablehlo.while' not in lowered.as_text()


@pytest.mark.parametrize('name, value', [('mixup_alpha', -0.1),
                                         ('cutmix_alpha', 'a'),
                                         ('mixup_alpha', float('inf'))])
def test_bad_alphas_name_the_knob(name, value):
  alphas = {'mixup_alpha': 0.0, 'cutmix_alpha': 0.0, name: value}
  with pytest.raises(UserError, match=f'config.train.{name}'):
    mixing.check(**alphas)


def test_train_step_with_mixing_is_deterministic_and_alpha_zero_is_exact():
  config = default_config().train
  assert config.mixup_alpha == 0.0 and config.cutmix_alpha == 0.0
  spec = preprocess.InputSpec(24, 1, (127.5,), (127.5,))
  model = models.create('resnet_small', 7, stem_features=4,
                        block_features=(4,))
  optimizer = optim.create(config, steps_per_epoch=10)
  state = step.init_state(model, optimizer, spec, jax.random.key(0))
  labels = np.arange(14) % 7
  batch = {'image': fakedata.class_images(labels),
           'label': labels.astype(np.int32)}

  def make(**alphas):
    return jax.jit(step.make_train_step(
        model, optimizer, spec, np.ones(7, np.float32), 0.1, **alphas))

  plain, plain_metrics = make()(state, batch, jax.random.key(1))
  zero, zero_metrics = make(mixup_alpha=0.0, cutmix_alpha=0.0)(
      state, batch, jax.random.key(1))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, plain, zero))
  assert plain_metrics['loss'] == zero_metrics['loss']
  for alphas in ({'mixup_alpha': 0.4}, {'cutmix_alpha': 1.0},
                 {'mixup_alpha': 0.4, 'cutmix_alpha': 1.0}):
    train_step = make(**alphas)
    first, metrics = train_step(state, batch, jax.random.key(1))
    again, _ = train_step(state, batch, jax.random.key(1))
    assert np.isfinite(metrics['loss'])
    assert metrics['loss'] != plain_metrics['loss']
    np.testing.assert_array_equal(metrics['labels'], labels)  # Unmixed.
    assert jax.tree.all(jax.tree.map(jnp.array_equal, first.params,
                                     again.params))
