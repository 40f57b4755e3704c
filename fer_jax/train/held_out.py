"""Refuses teachers and starting weights that trained on this run's val or
test faces.

A run that distils from another run (`config.train.distill_from`) or starts
from its weights (`config.model.init_from`) inherits what that run learned.
Had it trained on faces this run selects on (val) or reports (test), the
new run's figures would count faces it has, in effect, already seen: a
teacher of another `data.split_seed` on a drawn split, or of another data
file, can hold them. So each such run's training faces, by the digests in
its train_faces.npy, must hold no val or test face of this run that the
training split of this run's data does not hold too: FER2013 repeats some
faces across its splits (270 of PublicTest's and 278 of PrivateTest's are
in Training), and a source that trained on the whole Training split saw
them as any FER2013 model does, whatever subset of it (class options) this
run trains on. A run recorded before train_faces.npy existed passes when
its dataset.json records this run's val and test splits (it held them out
as this run does); otherwise its training faces are read again from its
config.json's data.

What a run learns from its sources it passes on: its train_faces.npy holds
the digests of its own training faces and of its sources' (`check` returns
the latter), so a run two steps down a chain of init_from or teachers is
checked against every face upstream. A run recorded before train_faces.npy
existed adds only the faces read again from its data, when they were.
"""

import os

import numpy as np

from fer_jax import rundir
from fer_jax.data import dataset, sources
from fer_jax.errors import UserError

HELD_OUT = ('val', 'test')


def check(sources_by_key: dict[str, tuple[str, ...]],
          whole_training: sources.Split, data: sources.FerData,
          identity: dict, training_faces: np.ndarray) -> np.ndarray:
  """Fails when a run in `sources_by_key` (config key -> its run
  directories) trained on faces of `data`'s val or test splits (module
  docstring); `data` is this run's `dataset.load`, `whole_training` its
  training split before the class options (`dataset.read`'s), `identity`
  `data`'s `dataset.identity` and `training_faces` its training split's
  `dataset.face_digests`. Returns the digests of the faces the runs
  trained on, as far as they are known (module docstring)."""
  held_out_faces, whole_training_faces = None, None
  inherited = np.zeros(0, training_faces.dtype)
  for key, workdir in ((key, workdir) for key, workdirs
                       in sources_by_key.items() for workdir in workdirs):
    source = rundir.RunDir(workdir, create=False)
    trained_on = _training_faces(source, key, identity)
    if trained_on is None:
      continue
    inherited = np.union1d(inherited, trained_on)
    if held_out_faces is None:
      held_out_faces = {name: dataset.face_digests(data.splits[name].images)
                        for name in HELD_OUT}
    # The faces this run trains on first: the split before the class
    # options is digested only when some are left.
    leaked = _held_out_among(trained_on, held_out_faces, training_faces)
    if any(leaked.values()):
      if whole_training_faces is None:
        whole_training_faces = dataset.face_digests(whole_training.images)
      leaked = _held_out_among(trained_on, held_out_faces,
                               whole_training_faces)
    if any(leaked.values()):
      raise UserError(
          f'config.{key}: {workdir} trained on {leaked["val"]} val and '
          f'{leaked["test"]} test faces of this run (itself or through a '
          'run it learned from), not in its data\'s '
          'training split, so its selection and test figures would count '
          'faces already learned; use a run trained on the same splits (the '
          'same data.path, data.split_seed and class options).')
  return inherited


def _held_out_among(trained_on: np.ndarray, held_out_faces: dict,
                    repeated: np.ndarray) -> dict[str, int]:
  """How many of each held-out split's faces (`held_out_faces`: split ->
  digests) are in `trained_on` and not in `repeated` (digests too)."""
  seen = np.setdiff1d(trained_on, repeated)
  return {name: int(np.isin(faces, seen).sum())
          for name, faces in held_out_faces.items()}


def _training_faces(source: rundir.RunDir, key: str,
                    identity: dict) -> np.ndarray | None:
  """The digests of `source`'s training faces; None for an older run that
  held out this run's val and test splits (module docstring)."""
  if os.path.isfile(source.file(rundir.TRAIN_FACES)):
    return np.load(source.file(rundir.TRAIN_FACES))
  recorded = source.read_json(rundir.DATASET)
  if all(recorded.get('split_sha256', {}).get(name)
         == identity['split_sha256'][name] for name in HELD_OUT):
    return None
  config = source.load_config().data
  missing = [path for path in (config.path, config.get('ferplus_path', ''))
             if path and not os.path.exists(path)]
  if missing:
    raise UserError(
        f'config.{key}: cannot tell whether {source.path} trained on this '
        f'run\'s val or test faces: it has no {rundir.TRAIN_FACES}, its '
        f'dataset.json records other splits than this run\'s, and its data, '
        f'{missing[0]} (config.json), is not there. Run from the directory '
        'it was trained from, or use a run trained on this run\'s data.')
  data = dataset.load(config)
  if dataset.changed_splits(recorded, dataset.identity(data)):
    raise UserError(
        f'config.{key}: {source.path}\'s data, {config.path} (config.json), '
        'is no longer what it trained on (its dataset.json), so what it '
        'trained on cannot be checked against this run\'s val and test '
        'faces; use a run trained on this run\'s data.')
  return dataset.face_digests(data.splits['train'].images)
