"""Packages a finished run as the model that ships inside fer_jax.

  python -m fer_jax.release --workdir=runs/resnet_small \
      --out=fer_jax/pretrained --command="python -m fer_jax.main ..." \
      --commit=<git sha> --device="<machine>" --wall_time="<h min>"

Copies what the predictor and `python -m fer_jax.report` need, and nothing
they do not: config.json, dataset.json, metrics.jsonl, report.json (and
init_from.json and distill_from.json, for a run that started or learned
from other weights, config_history.jsonl, for one resumed under another
config, and train_faces.npy, for a run that recorded it) and the best
checkpoint (model weights only, a few MB; the latest checkpoint with its
optimizer state stays behind). Writes
release.json with the provenance given on the command line (a run
directory does not know its commit or machine), the checkpoint's sha256
(`rundir.RunDir.checkpoint_sha256`) and the report's PublicTest /
PrivateTest figures, ten-crop too when the report has them (run
`python -m fer_jax.report --ten_crop` on it first).
A released directory is read-only by convention: `python -m
fer_jax.report` re-evaluates it into its --out folder and compares with
the shipped report.json.
"""

import os
import shutil

from absl import app, flags

from fer_jax import cli
from fer_jax.errors import UserError

flags.DEFINE_string('workdir', None, 'The finished training run to ship.')
flags.DEFINE_string('out', None, 'Where the released run directory goes, '
                    'e.g. fer_jax/pretrained: a new or empty folder, or an '
                    'earlier release (replaced).')
flags.DEFINE_string('command', '', 'The command that trained the run.')
flags.DEFINE_string('commit', '', 'The git commit it was trained at.')
flags.DEFINE_string('device', '', 'The machine it was trained on.')
flags.DEFINE_string('wall_time', '', 'The training command\'s wall time.')
flags.mark_flags_as_required(['workdir', 'out'])


def _figures(split_report: dict) -> dict:
  return {key: split_report[key]
          for key in ('accuracy', 'macro_f1', 'weighted_f1')} | {
              'f1': {name: values['f1'] for name, values
                     in split_report['per_class'].items()}}


def _check_out(out: str, workdir: str, release_file: str) -> None:
  """UserError unless `out` can be replaced: a new or empty folder, or an
  earlier release (holding `release_file`). Anything else may be the run
  itself or a user's files."""
  out_path = os.path.realpath(out)
  run_path = os.path.realpath(workdir)
  if os.path.commonpath([out_path, run_path]) == out_path:
    raise UserError(f'--out={out} is --workdir={workdir} or a folder above '
                    'it, which releasing (it replaces --out) would delete; '
                    'choose another folder, e.g. fer_jax/pretrained.')
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f'--out={out} is a file, not a folder; choose a folder '
                    'for the released run directory.')
  if (os.path.isdir(out) and os.listdir(out)
      and not os.path.isfile(os.path.join(out, release_file))):
    raise UserError(f'--out={out} holds files and is no earlier release (no '
                    f'{release_file}); releasing replaces --out, so choose '
                    'a new or empty folder, or an earlier release.')


def release(workdir: str, out: str, **provenance: str) -> dict:
  """Copies run `workdir` to `out` (see the module docstring); returns the
  release.json it writes there."""
  # Imported here, not above: JAX and orbax take 1.4-1.9 s, and `python -m
  # fer_jax.release` answers a mistyped flag without them, as fer_jax.main.
  from fer_jax import rundir  # pylint: disable=import-outside-toplevel
  required = (rundir.CONFIG, rundir.DATASET, rundir.METRICS, rundir.REPORT)
  run = rundir.RunDir(workdir, create=False)
  step = run.latest_step('best')
  missing = [name for name in required if not os.path.isfile(run.file(name))]
  if step is None or missing:
    raise UserError(f'{workdir} is not a finished run (missing '
                    f'{", ".join(missing) or "a best checkpoint"}): let its '
                    'training end, which writes report.json.')
  report = run.read_report()
  _check_out(out, run.path, rundir.RELEASE)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.makedirs(out)
  for name in required + (rundir.INIT_FROM, rundir.DISTILL_FROM,
                          rundir.CONFIG_HISTORY, rundir.TRAIN_FACES):
    if os.path.isfile(run.file(name)):  # Not every run has each.
      shutil.copy2(run.file(name), os.path.join(out, name))
  released = rundir.RunDir(out, create=False)
  shutil.copytree(run.checkpoint_dir('best', step),
                  released.checkpoint_dir('best', step))
  info = {
      **provenance,
      'source_workdir': run.path,
      'model': report['model'],
      'num_params': report['num_params'],
      'best_epoch': report['best_epoch'],
      'epochs': report['epochs'],
      'selection_metric': report['selection_metric'],
      'checkpoint_step': step,
      'checkpoint_sha256': released.checkpoint_sha256('best'),
      'val': _figures(report['val']),
      'test': _figures(report['test']),
  }
  if 'ten_crop' in report:
    info['ten_crop'] = {split: _figures(scores)
                        for split, scores in report['ten_crop'].items()}
  released.write_json(rundir.RELEASE, info)
  return info


def main(argv):
  del argv
  cli.log_info()
  with cli.exits_on_user_errors():
    info = release(flags.FLAGS.workdir, flags.FLAGS.out,
                   command=flags.FLAGS.command, commit=flags.FLAGS.commit,
                   device=flags.FLAGS.device,
                   wall_time=flags.FLAGS.wall_time)
  print(f'{flags.FLAGS.out}: {info["model"]}, PrivateTest accuracy '
        f'{info["test"]["accuracy"]:.4f}, checkpoint sha256 '
        f'{info["checkpoint_sha256"]}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
