"""FER+ (Barsoum et al. 2016): how the ten votes per FER2013 image become
labels and training targets, following the reference code
(microsoft/FERPlus). Reading fer2013new.csv is sources.py's job.
"""

import numpy as np

CLASSES = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust',
           'fear', 'contempt')
# Columns of fer2013new.csv after `Usage,Image name`: 8 emotions, then
# `unknown` and `NF` (not a face).
VOTE_COLUMNS = CLASSES + ('unknown', 'NF')


def majority_labels(votes: np.ndarray) -> np.ndarray:
  """FER+ `majority` labels from [N, 10] votes; -1 where the row is dropped.

  As in the FER+ reference code (microsoft/FERPlus, `_process_data`): single
  votes are outliers and removed; a label needs more than half of the
  remaining votes; rows whose winner is `unknown` or `NF` are dropped.
  """
  votes = np.where(votes <= 1, 0, votes).astype(np.float64)
  totals = votes.sum(axis=1)
  winner = votes.argmax(axis=1)
  has_majority = votes.max(axis=1) > 0.5 * totals
  is_emotion = winner < len(CLASSES)
  return np.where(has_majority & is_emotion, winner, -1).astype(np.int32)


# How FER+ votes become training targets (Barsoum et al. 2016, "Training
# deep networks for facial expression recognition with crowd-sourced label
# distribution"). Validation and test always use `majority` labels, as there.
LABEL_MODES = ('majority', 'probability', 'crossentropy', 'multi_target')


def _vote_distribution(votes: np.ndarray) -> np.ndarray | None:
  """The `probability` / `crossentropy` target of one row of outlier-free
  votes, or None when the row is dropped.

  As the FER+ reference code: take the most-voted emotions (ties together),
  up to three, until they hold 75% of the votes; stop at `unknown` or `NF`,
  which drops the row if it comes first; keep the row if the chosen
  emotions hold more than half of the votes; normalise their votes.
  """
  num_emotions = len(CLASSES)
  total = votes.sum()
  chosen = np.zeros(num_emotions)
  remaining = votes.copy()
  count = 0
  while chosen.sum() < 0.75 * total and count < 3:
    top = remaining.max()
    tied = np.flatnonzero(remaining == top)
    if tied[-1] >= num_emotions:  # `unknown` or `NF` among the winners.
      emotions = tied[tied < num_emotions]
      if not chosen.any() and not len(emotions):
        return None
      chosen[emotions] = top
      count += len(emotions)
      break
    chosen[tied] = top
    remaining[tied] = 0
    count += len(tied)
  if chosen.sum() <= 0.5 * total or count > 3:
    return None
  return chosen / chosen.sum()


def _multi_target_set(votes: np.ndarray) -> np.ndarray | None:
  """The `multi_target` target of one row of outlier-free votes: the
  emotions with at least 30% of the votes, normalised; None when they hold
  no more than half of the votes or `unknown` / `NF` leads."""
  total = votes.sum()
  chosen = np.where(votes >= 0.3 * total, votes, 0)
  if chosen.sum() <= 0.5 * total or chosen.argmax() >= len(CLASSES):
    return None
  emotions = chosen[:len(CLASSES)]
  return emotions / emotions.sum()


def targets(votes: np.ndarray, mode: str) -> np.ndarray:
  """float32 [N, 8] training targets from [N, 10] votes in a label `mode`;
  all-zero rows are dropped.

  `majority`: one-hot `majority_labels`. `probability` and `crossentropy`:
  the distribution of the leading emotions' votes (`_vote_distribution`);
  the train step draws one label from it per example and step
  (`probability`) or fits it with cross-entropy (`crossentropy`).
  `multi_target`: the emotions with >= 30% of the votes, any of which
  counts as right (`_multi_target_set`). Single votes are removed first in
  every mode.
  """
  if mode not in LABEL_MODES:
    raise ValueError(f'mode={mode!r} is not one of {LABEL_MODES}.')
  result = np.zeros((len(votes), len(CLASSES)), np.float32)
  if mode == 'majority':
    labels = majority_labels(votes)
    kept = labels >= 0
    result[kept, labels[kept]] = 1
    return result
  target_of = _vote_distribution if mode != 'multi_target' else (
      _multi_target_set)
  for row, row_votes in enumerate(np.where(votes <= 1, 0, votes)):
    target = target_of(row_votes.astype(np.float64))
    if target is not None:
      result[row] = target
  return result
