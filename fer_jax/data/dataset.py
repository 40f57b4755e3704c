"""`config.data` -> the dataset a run trains on: read, then the class options.

The class options come from the reference studies: a class subset, a cap on
images per class (in every split, which also makes quick runs quick), random
undersampling of the training split to balance it, and class weights.
"""

import hashlib
import logging
import os

import ml_collections
import numpy as np

from fer_jax.data import sources
from fer_jax.errors import UserError

BALANCE_MODES = ('none', 'undersample')
CLASS_WEIGHT_MODES = ('none', 'balanced')


def read(config: ml_collections.ConfigDict) -> sources.FerData:
  """`config.path`'s splits (config.data), before the class options."""
  # A prepared TFDS data dir holds a `fer2013` folder. TFDS is imported for
  # such directories only: it takes half a second to import, and runs on the
  # CSV or an image folder need neither it nor its dependencies (a device
  # machine that gets packages carried as wheels lacks them).
  if os.path.isdir(os.path.join(config.path, 'fer2013')):
    from fer_jax.data import tfds_fer2013
    if tfds_fer2013.is_prepared(config.path):
      if config.ferplus_path:
        raise UserError('FER+ votes are joined to FER2013 by row position: '
                        'set config.data.path to the challenge CSV, not the '
                        f'TFDS data dir {config.path}.')
      if tuple(config.split_ratios) != sources.DEFAULT_SPLIT_RATIOS:
        raise UserError(
            f'config.data.split_ratios={tuple(config.split_ratios)}: the TFDS '
            f'data dir {config.path} holds the splits made when it was '
            f'prepared (by {sources.DEFAULT_SPLIT_RATIOS} where the files '
            'carry no split); set config.data.path to the download itself '
            'to split it otherwise.')
      return tfds_fer2013.load_prepared(config.path)
  return sources.load(config.path, ferplus_path=config.ferplus_path,
                      label_mode=config.label_mode,
                      on_bad_record=config.on_bad_record,
                      split_ratios=config.split_ratios,
                      seed=config.split_seed)


def select_classes(data: sources.FerData, names: list[str]) -> sources.FerData:
  """Keeps the classes `names`, relabelled 0..len(names)-1 in that order."""
  unknown = [n for n in names if n not in data.class_names]
  if unknown or len(set(names)) != len(names) or len(names) < 2:
    raise UserError(f'config.data.classes={",".join(names)!r} must name at '
                    'least two distinct classes from '
                    f'{",".join(data.class_names)}.')
  new_label = np.full(data.num_classes, -1, np.int32)
  columns = [data.class_names.index(n) for n in names]
  new_label[columns] = np.arange(len(names))
  splits = {}
  for name, split in data.splits.items():
    kept = split.take(np.flatnonzero(new_label[split.labels] >= 0))
    targets = kept.targets
    if targets is not None:  # The kept classes' share, renormalised.
      targets = targets[:, columns]
      targets /= targets.sum(axis=1, keepdims=True)
    splits[name] = sources.Split(kept.images, new_label[kept.labels], targets)
  return sources.FerData(tuple(names), splits, data.skipped)


def cap_per_class(split: sources.Split, cap: int,
                  rng: np.random.Generator) -> sources.Split:
  """A random subset with at most `cap` images of each class, order kept."""
  keep = [rng.permutation(np.flatnonzero(split.labels == c))[:cap]
          for c in np.unique(split.labels)]
  if not keep:  # An empty split, left for `load` to report.
    return split
  return split.take(np.sort(np.concatenate(keep)))


def apply_class_options(data: sources.FerData,
                        config: ml_collections.ConfigDict,
                        seed: int) -> sources.FerData:
  """Class subset, then per-class cap (all splits), then undersampling."""
  if config.balance not in BALANCE_MODES:
    raise UserError(f'config.data.balance={config.balance!r} is not one of '
                    f'{BALANCE_MODES}.')
  if config.max_per_class < 0:
    raise UserError('config.data.max_per_class must be >= 0 (0: no cap).')
  if config.classes:
    data = select_classes(
        data, [n.strip() for n in config.classes.split(',') if n.strip()])
  rng = np.random.default_rng(seed)
  splits = dict(data.splits)
  if config.max_per_class:
    splits = {name: cap_per_class(split, config.max_per_class, rng)
              for name, split in splits.items()}
  # An empty train split has no smallest class; `load` reports it.
  if config.balance == 'undersample' and len(splits['train']):
    counts = np.bincount(splits['train'].labels, minlength=data.num_classes)
    smallest = counts[counts > 0].min()
    splits['train'] = cap_per_class(splits['train'], smallest, rng)
  return sources.FerData(data.class_names, splits, data.skipped)


def load(config: ml_collections.ConfigDict,
         read_data: sources.FerData | None = None) -> sources.FerData:
  """Reads `config.path` (config.data), unless `read_data` is what
  `read(config)` returned, and applies its class options, both drawn by
  `config.split_seed`."""
  if read_data is None:
    read_data = read(config)
  data = apply_class_options(read_data, config, config.split_seed)
  for name, split in data.splits.items():
    logging.info('%s: %d images, per class %s', name, len(split),
                 dict(zip(data.class_names,
                          np.bincount(split.labels,
                                      minlength=data.num_classes).tolist())))
  empty = [name for name, split in data.splits.items() if not len(split)]
  if empty:
    raise UserError(f'{config.path}: the {"/".join(empty)} split is empty '
                    'after the class options; check config.data.classes, '
                    'max_per_class and split_ratios.')
  return data


def identity(data: sources.FerData) -> dict:
  """What a run's dataset.json records to tell its data: class names and
  each split's size and sha256."""
  return {'class_names': list(data.class_names),
          'split_sizes': {name: len(s) for name, s in data.splits.items()},
          'split_sha256': {name: s.sha256() for name, s in data.splits.items()}}


def face_digests(images: np.ndarray) -> np.ndarray:
  """One 64-bit digest of each face's pixels, uint64 [N]: which faces a run
  trained on (its train_faces.npy, fer_jax.train.held_out), whatever their
  order or labels."""
  return np.frombuffer(b''.join(
      hashlib.blake2b(face.tobytes(), digest_size=8).digest()
      for face in np.ascontiguousarray(images)), '<u8').astype(np.uint64)


def changed_splits(recorded: dict, current: dict) -> list[str]:
  """The splits of `current` (`identity`) other than those of `recorded`
  (a run's dataset.json): by sha256, or by size for runs recorded before
  it; all of them when the classes differ."""
  if current['class_names'] != recorded['class_names']:
    return list(current['split_sizes'])
  key = 'split_sha256' if 'split_sha256' in recorded else 'split_sizes'
  return [name for name, value in current[key].items()
          if value != recorded[key][name]]


def class_weights(labels: np.ndarray, num_classes: int,
                  mode: str) -> np.ndarray:
  """Per-class loss weights: ones, or n / (classes * count) ('balanced')."""
  if mode not in CLASS_WEIGHT_MODES:
    raise UserError(f'config.train.class_weights={mode!r} is not one of '
                    f'{CLASS_WEIGHT_MODES}.')
  if mode == 'none':
    return np.ones(num_classes, np.float32)
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  weights = len(labels) / (num_classes * np.maximum(counts, 1))
  return weights.astype(np.float32)
