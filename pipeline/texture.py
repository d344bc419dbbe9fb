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
import simplejpeg

from models import load_topology

COARSE_GRID = 256
MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE = 256, 2048
# The sizes a caller may ask for (``textureSize``); None (or "auto") lets the photo decide.
TEXTURE_SIZES = (512, 1024, 2048)
JPEG_QUALITY = 90
# Forehead-to-chin spans about 85% of the UV square's height.
FACE_SHARE_OF_UV = 0.85


@dataclass(frozen=True)
class TexelMap:
    """For each coarse texel: the three vertices it blends and their barycentric weights.

    Stored per corner as contiguous 1-D columns: numpy is many times faster on 1-D gathers and
    products than on [N,3,2]-shaped ones (short inner axes defeat its vector loops).
    """

    vertex_ids: tuple[np.ndarray, np.ndarray, np.ndarray]  # each [G*G] int32
    weights: tuple[np.ndarray, np.ndarray, np.ndarray]  # each [G*G] float32
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
        tuple(np.ascontiguousarray(weights[:, k]) for k in range(3)),
        inside,
    )


def texture_size_for(image_xy: np.ndarray, requested: int | None = None, max_size: int = MAX_TEXTURE_SIZE) -> int:
    """The texture side to bake: ``requested`` when given (one of ``TEXTURE_SIZES``), else the
    power of two that holds every face pixel the photo has, and no more.

    ``image_xy`` are the front landmarks in the pixels of the photo as decoded (``prepare_views``
    decodes the face at the detail this size needs). Texels beyond the photo's own resolution would
    only be interpolated, making the GLB bigger and the bake slower for no detail.
    """
    if requested is not None:
        return check_texture_size(requested)
    return texture_size_for_height(float(np.ptp(image_xy[:, 1])), max_size)


def texture_size_for_height(face_height: float, max_size: int = MAX_TEXTURE_SIZE) -> int:
    """``texture_size_for`` (auto) from the face's height in photo pixels (forehead to chin)."""
    wanted = face_height / FACE_SHARE_OF_UV
    size = 1 << max(0, int(np.ceil(np.log2(max(wanted, 1.0)))))
    return int(np.clip(size, MIN_TEXTURE_SIZE, max_size))


def face_pixels_for_texture(size: int) -> float:
    """How many photo pixels, forehead to chin, a ``size`` texture holds without interpolating."""
    return size * FACE_SHARE_OF_UV


def check_texture_size(size: int | str | None) -> int | None:
    """A requested texture size as an int (None for automatic); ``ValueError`` naming the choices."""
    if size is None or (isinstance(size, str) and size.strip().lower() in ("", "auto")):
        return None
    try:
        value = int(size)
    except (TypeError, ValueError):
        value = -1
    if value not in TEXTURE_SIZES:
        choices = ", ".join(str(s) for s in TEXTURE_SIZES)
        raise ValueError(f"textureSize must be one of {choices} or auto, not {size!r}")
    return value


def interpolate_vertex_values(values: np.ndarray, size: int, grid: int | None = None) -> np.ndarray:
    """[size,size,C] float32: per-vertex ``values`` [V,C] spread over the texture's triangles.

    Computed on a coarse grid (a quarter of the texture's side, 64 to 256) and upsampled
    linearly: the fields baked this way are piecewise linear and continuous, so little is lost.
    """
    grid = grid or min(COARSE_GRID, max(64, size // 4))
    tmap = texel_map(grid)
    (v0, v1, v2), (w0, w1, w2) = tmap.vertex_ids, tmap.weights
    channels = []
    for column in np.asarray(values, np.float32).T:
        coarse = column[v0] * w0 + column[v1] * w1 + column[v2] * w2
        channels.append(cv2.resize(coarse.reshape(grid, grid), (size, size), interpolation=cv2.INTER_LINEAR))
    return channels[0] if len(channels) == 1 else cv2.merge(channels)


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    # Fixed-point maps (1/32 px) make remap about twice as fast as float maps, invisibly.
    fixed, fraction = cv2.convertMaps(np.ascontiguousarray(xy), None, cv2.CV_16SC2)
    return cv2.remap(image, fixed, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def bake_texture(image: np.ndarray, image_xy: np.ndarray, size: int) -> np.ndarray:
    """The UV texture [size,size,3] RGB uint8 sampled from one photo at its landmark positions."""
    return _sample(image, interpolate_vertex_values(image_xy, size))


# Each texel takes the photo that sees it most squarely; where two see it about as well (within
# a few hundredths of a cosine) they cross-fade. A softmax over visibility with this temperature
# does both: blending everywhere would ghost, since no two photos' landmarks align exactly.
BLEND_TEMPERATURE = 0.04
# The front photo is decoded at twice the side photos' resolution and usually better lit, so a
# side photo takes over only where it sees the surface this much more squarely.
FRONT_PREFERENCE = 0.15
# Views overlap where both see the surface at least this squarely (used to match their colours).
OVERLAP_VISIBILITY = 0.5
MIN_SHARED_LANDMARKS = 20
MAX_COLOUR_GAIN = 1.5


def _vertex_colours(image: np.ndarray, image_xy: np.ndarray) -> np.ndarray:
    """[V,3] float32 colour of the photo under each landmark (nearest pixel)."""
    h, w = image.shape[:2]
    x = np.clip(np.rint(image_xy[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.rint(image_xy[:, 1]).astype(int), 0, h - 1)
    return image[y, x].astype(np.float32)


def colour_gains(images: list[np.ndarray], image_xys: list[np.ndarray], visibility: np.ndarray) -> np.ndarray:
    """[views,3] per-channel gains that bring each photo's colours to the front photo's.

    Measured on the landmarks both photos see squarely (exposure and white balance differ
    between shots); 1 where too few landmarks are shared.
    """
    front = _vertex_colours(images[0], image_xys[0])
    gains = np.ones((len(images), 3), np.float32)
    for k in range(1, len(images)):
        shared = (visibility[0] > OVERLAP_VISIBILITY) & (visibility[k] > OVERLAP_VISIBILITY)
        if shared.sum() >= MIN_SHARED_LANDMARKS:
            other = _vertex_colours(images[k], image_xys[k])[shared].mean(0)
            gains[k] = np.clip(front[shared].mean(0) / np.maximum(other, 1.0), 1 / MAX_COLOUR_GAIN, MAX_COLOUR_GAIN)
    return gains


def bake_atlas(images: list[np.ndarray], image_xys: list[np.ndarray], visibility: np.ndarray,
               size: int) -> np.ndarray:
    """One UV texture from several photos, the first (the front) being the colour reference.

    Parameters
    ----------
    images
        RGB uint8 photos, front first.
    image_xys
        Per photo, the landmarks' [V,2] pixel positions in it.
    visibility
        [views,V] in [0,1]: how squarely each landmark faces each photo's camera.
    size
        Texture side in texels.

    Each texel blends the photos by a softmax of their visibility (``BLEND_TEMPERATURE``; per
    landmark, so the interpolated weights already sum to one); each side photo is first scaled
    per channel to the front's colours (``colour_gains``). Texels no photo sees take the front
    photo's colour.
    """
    n = len(images)
    seen = np.asarray(visibility, np.float32).T  # [V,views]
    seen[:, 0] += FRONT_PREFERENCE
    weights = np.exp((seen - seen.max(axis=1, keepdims=True)) / BLEND_TEMPERATURE)
    weights /= weights.sum(axis=1, keepdims=True)
    if n == 1:
        return bake_texture(images[0], image_xys[0], size)
    gains = colour_gains(images, image_xys, visibility)
    # Blend in 8-bit fixed point (weights scaled to 0..255, summing to 255): OpenCV's saturating
    # uint8 multiply/add are several times faster than float arithmetic, and the rounding error
    # stays within two grey levels.
    total = np.zeros((size, size, 3), np.uint8)
    for k in range(n):
        texels = bake_texture(images[k], image_xys[k], size)
        if np.any(np.abs(gains[k] - 1) > 0.01):
            texels = cv2.transform(texels, np.diag(gains[k]).astype(np.float32))
        blend = interpolate_vertex_values(weights[:, k:k + 1] * 255, size)
        blend = cv2.cvtColor(np.clip(blend + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        total = cv2.add(total, cv2.multiply(texels, blend, scale=1 / 255))
    return total


def encode_jpeg(texture_rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes for the GLB (glTF viewers decode JPEG natively; PNG would be ~5x larger).

    TurboJPEG (simplejpeg) straight from RGB, chroma at half resolution (4:2:0, what OpenCV's
    encoder writes by default): 7.0 ms at 2048² where ``cv2.imencode`` after its RGB-to-BGR
    conversion takes 8.6 (at 4:4:4 either takes 12-13 ms, for a third larger file)."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(texture_rgb), quality, "RGB", "420")
