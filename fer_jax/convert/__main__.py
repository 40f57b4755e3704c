"""Converts ImageNet weights for a ported model (see __init__).

  python -m fer_jax.convert --arch=vgg16 --src=vgg16.pth --out=weights/vgg16

Get the .pth on a machine with internet, e.g.
  torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(),
             'vgg16.pth')
or, for vgg16, Keras's .h5 (keras.applications.VGG16(weights='imagenet')
downloads ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5):
  python -m fer_jax.convert --arch=vgg16 \
      --src=vgg16_weights_tf_dim_ordering_tf_kernels.h5 --out=weights/vgg16
or, for swin_tiny, timm's (a .pth or the hub's model.safetensors):
  torch.save(timm.create_model('swin_tiny_patch4_window7_224',
                               pretrained=True).state_dict(), 'swin_tiny.pth')
  python -m fer_jax.convert --arch=swin_tiny --src=model.safetensors \
      --out=weights/swin_tiny
"""

from absl import app, flags

from fer_jax import cli, convert, models

flags.DEFINE_enum('arch', None, sorted(convert.ARCHS), 'Architecture.')
flags.DEFINE_string('src', None, 'torchvision state dict (.pth) or, for '
                    'vgg16, Keras applications weights (.h5); for '
                    'swin_tiny, timm\'s (.pth or .safetensors).')
flags.DEFINE_string('out', None, 'Output directory, for '
                    '--config.model.init_from.')
flags.mark_flags_as_required(['arch', 'src', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  with cli.exits_on_user_errors():
    variables, meta = convert.read(args.src, args.arch)
    num_params = models.count_params(variables['params'])
    convert.save(args.out, variables,
                 {'arch': args.arch, **meta,
                  'source': args.src, 'num_params': num_params})
  print(f'{args.arch}: {num_params:,} parameters from {args.src} -> '
        f'{args.out}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
