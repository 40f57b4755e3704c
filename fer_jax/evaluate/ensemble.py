"""Ensembles of evaluated runs: the mean of their class probabilities.

Issue tables report ensembles apart from single networks (an ensemble of
five small models is not a small model). The members' logits come from
their own evaluation (report.Evaluation), so an ensemble costs no second
forward pass; with ten-crop, the members' ten-crop probabilities are
averaged as well. Members must predict the same classes for the same val
and test faces (any train-side settings may differ: a sweep's runs).
"""

import dataclasses
import json
import os

import numpy as np

from fer_jax.errors import UserError
from fer_jax.evaluate import report, tables

ENSEMBLE = 'ensemble'


def _mean_probabilities(logits: list[np.ndarray]) -> np.ndarray:
  """log of the members' mean softmax: argmax and cross-entropy apply."""
  probabilities = []
  for member in logits:
    shifted = np.exp(member - member.max(axis=1, keepdims=True))
    probabilities.append(shifted / shifted.sum(axis=1, keepdims=True))
  return np.log(np.mean(probabilities, axis=0))


@dataclasses.dataclass(frozen=True)
class Member:
  """What an ensemble keeps of a run's evaluation (not its weights)."""
  name: str
  class_names: tuple[str, ...]
  labels: dict[str, np.ndarray]  # Of each of report.SPLITS.
  report: dict
  logits: dict[str, np.ndarray]
  ten_crop_logits: dict[str, np.ndarray] | None

  @classmethod
  def of(cls, name: str, evaluation: report.Evaluation) -> 'Member':
    return cls(name, evaluation.trained.class_names,
               {split: evaluation.data.splits[split].labels
                for split in report.SPLITS},
               evaluation.report, evaluation.logits,
               evaluation.ten_crop_logits)


def evaluate(members: list[Member]) -> dict:
  """The ensemble of `members`: their names, summed cost, and val / test
  metrics, single-crop and, if every member has them, ten-crop."""
  if len(members) < 2:
    raise UserError('An ensemble needs at least two runs; give more '
                    '--workdirs (or a sweep directory).')
  first = members[0]
  for member in members[1:]:
    if member.class_names != first.class_names or not all(
        np.array_equal(member.labels[split], first.labels[split])
        for split in report.SPLITS):
      raise UserError(f'Run {member.name} does not predict the same classes '
                      f'for the same val and test faces as {first.name}: an '
                      'ensemble needs runs on the same data and classes.')
  result = {
      'members': [m.name for m in members],
      'num_params': sum(m.report['num_params'] for m in members),
      'mflops': sum(m.report['mflops'] for m in members),
  }
  kinds = {'single': [m.logits for m in members]}
  if all(m.ten_crop_logits is not None for m in members):
    kinds['ten_crop'] = [m.ten_crop_logits for m in members]
  for kind, member_logits in kinds.items():
    split_scores = {split: report.scores(
        _mean_probabilities([logits[split] for logits in member_logits]),
        first.labels[split], first.class_names) for split in report.SPLITS}
    if kind == 'single':
      result.update(split_scores)
    else:
      result['ten_crop'] = split_scores
  return result


def write(result: dict, directory: str) -> str:
  """Writes ensemble.json and ensemble.md (one row per evaluation: val and
  test accuracy and macro-F1) into `directory`; returns the Markdown's
  path."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, f'{ENSEMBLE}.json'), 'w') as f:
    json.dump(result, f, indent=2)
  evaluations = {'single crop': result}
  if 'ten_crop' in result:
    evaluations['ten crops'] = result['ten_crop']
  rows = [[kind, *(tables.percent(scores[split][metric])
                   for split in report.SPLITS
                   for metric in ('accuracy', 'macro_f1'))]
          for kind, scores in evaluations.items()]
  table = tables.Table(
      f'Ensemble of {len(result["members"])} runs (mean probabilities): '
      f'{", ".join(result["members"])}; {result["num_params"]:,} '
      f'parameters, {result["mflops"]:,.1f} MFLOPs per image',
      ['evaluation', 'val acc', 'val macro-F1', 'test acc', 'test macro-F1'],
      rows)
  path = os.path.join(directory, f'{ENSEMBLE}.md')
  with open(path, 'w') as f:
    f.write(f'## {table.title}\n\n{table.markdown()}\n')
  return path
