"""The software renderer: framing, turn direction, culling, depth order and texture orientation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models import load_topology
from pipeline.preview import (FILL, contact_sheet, project, rasterise, render_textured,
                              write_preview_png)

BACKGROUND = (235, 235, 235)
SIZE = 256
NOSE_TIP = 1


@pytest.fixture(scope="module")
def face():
    """The canonical face in metres, its triangles and UVs."""
    topo = load_topology()
    return topo.vertices.astype(np.float64) / 100.0, topo.triangles, topo.uvs


def _flat(rgb) -> np.ndarray:
    texture = np.empty((8, 8, 3), np.uint8)
    texture[:] = rgb
    return texture


def _silhouette(image: np.ndarray) -> np.ndarray:
    return (image != np.array(BACKGROUND, np.uint8)).any(-1)


def _quadrant_texture() -> np.ndarray:
    """Texture quadrants: top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32, :32] = (255, 0, 0)
    texture[:32, 32:] = (0, 255, 0)
    texture[32:, :32] = (0, 0, 255)
    texture[32:, 32:] = (255, 255, 0)
    return texture


def test_front_view_is_centred_symmetric_and_fills_the_frame(face):
    vertices, triangles, uvs = face
    image = render_textured(vertices, triangles, uvs, _flat((200, 120, 90)), size=SIZE, light=False)
    mask = _silhouette(image)
    rows, cols = np.nonzero(mask)
    assert abs((cols.min() + cols.max() + 1) / 2 - SIZE / 2) <= 1.5
    assert abs((rows.min() + rows.max() + 1) / 2 - SIZE / 2) <= 1.5
    # The face is taller than wide, so its height spans FILL of the frame.
    assert abs((rows.max() - rows.min() + 1) / SIZE - FILL) < 0.02
    mirrored = mask[:, ::-1]
    assert (mask & mirrored).sum() / (mask | mirrored).sum() > 0.97
    # Flat texture and no light: every covered pixel has the texture's colour exactly.
    assert (image[mask] == (200, 120, 90)).all()


def test_positive_yaw_turns_the_head_to_its_left(face):
    """+yaw: the nose moves to the image's right and the subject's right cheek (texture's left
    half, image left) takes up more of the picture."""
    vertices, triangles, uvs = face
    halves = np.zeros((64, 64, 3), np.uint8)
    halves[:, :32] = (255, 0, 0)  # u < 0.5: the subject's right side
    halves[:, 32:] = (0, 0, 255)
    front = render_textured(vertices, triangles, uvs, halves, size=SIZE, light=False)
    turned = render_textured(vertices, triangles, uvs, halves, yaw_deg=45, size=SIZE, light=False)
    red = lambda img: ((img[..., 0] > 128) & (img[..., 2] < 128)).sum()  # noqa: E731
    blue = lambda img: ((img[..., 2] > 128) & (img[..., 0] < 128)).sum()  # noqa: E731
    assert abs(red(front) - blue(front)) < 0.05 * red(front)
    assert red(turned) > 1.5 * blue(turned)

    screen, _, _ = project(vertices, yaw_deg=45, size=SIZE)
    assert screen[NOSE_TIP, 0] > SIZE / 2 + 20
    front_width = np.ptp(np.nonzero(_silhouette(front))[1])
    turned_width = np.ptp(np.nonzero(_silhouette(turned))[1])
    assert turned_width < 0.95 * front_width
    # The nose tip is near the turned silhouette's right-hand edge.
    cols = np.nonzero(_silhouette(turned))[1]
    assert abs(cols.max() - screen[NOSE_TIP, 0]) < 0.1 * turned_width


def test_back_faces_are_culled(face):
    vertices, triangles, uvs = face
    texture = _flat((90, 160, 90))
    covered = _silhouette(render_textured(vertices, triangles, uvs, texture, size=SIZE)).sum()
    reversed_winding = _silhouette(render_textured(vertices, triangles[:, ::-1], uvs, texture,
                                                   size=SIZE)).sum()
    from_behind = _silhouette(render_textured(vertices, triangles, uvs, texture, yaw_deg=180,
                                              size=SIZE)).sum()
    # A few of the canonical mesh's rim triangles face slightly backward even from the front.
    assert reversed_winding < 0.05 * covered
    assert from_behind < 0.05 * covered


def test_nearer_triangle_wins_whatever_the_order():
    positions = np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0],  # far triangle
                          [-1, -1, 0.5], [1, -1, 0.5], [0, 1, 0.5]], np.float64)
    uvs = np.array([[0.25, 0.5]] * 3 + [[0.75, 0.5]] * 3)
    texture = np.zeros((4, 4, 3), np.uint8)
    texture[:, :2] = (255, 0, 0)  # far: red
    texture[:, 2:] = (0, 0, 255)  # near: blue
    for triangles in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        image = render_textured(positions, np.array(triangles), uvs, texture, size=64, light=False)
        assert tuple(image[40, 32]) == (0, 0, 255)
    ids, bary = rasterise(*project(positions, size=64)[:2], np.array([[0, 1, 2], [3, 4, 5]]), 64)
    assert ids[40, 32] == 1 and np.isclose(bary[40, 32].sum(), 1.0)


def test_texture_top_left_is_the_forehead_on_the_image_left(face):
    """UVs have their origin at the texture's top-left: its top rows are the forehead (image top),
    its left columns the subject's right side (image left at yaw 0)."""
    vertices, triangles, uvs = face
    image = render_textured(vertices, triangles, uvs, _quadrant_texture(), size=SIZE, light=False)
    rows, cols = np.nonzero(_silhouette(image))
    top, bottom = rows.min(), rows.max()
    band = lambda r0, r1, c0, c1: image[r0:r1, c0:c1].reshape(-1, 3)  # noqa: E731
    share = lambda pixels, rgb: (pixels == rgb).all(1).mean()  # noqa: E731
    upper_left = band(top, top + 30, 0, SIZE // 2 - 10)
    upper_left = upper_left[(upper_left != BACKGROUND).any(1)]
    lower_right = band(bottom - 30, bottom, SIZE // 2 + 10, SIZE)
    lower_right = lower_right[(lower_right != BACKGROUND).any(1)]
    assert share(upper_left, (255, 0, 0)) > 0.9
    assert share(lower_right, (255, 255, 0)) > 0.9


def test_background_image_and_supersampling(face):
    vertices, triangles, uvs = face
    backdrop = np.zeros((SIZE, SIZE, 3), np.uint8)
    backdrop[:] = (10, 20, 30)
    image = render_textured(vertices, triangles, uvs, _flat((200, 200, 200)), size=SIZE,
                            background=backdrop, supersample=2)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert tuple(image[2, 2]) == (10, 20, 30)
    assert image[SIZE // 2, SIZE // 2].mean() > 100  # the face, lit


def test_contact_sheet_and_preview_png(face, tmp_path):
    vertices, triangles, uvs = face
    sheet = contact_sheet([np.zeros((10, 20, 3), np.uint8), np.zeros((12, 5, 3), np.uint8)], gap=3)
    assert sheet.shape == (12, 28, 3)

    class Avatar:  # what write_preview_png reads from an AvatarResult
        def __init__(self):
            self.vertices = vertices.astype(np.float32)
            self.texture = _quadrant_texture()

    path = write_preview_png(Avatar(), tmp_path / "preview.png", size=128)
    written = cv2.imread(str(path))
    assert written.shape == (128, 4 * 128 + 3 * 4, 3)
    # Every tile shows some face.
    for k in range(4):
        tile = written[:, k * 132:k * 132 + 128]
        assert (np.abs(tile.astype(int) - tile[5, 120].astype(int)).sum(-1) > 30).mean() > 0.1
    with pytest.raises(ValueError):
        write_preview_png(vertices, tmp_path / "no_texture.png")
