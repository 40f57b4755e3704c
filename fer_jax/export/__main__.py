"""`python -m fer_jax.export`: see onnx_export.py."""

from fer_jax.export import onnx_export

if __name__ == '__main__':
  onnx_export.main()
