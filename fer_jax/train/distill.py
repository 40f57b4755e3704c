"""Knowledge distillation (Hinton et al. 2015) from a trained run's model.

`config.train.distill_from` names a run directory (a workdir of
`python -m fer_jax.main`); its best checkpoint is the teacher. In every
train step the teacher, in eval mode, sees the same augmented (and mixed)
faces as the student, through its own input spec (size, channels,
normalisation), so a 224x224 ImageNet port can teach a 48x48 grey student.
The loss is

  (1 - weight) * hard loss + weight * T^2 * KL(softmax(t / T) || softmax(s / T))

with t, s the teacher's and student's logits and T the temperature; T^2
keeps the soft term's gradients on the scale of the hard one's.
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
  """The static half of a teacher; its variables are a train step argument,
  so that they are not baked into the compiled step as constants."""
  model: nn.Module
  input_spec: InputSpec
  temperature: float
  weight: float

  def logits(self, variables: dict, images: jnp.ndarray) -> jnp.ndarray:
    """float32 logits of grey faces [N, H, W] (uint8 levels, maybe mixed),
    without gradients."""
    logits = self.model.apply(variables, self.input_spec(images), train=False)
    return jax.lax.stop_gradient(logits.astype(jnp.float32))

  def loss(self, hard_loss: jnp.ndarray, student_logits: jnp.ndarray,
           teacher_logits: jnp.ndarray) -> jnp.ndarray:
    """The distillation objective (module docstring), batch mean."""
    t = self.temperature
    soft = optax.losses.kl_divergence(
        jax.nn.log_softmax(student_logits / t),
        jax.nn.softmax(teacher_logits / t)).mean()
    return (1 - self.weight) * hard_loss + self.weight * t * t * soft


def check(train_config: ml_collections.ConfigDict) -> None:
  """Validates config.train.distill_*; fails before any data is read."""
  workdir = train_config.get('distill_from', '')
  if not workdir:
    return
  if not rundir.is_run_directory(workdir):
    raise UserError(f'config.train.distill_from={workdir!r} is not a run '
                    'directory (no config.json): train the teacher first '
                    'with python -m fer_jax.main and pass its --workdir.')
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
         ) -> tuple[Teacher, dict] | tuple[None, None]:
  """(Teacher, its variables) from config.train.distill_from; (None, None)
  without one."""
  workdir = train_config.get('distill_from', '')
  if not workdir:
    return None, None
  trained = inference.load_trained(rundir.RunDir(workdir, create=False))
  if trained.class_names != tuple(class_names):
    raise UserError(f'The teacher in {workdir} predicts '
                    f'{",".join(trained.class_names)} but this run trains on '
                    f'{",".join(class_names)}: distill from a run with the '
                    'same classes (data.classes, FER+ or FER2013).')
  return Teacher(trained.model, trained.input_spec,
                 float(train_config.distill_temperature),
                 float(train_config.distill_weight)), trained.variables
