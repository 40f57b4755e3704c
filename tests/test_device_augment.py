"""Device-side augmentation: shapes, each op's documented range, agreement
with the host transform, per-example draws, determinism, train step wiring."""

import types

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakedata
from fer_jax import models
from fer_jax.config import default_config
from fer_jax.data import augment as host_augment
from fer_jax.data import device_augment, preprocess
from fer_jax.errors import UserError
from fer_jax.train import optim, step

N = 64  # Images per batch: every op's range is checked over N draws.
OFF = dict(rotation=0, translation=0, zoom=0, hflip=False, brightness=0,
           contrast=0)
augment = jax.jit(device_augment.augment, static_argnums=2)


def _only(**knobs) -> host_augment.RandomAugment:
  return host_augment.RandomAugment(**{**OFF, **knobs})


def _noise(shape=(48, 48)) -> np.ndarray:
  return np.random.default_rng(123).integers(0, 256, shape, dtype=np.uint8)


def _batch(image: np.ndarray, n: int = N) -> np.ndarray:
  return np.repeat(image[None], n, axis=0)


def _square(start: int, stop: int, value: int = 200) -> np.ndarray:
  image = np.zeros((48, 48), np.uint8)
  image[start:stop, start:stop] = value
  return image


def _centroids(images) -> np.ndarray:
  """[N, 2] (row, column) centres of mass."""
  weights = np.asarray(images, np.float64)
  rows, cols = np.indices(weights.shape[1:])
  total = weights.sum(axis=(1, 2))
  return np.stack([(weights * rows).sum(axis=(1, 2)) / total,
                   (weights * cols).sum(axis=(1, 2)) / total], -1)


def _run(settings, images, seed=0) -> np.ndarray:
  return np.asarray(augment(jnp.asarray(images), jax.random.key(seed),
                            settings))


@pytest.mark.parametrize('shape, dtype', [((8, 48, 48), np.uint8),
                                          ((8, 48, 48, 1), np.uint8),
                                          ((8, 40, 40, 3), np.float32)])
def test_keeps_shape_gives_float32_grey_levels(shape, dtype):
  images = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
  settings = host_augment.RandomAugment(rotation=30, translation=0.2,
                                        zoom=0.2, brightness=0.5,
                                        contrast=0.5)
  out = _run(settings, images)
  assert out.shape == shape
  assert out.dtype == np.float32
  assert out.min() >= 0 and out.max() <= 255
  assert not np.allclose(out, images)


def test_all_off_and_no_geometry_are_identities():
  images = _batch(_noise(), 4)
  np.testing.assert_array_equal(_run(_only(), images), images)
  # The resample itself with zero rotation, translation and zoom, with and
  # without the mirror.
  inverses = device_augment._inverse_affines(
      jnp.zeros((2, 4)), jnp.array([1.0, -1.0]), 48, 48)
  out = np.asarray(device_augment._warp(
      jnp.asarray(images[:2, ..., None], jnp.float32), inverses))[..., 0]
  np.testing.assert_allclose(out[0], images[0], atol=1e-3)
  np.testing.assert_allclose(out[1], images[1, :, ::-1], atol=1e-3)


def test_same_key_same_output_other_key_other_output():
  settings = host_augment.RandomAugment(brightness=0.2, contrast=0.2)
  images = _batch(_noise(), 8)
  first = _run(settings, images, 7)
  np.testing.assert_array_equal(first, _run(settings, images, 7))
  assert not np.allclose(first, _run(settings, images, 8))


def test_each_example_gets_its_own_transform():
  settings = host_augment.RandomAugment(brightness=0.2, contrast=0.2)
  out = _run(settings, _batch(_noise(), 16)).reshape(16, -1)
  differences = np.abs(out[:, None] - out[None]).max(axis=-1)
  assert (differences[~np.eye(16, dtype=bool)] > 1).all()


def test_hflip_gives_the_image_or_its_exact_mirror():
  image = _noise().astype(np.float32)
  out = _run(_only(hflip=True), _batch(image))
  mirrored = [np.array_equal(o, image[:, ::-1]) for o in out]
  for o, m in zip(out, mirrored):
    assert m or np.array_equal(o, image)
  assert any(mirrored) and not all(mirrored)


def test_brightness_shifts_each_image_within_range():
  out = _run(_only(brightness=0.2), _batch(np.full((48, 48), 128, np.uint8)))
  assert np.allclose(out, out[:, :1, :1])  # A uniform shift per image.
  shifts = out.mean(axis=(1, 2)) - 128
  assert np.abs(shifts).max() <= 0.2 * 255 + 1e-3
  assert shifts.min() < -0.1 * 255 and shifts.max() > 0.1 * 255


def test_contrast_keeps_the_mean_and_scales_the_std_within_range():
  image = np.tile(np.arange(64, 192, dtype=np.uint8)[:48], (48, 1))
  out = _run(_only(contrast=0.5), _batch(image))
  np.testing.assert_allclose(out.mean(axis=(1, 2)), image.mean(), atol=1e-3)
  ratios = out.std(axis=(1, 2)) / image.std()
  assert ratios.min() >= 0.5 - 1e-4 and ratios.max() <= 1.5 + 1e-4
  assert ratios.min() < 0.75 and ratios.max() > 1.25


def test_photometric_extremes_clip_to_grey_levels():
  image = np.zeros((48, 48), np.uint8)
  image[:, 24:] = 250
  out = _run(_only(brightness=1.0, contrast=0.99), _batch(image))
  assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize('hflip', [False, True])
def test_rotation_turns_about_the_centre_and_keeps_the_mass(hflip):
  image = _square(16, 32)
  out = _run(_only(rotation=30, hflip=hflip), _batch(image))
  np.testing.assert_allclose(_centroids(out), 23.5, atol=0.5)
  np.testing.assert_allclose(out.sum(axis=(1, 2)) / image.sum(), 1,
                             atol=0.05)
  changed = np.abs(out - image).sum(axis=(1, 2)) > 0.1 * image.sum()
  assert changed.sum() > N // 2


def test_zoom_scales_the_area_within_range():
  image = _square(16, 32)
  out = _run(_only(zoom=0.5), _batch(image))
  np.testing.assert_allclose(_centroids(out), 23.5, atol=0.5)
  ratios = out.sum(axis=(1, 2)) / image.sum()
  assert 0.5**2 * 0.9 < ratios.min() < 0.9
  assert 1.1 < ratios.max() < 1.5**2 * 1.1


def test_translation_moves_by_at_most_the_fraction_both_ways():
  shifts = _centroids(_run(_only(translation=0.1),
                           _batch(_square(22, 26)))) - 23.5
  assert np.abs(shifts).max() <= 0.1 * 48 + 1e-3
  assert (shifts.min(axis=0) < -1).all() and (shifts.max(axis=0) > 1).all()


@pytest.mark.parametrize('angle, shift_x, shift_y, zoom, flip', [
    (20.0, 0.1, -0.05, 0.1, 1.0), (-35.0, -0.2, 0.15, -0.2, -1.0)])
def test_affine_matches_the_host_transform(angle, shift_x, shift_y, zoom,
                                           flip):
  """The same draws warp as OpenCV does on the host, borders included."""
  rows, cols = np.indices((48, 48))
  image = (127 + 100 * np.sin(rows / 5) * np.cos(cols / 7)).astype(np.uint8)
  draws = jnp.array([[np.deg2rad(angle), shift_x, shift_y, zoom]])
  device = np.asarray(device_augment._warp(
      jnp.asarray(image[None, ..., None], jnp.float32),
      device_augment._inverse_affines(draws, jnp.array([flip]), 48,
                                      48)))[0, ..., 0]
  # The host's matrix (augment.RandomAugment._warp) for the same draws.
  a = np.deg2rad(angle)
  cos, sin = (1 + zoom) * np.cos(a), (1 + zoom) * np.sin(a)
  linear = np.array([[flip * cos, -sin], [flip * sin, cos]])
  centre = np.array([23.5, 23.5])
  offset = centre + (shift_x * 48, shift_y * 48) - linear @ centre
  host = cv2.warpAffine(image, np.concatenate([linear, offset[:, None]], 1),
                        (48, 48), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT_101)
  difference = np.abs(device - host)
  assert difference.mean() < 0.6 and difference.max() < 3, difference.max()


def test_where_selects_the_place_and_validates():
  config = default_config().data.augment
  assert device_augment.where(config) == 'host'
  assert device_augment.from_config(config) is None
  config.where = 'device'
  assert device_augment.from_config(config) == host_augment.from_config(config)
  config.update(OFF)
  assert device_augment.from_config(config) is None
  assert device_augment.where(types.SimpleNamespace(**OFF)) == 'host'
  config.where = 'gpu'
  with pytest.raises(UserError, match=r"config\.data\.augment\.where='gpu'"):
    device_augment.from_config(config)
  config.update(where='device', zoom=1.5)
  with pytest.raises(UserError, match=r'config\.data\.augment\.zoom'):
    device_augment.from_config(config)


def test_train_step_augments_on_the_device():
  spec = preprocess.InputSpec(48, 1, (127.5,), (127.5,))
  model = models.create('resnet_small', 7, stem_features=8,
                        block_features=(8, 16))
  config = default_config().train
  optimizer = optim.create(config, steps_per_epoch=10)
  state = step.init_state(model, optimizer, spec, jax.random.key(0))
  labels = np.arange(14) % 7
  batch = {'image': fakedata.class_images(labels),
           'label': labels.astype(np.int32)}
  settings = host_augment.RandomAugment(brightness=0.1, contrast=0.1)
  steps = {name: jax.jit(step.make_train_step(
      model, optimizer, spec, np.ones(7, np.float32), 0.0, augment_settings))
           for name, augment_settings in (('plain', None),
                                          ('augmented', settings))}
  _, plain = steps['plain'](state, batch, jax.random.key(1))
  first = [steps['augmented'](state, batch, jax.random.key(k))[1]['loss']
           for k in (1, 1, 2)]
  assert np.isfinite(first).all()
  assert first[0] == first[1]  # A pure function of (state, batch, rng).
  assert first[0] != first[2] and first[0] != plain['loss']


def _erased(where: str, probability: float, n: int = 256) -> np.ndarray:
  """`n` uniform grey faces (128) through erasing alone, as float arrays."""
  settings = _only(erasing=probability)
  images = np.full((n, 48, 48), 128, np.uint8)
  if where == 'device':
    out = _run(settings, images)
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.rint(out))  # Grey levels.
    return out
  rng = np.random.default_rng(0)
  out = np.stack([settings.random_map({'image': image[..., None]}, rng)[
      'image'] for image in images])
  assert out.shape == images.shape + (1,) and out.dtype == np.uint8
  return out[..., 0].astype(np.float32)


@pytest.mark.parametrize('where', ['device', 'host'])
def test_erasing_fills_one_box_in_the_documented_ranges(where):
  out = _erased(where, 0.5)
  changed = out != 128
  erased = changed.any(axis=(1, 2))
  assert 0.4 < erased.mean() < 0.6  # Probability 0.5, over 256 faces.
  heights, widths = [], []
  for image, mask in zip(out[erased], changed[erased]):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # One box (a random value hits 128 now and then), random grey levels.
    assert mask[top:bottom, left:right].mean() > 0.95
    assert mask.sum() == mask[top:bottom, left:right].sum()
    assert image[mask].std() > 50
    heights.append(bottom - top)
    widths.append(right - left)
  heights, widths = np.array(heights), np.array(widths)
  areas, ratios = heights * widths / 48**2, heights / widths
  # [0.02, 0.33] and [0.3, 3.3], give or take the rounding to pixels.
  assert areas.min() >= 0.015 and areas.max() <= 0.36
  assert areas.min() < 0.05 and areas.max() > 0.25
  assert ratios.min() >= 0.25 and ratios.max() <= 4.0
  assert ratios.min() < 0.5 and ratios.max() > 2.0


@pytest.mark.parametrize('where', ['device', 'host'])
def test_erasing_probability_zero_and_one(where):
  assert (_erased(where, 1.0, 64) != 128).any(axis=(1, 2)).all()
  assert _only(erasing=0.0).enabled is False
  assert (_erased(where, 0.0, 8) == 128).all()


def test_erasing_is_configurable_and_validated():
  config = default_config().data.augment
  assert config.erasing == 0.0
  config.update(OFF, erasing=0.25)
  assert host_augment.from_config(config) == _only(erasing=0.25)
  config.where = 'device'
  assert device_augment.from_config(config) == _only(erasing=0.25)
  config.erasing = 1.5
  with pytest.raises(UserError, match=r'config\.data\.augment\.erasing'):
    device_augment.from_config(config)


def test_erasing_leaves_the_other_device_draws_unchanged():
  settings = host_augment.RandomAugment(brightness=0.2, erasing=0.5)
  images = _batch(_noise(), 16)
  without = _run(host_augment.RandomAugment(brightness=0.2), images)
  out = _run(settings, images)
  # Close, not equal: the two programs may round differently (XLA fuses
  # them differently); an erased box changes grey levels by far more.
  same = np.isclose(out, without, rtol=0, atol=1e-3).all(axis=(1, 2))
  assert same.any() and not same.all()
