"""Brief training on a subset of the real FER2013 (skipped without it)."""

import os

import numpy as np
import pytest

from fer_jax import inference, rundir, sweeps
from fer_jax.config import default_config
from fer_jax.data import dataset, ferplus, sources
from fer_jax.evaluate import report
from fer_jax.predict import predictor
from fer_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = os.path.join(ROOT, '..', 'shared', 'datasets')
TAR = os.path.join(DATASETS, 'fer2013', 'fer2013.tar.gz')
ZIP = os.path.join(DATASETS, 'fer2013', 'fer2013-images.zip')
FERPLUS = os.path.join(DATASETS, 'ferplus', 'fer2013new.csv')
pytestmark = pytest.mark.skipif(not os.path.exists(TAR),
                                reason='../shared/datasets is absent')
# Class counts of the README of ../shared/datasets.
COUNTS = {'train': [3995, 436, 4097, 7215, 4830, 3171, 4965],
          'val': [467, 56, 496, 895, 653, 415, 607],
          'test': [491, 55, 528, 879, 594, 416, 626]}


@pytest.fixture(scope='module')
def csv_data():
  return sources.load(TAR)


def test_challenge_csv_has_the_documented_splits(csv_data):
  assert csv_data.class_names == sources.FER2013_CLASSES
  for split, counts in COUNTS.items():
    assert np.bincount(csv_data.splits[split].labels).tolist() == counts
    assert csv_data.splits[split].images.shape[1:] == (48, 48)


def test_image_zip_matches_the_csv(csv_data):
  folder = sources.load(ZIP)
  for split, counts in COUNTS.items():
    assert np.bincount(folder.splits[split].labels).tolist() == counts
  # JPEG is lossy: compare the mean image of each class, pixel by pixel
  # (at most 1.07 grey levels apart, in test's smallest class; a mirrored
  # or transposed image would be 8-39 apart).
  for split in ('train', 'test'):
    for label in range(7):
      a, b = (data.splits[split].images[data.splits[split].labels == label]
              for data in (csv_data, folder))
      assert np.abs(a.mean(0) - b.mean(0)).max() < 2.5, (split, label)


def test_ferplus_labels_in_every_mode():
  data = sources.load(TAR, ferplus_path=FERPLUS)
  assert data.class_names == ferplus.CLASSES
  sizes = {name: len(split) for name, split in data.splits.items()}
  # The FER+ paper's majority mode drops ~10% (unknown / not a face / ties).
  assert sizes == {'train': 25_060, 'val': 3_199, 'test': 3_153}
  # The vote-based modes keep more of the train rows (README, Data).
  votes, splits = sources._read_ferplus_votes(FERPLUS, 35_887)
  train_votes = votes[splits == 'train']
  kept = {mode: int(ferplus.targets(train_votes, mode).any(1).sum())
          for mode in ferplus.LABEL_MODES}
  assert kept == {'majority': 25_060, 'probability': 27_956,
                  'crossentropy': 27_956, 'multi_target': 27_671}


def test_the_shipped_model_reproduces_its_private_test_numbers(csv_data):
  run = rundir.RunDir(predictor.PRETRAINED_DIR, create=False)
  release = run.read_json(rundir.RELEASE)
  assert run.checkpoint_sha256('best') == release['checkpoint_sha256']
  trained = inference.load_trained(run)
  assert trained.class_names == csv_data.class_names
  test = csv_data.splits['test']
  result = inference.evaluate(
      inference.make_logits_fn(trained.model, trained.input_spec),
      trained.variables, test.images, test.labels, trained.class_names, 512)
  # Exact on the machine that made it; another CPU's rounding may flip a
  # borderline face or two.
  assert abs(result['accuracy'] - release['test']['accuracy']) <= 2 / 3589
  assert abs(result['macro_f1'] - release['test']['macro_f1']) < 0.005
  # It is the predictor's default model.
  probabilities = predictor.Predictor.from_workdir(
      detect_faces=False).classify(test.images[:16])
  logits = inference.make_logits_fn(trained.model, trained.input_spec)(
      trained.variables, test.images[:16])
  np.testing.assert_array_equal(probabilities.argmax(1), logits.argmax(1))


def test_brief_ferplus_fine_tuning_of_the_shipped_model(tmp_path):
  """configs/resnet_small_ferplus.py, as RESULTS.md's FER+ runs used it, on a
  subset: the real files and votes, the shipped model's backbone, through
  training and the report."""
  config = sweeps.load_config(os.path.join(ROOT, 'configs',
                                           'resnet_small_ferplus.py'))
  config.data.update(path=TAR, ferplus_path=FERPLUS, max_per_class=2)
  config.train.update(epochs=1, batch_size=8)
  run, data = loop.train(config, str(tmp_path))
  assert data.class_names == ferplus.CLASSES
  assert len(data.splits['train']) == 8 * 2
  shipped = rundir.RunDir(predictor.PRETRAINED_DIR, create=False)
  assert run.read_json(rundir.INIT_FROM)['checkpoint_sha256'] == (
      shipped.read_json(rundir.RELEASE)['checkpoint_sha256'])
  result = report.write_report(run, data)
  assert len(result['test']['per_class']) == 8
  assert sum(map(sum, result['test']['confusion_matrix'])) == len(
      data.splits['test'])


def test_class_options_on_real_data(csv_data):
  config = default_config().data
  config.classes = 'angry,fear,happy,sad,surprise'
  config.balance = 'undersample'
  data = dataset.apply_class_options(csv_data, config, seed=0)
  assert data.class_names == ('angry', 'fear', 'happy', 'sad', 'surprise')
  assert np.bincount(data.splits['train'].labels).tolist() == [3171] * 5
  assert len(data.splits['test']) == 491 + 528 + 879 + 594 + 416
