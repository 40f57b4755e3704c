"""Runs a sweep file: each of its runs trained and reported, then the tables.

  python -m fer_jax.sweep --config=experiments/resnet_small_sweep.py \
      --workdir=runs/resnet_small_sweep \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

`--config.*` overrides apply to every run (e.g. `--config.train.epochs=2`);
`--run=<name>` (repeated) trains only the runs named.
Each run trains in <workdir>/<run name>/; re-running the same command skips
finished runs and resumes the others. Tables, of every finished run (named
or not): <workdir>/summary.md, .csv.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from fer_jax import cli

config_flags.DEFINE_config_file(
    'config', None, 'Sweep file: get_config() and sweep(add) '
    '(experiments/*_sweep.py).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Sweep directory: one run directory per '
                    'run, and the summary tables.')
flags.DEFINE_enum('parallel', 'none', ['none', 'devices'],
                  "'none': runs one after another in this process; "
                  "'devices': one `python -m fer_jax.main` per GPU "
                  '(CUDA_VISIBLE_DEVICES), its output in <run>/train.log; '
                  'without GPUs, still one run at a time.')
flags.DEFINE_integer('runs_per_device', 1,
                     'With --parallel=devices, runs trained at once on each '
                     'GPU, sharing its memory equally (small models on a '
                     'large GPU).', lower_bound=1)
flags.DEFINE_multi_string('run', [], 'Train only this run of the sweep (a '
                          'name as --dry_run prints it); repeat for more. '
                          'Default: every run.')
flags.DEFINE_bool('dry_run', False, 'Print the run names and exit.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported once the flags have parsed, as in fer_jax.main: a mistyped
  # flag or override is answered without the training stack's 2.3 s.
  from fer_jax import sweep_runner  # pylint: disable=import-outside-toplevel
  cli.log_info()
  config_flag = flags.FLAGS['config']
  with cli.exits_on_user_errors():
    sweep = sweep_runner.Sweep.load(
        config_flags.get_config_filename(config_flag), flags.FLAGS.config,
        config_flags.get_override_values(config_flag), flags.FLAGS.workdir)
    runs = sweep.selected(flags.FLAGS.run)
    if flags.FLAGS.dry_run:
      print('\n'.join(run.name for run in runs))
      return
    try:
      summary = sweep_runner.run_sweep(
          sweep, flags.FLAGS.workdir, names=flags.FLAGS.run,
          parallel=flags.FLAGS.parallel == 'devices',
          runs_per_device=flags.FLAGS.runs_per_device)
    except KeyboardInterrupt:
      # --parallel=devices: the runs got the signal too and saved
      # checkpoints.
      print('Interrupted; run the same command again to resume.',
            file=sys.stderr)
      sys.exit(130)
  print(f'{len(runs)} runs; tables: {summary}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
