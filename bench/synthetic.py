"""A synthetic ground-truth check of multi-view reconstruction.

A known textured head is rendered from the front and from both sides with the software renderer
(``pipeline.preview``), the renders go through ``run_pipeline`` like photos, and the mesh that
comes back is compared with the known one after a similarity alignment (rotation, translation and
scale: a photo carries no absolute scale). The same is done with the front view alone, so the
report shows what the side views add.

The known head (``make_synthetic_subject``):

- **Shape**: the canonical MediaPipe face, deformed by ``DEFORMATIONS`` — smooth Gaussian bumps of
  a few millimetres to a centimetre, mostly in depth (a more projecting nose, deeper-set eyes,
  fuller cheeks, a stronger chin), plus a slightly narrower, longer face. Depth is what one
  frontal photo gets wrong and what side views can fix.
- **Texture**: a real face, the UV texture the pipeline bakes from the astronaut photo, so the
  detector and the landmark model see skin, eyes and lips where a face has them.
- **Context**: an ellipsoid skull with hair and a neck behind the face mask, on a plain mid-grey
  background, so a turned face still has a head around it.

``python -m bench.synthetic [OUT_DIR]`` prints the report as JSON and writes the preview PNGs.
"""
from __future__ import annotations

import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from bench.photos import encode_jpeg
from models import load_topology
from pipeline.preview import contact_sheet, project, rasterise, render_textured, write_png

# The subject's departures from the canonical face: (anchor landmarks, Gaussian sigma in cm,
# displacement in cm (dx, dy, dz) at the anchors' centre, fading with distance). Left and right
# entries mirror each other so the face stays symmetric.
DEFORMATIONS: tuple[tuple[tuple[int, ...], float, tuple[float, float, float]], ...] = (
    ((1,), 1.4, (0.0, -0.15, 0.9)),  # nose tip projects 9 mm further, 1.5 mm lower
    ((6,), 1.0, (0.0, 0.0, 0.35)),  # a higher nose bridge
    ((33, 133), 1.1, (0.0, 0.0, -0.5)),  # right eye set 5 mm deeper
    ((362, 263), 1.1, (0.0, 0.0, -0.5)),  # left eye set 5 mm deeper
    ((50,), 1.8, (-0.25, 0.0, 0.6)),  # fuller right cheek: 6 mm forward, 2.5 mm out
    ((280,), 1.8, (0.25, 0.0, 0.6)),  # fuller left cheek
    ((152,), 1.6, (0.0, -0.2, 0.45)),  # chin 4.5 mm forward, 2 mm lower
)
# Global proportions on top: 4% narrower, 3% longer.
SCALE_XY = (0.96, 1.03)

# Side views: how far the head is turned. The detector finds the face and the landmark model
# scores it ~1.0 up to ±60°, but its landmarks drift (``yaw_sweep``, median 2-D error over the
# eye-corner span: front 2.7%, ±20° 3.6%, ±30° 4.3%, ±45° 8%, ±60° 13-15%): ±30° is the most it
# fits nearly as well as the front. The "left" photo shows the subject's left side, so the head
# turns to its right (negative yaw in pipeline.preview's convention).
SIDE_YAW_DEG = 30.0
RENDER_SIZE = 768
# Face height (forehead to chin) as a share of the render's height.
FACE_SHARE = 0.42
BACKGROUND_GREY = 128
HAIR_RGB = (92, 62, 42)

NOSE_IDS = (1, 4, 5, 6, 195, 197, 168)
REGIONS = {  # region: (anchor landmarks, radius in cm on the canonical face)
    "nose": (NOSE_IDS, 1.3),
    "eyes": ((33, 133, 362, 263), 1.3),
    "cheeks": ((50, 280), 2.0),
    "mouth": ((13, 14, 61, 291), 1.2),
    "chin": ((152, 199), 1.5),
    "forehead": ((10, 151, 9), 2.0),
}

# Subjects that depart further from the canonical face, for the multi-view fusion table
# (``fusion_table``): each is the subject above plus (more deformations, its x/y proportions).
SUBJECTS: dict[str, tuple[tuple, tuple[float, float]]] = {
    "base": ((), SCALE_XY),
    "wide": ((), (SCALE_XY[0] * 1.12, SCALE_XY[1] * 0.95)),  # a broad, short face
    "narrow": ((), (SCALE_XY[0] * 0.88, SCALE_XY[1] * 1.06)),  # a thin, long face
    "deep-set eyes": ((((33, 133), 1.1, (0.0, 0.0, -0.5)),  # 5 mm deeper again: 1 cm in all
                       ((362, 263), 1.1, (0.0, 0.0, -0.5))), SCALE_XY),
    "strong chin": ((((152,), 1.8, (0.0, -0.3, 0.7)),), SCALE_XY),  # 1.15 cm forward in all
}
FUSION_YAWS_DEG = (30.0, 45.0)

# Face shapes for validating the fusion on faces it was not shaped on: every subject of SUBJECTS
# shares DEFORMATIONS (a nose 9 mm more projecting than the canonical face's, among others), these
# do not. Each is the canonical face with 4-7 random symmetric bumps (0.8-2 cm wide, up to ±8 mm
# in depth and ±2 mm across) and random proportions (width ×0.86-1.10, height ×0.95-1.10). The
# fusion's measured constants (pipeline.mesh.SIDE_DEPTH_EXAGGERATION, SIDE_DEPTH_SPREAD_CM) come
# from these (``python -m bench.synthetic --holdout``).
HOLDOUT_SEEDS = tuple(range(12))
HOLDOUT_YAWS_DEG = (30.0, 37.5, 45.0)


def deform_canonical_face(vertices_cm: np.ndarray, extra: Sequence = (),
                          scale_xy: tuple[float, float] = SCALE_XY) -> np.ndarray:
    """The synthetic subject's face shape (cm) from the canonical one: ``DEFORMATIONS`` and
    ``extra`` ones (same form, anchored on the canonical face), then ``scale_xy`` about the
    face's centre."""
    v = np.asarray(vertices_cm, np.float64)
    out = v.copy()
    for anchors, sigma, (dx, dy, dz) in (*DEFORMATIONS, *extra):
        centre = v[list(anchors)].mean(0)
        falloff = np.exp(-((v - centre) ** 2).sum(1) / (2 * sigma ** 2))
        out += falloff[:, None] * np.array([dx, dy, dz])
    centre = out[:, :2].mean(0)
    out[:, :2] = (out[:, :2] - centre) * scale_xy + centre
    return out


def subject_face_cm(name: str) -> np.ndarray:
    """The face shape (canonical frame, cm) of one of ``SUBJECTS``."""
    extra, scale_xy = SUBJECTS[name]
    return deform_canonical_face(load_topology().vertices, extra, scale_xy)


def random_face_cm(seed: int) -> np.ndarray:
    """A random face shape (canonical frame, cm) for ``HOLDOUT_SEEDS``: the canonical face with
    random symmetric Gaussian bumps (a bump off the midline gets its mirror image) and random
    proportions, none of ``DEFORMATIONS``."""
    rng = np.random.default_rng(seed)
    v = load_topology().vertices.astype(np.float64)
    out = v.copy()
    for _ in range(rng.integers(4, 8)):
        centre = v[rng.integers(len(v))].copy()
        sigma = rng.uniform(0.8, 2.0)
        shift = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(-0.8, 0.8)])
        if abs(centre[0]) <= 0.5:  # on the midline: one bump, centred, moving along it
            centre[0], shift[0] = 0.0, 0.0
            bumps = [(centre, shift)]
        else:
            mirror = np.array([-1.0, 1.0, 1.0])
            bumps = [(centre, shift), (centre * mirror, shift * mirror)]
        for c, d in bumps:
            out += np.exp(-((v - c) ** 2).sum(1) / (2 * sigma ** 2))[:, None] * d
    scale_xy = (rng.uniform(0.86, 1.1), rng.uniform(0.95, 1.1))
    centre = out[:, :2].mean(0)
    out[:, :2] = (out[:, :2] - centre) * scale_xy + centre
    return out


def _ellipsoid(centre: Sequence[float], radii: Sequence[float], rings: int = 72, segments: int = 128
               ) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere scaled to ``radii``; triangles counter-clockwise from outside."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]  # polar angle from +Y
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    unit = np.vstack([[0, 1, 0], unit, [0, -1, 0]])
    ring = lambda r, s: 1 + r * segments + s % segments  # noqa: E731
    faces = []
    for s in range(segments):
        faces.append((0, ring(0, s), ring(0, s + 1)))
        faces.append((len(unit) - 1, ring(rings - 2, s + 1), ring(rings - 2, s)))
        for r in range(rings - 2):
            faces.append((ring(r, s), ring(r + 1, s), ring(r + 1, s + 1)))
            faces.append((ring(r, s), ring(r + 1, s + 1), ring(r, s + 1)))
    positions = unit * np.asarray(radii) + np.asarray(centre)
    return positions, _orient_outward(positions, np.array(faces), np.asarray(centre, np.float64))


def _neck(centre_xz: Sequence[float], radius: float, y_top: float, y_bottom: float,
          segments: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """An open vertical cylinder; triangles counter-clockwise from outside."""
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.column_stack([centre_xz[0] + radius * np.sin(phi), np.zeros(segments),
                            centre_xz[1] + radius * np.cos(phi)])
    top, bottom = ring + [0, y_top, 0], ring + [0, y_bottom, 0]
    positions = np.vstack([top, bottom])
    faces = []
    for s in range(segments):
        n = (s + 1) % segments
        faces += [(s, segments + s, segments + n), (s, segments + n, n)]
    axis_points = np.column_stack([np.full(len(faces), centre_xz[0]), np.zeros(len(faces)),
                                   np.full(len(faces), centre_xz[1])])
    faces = np.array(faces)
    axis_points[:, 1] = positions[faces].mean(1)[:, 1]
    return positions, _orient_outward(positions, faces, axis_points)


def _orient_outward(positions: np.ndarray, faces: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Flip the triangles whose normal points toward ``inside`` (a point or one point per face)."""
    p = positions[faces]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    flip = (normal * (p.mean(1) - inside)).sum(1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces.astype(np.int32)


def _tuck_behind_face(shell: np.ndarray, face: np.ndarray, triangles: np.ndarray,
                      margin: float) -> np.ndarray:
    """Push every shell vertex that lies in front of the face surface (seen from the front) to
    ``margin`` behind it, so the skull never pokes through the face mask."""
    size, pixels_per_unit = 512, 512 / 0.4  # a 40 cm window around the origin
    screen, depth, _ = project(face, size=size, centre=np.zeros(3), pixels_per_unit=pixels_per_unit)
    ids, bary = rasterise(screen, depth, triangles, size)
    face_z = (depth[triangles[np.maximum(ids, 0)]] * bary).sum(-1)
    # The nearest-to-the-back face depth in a neighbourhood, so a flat skull triangle between two
    # tucked vertices stays behind a dip of the face (eye sockets) and just outside its outline.
    face_z = np.where(ids >= 0, face_z, np.inf).astype(np.float32)
    face_z = cv2.erode(face_z, np.ones((15, 15), np.uint8))
    shell_screen, _, _ = project(shell, size=size, centre=np.zeros(3), pixels_per_unit=pixels_per_unit)
    col = np.clip(np.floor(shell_screen[:, 0]).astype(int), 0, size - 1)
    row = np.clip(np.floor(shell_screen[:, 1]).astype(int), 0, size - 1)
    limit = face_z[row, col].astype(np.float64) - margin
    out = shell.copy()
    out[:, 2] = np.where(np.isfinite(limit), np.minimum(out[:, 2], limit), out[:, 2])
    return out


def _fade_sides_to_skin(texture: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """The face texture with its cheek edges faded to ``skin``.

    A texture baked from a photo carries some of the photo's background along the face outline,
    and a side view stretches that sliver across the cheek. The forehead (hair) edge is kept.
    """
    from pipeline.texture import texel_map

    h, w = texture.shape[:2]
    inside = cv2.resize(texel_map().inside.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5) / w  # in UV units
    keep = np.clip((dist - 0.04) / 0.12, 0.0, 1.0)
    rows = np.linspace(0.0, 1.0, h)[:, None]
    keep = np.maximum(keep, np.clip((0.3 - rows) / 0.1, 0.0, 1.0))  # leave the top (hair) alone
    out = keep[:, :, None] * texture + (1.0 - keep[:, :, None]) * skin
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SyntheticSubject:
    """A known head: the face (the truth the pipeline should recover) and the scene around it."""

    face_vertices: np.ndarray  # [468,3] metres, +Y up, face toward +Z: the ground truth
    face_texture: np.ndarray  # the face's UV texture (topology layout), RGB uint8
    context_positions: np.ndarray  # [V,3] metres: skull and neck behind the face
    context_triangles: np.ndarray  # [F,3]
    context_uvs: np.ndarray  # [V,2] into ``context_texture``
    context_texture: np.ndarray  # hair swatch (top half) and skin swatch (bottom half)
    face_share: float = FACE_SHARE  # of the render's height, forehead to chin

    def frame(self, size: int) -> tuple[np.ndarray, float]:
        """The render's centre and pixels per metre: the face spans ``face_share`` of its height."""
        v = self.face_vertices
        return np.array([0.0, v[:, 1].mean() - 0.01, 0.0]), self.face_share * size / float(np.ptp(v[:, 1]))

    def render(self, yaw_deg: float = 0.0, size: int = RENDER_SIZE, supersample: int = 2) -> np.ndarray:
        """A photo-like RGB render of the head turned by ``yaw_deg`` (see ``pipeline.preview``).

        The skull and neck are drawn first and the face over them (painter's order): the face mask
        is in front of the skull wherever both cover a pixel, so no flat skull triangle can show
        through a dip of the face.
        """
        big = size * supersample
        centre, pixels_per_unit = self.frame(big)
        scene = render_textured(self.context_positions, self.context_triangles, self.context_uvs,
                                self.context_texture, yaw_deg=yaw_deg, size=big,
                                background=(BACKGROUND_GREY,) * 3, centre=centre,
                                pixels_per_unit=pixels_per_unit)
        topo = load_topology()
        image = render_textured(self.face_vertices, topo.triangles, topo.uvs, self.face_texture,
                                yaw_deg=yaw_deg, size=big, background=scene, centre=centre,
                                pixels_per_unit=pixels_per_unit)
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) if supersample > 1 else image

    def project_face(self, yaw_deg: float, size: int) -> np.ndarray:
        """Where each true landmark lands in ``render(yaw_deg, size)``, ``[468,2]`` pixels."""
        centre, pixels_per_unit = self.frame(size)
        screen, _, _ = project(self.face_vertices, yaw_deg=yaw_deg, size=size, centre=centre,
                               pixels_per_unit=pixels_per_unit)
        return screen


def make_synthetic_subject(face_texture: np.ndarray, face_cm: np.ndarray | None = None,
                           face_share: float = FACE_SHARE) -> SyntheticSubject:
    """The known head, with ``face_texture`` (a UV texture in the topology's layout) on its face;
    the face's shape is ``face_cm`` (canonical frame, cm), ``deform_canonical_face`` by default."""
    topo = load_topology()
    face = (deform_canonical_face(topo.vertices) if face_cm is None else np.asarray(face_cm, np.float64)) / 100.0
    skull, skull_faces = _ellipsoid((0.0, 0.015, -0.04), (0.079, 0.115, 0.10))
    skull = _tuck_behind_face(skull, face, topo.triangles, margin=0.004)
    neck, neck_faces = _neck((0.0, -0.035), 0.055, y_top=-0.02, y_bottom=-0.30)
    # Hair above a hairline that runs from the forehead (front) down to ear level (back).
    hairline = 0.07 - 0.07 * np.clip((-skull[:, 2] - 0.01) / 0.06, 0.0, 1.0)

    tex = np.ascontiguousarray(face_texture, np.uint8)
    h, w = tex.shape[:2]
    cheek_px = (topo.uvs[[50, 280]].astype(np.float64) * [w, h]).astype(int)
    skin = np.median(np.concatenate([tex[y - 4:y + 4, x - 4:x + 4].reshape(-1, 3) for x, y in cheek_px]), 0)
    tex = _fade_sides_to_skin(tex, skin)
    swatches = np.empty((64, 8, 3), np.uint8)
    swatches[:32] = HAIR_RGB
    swatches[32:] = skin.astype(np.uint8)
    # v runs from the hair swatch (0.25) to the skin swatch (0.75) over 1 cm across the hairline,
    # so the interpolated UVs draw a smooth hairline rather than the tessellation's staircase.
    hair_v = 0.5 + 0.25 * np.clip((hairline - skull[:, 1]) / 0.005, -1.0, 1.0)
    uvs = np.vstack([np.column_stack([np.full(len(skull), 0.5), hair_v]),
                     np.tile((0.5, 0.75), (len(neck), 1))])
    return SyntheticSubject(
        face_vertices=face.astype(np.float32),
        face_texture=tex,
        context_positions=np.vstack([skull, neck]),
        context_triangles=np.vstack([skull_faces, neck_faces + len(skull)]).astype(np.int32),
        context_uvs=uvs,
        context_texture=swatches,
        face_share=face_share,
    )


def real_face_texture(models) -> np.ndarray:
    """The UV texture the pipeline bakes from the astronaut photo alone (a real face, frontal)."""
    from bench.photos import astronaut_rgb

    front = encode_jpeg(astronaut_rgb(), 1024)
    return run_front_only({"front": front, "left": front, "right": front}, models).texture


# -- comparing shapes -----------------------------------------------------------------------------

def similarity_align(source: np.ndarray, target: np.ndarray, moved: np.ndarray | None = None) -> np.ndarray:
    """``source`` (or ``moved``, a shape in the same frame) moved by the least-squares similarity
    (Umeyama, with scale) that takes ``source`` onto ``target``."""
    s, t = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = s.mean(0), t.mean(0)
    cs, ct = s - mu_s, t - mu_t
    u, d, vt = np.linalg.svd(ct.T @ cs / len(s))
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = (u * sign) @ vt
    scale = (d * sign).sum() / (cs ** 2).sum(1).mean()
    m = s if moved is None else np.asarray(moved, np.float64)
    return scale * (m - mu_s) @ rotation.T + mu_t


def region_ids() -> dict[str, np.ndarray]:
    """Vertex ids of each of ``REGIONS`` (within a radius of its anchors on the canonical face)."""
    v = load_topology().vertices.astype(np.float64)
    out = {}
    for name, (anchors, radius) in REGIONS.items():
        dist = np.linalg.norm(v[:, None] - v[list(anchors)][None], axis=-1).min(1)
        out[name] = np.nonzero(dist < radius)[0]
    return out


def shape_error_mm(reconstructed: np.ndarray, truth: np.ndarray) -> dict:
    """Per-vertex distances (mm) after aligning ``reconstructed`` onto ``truth`` (both metres)."""
    aligned = similarity_align(reconstructed, truth)
    residual = (aligned - np.asarray(truth, np.float64)) * 1000.0
    dist = np.linalg.norm(residual, axis=1)
    report = {
        "rms_mm": round(float(np.sqrt((dist ** 2).mean())), 3),
        "median_mm": round(float(np.median(dist)), 3),
        "max_mm": round(float(dist.max()), 3),
        "depth_rms_mm": round(float(np.sqrt((residual[:, 2] ** 2).mean())), 3),
    }
    report["regions_rms_mm"] = {name: round(float(np.sqrt((dist[ids] ** 2).mean())), 3)
                                for name, ids in region_ids().items()}
    return report


# -- running the pipeline on the renders ----------------------------------------------------------

def render_views(subject: SyntheticSubject, side_yaw_deg: float = SIDE_YAW_DEG,
                 size: int = RENDER_SIZE) -> dict[str, np.ndarray]:
    """Front, left (subject's left side: head turned to its right) and right renders."""
    return {"front": subject.render(0.0, size), "left": subject.render(-side_yaw_deg, size),
            "right": subject.render(side_yaw_deg, size)}


def _supports_fusion_views() -> bool:
    from pipeline.stages import run_pipeline

    return "fusion_views" in inspect.signature(run_pipeline).parameters


def run_front_only(jpegs: dict[str, bytes], models):
    """The face-mask avatar from the front view alone (the pipeline's ``fusion_views`` where it has
    it; else the front photo given as all three views, which is the same information)."""
    from pipeline.stages import run_pipeline

    if _supports_fusion_views():
        return run_pipeline(jpegs, models, fusion_views=("front",), mesh="face")
    return run_pipeline({v: jpegs["front"] for v in ("front", "left", "right")}, models, mesh="face")


def landmark_fit_px(subject: SyntheticSubject, renders: dict[str, np.ndarray], yaws: dict[str, float],
                    models) -> dict[str, dict]:
    """Per view: the model's face score and how far its 2-D landmarks are from the truth's
    projection, over the landmarks that face the camera (normal within 60° of the line of sight;
    hidden ones have no position to check), in px and as a share of the true eye-corner span."""
    from pipeline.glb import vertex_normals
    from pipeline.preview import rotation_matrix
    from pipeline.stages import infer_landmarks, prepare_views

    jpegs = {v: encode_jpeg(img) for v, img in renders.items()}
    prepared = prepare_views(jpegs, models)
    found = infer_landmarks(prepared, models)
    normals = vertex_normals(subject.face_vertices, load_topology().triangles)
    # The landmark stage may drop a side view it cannot fit; it then lists the views it kept.
    fitted_views = list(getattr(found, "views", prepared.views))
    out = {}
    for view in prepared.views:
        if view not in fitted_views:
            out[view] = {"yaw_deg": yaws[view], "fitted": False}
            continue
        k = fitted_views.index(view)
        size = renders[view].shape[0]
        truth = subject.project_face(yaws[view], size)
        facing = (normals @ rotation_matrix(yaws[view]).T)[:, 2] > 0.5
        # Landmarks are in the face region's pixels of the photo as decoded (maybe smaller).
        index = prepared.views.index(view)
        in_photo = (found.points[k][:, :2] + prepared.region_corners[index]) / prepared.photo_scales[index]
        err = np.linalg.norm(in_photo - truth, axis=1)[facing]
        eye_span = float(np.linalg.norm(truth[33] - truth[263]))
        out[view] = {"yaw_deg": yaws[view], "fitted": True,
                     "face_score": round(float(found.face_scores[k]), 3),
                     "landmarks_checked": int(facing.sum()),
                     "median_px": round(float(np.median(err)), 2),
                     "median_over_eye_span": round(float(np.median(err) / eye_span), 3)}
    return out


def yaw_sweep(subject: SyntheticSubject, models, yaws: Sequence[float] = (20, 30, 45, 60),
              size: int = RENDER_SIZE) -> dict[str, dict]:
    """How well the detector + landmark model fit the subject turned by ±each yaw."""
    from pipeline import PipelineError

    front = subject.render(0.0, size)
    out = {}
    for yaw in yaws:
        renders = {"front": front, "left": subject.render(-yaw, size), "right": subject.render(yaw, size)}
        try:
            fit = landmark_fit_px(subject, renders, {"front": 0.0, "left": -yaw, "right": yaw}, models)
            out[str(yaw)] = fit
        except PipelineError as err:
            out[str(yaw)] = {"error": f"{err.view}: {err.message}"}
    return out


def run_synthetic_check(models, out_dir: str | Path | None = None, side_yaw_deg: float = SIDE_YAW_DEG,
                        size: int = RENDER_SIZE, face_texture: np.ndarray | None = None) -> dict:
    """Render the known head, reconstruct it with three views and with the front only, compare.

    The comparison is on the face mask (``mesh="face"``), whose 468 vertices are the landmarks the
    known head's face is made of.

    Returns a JSON-able report: the errors (mm) of both reconstructions against the truth, the
    error of the plain canonical face for scale, and how well each view's landmarks fit. With
    ``out_dir``, also writes ``synthetic_views.png`` (the three renders) and
    ``synthetic_compare.png`` (truth, three-view and front-only avatars from four angles).
    """
    from pipeline.stages import run_pipeline

    subject = make_synthetic_subject(real_face_texture(models) if face_texture is None else face_texture)
    renders = render_views(subject, side_yaw_deg, size)
    jpegs = {v: encode_jpeg(img) for v, img in renders.items()}
    three = run_pipeline(jpegs, models, mesh="face")
    front_only = run_front_only(jpegs, models)
    truth = subject.face_vertices
    canonical = load_topology().vertices / 100.0
    report = {
        "side_yaw_deg": side_yaw_deg,
        "render_size": size,
        "front_only_emulated": not _supports_fusion_views(),
        "three_views": shape_error_mm(three.vertices, truth),
        "front_only": shape_error_mm(front_only.vertices, truth),
        # The average face, unchanged: what a reconstruction must beat to have measured anything.
        "canonical_face": shape_error_mm(canonical, truth),
        "pipeline_warnings": list(three.warnings),
        "landmark_fit": landmark_fit_px(subject, renders, {"front": 0.0, "left": -side_yaw_deg,
                                                           "right": side_yaw_deg}, models),
    }
    report["three_views_better"] = report["three_views"]["rms_mm"] < report["front_only"]["rms_mm"]
    if out_dir is not None:
        out = Path(out_dir)
        views = contact_sheet([cv2.resize(renders[v], (384, 384), interpolation=cv2.INTER_AREA)
                               for v in ("left", "front", "right")],
                              [f"left (yaw {-side_yaw_deg:+.0f})", "front", f"right (yaw {side_yaw_deg:+.0f})"])
        report["preview_files"] = [str(write_png(views, out / "synthetic_views.png"))]
        report["preview_files"].append(str(write_png(
            comparison_sheet(subject, [("truth", truth, subject.face_texture),
                                       ("three views", three.vertices, three.texture),
                                       ("front only", front_only.vertices, front_only.texture)]),
            out / "synthetic_compare.png")))
    return report


def fused_landmark_shapes(renders: dict[str, np.ndarray], models
                          ) -> tuple[dict[str, np.ndarray], list[str], dict[str, np.ndarray]]:
    """The renders through the pipeline's face finding, landmark fitting and side-view checks,
    then fused twice: from every view the checks kept (``"three_views"``) and from the front
    alone (``"front_only"``), canonical frame in metres; the pipeline's warnings; and the fitted
    landmarks (image px) of the views kept.

    This is the face shape ``build_avatar`` starts from, without the texture and GLB it goes on
    to make."""
    from pipeline.mesh import fuse_views
    from pipeline.stages import infer_landmarks, prepare_views
    from pipeline.view_checks import check_side_views

    prepared = prepare_views({v: encode_jpeg(img) for v, img in renders.items()}, models)
    found = infer_landmarks(prepared, models)
    checked = check_side_views(found.by_view())
    fitted = {label: found.by_view()[view] for label, view in checked.photos.items()}
    shapes = {"three_views": fuse_views(fitted).canonical_cm / 100.0,
              "front_only": fuse_views({"front": fitted["front"]}).canonical_cm / 100.0}
    return shapes, [*prepared.warnings, *found.warnings, *checked.warnings], fitted


def fusion_table(models, face_texture: np.ndarray, subjects: Sequence[str] = tuple(SUBJECTS),
                 yaws: Sequence[float] = FUSION_YAWS_DEG, size: int = RENDER_SIZE,
                 ceiling: bool = False, split: bool = False, faces: dict[str, np.ndarray] | None = None,
                 side_depth: bool = False) -> list[dict]:
    """Three views against the front alone, per subject of ``SUBJECTS`` (or of ``faces``: name ->
    face shape, canonical frame, cm) and side-view yaw: the shape errors (mm,
    ``shape_error_mm``) of both fused landmark shapes against the truth.

    With ``ceiling``, also the best each region could do with the side views' depth scaled by
    any factor from 0 (front-only) to 2, chosen knowing the truth (``best_side_share``); with
    ``split``, each region's ratio without the re-alignment (``own_depth_ratios``); with
    ``side_depth``, what the side views' depth measures against the front's
    (``side_depth_calibration``)."""
    faces = faces if faces is not None else {name: subject_face_cm(name) for name in subjects}
    rows = []
    for name, face_cm in faces.items():
        subject = make_synthetic_subject(face_texture, face_cm)
        truth = subject.face_vertices
        front = subject.render(0.0, size)
        for yaw in yaws:
            renders = {"front": front, "left": subject.render(-yaw, size), "right": subject.render(yaw, size)}
            shapes, warnings, fitted = fused_landmark_shapes(renders, models)
            row = {"subject": name, "side_yaw_deg": yaw, "warnings": warnings,
                   **{key: shape_error_mm(shape, truth) for key, shape in shapes.items()}}
            if ceiling:
                row["ceiling"] = best_side_share(shapes, truth)
            if split:
                row["own_depth"] = own_depth_ratios(shapes, truth)
            if side_depth:
                row["side_depth"] = side_depth_calibration(fitted, truth)
            rows.append(row)
    return rows


def own_depth_ratios(shapes: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Per region: three-view / front-only RMS error with both shapes moved by the one similarity
    that aligns the front-only shape onto the truth. The two differ only in depth, so this is
    what the fused depth itself does to the region, without the re-alignment that a change
    anywhere on the face causes in ``shape_error_mm`` (which can make a region that did not
    change look worse, or a worse one look better)."""
    front, three = (np.asarray(shapes[k], np.float64) for k in ("front_only", "three_views"))
    truth = np.asarray(truth, np.float64)
    errors = {k: np.linalg.norm(similarity_align(front, truth, shape) - truth, axis=1)
              for k, shape in (("front_only", front), ("three_views", three))}
    return {region: float(np.sqrt((errors["three_views"][ids] ** 2).mean() / (errors["front_only"][ids] ** 2).mean()))
            for region, ids in region_ids().items()}


def side_depth_calibration(fitted: dict[str, np.ndarray], truth: np.ndarray) -> list[dict]:
    """Per side view of ``fitted`` (landmarks, image px): its head yaw; how much deeper than the
    front view's its depth profile is (``depth_scale``: the slope of its uncorrected depth minus
    the front's against the front's depth about its mean); the same slope for the truth
    (``true_depth_scale``); and the RMS of its corrected depth minus the front's over the
    landmarks that face it (``spread_cm``). These measure ``pipeline.mesh``'s
    SIDE_DEPTH_EXAGGERATION (1 + the depth scale where the true one is 0) and SIDE_DEPTH_SPREAD_CM."""
    from pipeline.mesh import facing, fit_view, side_view_depth, surface_normals

    front = fit_view("front", fitted["front"]).canonical_cm
    truth_cm = similarity_align(np.asarray(truth, np.float64) * 100.0, front)  # in the front's frame
    profile = front[:, 2] - front[:, 2].mean()
    slope = lambda depth: float(np.polyfit(profile, depth - front[:, 2], 1)[0])  # noqa: E731
    out = []
    for view in (v for v in fitted if v != "front"):
        fit = fit_view(view, fitted[view])
        facing_it = facing([fit], surface_normals())[0] > 0.0
        corrected = side_view_depth(fitted[view], front)
        out.append({"view": view, "yaw_deg": round(fit.pose.yaw_pitch_roll_degrees()[0], 1),
                    "depth_scale": slope(side_view_depth(fitted[view], front, exaggeration=1.0)),
                    "true_depth_scale": slope(truth_cm[:, 2]),
                    "spread_cm": float(np.sqrt(((corrected - front[:, 2])[facing_it] ** 2).mean()))})
    return out


def region_ratios(row: dict) -> dict[str, float]:
    """One ``fusion_table`` row's three-view / front-only RMS error ratios: ``"all"`` and each of
    ``REGIONS`` (below 1: three views are better)."""
    three, front = row["three_views"], row["front_only"]
    ratios = {"all": three["rms_mm"] / front["rms_mm"]}
    ratios.update({r: three["regions_rms_mm"][r] / front["regions_rms_mm"][r] for r in REGIONS})
    return ratios


def holdout_summary_markdown(rows: list[dict]) -> str:
    """``fusion_table``'s rows (with ``side_depth``) for many faces, in short: per region, how many
    subject × yaw cells three views do not beat the front alone in, the worst and the mean ratio;
    then the side views' measured depth exaggeration and spread, per yaw."""
    keys = ["all", *REGIONS]
    ratios = {k: [] for k in keys}
    for row in rows:
        for key, ratio in region_ratios(row).items():
            ratios[key].append((ratio, row))
    lines = ["| region | not better | worst (three / front) | mean |", "|---|---|---|---|"]
    for key in keys:
        values = [r for r, _ in ratios[key]]
        worst, worst_row = max(ratios[key], key=lambda item: item[0])
        lines.append(f"| {key} | {sum(r >= 1.0 for r in values)} of {len(values)} | {worst:.3f} "
                     f"({worst_row['subject']}, {worst_row['side_yaw_deg']:g}°) | {np.mean(values):.3f} |")
    views = [(row["side_yaw_deg"], view) for row in rows for view in row.get("side_depth", [])]
    if views:
        lines += ["", "| side yaw | depth exaggeration (1 + intercept) | slope on the true depth scale | spread (cm RMS) |",
                  "|---|---|---|---|"]
        for yaw in [None, *sorted({y for y, _ in views})]:
            chosen = [v for y, v in views if yaw is None or y == yaw]
            slope, intercept = np.polyfit([v["true_depth_scale"] for v in chosen], [v["depth_scale"] for v in chosen], 1)
            spread = np.sqrt(np.mean([v["spread_cm"] ** 2 for v in chosen]))
            lines.append(f"| {'all' if yaw is None else f'{yaw:g}°'} | {1 + intercept:.3f} | {slope:.2f} | {spread:.3f} |")
    return "\n".join(lines)


def best_side_share(shapes: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, dict]:
    """Per region: the share of the side views' depth change (0 = front-only, 1 = as fused) that,
    applied to that region of the fused shape alone, gives it its smallest error, and that error
    (mm). An oracle, not a method: it shows where no weighting of these side views' depth could
    beat the front alone (share 0), and where more of it would help (share above 1)."""
    front, three = (np.asarray(shapes[k], np.float64) for k in ("front_only", "three_views"))
    out = {}
    for region, ids in region_ids().items():
        best = None
        for share in np.linspace(0.0, 2.0, 21):
            mixed = three.copy()
            mixed[ids, 2] = front[ids, 2] + share * (three[ids, 2] - front[ids, 2])
            error = shape_error_mm(mixed, truth)["regions_rms_mm"][region]
            if best is None or error < best[1] - 1e-9:
                best = (round(float(share), 2), error)
        out[region] = {"share": best[0], "rms_mm": best[1]}
    return out


def front_only_noise(models, face_texture: np.ndarray, sizes: Sequence[int] = (704, 736, 768, 800, 832),
                     subjects: Sequence[str] = tuple(SUBJECTS)) -> dict[str, dict[str, float]]:
    """How much a region's front-only error moves when nothing but the render size changes: per
    subject and region (and ``"all"``), the largest |error / error at RENDER_SIZE - 1| over
    ``sizes``. The landmark model's own noise: a three-view result within it is a tie."""
    out = {}
    for name in subjects:
        subject = make_synthetic_subject(face_texture, subject_face_cm(name))
        errors = []
        for size in sizes:
            front = subject.render(0.0, size)
            shapes, _, _ = fused_landmark_shapes({"front": front, "left": front, "right": front}, models)
            e = shape_error_mm(shapes["front_only"], subject.face_vertices)
            errors.append({"all": e["rms_mm"], **e["regions_rms_mm"]})
        reference = errors[list(sizes).index(RENDER_SIZE)]
        out[name] = {k: round(max(abs(e[k] / reference[k] - 1.0) for e in errors), 3) for k in reference}
    return out


def fusion_table_markdown(rows: list[dict]) -> str:
    """``fusion_table``'s rows as a Markdown table: front-only / three-view RMS (mm) per region
    (✗ where three views are not better); with ``split``, the region's own-depth ratio
    (``own_depth_ratios``); with a ceiling, the oracle's best share and error."""
    regions = ["rms_mm", *REGIONS]
    lines = ["| subject | yaw | " + " | ".join("all" if r == "rms_mm" else r for r in regions) + " |",
             "|---|---|" + "---|" * len(regions)]
    for row in rows:
        cells = []
        for region in regions:
            before, after = (row[k]["rms_mm"] if region == "rms_mm" else row[k]["regions_rms_mm"][region]
                             for k in ("front_only", "three_views"))
            cell = f"{before:.2f} / {after:.2f}{'' if after < before else ' ✗'}"
            if "own_depth" in row and region != "rms_mm":
                own = row["own_depth"][region]
                cell += f" [own {own:.3f}{'' if own < 1.0 else ' ✗'}]"
            if "ceiling" in row and region != "rms_mm":
                best = row["ceiling"][region]
                cell += f" (best {best['rms_mm']:.2f} at {best['share']:.1f})"
            cells.append(cell)
        lines.append(f"| {row['subject']} | {row['side_yaw_deg']:.0f}° | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_sheet(subject: SyntheticSubject, meshes: Sequence[tuple[str, np.ndarray, np.ndarray]],
                     yaws: Sequence[float] = (0.0, 45.0, 90.0), size: int = 256) -> np.ndarray:
    """Rows of renders (one row per mesh, aligned onto the truth) from each of ``yaws``."""
    topo = load_topology()
    truth = subject.face_vertices
    centre = np.asarray(truth, np.float64).mean(0)
    scale = 0.65 * size / float(np.ptp(truth[:, 1]))
    rows = []
    for name, vertices, texture in meshes:
        aligned = similarity_align(vertices, truth)
        tiles = [render_textured(aligned, topo.triangles, topo.uvs, texture, yaw_deg=y, size=size,
                                 centre=centre, pixels_per_unit=scale, supersample=2) for y in yaws]
        rows.append(contact_sheet(tiles, [f"{name} {y:+.0f}" if y else name for y in yaws]))
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.synthetic [OUT_DIR] [--sweep] [--subjects [--ceiling] [--split]] [--holdout] [--noise]``:
    the report as JSON on stdout (or the fusion tables as Markdown)."""
    import argparse

    from pipeline.models import FaceModels

    parser = argparse.ArgumentParser(prog="python -m bench.synthetic")
    parser.add_argument("out_dir", nargs="?", default="bench_output", help="where the PNGs go")
    parser.add_argument("--yaw", type=float, default=SIDE_YAW_DEG, help="side views' yaw, degrees")
    parser.add_argument("--sweep", action="store_true", help="also fit the side views at 20-60°")
    parser.add_argument("--subjects", action="store_true",
                        help="only the fusion table: every subject of SUBJECTS at 30° and 45°, "
                             "front-only / three-view error (mm) per region, as Markdown")
    parser.add_argument("--ceiling", action="store_true",
                        help="with --subjects: also each region's best error with the side views' "
                             "depth scaled by 0-2, chosen knowing the truth")
    parser.add_argument("--split", action="store_true",
                        help="with --subjects: also each region's three-view / front-only ratio "
                             "with both aligned as the front-only shape is (its own depth change)")
    parser.add_argument("--noise", action="store_true",
                        help="how much each region's front-only error moves with the render size "
                             "alone (704-832 px), per subject, as JSON")
    parser.add_argument("--holdout", action="store_true",
                        help="the fusion over the random faces of HOLDOUT_SEEDS at 30, 37.5 and 45°, "
                             "in short, with the side views' measured depth exaggeration and spread")
    args = parser.parse_args(argv)
    models = FaceModels.load()
    texture = real_face_texture(models)
    if args.subjects:
        print(fusion_table_markdown(fusion_table(models, texture, ceiling=args.ceiling, split=args.split)))
        return 0
    if args.noise:
        json.dump(front_only_noise(models, texture), sys.stdout, indent=2)
        print()
        return 0
    if args.holdout:
        faces = {f"random {seed}": random_face_cm(seed) for seed in HOLDOUT_SEEDS}
        print(holdout_summary_markdown(fusion_table(models, texture, yaws=HOLDOUT_YAWS_DEG, faces=faces,
                                                    side_depth=True)))
        return 0
    report = run_synthetic_check(models, args.out_dir, side_yaw_deg=args.yaw, face_texture=texture)
    if args.sweep:
        report["yaw_sweep"] = yaw_sweep(make_synthetic_subject(texture), models)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
