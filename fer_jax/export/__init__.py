"""Exports a trained model to ONNX, to run it without JAX.

  python -m fer_jax.export --workdir=runs/resnet_small --out=model.onnx

See onnx_export.py; the predictor runs the file with
`python -m fer_jax.predict --backend=onnx --model=model.onnx photo.jpg`.
"""
