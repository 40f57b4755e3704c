"""Knowledge distillation (Hinton et al. 2015) from trained runs' models.

`config.train.distill_from` names a run directory (a workdir of
`python -m fer_jax.main`), or several, comma-separated; each one's best
checkpoint teaches. In every train step the teachers, in eval mode, see the
same augmented (and mixed) faces as the student, each through its own input
spec (size, channels, normalisation), so a 224x224 ImageNet port can teach
a 48x48 grey student. The loss is

  (1 - weight) * hard loss + weight * T^2 * KL(p || softmax(s / T))

with s the student's logits, T the temperature and p the teachers' mean
softmax(t / T) over their logits t: one teacher's softened probabilities,
or an ensemble's mean, as `python -m fer_jax.report --ensemble` averages
probabilities. T^2 keeps the soft term's gradients on the scale of the hard
one's.
"""

import dataclasses
import math
import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fer_jax import inference, rundir
from fer_jax.data.preprocess import InputSpec
from fer_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Teacher:
  """The static half of the teachers (one model or an ensemble); their
  variables, one dict per model, are a train step argument, so that they
  are not baked into the compiled step as constants."""
  models: tuple[nn.Module, ...]
  input_specs: tuple[InputSpec, ...]
  temperature: float
  weight: float

  def probabilities(self, variables: tuple[dict, ...], images: jnp.ndarray
                    ) -> jnp.ndarray:
    """The soft targets p (module docstring) for grey faces [N, H, W]
    (uint8 levels, maybe mixed), float32 [N, classes], without gradients."""
    softened = [
        jax.nn.softmax(model.apply(model_variables, spec(images), train=False)
                       .astype(jnp.float32) / self.temperature)
        for model, spec, model_variables in zip(self.models, self.input_specs,
                                                variables, strict=True)]
    return jax.lax.stop_gradient(sum(softened) / len(softened))

  def loss(self, hard_loss: jnp.ndarray, student_logits: jnp.ndarray,
           teacher_probabilities: jnp.ndarray) -> jnp.ndarray:
    """The distillation objective (module docstring), batch mean."""
    t = self.temperature
    soft = optax.losses.kl_divergence(
        jax.nn.log_softmax(student_logits / t), teacher_probabilities).mean()
    return (1 - self.weight) * hard_loss + self.weight * t * t * soft


def teacher_directories(train_config: ml_collections.ConfigDict
                        ) -> tuple[str, ...]:
  """config.train.distill_from's run directories; () when it is off."""
  return tuple(path.strip()
               for path in train_config.get('distill_from', '').split(',')
               if path.strip())


def check(train_config: ml_collections.ConfigDict) -> None:
  """Validates config.train.distill_*; fails before any data is read."""
  workdirs = teacher_directories(train_config)
  if not workdirs:
    return
  for workdir in workdirs:
    if not rundir.is_run_directory(workdir):
      raise UserError(f'config.train.distill_from: {workdir!r} is not a run '
                      'directory (no config.json): train the teacher first '
                      'with python -m fer_jax.main and pass its --workdir '
                      '(several: comma-separated).')
  temperature = train_config.get('distill_temperature')
  if not _is_number(temperature) or not 0 < temperature < math.inf:
    raise UserError(f'config.train.distill_temperature={temperature!r} must '
                    'be a number > 0 (e.g. 4).')
  weight = train_config.get('distill_weight')
  if not _is_number(weight) or not 0 <= weight <= 1:
    raise UserError(f'config.train.distill_weight={weight!r} must be in '
                    '[0, 1]: the share of the teacher term in the loss.')


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def load(train_config: ml_collections.ConfigDict, class_names: tuple[str, ...]
         ) -> tuple[Teacher, tuple[dict, ...]] | tuple[None, None]:
  """(Teacher, its models' variables) from config.train.distill_from;
  (None, None) without one."""
  workdirs = teacher_directories(train_config)
  if not workdirs:
    return None, None
  trained = [inference.load_trained(rundir.RunDir(workdir, create=False))
             for workdir in workdirs]
  for workdir, run in zip(workdirs, trained):
    if run.class_names != tuple(class_names):
      raise UserError(f'The teacher in {workdir} predicts '
                      f'{",".join(run.class_names)} but this run trains on '
                      f'{",".join(class_names)}: distill from runs with the '
                      'same classes (data.classes, FER+ or FER2013).')
  teacher = Teacher(tuple(run.model for run in trained),
                    tuple(run.input_spec for run in trained),
                    float(train_config.distill_temperature),
                    float(train_config.distill_weight))
  # On the host: restored onto one local device, they could not be put on
  # a mesh that spans several processes.
  return teacher, tuple(jax.device_get(run.variables) for run in trained)


def record(train_config: ml_collections.ConfigDict) -> list[dict]:
  """The teachers' best checkpoints (path, step, sha256), for the run's
  distill_from.json."""
  return [rundir.RunDir(workdir, create=False).best_checkpoint_record()
          for workdir in teacher_directories(train_config)]
