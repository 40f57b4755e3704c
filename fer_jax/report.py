"""Regenerates the tables and figures of trained runs from their checkpoints.

  python -m fer_jax.report --workdirs runs/resnet_small --out reports/rs
  python -m fer_jax.report --workdirs runs/sweep1/*/ --out reports/sweep1 \
      --ten_crop --data_path=../shared/datasets/fer2013/fer2013.tar.gz

Each best checkpoint is restored and re-evaluated on val and test. The
run's report.json is rewritten, except in a released run (fer_jax.release)
or one that is not writable: their new report.json goes to
<out>/<run name>/. Without --ten_crop, the ten-crop section of the
report.json replaced is kept when it is of the same best checkpoint, and
dropped with a warning otherwise. The tables go to <out>/summary.md and
.csv, each run's figures to <out>/<run name>/. A sweep directory stands for
its runs. With --ensemble, the runs' ensemble goes to <out>/ensemble.md and
.json.
"""

from absl import app, flags

from fer_jax import cli

flags.DEFINE_multi_string('workdirs', None, 'Run or sweep directories; more '
                          'may follow as plain arguments (a shell glob).')
flags.DEFINE_string('out', None, 'Folder for the tables and figures.')
flags.DEFINE_string('data_path', '', 'Dataset location, when config.json\'s '
                    'data.path (as given at training time) is not valid here.')
flags.DEFINE_string('ferplus_path', '', 'FER+ votes (fer2013new.csv) for '
                    'runs trained on them, when config.json\'s '
                    'data.ferplus_path is not valid here.')
flags.DEFINE_bool('ten_crop', False, 'Also evaluate with ten-crop test-time '
                  'augmentation, reported beside single-crop; without it, '
                  'earlier ten-crop figures of the same checkpoint are kept.')
flags.DEFINE_bool('figures', True, 'Draw each run\'s figures; --nofigures: '
                  'the reports and tables only, without the t-SNE and plots '
                  '(quicker, e.g. for a sweep on a lent accelerator).')
flags.DEFINE_integer('tsne_points', 1000, 'Test images in the t-SNE plots: '
                     'at least 2, or 0 for no t-SNE plots (the slowest '
                     'figures).')
flags.DEFINE_bool('ensemble', False, 'Also evaluate the ensemble of all the '
                  'runs (mean class probabilities) into <out>/ensemble.md; '
                  'they must share the val / test data and classes.')
flags.mark_flags_as_required(['workdirs', 'out'])


def main(argv):
  # Imported once the flags have parsed, as in fer_jax.main: a mistyped flag
  # is answered without the 4.6 s of JAX, Flax, scikit-learn and matplotlib.
  from fer_jax.evaluate import regenerate  # pylint: disable=import-outside-toplevel
  cli.log_info()
  with cli.exits_on_user_errors():
    path = regenerate.regenerate(
        flags.FLAGS.workdirs + argv[1:], flags.FLAGS.out,
        data_path=flags.FLAGS.data_path,
        ferplus_path=flags.FLAGS.ferplus_path, ten_crop=flags.FLAGS.ten_crop,
        tsne_points=flags.FLAGS.tsne_points,
        with_figures=flags.FLAGS.figures,
        with_ensemble=flags.FLAGS.ensemble)
  print(f'tables: {path}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
