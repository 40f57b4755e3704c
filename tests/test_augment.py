"""Host-side augmentation: each op alone, their bounds, config and Grain."""

import types

import grain
import numpy as np
import pytest

from fer_jax.config import default_config
from fer_jax.data import augment
from fer_jax.errors import UserError

SEEDS = range(40)
OFF = dict(rotation=0, translation=0, zoom=0, hflip=False, brightness=0,
           contrast=0)


def _only(**knobs) -> augment.RandomAugment:
  return augment.RandomAugment(**{**OFF, **knobs})


def _apply(transform, image, seed=0) -> np.ndarray:
  return transform.random_map({'image': image, 'label': 3},
                              np.random.default_rng(seed))['image']


def _noise(shape=(48, 48)) -> np.ndarray:
  return np.random.default_rng(123).integers(0, 256, shape, dtype=np.uint8)


def _square(start: int, stop: int, value: int = 200) -> np.ndarray:
  image = np.zeros((48, 48), np.uint8)
  image[start:stop, start:stop] = value
  return image


def _centroid(image) -> np.ndarray:
  weights = image.astype(np.float64)
  rows, cols = np.indices(image.shape)
  return np.array([(weights * rows).sum(), (weights * cols).sum()]) / (
      weights.sum())


@pytest.mark.parametrize('shape', [(48, 48), (48, 48, 1)])
def test_keeps_shape_dtype_and_other_keys(shape):
  image = _noise(shape)
  image.flags.writeable = False  # As from a memory-mapped source.
  transform = augment.RandomAugment(brightness=0.2, contrast=0.2)
  element = {'image': image, 'label': 3}
  out = transform.random_map(element, np.random.default_rng(0))
  assert out['image'].shape == shape
  assert out['image'].dtype == np.uint8
  assert out['label'] == 3
  assert not np.array_equal(out['image'], image)
  assert element['image'] is image  # The input element is left alone.


def test_all_off_is_identity_and_from_config_gives_none():
  image = _noise()
  assert np.array_equal(_apply(_only(), image), image)
  assert augment.from_config(types.SimpleNamespace(**OFF)) is None


def test_from_config_takes_every_knob():
  config = default_config().data.augment
  config.update(brightness=0.3, contrast=0.4)
  transform = augment.from_config(config)
  assert transform == augment.RandomAugment(
      rotation=10.0, translation=0.1, zoom=0.1, hflip=True, brightness=0.3,
      contrast=0.4)


def test_same_seed_same_output_other_seed_other_output():
  transform = augment.RandomAugment(brightness=0.2, contrast=0.2)
  image = _noise()
  first = _apply(transform, image, 7)
  assert np.array_equal(first, _apply(transform, image, 7))
  assert not np.array_equal(first, _apply(transform, image, 8))


def test_hflip_gives_the_image_or_its_exact_mirror():
  image = _noise()
  flipped = []
  for seed in SEEDS:
    out = _apply(_only(hflip=True), image, seed)
    mirrored = np.array_equal(out, image[:, ::-1])
    assert mirrored or np.array_equal(out, image)
    flipped.append(mirrored)
  assert any(flipped) and not all(flipped)


@pytest.mark.parametrize('hflip', [False, True])
def test_rotation_turns_about_the_centre_and_keeps_the_mass(hflip):
  image = _square(16, 32)
  changed = 0
  for seed in SEEDS:
    out = _apply(_only(rotation=30, hflip=hflip), image, seed)
    np.testing.assert_allclose(_centroid(out), [23.5, 23.5], atol=0.5)
    assert abs(int(out.sum()) / int(image.sum()) - 1) < 0.05
    changed += np.abs(out.astype(int) - image).sum() > 0.1 * image.sum()
  assert changed > len(SEEDS) // 2


def test_zoom_scales_the_area_within_range():
  image = _square(16, 32)
  ratios = []
  for seed in SEEDS:
    out = _apply(_only(zoom=0.5), image, seed)
    np.testing.assert_allclose(_centroid(out), [23.5, 23.5], atol=0.5)
    ratios.append(int(out.sum()) / int(image.sum()))
  assert 0.5**2 * 0.9 < min(ratios) < 0.9
  assert 1.1 < max(ratios) < 1.5**2 * 1.1


def test_translation_moves_by_at_most_the_fraction():
  image = _square(22, 26)
  shifts = np.array([_centroid(_apply(_only(translation=0.1), image, seed))
                     - 23.5 for seed in SEEDS])
  assert np.abs(shifts).max() <= 0.1 * 48 + 1
  assert np.abs(shifts).max() > 1
  # Both directions on both axes.
  assert (shifts.min(axis=0) < -1).all() and (shifts.max(axis=0) > 1).all()


def test_brightness_shifts_uniformly_within_range():
  image = np.full((48, 48), 128, np.uint8)
  shifts = []
  for seed in SEEDS:
    out = _apply(_only(brightness=0.2), image, seed)
    assert np.all(out == out[0, 0])
    shifts.append(int(out[0, 0]) - 128)
  assert max(abs(s) for s in shifts) <= 0.2 * 255 + 1
  assert min(shifts) < -1 and max(shifts) > 1


def test_contrast_keeps_the_mean_and_scales_the_std_within_range():
  image = np.tile(np.arange(64, 192, dtype=np.uint8)[:48], (48, 1))
  ratios = []
  for seed in SEEDS:
    out = _apply(_only(contrast=0.5), image, seed)
    assert abs(out.mean() - image.mean()) < 0.5
    ratios.append(out.std() / image.std())
  assert 0.5 - 0.02 <= min(ratios) < 0.9
  assert 1.1 < max(ratios) <= 1.5 + 0.02


def test_extreme_photometric_settings_clip_instead_of_wrapping():
  image = np.zeros((48, 48), np.uint8)
  image[:, 24:] = 250
  clipped = set()
  for seed in SEEDS:
    out = _apply(_only(brightness=1.0, contrast=0.99), image, seed)
    dark, bright = out[:, :24], out[:, 24:]
    # uint8 overflow would wrap some bright pixels below the dark ones.
    assert np.all(dark == dark[0, 0]) and np.all(bright == bright[0, 0])
    assert bright[0, 0] >= dark[0, 0]
    clipped.update({int(dark[0, 0]), int(bright[0, 0])} & {0, 255})
  assert clipped == {0, 255}


def test_extreme_settings_keep_uint8_images():
  transform = augment.RandomAugment(rotation=180, translation=0.49, zoom=0.99,
                                    hflip=True, brightness=1.0, contrast=0.99)
  for seed in range(10):
    out = _apply(transform, _noise((48, 48, 1)), seed)
    assert out.shape == (48, 48, 1) and out.dtype == np.uint8


@pytest.mark.parametrize('knob, value', [
    ('rotation', -1), ('rotation', 181), ('translation', 0.5),
    ('translation', -0.1), ('zoom', 1.0), ('zoom', 1.5), ('brightness', 1.5),
    ('brightness', -0.2), ('contrast', 1.0), ('contrast', -0.5),
    ('zoom', float('nan')), ('rotation', '10'), ('hflip', 'yes')])
def test_invalid_values_name_the_knob(knob, value):
  config = types.SimpleNamespace(**{**OFF, knob: value})
  with pytest.raises(UserError, match=rf'^config\.data\.augment\.{knob}='):
    augment.from_config(config)


def test_invalid_message_states_the_range():
  with pytest.raises(UserError) as error:
    augment.from_config(types.SimpleNamespace(**{**OFF, 'zoom': 1.5}))
  assert str(error.value) == 'config.data.augment.zoom=1.5 must be in [0, 1).'


def test_range_ends_that_are_allowed():
  assert augment.from_config(types.SimpleNamespace(
      **{**OFF, 'rotation': 180, 'brightness': 1})) is not None


def test_runs_reproducibly_in_a_grain_pipeline():
  images = [_noise() + i for i in range(6)]
  elements = [{'image': image, 'label': i} for i, image in enumerate(images)]
  transform = augment.RandomAugment(brightness=0.2, contrast=0.2)

  def batch(seed):
    dataset = grain.MapDataset.source(elements).random_map(transform,
                                                           seed=seed)
    return dataset.batch(3)[1]

  first = batch(0)
  assert first['image'].shape == (3, 48, 48)
  assert first['image'].dtype == np.uint8
  assert first['label'].tolist() == [3, 4, 5]
  assert np.array_equal(first['image'], batch(0)['image'])
  assert not np.array_equal(first['image'], batch(1)['image'])
  assert not np.array_equal(first['image'], np.stack(images[3:]))
  for element, image in zip(elements, images):
    assert element['image'] is image
