"""Class options, class weights and the on-device input spec."""

import jax.numpy as jnp
import numpy as np
import pytest

import fakedata
from fer_jax import rundir
from fer_jax.config import default_config
from fer_jax.data import dataset, preprocess, sources
from fer_jax.errors import UserError


def _data(counts=((30, 5, 20), (6, 5, 4), (6, 2, 4))) -> sources.FerData:
  """Three splits; class c has counts[split][c] images whose pixels are c."""
  splits = {}
  for name, per_class in zip(sources.SPLITS, counts):
    labels = np.repeat(np.arange(3), per_class).astype(np.int32)
    images = np.broadcast_to(labels[:, None, None], (len(labels), 48, 48))
    splits[name] = sources.Split(images.astype(np.uint8), labels)
  return sources.FerData(('angry', 'disgust', 'happy'), splits)


def _options(**overrides):
  config = default_config().data
  config.update(overrides)
  return config


def test_class_subset_relabels_in_the_given_order():
  data = dataset.apply_class_options(_data(), _options(classes='happy,angry'),
                                     seed=0)
  assert data.class_names == ('happy', 'angry')
  train = data.splits['train']
  assert np.bincount(train.labels).tolist() == [20, 30]
  # Images travel with their labels: pixel value = original class id.
  assert np.array_equal(train.images[:, 0, 0], np.where(train.labels, 0, 2))


@pytest.mark.parametrize('classes', ['happy', 'happy,sadd', 'happy,happy'])
def test_bad_class_subsets_name_the_choices(classes):
  with pytest.raises(UserError, match='angry,disgust,happy'):
    dataset.apply_class_options(_data(), _options(classes=classes), seed=0)


def test_max_per_class_caps_every_split_and_is_seeded():
  config = _options(max_per_class=5)
  data = dataset.apply_class_options(_data(), config, seed=0)
  assert np.bincount(data.splits['train'].labels).tolist() == [5, 5, 5]
  assert np.bincount(data.splits['val'].labels).tolist() == [5, 5, 4]
  assert np.bincount(data.splits['test'].labels).tolist() == [5, 2, 4]
  again = dataset.apply_class_options(_data(), config, seed=0)
  assert np.array_equal(again.splits['train'].images,
                        data.splits['train'].images)


def test_undersampling_balances_only_the_train_split():
  data = dataset.apply_class_options(_data(), _options(balance='undersample'),
                                     seed=0)
  assert np.bincount(data.splits['train'].labels).tolist() == [5, 5, 5]
  assert np.bincount(data.splits['val'].labels).tolist() == [6, 5, 4]


@pytest.mark.parametrize('options', [{'max_per_class': 1},
                                     {'balance': 'undersample'}])
@pytest.mark.parametrize('per_class, empty', [((0, 2, 2), 'train'),
                                              ((2, 0, 2), 'val')])
def test_an_empty_split_is_named_whatever_the_class_options(
    tmp_path, options, per_class, empty):
  path = str(tmp_path / 'fer2013.csv')
  fakedata.write_challenge_csv(path, per_class=per_class)
  with pytest.raises(UserError, match=f'the {empty} split is empty after the '
                                      'class options'):
    dataset.load(_options(path=path, **options))


def test_balanced_class_weights():
  labels = np.array([0, 0, 0, 1])
  weights = dataset.class_weights(labels, 3, 'balanced')
  # n / (classes * count); an absent class counts as one image.
  assert np.allclose(weights, [4 / 9, 4 / 3, 4 / 3])
  assert np.array_equal(dataset.class_weights(labels, 3, 'none'), np.ones(3))
  with pytest.raises(UserError, match='config.train.class_weights'):
    dataset.class_weights(labels, 3, 'inverse')


@pytest.mark.parametrize('normalization, low, high', [
    ('symmetric', -1.0, 1.0), ('dataset', None, None)])
def test_input_spec_ranges(normalization, low, high):
  train = np.random.default_rng(0).integers(0, 256, (50, 48, 48), np.uint8)
  spec = preprocess.input_spec(normalization, 48, 1, train)
  x = np.asarray(spec(jnp.asarray(train)))
  assert x.shape == (50, 48, 48, 1) and x.dtype == np.float32
  if low is None:
    assert abs(x.mean()) < 1e-3 and abs(x.std() - 1) < 1e-3
  else:
    assert np.isclose(x.min(), low) and np.isclose(x.max(), high)


def test_dataset_normalisation_is_the_float64_mean_and_std(monkeypatch):
  # Counted in many chunks; skewed grey levels, so that the std is no round
  # number.
  monkeypatch.setattr(preprocess, '_COUNT_CHUNK', 1000)
  rng = np.random.default_rng(0)
  train = (rng.integers(0, 256, (50, 48, 48))
           * rng.random((50, 48, 48)) ** 2).astype(np.uint8)
  spec = preprocess.input_spec('dataset', 48, 1, train)
  pixels = train.astype(np.float64)
  assert spec.mean == (pixels.mean(),)  # Integer sums: exact either way.
  assert np.isclose(spec.std[0], pixels.std(), rtol=1e-14, atol=0)


def test_input_spec_resizes_to_three_channels_for_imagenet_models():
  spec = preprocess.input_spec('imagenet', 96, 3, np.zeros((1, 48, 48)))
  images = np.full((2, 48, 48), 255, np.uint8)
  x = np.asarray(spec(jnp.asarray(images)))
  assert x.shape == (2, 96, 96, 3)
  assert np.allclose(x[0, 0, 0], [(1 - m) / s for m, s in
                                  [(0.485, 0.229), (0.456, 0.224),
                                   (0.406, 0.225)]], atol=1e-5)
  assert preprocess.InputSpec.from_json(spec.to_json()) == spec


def test_bad_normalisation_settings():
  with pytest.raises(UserError, match='config.data.channels=3'):
    preprocess.input_spec('imagenet', 48, 1, np.zeros((1, 48, 48)))
  with pytest.raises(UserError, match='config.data.normalization'):
    preprocess.input_spec('minmax', 48, 1, np.zeros((1, 48, 48)))


def test_the_images_of_every_split_come_from_split_seed(make_synthetic_fer,
                                                        tmp_path):
  """data.split_seed draws a folder's splits (without split prefixes), the
  per-class cap and the undersampling; config.seed (weights, dropout, data
  order) leaves them, so that runs of other seeds are selected and
  evaluated on the same faces. A run's config.json from before split_seed
  reads back with the seed that drew them then."""
  config = default_config()
  config.data.update(
      path=make_synthetic_fer((10, 2, 2)).write_folder(prefixes=False),
      max_per_class=2, balance='undersample')

  def digests(data_config):
    data = dataset.load(data_config)
    return [data.splits[name].sha256() for name in sources.SPLITS]

  first = digests(config.data)
  config.data.split_seed = 1
  other = digests(config.data)
  assert all(a != b for a, b in zip(other, first))
  written = rundir.as_json(config)
  del written['data']['split_seed']
  written['seed'] = 1
  run = rundir.RunDir(str(tmp_path / 'run'))
  run.write_json(rundir.CONFIG, written)
  assert digests(run.load_config().data) == other
