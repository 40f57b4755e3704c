"""Converts torchvision ImageNet weights for a ported model (see __init__).

  python -m fer_jax.convert --arch=vgg16 --src=vgg16.pth --out=weights/vgg16

Get the .pth on a machine with internet, e.g.
  torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(),
             'vgg16.pth')
"""

from absl import app, flags

from fer_jax import cli, convert, models

flags.DEFINE_enum('arch', None, sorted(convert.ARCHS), 'Architecture.')
flags.DEFINE_string('src', None, 'torchvision state dict (.pth).')
flags.DEFINE_string('out', None, 'Output directory, for '
                    '--config.model.init_from.')
flags.mark_flags_as_required(['arch', 'src', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  with cli.exits_on_user_errors():
    state_dict = convert.read_torch_state_dict(args.src, args.arch)
    variables = convert.from_torchvision(args.arch, state_dict)
    num_params = models.count_params(variables['params'])
    convert.save(args.out, variables,
                 {'arch': args.arch, 'format': 'torchvision',
                  'source': args.src, 'num_params': num_params})
  print(f'{args.arch}: {num_params:,} parameters from {args.src} -> '
        f'{args.out}')


if __name__ == '__main__':
  app.run(main)
