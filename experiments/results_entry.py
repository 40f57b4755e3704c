"""Prints a run's entry for experiments/RESULTS.md, from its run directory.

  python experiments/results_entry.py --workdir=runs/resnet_small \
      --command="python -m fer_jax.main ..." --commit=<sha> \
      --device="<machine>" --wall_time="<time>"

Everything issue 6 asks of a reported number: the command (the config file
and its overrides; the whole config is the run's config.json), the commit,
device, wall time (as given; a released run, fer_jax.release, supplies
them from its release.json), the seed, the best checkpoint's sha256 (and,
for a run started from other weights, theirs), PublicTest and PrivateTest
accuracy and macro-F1 (single and, if reported, ten-crop) and per-class
F1. Numbers come from report.json, so run `python -m
fer_jax.report` (with --ten_crop) on the run first.
"""

import os

from absl import app, flags

from fer_jax import cli, rundir
from fer_jax.errors import UserError

PROVENANCE = ('command', 'commit', 'device', 'wall_time')


def _define_flags() -> None:
  """Only when run as a script: `entry` is also imported (tests)."""
  flags.DEFINE_string('workdir', None, 'The run directory.')
  flags.DEFINE_string('command', '', 'The command that trained it.')
  flags.DEFINE_string('commit', '', 'The commit it was trained at.')
  flags.DEFINE_string('device', '', 'The machine it was trained on.')
  flags.DEFINE_string('wall_time', '', 'The wall time of the command.')
  flags.mark_flag_as_required('workdir')


def _percent(value: float) -> str:
  return f'{100 * value:.2f}'


def _best_checkpoint(info: dict) -> str:
  """A run's best checkpoint as RunDir.best_checkpoint_record gives it."""
  return (f'`{info["path"]}` (best checkpoint, step {info["checkpoint_step"]}'
          f', sha256 `{info["checkpoint_sha256"]}`)')


def _started_from(info: dict) -> str:
  """init_from.json's chain of weights, each with its sha256."""
  links = []
  while info:
    if 'checkpoint_sha256' in info:
      links.append(_best_checkpoint(info))
    else:
      links.append(f'`{info["path"]}` (converted '
                   f'{info["converted"].get("arch")} weights, sha256 '
                   f'`{info["variables_sha256"]}`)')
    info = info.get('init_from')
  return '- Started from ' + ', which started from '.join(links) + '.'


def _distilled_from(teachers: list[dict]) -> str:
  """distill_from.json's teachers, each with its sha256."""
  return ('- Distilled from '
          + ' and '.join(map(_best_checkpoint, teachers)) + '.')


def _checkpoint_sha256(run: rundir.RunDir) -> str:
  """The best checkpoint's sha256, also for a run that came back from the
  device without it (experiments/device_results.py); `RunDir.read_report`
  has found one of the two."""
  if run.has_checkpoint('best'):
    return f'`{run.checkpoint_sha256("best")}`'
  left_out = run.read_json(rundir.CHECKPOINT_LEFT_OUT)
  return (f'`{left_out["sha256"]}` (step {left_out["step"]}; the '
          'checkpoint stayed on the device, too large to send back)')


def entry(run: rundir.RunDir, provenance: dict) -> str:
  """The Markdown entry of `run`."""
  if not os.path.isfile(run.file(rundir.REPORT)):
    raise UserError(f'{run.path} has no {rundir.REPORT}: run `python -m '
                    f'fer_jax.report --workdirs {run.path} --ten_crop` '
                    'first.')
  config = run.load_config()
  report = run.read_report()
  if run.is_released:
    released = run.read_json(rundir.RELEASE)
    provenance = {key: provenance.get(key) or released.get(key, '')
                  for key in PROVENANCE}
  lines = [
      f'```\n{provenance["command"]}\n```', '',
      f'- Commit {provenance["commit"] or "?"}; device: '
      f'{provenance["device"] or "?"}; wall time '
      f'{provenance["wall_time"] or "?"}; seed {config.seed}.',
      f'- Model {report["model"]}, {report["num_params"]:,} parameters, '
      f'{report["mflops"]:,.1f} MFLOPs per image; {report["epochs"]} '
      f'epochs, best epoch {report["best_epoch"]} by '
      f'{report["selection_metric"]} (PublicTest).',
      f'- Best checkpoint sha256 (`RunDir.checkpoint_sha256`): '
      f'{_checkpoint_sha256(run)}']
  if os.path.isfile(run.file(rundir.INIT_FROM)):
    lines.append(_started_from(run.read_json(rundir.INIT_FROM)))
  if os.path.isfile(run.file(rundir.DISTILL_FROM)):
    lines.append(_distilled_from(run.read_json(rundir.DISTILL_FROM)))
  lines += [
      '',
      '| evaluation | PublicTest acc | PublicTest macro-F1 | PrivateTest acc '
      '| PrivateTest macro-F1 |', '|---|---|---|---|---|']
  evaluations = {'single crop': report}
  if 'ten_crop' in report:
    evaluations['ten crops'] = report['ten_crop']
  for kind, scores in evaluations.items():
    lines.append(f'| {kind} | ' + ' | '.join(
        _percent(scores[split][metric]) for split in ('val', 'test')
        for metric in ('accuracy', 'macro_f1')) + ' |')
  names = report['class_names']
  lines += ['', '| F1 (single crop) | ' + ' | '.join(names) + ' |',
            '|---|' + '---|' * len(names)]
  for split, title in (('val', 'PublicTest'), ('test', 'PrivateTest')):
    lines.append(f'| {title} | ' + ' | '.join(
        _percent(report[split]['per_class'][name]['f1'])
        for name in names) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  cli.log_info()  # orbax's INFO lines on restoring the checkpoint: not here.
  with cli.exits_on_user_errors():
    run = rundir.RunDir(flags.FLAGS.workdir, create=False)
    print(entry(run, {key: getattr(flags.FLAGS, key) for key in PROVENANCE}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
