"""The tables of evaluated runs, as Markdown and CSV.

Rows come from each run's report.json (re-evaluated from its best
checkpoint) and config.json: the settings that differ between the runs
become columns. Accuracy, precision, recall and F1 are percentages with one
decimal (68.4), as in the reference studies' tables; a class's accuracy is
its recall (the diagonal of the row-normalised confusion matrix).
"""

import collections
import csv
import dataclasses
import json
import os

from fer_jax import rundir

SUMMARY = 'summary'
AVERAGES = ('accuracy', 'macro_precision', 'macro_recall', 'macro_f1',
            'weighted_precision', 'weighted_recall', 'weighted_f1')


@dataclasses.dataclass(frozen=True)
class Entry:
  """One run of a table: its name, config.json and report.json."""
  name: str
  config: dict
  report: dict

  @classmethod
  def from_run(cls, name: str, run: rundir.RunDir) -> 'Entry':
    return cls(name, run.read_config(),
               run.read_json(rundir.REPORT))

  def evaluations(self) -> dict[str, dict]:
    """{'val': metrics, 'test': ..., then 'val 10-crop', ... if reported}."""
    result = {split: self.report[split] for split in ('val', 'test')}
    for split, metrics in self.report.get('ten_crop', {}).items():
      result[f'{split} 10-crop'] = metrics
    return result


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  header: list[str]
  rows: list[list[str]]

  def markdown(self) -> str:
    lines = [self.header, ['---'] * len(self.header), *self.rows]
    return '\n'.join('| ' + ' | '.join(line) + ' |' for line in lines)

  def write_csv(self, path: str) -> None:
    with open(path, 'w', newline='') as f:
      csv.writer(f).writerows([self.header, *self.rows])


def percent(fraction: float) -> str:
  return f'{100 * fraction:.1f}'


def _flatten(config: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat |= _flatten(value, f'{prefix}{key}.')
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def setting_columns(entries: list[Entry]) -> dict[str, str]:
  """{config key: column name} of the settings that differ between entries;
  a column is named by the key's last part unless two parts clash."""
  configs = [_flatten(e.config) for e in entries]
  keys = dict.fromkeys(key for config in configs for key in config)
  varying = [key for key in keys
             if len({json.dumps(c.get(key)) for c in configs}) > 1]
  leaves = collections.Counter(key.rsplit('.', 1)[-1] for key in varying)
  return {key: key if leaves[key.rsplit('.', 1)[-1]] > 1
          else key.rsplit('.', 1)[-1] for key in varying}


def summary_table(entries: list[Entry]) -> Table:
  """One row per run: its differing settings, cost, and val / test
  accuracy and macro-F1 side by side (single and ten-crop)."""
  settings = setting_columns(entries)
  kinds = list(dict.fromkeys(k for e in entries for k in e.evaluations()))
  header = ['run', *settings.values(), 'params', 'MFLOPs', 's/epoch',
            'epochs', 'best epoch']
  header += [f'{kind} {name}' for name in ('acc', 'macro-F1')
             for kind in kinds]
  rows = []
  for entry in entries:
    config, report = _flatten(entry.config), entry.report
    evaluations = entry.evaluations()
    row = [entry.name, *(str(config.get(key, '')) for key in settings),
           f'{report["num_params"]:,}', f'{report["mflops"]:.1f}',
           f'{report["seconds_per_epoch"]:.1f}', str(report['epochs']),
           str(report['best_epoch'])]
    row += [percent(evaluations[kind][metric]) if kind in evaluations else ''
            for metric in ('accuracy', 'macro_f1') for kind in kinds]
    rows.append(row)
  return Table('Runs', header, rows)


def averages_table(entries: list[Entry]) -> Table:
  """One row per run and evaluation: accuracy, macro and weighted P/R/F1."""
  header = ['run', 'split', 'acc', 'macro-P', 'macro-R', 'macro-F1',
            'weighted-P', 'weighted-R', 'weighted-F1', 'loss']
  rows = [[entry.name, kind, *(percent(metrics[m]) for m in AVERAGES),
           f'{metrics["loss"]:.4f}']
          for entry in entries
          for kind, metrics in entry.evaluations().items()]
  return Table('Accuracy, macro and weighted precision / recall / F1',
               header, rows)


def per_class_table(entries: list[Entry]) -> Table:
  """One row per run and class: val and test P, R (= accuracy), F1."""
  header = ['run', 'class', 'val n', 'test n']
  header += [f'{split} {score}' for split in ('val', 'test')
             for score in ('P', 'R (acc)', 'F1')]
  rows = []
  for entry in entries:
    for name in entry.report['class_names']:
      classes = [entry.report[split]['per_class'][name]
                 for split in ('val', 'test')]
      rows.append([entry.name, name,
                   *(str(scores['support']) for scores in classes),
                   *(percent(scores[score]) for scores in classes
                     for score in ('precision', 'recall', 'f1'))])
  return Table('Per class (single crop)', header, rows)


def write(entries: list[Entry], directory: str, stem: str = SUMMARY) -> str:
  """Writes `<stem>.md` (every table) and one CSV per table
  (`<stem>.csv`, `<stem>_averages.csv`, `<stem>_per_class.csv`) into
  `directory`; returns the Markdown's path."""
  os.makedirs(directory, exist_ok=True)
  tables = {'': summary_table(entries), '_averages': averages_table(entries),
            '_per_class': per_class_table(entries)}
  for suffix, table in tables.items():
    table.write_csv(os.path.join(directory, f'{stem}{suffix}.csv'))
  path = os.path.join(directory, f'{stem}.md')
  with open(path, 'w') as f:
    f.write('\n\n'.join(f'## {table.title}\n\n{table.markdown()}'
                        for table in tables.values()) + '\n')
  return path
