"""Face detection and square face crops (no model needed)."""

import cv2
import matplotlib.cbook
import numpy as np
import pytest

from fer_jax.predict import detect

# A real portrait photo (600x512) that ships inside matplotlib.
GRACE_HOPPER = str(matplotlib.cbook.get_sample_data('grace_hopper.jpg',
                                                    asfileobj=False))


def draw_face(canvas: np.ndarray, centre_x: int, centre_y: int,
              width: int) -> np.ndarray:
  """Draws a grey cartoon face that OpenCV's frontal Haar cascade finds
  (hair, eye sockets, eyes, brows, nose shadow, mouth); returns `canvas`."""
  scale = width / 200

  def at(x, y):
    return round(centre_x + x * scale), round(centre_y + y * scale)

  def size(x, y):
    return max(1, round(x * scale)), max(1, round(y * scale))

  cv2.ellipse(canvas, at(0, -40), size(95, 95), 0, 180, 360, 30, -1)
  cv2.ellipse(canvas, at(0, 0), size(80, 105), 0, 0, 360, 190, -1)
  for side in (-1, 1):
    cv2.ellipse(canvas, at(side * 32, -22), size(24, 14), 0, 0, 360, 120, -1)
    cv2.ellipse(canvas, at(side * 32, -22), size(14, 8), 0, 0, 360, 30, -1)
    cv2.line(canvas, at(side * 52, -45), at(side * 14, -47), 50,
             size(8, 8)[0])
  cv2.ellipse(canvas, at(0, 30), size(14, 8), 0, 0, 360, 110, -1)
  cv2.ellipse(canvas, at(0, 60), size(30, 9), 0, 0, 360, 60, -1)
  return canvas


def group_photo(centres_x=(220, 640, 1060), width=200, shape=(480, 1280)):
  grey = np.full(shape, 110, np.uint8)
  for centre_x in centres_x:
    draw_face(grey, centre_x, shape[0] // 2, width)
  return grey


@pytest.fixture(scope='module')
def haar():
  return detect.HaarDetector()


def _centres(boxes):
  return boxes[:, :2] + boxes[:, 2:] / 2


def test_haar_finds_each_face_left_to_right(haar):
  boxes = detect.find_faces(group_photo(), haar, min_face_size=32)
  assert boxes.shape == (3, 4)
  np.testing.assert_allclose(_centres(boxes),
                             [[220, 240], [640, 240], [1060, 240]], atol=20)
  assert np.all((boxes[:, 2] > 150) & (boxes[:, 2] < 300))


def test_haar_finds_the_face_in_a_real_photo(haar):
  grey = cv2.imread(GRACE_HOPPER, cv2.IMREAD_GRAYSCALE)
  boxes = detect.find_faces(grey, haar, min_face_size=32)
  assert boxes.shape == (1, 4)
  np.testing.assert_allclose(_centres(boxes), [[265, 215]], atol=25)


@pytest.mark.parametrize('image', [
    np.full((480, 640), 110, np.uint8),
    np.random.default_rng(0).integers(0, 256, (480, 640), np.uint8),
], ids=['blank', 'noise'])
def test_haar_finds_no_face_where_there_is_none(haar, image):
  boxes = detect.find_faces(image, haar, min_face_size=32)
  assert boxes.shape == (0, 4)


def test_faces_smaller_than_min_face_size_are_not_found(haar):
  boxes = detect.find_faces(group_photo(), haar, min_face_size=400)
  assert boxes.shape == (0, 4)


def test_large_images_are_downscaled_and_boxes_map_back():
  seen = []

  def stub(grey, min_size):
    seen.append((grey.shape, min_size))
    return np.array([[100, 200, 64, 64], [10, 20, 32, 32]])

  grey = np.zeros((3000, 4000), np.uint8)
  boxes = detect.find_faces(grey, stub, min_face_size=100, max_side=1280)
  assert seen == [((960, 1280), 32)]
  # Scaled by 4000 / 1280 and sorted left to right.
  np.testing.assert_array_equal(boxes, [[31, 62, 100, 100],
                                        [312, 625, 200, 200]])


def test_haar_finds_a_face_in_a_large_photo(haar):
  photo = group_photo(centres_x=(2000,), width=1000, shape=(3000, 4000))
  boxes = detect.find_faces(photo, haar, min_face_size=32)
  assert boxes.shape == (1, 4)
  np.testing.assert_allclose(_centres(boxes), [[2000, 1500]], atol=80)


def test_crops_are_squares_with_the_margin_around_the_box():
  grey = np.arange(200 * 300).reshape(200, 300).astype(np.uint8)
  crop, = detect.face_crops(grey, np.array([[100, 50, 40, 60]]), 0.25, 90)
  # Long side 60 plus 15 on each side: the 90x90 square centred on the box.
  np.testing.assert_array_equal(crop, grey[35:125, 75:165])


def test_crops_shift_inside_the_image_and_shrink_to_fit():
  grey = np.random.default_rng(0).integers(0, 256, (100, 150), np.uint8)
  corner, too_big = detect.face_crops(
      grey, np.array([[0, 0, 40, 40], [0, 0, 150, 100]]), 0.25, 60)
  np.testing.assert_array_equal(corner, grey[:60, :60])
  expected = cv2.resize(grey[:, 25:125], (60, 60),
                        interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(too_big, expected)
