"""Bake the UV texture of the face mesh from a photo and its landmarks.

The mesh's UV layout is fixed, so which triangle covers each texel (and where inside it) is
computed once per process on a coarse grid. Per avatar the texel-to-photo map is then a weighted
sum of three landmark positions, upsampled (the map is piecewise affine and continuous, so linear
upsampling is nearly exact) and handed to ``cv2.remap``. Texels outside every triangle take the
extrapolated map of the nearest triangle, which pads the UV islands so mipmaps show no seams.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from models import load_topology

COARSE_GRID = 256
MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE = 256, 1024
JPEG_QUALITY = 90
# Forehead-to-chin spans about 85% of the UV square's height.
FACE_SHARE_OF_UV = 0.85


@dataclass(frozen=True)
class TexelMap:
    """For each coarse texel: the three vertices it blends and their barycentric weights.

    Stored per corner as contiguous columns, because three 1-D gathers are several times faster
    than one fancy-indexed [G*G,3,2] gather.
    """

    vertex_ids: tuple[np.ndarray, np.ndarray, np.ndarray]  # each [G*G] int32
    weights: tuple[np.ndarray, np.ndarray, np.ndarray]  # each [G*G,1] float32
    inside: np.ndarray  # [G,G] bool: texel centre lies in some triangle


def _barycentric(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of ``points`` [K,2] in triangle ``tri`` [3,2] (may be outside)."""
    a, b, c = tri
    m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
    det = np.linalg.det(m)
    if abs(det) < 1e-12:
        return np.full((len(points), 3), 1 / 3)
    vw = (points - a) @ np.linalg.inv(m).T
    return np.column_stack([1 - vw.sum(1), vw])


@lru_cache(maxsize=4)
def texel_map(grid: int = COARSE_GRID) -> TexelMap:
    """Rasterise the topology's UV triangles onto a ``grid`` square (texel centres)."""
    topo = load_topology()
    uv_px = topo.uvs.astype(np.float64) * grid - 0.5
    triangle = np.full((grid, grid), -1, np.int32)
    weights = np.zeros((grid, grid, 3), np.float64)
    for t, tri in enumerate(topo.triangles):
        corners = uv_px[tri]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int), grid - 1)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
        bary = _barycentric(pts, corners)
        hit = (bary >= -1e-9).all(1)
        triangle[ys.ravel()[hit], xs.ravel()[hit]] = t
        weights[ys.ravel()[hit], xs.ravel()[hit]] = bary[hit]
    inside = triangle >= 0
    # Every outside texel borrows the triangle of its nearest inside texel, extrapolated.
    _, labels = cv2.distanceTransformWithLabels((~inside).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    label_to_pixel = np.zeros((labels.max() + 1, 2), np.int64)
    iy, ix = np.nonzero(inside)
    label_to_pixel[labels[iy, ix]] = np.column_stack([iy, ix])
    oy, ox = np.nonzero(~inside)
    near = label_to_pixel[labels[oy, ox]]
    triangle[oy, ox] = triangle[near[:, 0], near[:, 1]]
    for t in np.unique(triangle[oy, ox]):
        sel = triangle[oy, ox] == t
        pts = np.column_stack([ox[sel], oy[sel]]).astype(np.float64)
        weights[oy[sel], ox[sel]] = _barycentric(pts, uv_px[topo.triangles[t]])
    corners = topo.triangles[triangle.ravel()]
    weights = weights.reshape(-1, 3).astype(np.float32)
    return TexelMap(
        tuple(np.ascontiguousarray(corners[:, k]) for k in range(3)),
        tuple(np.ascontiguousarray(weights[:, k:k + 1]) for k in range(3)),
        inside,
    )


def texture_size_for(image_xy: np.ndarray, max_size: int = MAX_TEXTURE_SIZE) -> int:
    """The power-of-two texture side that holds every face pixel the photo has, and no more.

    Texels beyond the photo's own resolution would only be interpolated, making the GLB bigger
    and the bake slower for no detail.
    """
    face_height = float(np.ptp(image_xy[:, 1]))
    wanted = face_height / FACE_SHARE_OF_UV
    size = 1 << max(0, int(np.ceil(np.log2(max(wanted, 1.0)))))
    return int(np.clip(size, MIN_TEXTURE_SIZE, max_size))


def texel_to_image_map(image_xy: np.ndarray, size: int, grid: int = COARSE_GRID) -> np.ndarray:
    """[size,size,2] float32 photo coordinates for every texel, from per-vertex photo positions [V,2]."""
    tmap = texel_map(grid)
    xy = np.asarray(image_xy, np.float32)
    (v0, v1, v2), (w0, w1, w2) = tmap.vertex_ids, tmap.weights
    coarse = (xy[v0] * w0 + xy[v1] * w1 + xy[v2] * w2).reshape(grid, grid, 2)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


def bake_texture(image: np.ndarray, image_xy: np.ndarray, size: int) -> np.ndarray:
    """The UV texture [size,size,3] RGB uint8 sampled from ``image`` at the landmark positions."""
    xy = texel_to_image_map(image_xy, size)
    # Fixed-point maps (1/32 px) make remap about twice as fast as float maps, invisibly.
    fixed, fraction = cv2.convertMaps(xy, None, cv2.CV_16SC2)
    return cv2.remap(image, fixed, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def encode_jpeg(texture_rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes for the GLB (glTF viewers decode JPEG natively; PNG would be ~5x larger)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(texture_rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding of the texture failed")
    return data.tobytes()
