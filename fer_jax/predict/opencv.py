"""OpenCV where it is installed: face detection, videos and annotated copies
need it; classifying face crops (--no-detect) does not, so an ONNX
deployment on crops needs only onnxruntime, NumPy and Pillow.

  from fer_jax.predict.opencv import cv2  # None without OpenCV.
  opencv.require('Face detection')        # cv2, or a UserError saying why.
"""

from fer_jax.errors import UserError

try:
  import cv2
  _IMPORT_ERROR = ''
except ImportError as e:
  cv2 = None
  _IMPORT_ERROR = str(e)

INSTALL = 'pip install "opencv-python-headless>=4.9,<5"'


def require(purpose: str):
  """The cv2 module; a UserError naming `purpose` where OpenCV is missing."""
  if cv2 is None:
    raise UserError(f'{purpose} needs OpenCV, which cannot be imported '
                    f'({_IMPORT_ERROR}): {INSTALL}. Without it, only face '
                    'crops can be classified (--no-detect, no --out, no '
                    'videos).')
  return cv2
