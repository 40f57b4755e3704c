"""Every knob of a run, with its default. Config files in configs/ start here.

Each value can be overridden on the command line, e.g.
`--config.train.epochs=5 --config.data.max_per_class=200`.
"""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """The reference recipe: resnet_small, Adam 1e-3, batch 64, 40 epochs."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  # fer2013.csv / .csv.gz / .tar.gz, an image folder or .zip, or a TFDS
  # data_dir prepared by `python -m fer_jax.data.tfds_fer2013`.
  data.path = ''
  data.ferplus_path = ''  # fer2013new.csv: FER+ labels over the CSV rows.
  # How FER+ votes become the train split's targets (data/sources.py,
  # ferplus.targets): 'majority', 'probability' (a label drawn from the vote
  # distribution every step), 'crossentropy' (fit the distribution) or
  # 'multi_target' (any emotion with >= 30% of the votes is right). Val and
  # test always use majority labels.
  data.label_mode = 'majority'
  data.on_bad_record = 'error'  # Or 'skip': skip bad records, count them.
  # Image folders without Training_/PublicTest_/PrivateTest_ names.
  data.split_ratios = (0.7, 0.15, 0.15)
  data.classes = ''  # Comma-separated subset, e.g. 'angry,fear,happy'.
  data.max_per_class = 0  # Cap on images per class in every split; 0: none.
  data.balance = 'none'  # 'undersample': train classes cut to the smallest.
  # Draws the splits of files that carry none (split_ratios), the per-class
  # cap and the undersampling: fixed, not config.seed, so that runs of other
  # seeds share their PublicTest and PrivateTest images.
  data.split_seed = 0
  data.num_workers = 0  # Grain worker processes; 0 augments in-process.
  data.prefetch_batches = 2  # Host batches staged on the device ahead.
  # Model input: grey 48x48 -> `channels` x `image_size`, then normalised:
  # 'symmetric' ([-1, 1]), 'dataset' (train mean/std), 'imagenet' or
  # 'caffe' (ImageNet's mean subtracted from BGR 0-255, as Keras' VGG16).
  data.image_size = 48
  data.channels = 1
  data.normalization = 'symmetric'
  data.augment = augment = ml_collections.ConfigDict()
  augment.rotation = 10.0  # Degrees, +-.
  augment.translation = 0.1  # Fraction of the image size, +-.
  augment.zoom = 0.1  # Relative scale change, +-.
  augment.hflip = True
  augment.brightness = 0.0  # Fraction of 255, +-.
  augment.contrast = 0.0  # Relative contrast change, +-.
  # Random erasing (Zhong et al. 2020): the probability that one box of 2-33%
  # of the face, aspect ratio 0.3-3.3, is filled with random grey levels;
  # 0: off.
  augment.erasing = 0.0
  # 'host': in Grain, per image on the CPU; 'device': batched inside the
  # jitted train step (fer_jax/data/device_augment.py), Grain only shuffles
  # and batches uint8 faces. Same knobs and ranges either way.
  augment.where = 'host'

  config.model = model = ml_collections.ConfigDict()
  model.name = 'resnet_small'  # Other fields are the model's own settings.
  model.dropout = 0.0
  # Weights to start from: a directory of converted ImageNet weights (python
  # -m fer_jax.convert) or a run directory (its best checkpoint: fine-tuning
  # or continuing a trained model). Parameters with the same name and shape
  # are loaded, the rest (e.g. a classifier for other classes) is initialised
  # afresh. '': none.
  model.init_from = ''

  config.train = train = ml_collections.ConfigDict()
  # Without phases: the number of epochs. With phases: a cap on each phase's
  # epochs (0: no cap), so `--config.train.epochs=1` keeps any run quick.
  train.epochs = 40
  # Transfer learning in phases, run one after another (empty: one phase of
  # config.train that trains everything). Each phase is a string of
  # field=value pairs, e.g.
  #   ('epochs=10,trainable=head,learning_rate=1e-3',
  #    'epochs=20,trainable=last:2,learning_rate=1e-4')
  # `trainable`: 'head', 'last:N' (the last N blocks and the head) or 'all'
  # (the default); frozen modules keep their parameters and BatchNorm
  # statistics. Other fields (optimizer, learning_rate, schedule,
  # weight_decay, momentum, nesterov, warmup_epochs, plateau_factor,
  # plateau_patience, early_stopping_patience) default to train.*'s. Each
  # phase has a fresh optimizer, its own early stopping and best checkpoint,
  # and starts from the best state of the phase before. See
  # fer_jax/train/phases.py.
  train.phases = ()
  train.batch_size = 64  # Global, over all devices and hosts.
  # Activations and compute: 'float32' or 'bfloat16' (accelerators); params,
  # optimizer state and the loss stay float32.
  train.compute_dtype = 'float32'
  train.optimizer = 'adam'  # 'adam', 'adamw' or 'sgd'.
  train.learning_rate = 1e-3
  train.momentum = 0.9  # sgd only.
  train.nesterov = False  # sgd only.
  # Decoupled for adamw, L2 added to the gradient otherwise; biases and
  # normalisation scales are never decayed.
  train.weight_decay = 0.0
  train.schedule = 'plateau'  # 'constant', 'cosine' or 'plateau'.
  # Linear warm-up from 0, before any schedule; fractions of an epoch too.
  train.warmup_epochs = 0.0
  # Reduce-on-plateau: x plateau_factor after plateau_patience epochs
  # without a better plateau_metric (a validation metric; lower is better
  # for *loss, higher otherwise, as for selection_metric).
  train.plateau_factor = 0.5
  train.plateau_patience = 3
  train.plateau_metric = 'val/loss'
  train.label_smoothing = 0.0
  train.class_weights = 'none'  # 'balanced': n / (classes * count) per class.
  # Mixup (Zhang et al.) and CutMix (Yun et al.) in the train step: alpha of
  # the Beta(alpha, alpha) mixing weight, drawn per batch; 0: off. With both
  # on, each batch uses one of the two with probability 0.5. Train accuracy
  # is still measured against the unmixed labels (fer_jax/train/mixing.py).
  train.mixup_alpha = 0.0
  train.cutmix_alpha = 0.0
  # Knowledge distillation (fer_jax/train/distill.py): a trained run
  # directory whose best checkpoint teaches, on the same classes, or several
  # comma-separated (an ensemble: their mean softened probabilities); '': off.
  # loss = (1 - weight) * hard loss + weight * T^2 * KL(teacher || student)
  # at temperature T.
  train.distill_from = ''
  train.distill_temperature = 4.0
  train.distill_weight = 0.5
  train.early_stopping_patience = 10  # Epochs without improvement; 0: off.
  # Chooses the best checkpoint and drives early stopping (higher is better,
  # except for *loss).
  train.selection_metric = 'val/macro_f1'
  # Exponential moving average of the weights and BatchNorm statistics,
  # updated every step; 0.0: off, e.g. 0.999 (an average over ~1000 steps).
  # Bias-corrected as optax.ema(debias=True), so short runs average what
  # they trained. When on, validation (selection, early stopping, plateau),
  # the best checkpoint and thus the report and predictor use the EMA; the
  # latest checkpoint keeps both. Each phase restarts it at its start state.
  train.ema_decay = 0.0
  # Mid-epoch checkpoints for long epochs; 0: at epoch ends (and on SIGTERM /
  # SIGINT) only.
  train.checkpoint_every_steps = 0
  # Steps between the progress bar's loss updates. Each shows the loss of
  # the update before, long copied to the host: no wait for the device.
  train.log_every_steps = 20
  train.eval_batch_size = 512

  # Without an accelerator: the JAX devices the CPU is split into, for data
  # parallel training over its cores (fer_jax/train/cpu_devices.py;
  # 1.2-1.5x faster on 2 cores). 0: one per core, or the most that divide
  # train.batch_size (none split in multi-host runs). Unused on an
  # accelerator.
  config.cpu_devices = 0
  # Without an accelerator: N > 0 keeps each train step's temporaries
  # mapped for the next instead of faulting them in afresh, giving them back
  # to the system every N steps, which bounds the heap's growth
  # (fer_jax/train/cpu_memory.py). 20: resnet_small's epoch 1.13x faster on
  # 2 cores, but 2.9 GB of peak host memory instead of 1.7 (experiments/
  # BENCHMARKS.md, "Step memory on the CPU"). 0: off. Unused on an
  # accelerator.
  config.cpu_keep_memory = 0
  # Without an accelerator: the library that runs convolutions
  # (fer_jax/cpu_convolutions.py). 'eigen': resnet_small's train step
  # 2.2-3.4x faster on a Zen 1 EPYC, where XLA:CPU's default (YNNPACK in
  # JAX 0.10) is slowest, and as fast on the other CPUs measured
  # (experiments/BENCHMARKS.md, "Convolutions in Eigen"). 'xla': XLA:CPU's
  # default. Unused on an accelerator.
  config.cpu_convolutions = 'eigen'

  # Multi-host data parallel (jax.distributed): run the same command once per
  # process, each with its own process_id. num_processes 1: one process,
  # nothing started. 0: all three settings from the cluster (Slurm, Open MPI,
  # Cloud TPU). N > 1: coordinator_address ('host:port' of process 0) and
  # process_id (0 .. N-1); '' and -1 take them from the cluster. Batches
  # and the learning rate are global either way (README, "Several hosts").
  config.distributed = distributed = ml_collections.ConfigDict()
  distributed.coordinator_address = ''
  distributed.num_processes = 1
  distributed.process_id = -1
  return config


def imagenet_port_config(name: str, head: str,
                         dropout: float) -> ml_collections.ConfigDict:
  """default_config for fine-tuning the ImageNet port `name` (configs/).

  Convert its weights once (README, "Model zoo and converted weights"), then
  train, select on PublicTest, report PrivateTest:
    python -m fer_jax.convert --arch=<name> --src=<name>.pth \\
        --out=weights/<name>
    python -m fer_jax.main --config=configs/<name>.py --workdir=runs/<name> \\
        --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz \\
        --config.model.init_from=weights/<name>
  Without init_from it trains from scratch. Input: the grey 48x48 faces
  resized to 224x224, repeated to 3 channels and ImageNet-normalised, as the
  weights expect; for a quick CPU check add `--config.data.image_size=96
  --config.data.max_per_class=50 --config.train.epochs=1`. `head` is one of
  fer_jax/models/heads.py's: 'imagenet' (the architecture's own),
  'gap_bn_dropout_dense256', 'flatten_dense256_l2' or 'dense128'.
  """
  config = default_config()
  config.data.image_size = 224
  config.data.channels = 3
  config.data.normalization = 'imagenet'
  config.model.name = name
  config.model.head = head
  config.model.dropout = dropout
  config.train.learning_rate = 1e-4  # Fine-tuning pretrained weights.
  return config
