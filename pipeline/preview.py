"""Software renders of a textured mesh: previews of an avatar, and synthetic photos of a known head.

Pure numpy + OpenCV, no GPU and no OpenGL context. The camera is orthographic and looks down -Z
at a mesh given in the avatar's frame (metres, +Y up, +Z toward the viewer). The mesh turns in
front of the camera:

- ``yaw_deg`` turns it about the vertical (+Y) axis, right-handed: **positive yaw turns the head
  to its own left**, so the nose moves to the image's right and the camera sees more of the
  subject's *right* cheek (which lies on -X and appears on the image's left). A photo of the
  subject's left side ("left" view) is therefore a negative yaw.
- ``pitch_deg`` then turns it about the camera's horizontal (+X) axis: **positive pitch nods the
  head down** (the forehead comes toward the camera, the chin goes back).

Rasterisation is vectorised over all triangles at once: every triangle's bounding box is expanded
into candidate pixels, barycentric coordinates decide coverage, and the nearest fragment per pixel
wins (a sort by depth, then the first occurrence per pixel). One ``cv2.remap`` then samples the
texture bilinearly at the interpolated UVs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

# Share of the frame that the larger of the mesh's (unturned) width and height spans.
FILL = 0.65
# Lambert shading: a light just above and to the left of the camera, plus ambient.
LIGHT_DIRECTION = np.array([-0.25, 0.35, 1.0]) / np.linalg.norm([-0.25, 0.35, 1.0])
AMBIENT, DIFFUSE = 0.45, 0.6
# Yaws of the standard avatar preview: front, turned 45° each way, and the right profile.
PREVIEW_YAWS = (0.0, 45.0, -45.0, 90.0)
# A whole head's preview adds the back.
HEAD_PREVIEW_YAWS = (0.0, 45.0, -45.0, 90.0, 180.0)


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """``[3,3]`` rotation: yaw about +Y first (head turns to its left for +), then pitch about +X."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0.0, np.sin(y)], [0.0, 1.0, 0.0], [-np.sin(y), 0.0, np.cos(y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(p), -np.sin(p)], [0.0, np.sin(p), np.cos(p)]])
    return rx @ ry


def fit_frame(positions: np.ndarray, size: int, fill: float = FILL) -> tuple[np.ndarray, float]:
    """The centre (bounding-box centre) and pixels per unit that make the mesh span ``fill`` of the frame.

    Fitted on the unturned mesh so every view of one mesh shares its scale and centre.
    """
    p = np.asarray(positions, np.float64)
    lo, hi = p.min(0), p.max(0)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1])) or 1.0
    return (lo + hi) / 2, fill * size / extent


def project(
    positions: np.ndarray,
    *,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    size: int = 512,
    centre: np.ndarray | None = None,
    pixels_per_unit: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen positions ``[V,2]`` (x right, y down, pixel centres at +0.5), depth ``[V]`` (larger is
    nearer) and the rotation used. ``centre``/``pixels_per_unit`` default to ``fit_frame``."""
    p = np.asarray(positions, np.float64)
    fitted_centre, fitted_scale = fit_frame(p, size)
    centre = fitted_centre if centre is None else np.asarray(centre, np.float64)
    scale = fitted_scale if pixels_per_unit is None else float(pixels_per_unit)
    rotation = rotation_matrix(yaw_deg, pitch_deg)
    view = (p - centre) @ rotation.T
    screen = np.column_stack([size / 2 + scale * view[:, 0], size / 2 - scale * view[:, 1]])
    return screen, view[:, 2], rotation


def visible_fragments(screen: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size: int,
                      cull_back_faces: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest fragment of every covered pixel: flat pixel index ``[K]`` (row * size + col),
    triangle index ``[K]`` and barycentric weights ``[K,3]``.

    Parameters
    ----------
    screen
        ``[V,2]`` pixel positions (x right, y down); pixel ``(row, col)`` is sampled at its centre
        ``(col + 0.5, row + 0.5)``.
    depth
        ``[V]`` view-space z, larger is nearer to the camera.
    triangles
        ``[F,3]`` vertex indices, counter-clockwise when seen from the side that faces outward.
    size
        Output side in pixels.
    cull_back_faces
        Drop triangles that appear clockwise on screen (they face away from the camera).
    """
    tri = np.asarray(triangles, np.int64)
    screen = np.asarray(screen, np.float64)
    depth = np.asarray(depth, np.float64)
    a, b, c = (screen[tri[:, k]] for k in range(3))
    # Twice the signed area in (x right, y up) coordinates: screen y points down, hence the minus.
    area = -((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    keep = area > 1e-9 if cull_back_faces else np.abs(area) > 1e-9
    corners = screen[tri]  # [F,3,2]
    lo = np.floor(corners.min(1) - 0.5).astype(np.int64) + 1  # first pixel whose centre is >= min
    hi = np.floor(corners.max(1) - 0.5).astype(np.int64)  # last pixel whose centre is <= max
    lo, hi = np.maximum(lo, 0), np.minimum(hi, size - 1)
    width, height = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    keep &= (width > 0) & (height > 0)
    ids = np.nonzero(keep)[0]
    counts = (width * height)[ids]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    # Expand every kept triangle's bounding box into its candidate pixels.
    owner = np.repeat(ids, counts)
    local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    row_width = width[owner]
    px = lo[owner, 0] + local % row_width
    py = lo[owner, 1] + local // row_width
    # Barycentric weights of the pixel centres, from edge vectors precomputed per triangle.
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    inv = 1.0 / np.where(det == 0, 1.0, det)
    e1x, e1y = ((b - a) * inv[:, None]).T
    e2x, e2y = ((c - a) * inv[:, None]).T
    qx = px + 0.5 - a[owner, 0]
    qy = py + 0.5 - a[owner, 1]
    w1 = qx * e2y[owner] - qy * e2x[owner]
    w2 = qy * e1x[owner] - qx * e1y[owner]
    w0 = 1.0 - w1 - w2
    eps = -1e-7  # shared edges: let both neighbours claim the pixel rather than neither
    hit = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    owner, w0, w1, w2 = owner[hit], w0[hit], w1[hit], w2[hit]
    pixel = py[hit] * size + px[hit]
    z = w0 * depth[tri[owner, 0]] + w1 * depth[tri[owner, 1]] + w2 * depth[tri[owner, 2]]
    # One sort key: the pixel, plus a fraction in [0, 0.5) that is smaller for nearer fragments,
    # so the first fragment of each pixel in sorted order is the visible one.
    span = float(np.ptp(z)) or 1.0
    order = np.argsort(pixel + 0.5 * (z.max() - z) / (span * (1 + 1e-6)), kind="stable")
    pixel_sorted = pixel[order]
    first = np.ones(len(order), bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    visible = order[first]
    return pixel[visible], owner[visible], np.column_stack([w0[visible], w1[visible], w2[visible]])


def rasterise(screen: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size: int,
              cull_back_faces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``visible_fragments`` as images: the triangle covering each pixel ``[size,size]`` int32
    (-1 where none) and its barycentric weights ``[size,size,3]`` float32."""
    pixel, owner, bary = visible_fragments(screen, depth, triangles, size, cull_back_faces)
    triangle_ids = np.full(size * size, -1, np.int32)
    barycentric = np.zeros((size * size, 3), np.float32)
    triangle_ids[pixel] = owner
    barycentric[pixel] = bary
    return triangle_ids.reshape(size, size), barycentric.reshape(size, size, 3)


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples ``[K,3]`` float32 of ``image`` at texel coordinates (centres at integers),
    clamped at the border."""
    count = len(x)
    # remap takes a map of any shape (each side < 32767): lay the K points out in rows of 1024.
    rows = max(1, -(-count // 1024))
    map_x = np.zeros(rows * 1024, np.float32)
    map_y = np.zeros(rows * 1024, np.float32)
    map_x[:count], map_y[:count] = x, y
    sampled = cv2.remap(image, map_x.reshape(rows, 1024), map_y.reshape(rows, 1024),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(rows * 1024, -1)[:count].astype(np.float32)


def _vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    from pipeline.glb import vertex_normals  # one implementation of smooth normals

    return vertex_normals(positions, triangles).astype(np.float64)


def render_textured(
    positions: np.ndarray,
    triangles: np.ndarray,
    uvs: np.ndarray,
    texture: np.ndarray,
    *,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    size: int = 512,
    background: tuple[int, int, int] | np.ndarray = (235, 235, 235),
    light: bool = True,
    centre: np.ndarray | None = None,
    pixels_per_unit: float | None = None,
    supersample: int = 1,
    normals: np.ndarray | None = None,
) -> np.ndarray:
    """An orthographic render of a textured mesh, RGB uint8 ``[size,size,3]``.

    Parameters
    ----------
    positions
        ``[V,3]`` vertices (metres, +Y up, +Z toward the viewer).
    triangles
        ``[F,3]`` counter-clockwise from the outside; back faces are culled.
    uvs
        ``[V,2]`` texture coordinates, origin at the texture's top-left (glTF).
    texture
        ``[H,W,3]`` RGB uint8, sampled bilinearly.
    yaw_deg, pitch_deg
        Head turn (+ = to its own left) and nod (+ = down); see the module docstring.
    size
        Output side in pixels.
    background
        An RGB colour, or an RGB uint8 ``[size,size,3]`` image to draw over.
    light
        Lambert shading from a light near the camera (``LIGHT_DIRECTION``); off gives the raw texture.
    centre, pixels_per_unit
        The framing; by default the mesh's bounding-box centre and a scale at which its larger
        side spans ``FILL`` of the frame (the same for every yaw of one mesh).
    supersample
        Render this many times larger and shrink (antialiased edges).
    normals
        ``[V,3]`` vertex normals for the shading; by default smooth ones from the triangles (a
        mesh split at UV seams then shows them: pass normals that agree across the seams).
    """
    texture = np.ascontiguousarray(texture, dtype=np.uint8)
    big = size * supersample
    scale = None if pixels_per_unit is None else pixels_per_unit * supersample
    screen, depth, rotation = project(positions, yaw_deg=yaw_deg, pitch_deg=pitch_deg, size=big,
                                      centre=centre, pixels_per_unit=scale)
    pixel, owner, bary = visible_fragments(screen, depth, triangles, big)
    tri = np.asarray(triangles, np.int64)[owner]  # [K,3]
    w0, w1, w2 = (bary[:, k:k + 1] for k in range(3))
    uv = np.asarray(uvs, np.float64)
    uv = uv[tri[:, 0]] * w0 + uv[tri[:, 1]] * w1 + uv[tri[:, 2]] * w2
    h, wdt = texture.shape[:2]
    colour = sample_bilinear(texture, uv[:, 0] * wdt - 0.5, uv[:, 1] * h - 0.5)
    if light:
        normals = (_vertex_normals(positions, triangles) if normals is None
                   else np.asarray(normals, np.float64)) @ rotation.T
        n = normals[tri[:, 0]] * w0 + normals[tri[:, 1]] * w1 + normals[tri[:, 2]] * w2
        lambert = (n @ LIGHT_DIRECTION) / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
        colour *= (AMBIENT + DIFFUSE * np.clip(lambert, 0.0, 1.0)).astype(np.float32)[:, None]
    if isinstance(background, np.ndarray) and background.ndim == 3:
        canvas = background if background.shape[0] == big else \
            cv2.resize(background, (big, big), interpolation=cv2.INTER_LINEAR)
        canvas = canvas.reshape(-1, 3).astype(np.float32)
    else:
        canvas = np.empty((big * big, 3), np.float32)
        canvas[:] = np.asarray(background, np.float32)
    canvas[pixel] = colour
    canvas = canvas.reshape(big, big, 3)
    out = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    if supersample > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                  gap: int = 4, gap_colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Images side by side in one row (shorter ones padded at the bottom), optionally labelled."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    height = max(img.shape[0] for img in images)
    tiles = []
    for k, img in enumerate(images):
        tile = np.empty((height, img.shape[1], 3), np.uint8)
        tile[:] = gap_colour
        tile[:img.shape[0]] = img if img.ndim == 3 else img[:, :, None]
        if labels is not None and k < len(labels) and labels[k]:
            cv2.putText(tile, labels[k], (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1,
                        cv2.LINE_AA)
        tiles.append(tile)
        if k < len(images) - 1:
            spacer = np.empty((height, gap, 3), np.uint8)
            spacer[:] = gap_colour
            tiles.append(spacer)
    return np.concatenate(tiles, axis=1)


def avatar_views(vertices: np.ndarray, texture: np.ndarray, *, uvs: np.ndarray | None = None,
                 triangles: np.ndarray | None = None, size: int = 384,
                 yaws: Sequence[float] = PREVIEW_YAWS, normals: np.ndarray | None = None,
                 labels: Sequence[str] | None = None) -> np.ndarray:
    """A contact sheet of the avatar seen from each of ``yaws`` (default: front, ±45°, profile)."""
    if uvs is None or triangles is None:
        from models import load_topology

        topo = load_topology()
        uvs = topo.uvs if uvs is None else uvs
        triangles = topo.triangles if triangles is None else triangles
    renders = [render_textured(vertices, triangles, uvs, texture, yaw_deg=y, size=size, supersample=2,
                               normals=normals) for y in yaws]
    if labels is None:
        labels = ["front" if y == 0 else "back" if abs(y) == 180 else f"yaw {y:+.0f}" for y in yaws]
    return contact_sheet(renders, labels)


def head_preview_sheets(avatar, size: int = 384) -> dict[str, np.ndarray]:
    """Preview sheets of a whole-head ``AvatarResult``: ``views`` (as the GLB opens, with its
    default expression weights: front, ±45°, profile, back), ``rest`` (the neutral rest shape, all
    weights 0) and ``expressions`` (``jawOpen``, ``eyeBlinkLeft``, ``mouthSmileLeft`` at 1 alone,
    front and turned 30° toward the moving side)."""
    from pipeline.head import head_normals

    def sheet(weights, yaws, labels=None):
        positions = avatar.posed(weights)
        return avatar_views(positions, avatar.texture, uvs=avatar.uvs, triangles=avatar.triangles, size=size,
                            yaws=yaws, normals=head_normals(positions), labels=labels)

    zero = {name: 0.0 for name in avatar.morph_weights}
    expressions = []
    for name, yaw in (("jawOpen", 30.0), ("eyeBlinkLeft", -30.0), ("mouthSmileLeft", -30.0)):
        expressions.append(sheet({**zero, name: 1.0}, (0.0, yaw), [f"{name} 1", f"{name} 1, yaw {yaw:+.0f}"]))
    gap = np.full((8, expressions[0].shape[1], 3), 255, np.uint8)
    return {"views": sheet(None, HEAD_PREVIEW_YAWS),
            "rest": sheet(zero, (0.0, 45.0), ["rest (weights 0)", "rest, yaw +45"]),
            "expressions": np.concatenate([expressions[0], gap, expressions[1], gap, expressions[2]], axis=0)}


def write_preview_png(avatar, path: str | Path, *, texture: np.ndarray | None = None,
                      uvs: np.ndarray | None = None, triangles: np.ndarray | None = None,
                      size: int = 384) -> Path:
    """Write ``avatar_views`` as a PNG and return its path.

    ``avatar`` is an ``AvatarResult`` (anything with ``.vertices`` and ``.texture``) or a
    ``[468,3]`` vertex array, in which case ``texture`` is required.
    """
    if hasattr(avatar, "vertices"):
        vertices = avatar.vertices
        texture = avatar.texture if texture is None else texture
    else:
        vertices = avatar
    if texture is None:
        raise ValueError("write_preview_png needs a texture with a bare vertex array")
    if hasattr(avatar, "uvs"):
        uvs = avatar.uvs if uvs is None else uvs
        triangles = avatar.triangles if triangles is None else triangles
    sheet = avatar_views(vertices, texture, uvs=uvs, triangles=triangles, size=size)
    return write_png(sheet, path)


def write_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 image as PNG (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
