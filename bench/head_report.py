"""Measurements of a head avatar that the tests assert and the benchmark reports (``bake_head``
makes one from photos).

``fill_boundary_step`` measures how visible the edge of the photographed face is: the colour
step between the last ring of skin the photos colour and the first ring the fill paints.
``morph_target_report`` says, for each ARKit target on a fitted head, how far it moves the mesh
at weight 1 and where (which side, which part of the face), so a broken transfer (a smile on the
forehead, a left blink on the right eye, a jaw that does not open) shows as numbers.
"""
from __future__ import annotations

import numpy as np

from pipeline.head import FACE_OVAL, FittedHead, head_template

# MediaPipe landmarks the regions are named after.
EYE_CENTRES = {"Right": (33, 133, 159, 145), "Left": (263, 362, 386, 374)}
MOUTH = (13, 14, 61, 291)
NOSE = (4, 5, 45, 275)
CHIN = 152
CHEEKS = {"Right": 50, "Left": 280}


def _centre(landmarks: np.ndarray, ids) -> np.ndarray:
    return landmarks[list(ids)].mean(0)


def morph_target_report(fitted: FittedHead) -> dict[str, dict]:
    """Per target: ``maxMm`` (largest vertex displacement at weight 1), ``centre`` (the
    displacement-weighted centre of what moves, canonical frame, metres), ``side`` (+1 subject's
    left, -1 right, 0 both), ``region`` (the nearest of eyes/brows/nose/cheeks/mouth/jaw by that
    centre), ``parts`` (the vertex parts it moves by over 0.5 mm)."""
    head = head_template()
    rest = fitted.rest_positions.astype(np.float64)
    landmarks = head.landmarks_of(rest)
    midline = float(landmarks[[1, 4, 152]].mean(0)[0])
    eye_y = float(_centre(landmarks, EYE_CENTRES["Right"] + EYE_CENTRES["Left"])[1])
    regions = {
        "eyes": [_centre(landmarks, ids) for ids in EYE_CENTRES.values()],
        "brows": [_centre(landmarks, ids) + [0.0, 0.018, 0.0] for ids in EYE_CENTRES.values()],
        "nose": [_centre(landmarks, NOSE)],
        "cheeks": [landmarks[v] for v in CHEEKS.values()],
        "mouth": [_centre(landmarks, MOUTH)],
        "jaw": [landmarks[CHIN]],
    }
    out = {}
    for index, name in enumerate(fitted.morph_names):
        vertices, offsets = fitted.morph(index)
        size = np.linalg.norm(offsets, axis=1).astype(np.float64)
        centre = (rest[vertices] * size[:, None]).sum(0) / max(size.sum(), 1e-12)
        left = size[rest[vertices, 0] > midline].sum()
        right = size[rest[vertices, 0] < midline].sum()
        side = 1 if left > 2 * right else -1 if right > 2 * left else 0
        region = min(regions, key=lambda r: min(np.linalg.norm(centre - p) for p in regions[r]))
        parts = sorted({("skin", "eyeRight", "eyeLeft", "teethUpper", "teethLower", "tongue")[p]
                        for p in np.unique(head.part[vertices[size > 5e-4]])})
        out[name] = {"maxMm": round(float(size.max()) * 1000, 2), "centre": [round(float(c), 4) for c in centre],
                     "side": side, "region": region, "parts": parts,
                     "aboveEyes": bool(centre[1] > eye_y)}
    return out



# The rings either side of the edge of the photographed skin, by the share of each vertex's colour
# the photos give; each reaches this far (3-D distance) from the fade between them.
PHOTOGRAPHED, PAINTED, RING_WIDTH_M = 0.6, 0.15, 0.015
FACE_EDGE = 0.6  # the face's edge: beyond this share of the outline's radius from its centre,
AROUND_EYE_M = 0.022  # and this far from the eyeballs' centres (the lids)
BOUNDARY_SECTORS = 12


def boundary_rings(coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rings either side of the edge of the photographed skin (``fill_boundary_step``): bool
    [V] the last skin mostly photographed (photos' share >= ``PHOTOGRAPHED``, within
    ``RING_WIDTH_M`` of less), bool [V] the first skin mostly painted (<= ``PAINTED``, within
    ``RING_WIDTH_M`` of more), and each vertex's sector (int [V], by the angle around the face seen
    from the front)."""
    head = head_template()
    p = head.positions
    # Only the face's outer edge, seen from the front: not the lids, nostrils and lips, which the
    # photos see at grazing angles and leave to the fill too.
    outline = head.landmarks_of(p)[list(FACE_OVAL), :2]
    centre = (outline.min(0) + outline.max(0)) / 2
    outline_angle = np.arctan2(*(outline - centre).T[::-1])
    order = np.argsort(outline_angle)
    angle = np.arctan2(p[:, 1] - centre[1], p[:, 0] - centre[0])
    radius = np.interp(angle, outline_angle[order], np.linalg.norm(outline - centre, axis=1)[order], period=2 * np.pi)
    edge_of_face = np.linalg.norm(p[:, :2] - centre, axis=1) > FACE_EDGE * radius
    for eye in (1, 2):
        edge_of_face &= np.linalg.norm(p - p[head.part == eye].mean(0), axis=1) > AROUND_EYE_M
    skin = (head.part == 0) & (head.fixed == 0) & (head.hair < 0.05) & edge_of_face
    sector = (np.degrees(angle) % 360 // (360 / BOUNDARY_SECTORS)).astype(int)

    def within_ring(of: np.ndarray, beside: np.ndarray) -> np.ndarray:
        """The vertices ``of`` within ``RING_WIDTH_M`` of a vertex ``beside``."""
        out = np.zeros(len(p), bool)
        if of.any() and beside.any():
            out[of] = np.linalg.norm(p[of, None] - p[None, beside], axis=2).min(1) < RING_WIDTH_M
        return out

    inner = within_ring(skin & (coverage >= PHOTOGRAPHED), skin & (coverage < PHOTOGRAPHED))
    outer = within_ring(skin & (coverage <= PAINTED), skin & (coverage > PAINTED))
    return inner, outer, sector


def fill_boundary_step(texture: np.ndarray, coverage: np.ndarray) -> dict:
    """The colour step across the edge of the photographed skin on a head atlas (RGB distance).

    The skin just inside the edge and just outside it, each within ``RING_WIDTH_M`` of the fade
    between (``boundary_rings``: the face's outer edge, hair and painted parts left out), is cut
    into ``BOUNDARY_SECTORS`` sectors by the angle around the face; per sector the two rings'
    median colours are compared (a step that shows is a difference of the colour either side, not
    of pores, wrinkles or a glasses' arm). Returns ``meanStep`` (over sectors, weighted by their vertices), ``maxStep``
    and ``sectors`` (angle in degrees -> step; 0 is the subject's left, 90 the top).
    """
    import cv2

    head = head_template()
    size = texture.shape[0]
    blurred = cv2.GaussianBlur(texture, (0, 0), size / 512).astype(np.float64)
    uv = np.clip((head.uvs * size).astype(int), 0, size - 1)
    colour = blurred[uv[:, 1], uv[:, 0]]
    inner, outer, sector = boundary_rings(coverage)
    steps, counts = {}, {}
    for k in range(BOUNDARY_SECTORS):
        a, b = inner & (sector == k), outer & (sector == k)
        if a.sum() >= 3 and b.sum() >= 3:
            steps[int(k * 360 / BOUNDARY_SECTORS)] = float(np.linalg.norm(np.median(colour[a], 0) - np.median(colour[b], 0)))
            counts[int(k * 360 / BOUNDARY_SECTORS)] = int(a.sum() + b.sum())
    weights = np.array(list(counts.values()), np.float64)
    values = np.array(list(steps.values()))
    return {"meanStep": round(float((values * weights).sum() / weights.sum()), 2),
            "maxStep": round(float(values.max()), 2),
            "sectors": {k: round(v, 1) for k, v in steps.items()}}


def bake_head(models, views: dict[str, bytes], size: int | None = None):
    """The fitted head and its atlas (``HeadAtlas``, with the per-vertex coverage the measures
    above need) for a set of photos, as the pipeline makes them (``size``: automatic if None)."""
    from pipeline.head import fit_head
    from pipeline.head_texture import bake_head_atlas, head_texture_size_for
    from pipeline.mesh import fuse_views
    from pipeline.stages import infer_landmarks, prepare_views

    prepared = prepare_views(views, models)
    landmarks = infer_landmarks(prepared, models)
    fused = fuse_views(landmarks.by_view())
    fitted = fit_head(fused.canonical_cm / 100.0)
    size = size or head_texture_size_for(landmarks.points[0][:, :2])
    return fitted, bake_head_atlas(fitted, fused.canonical_cm, prepared.images, list(landmarks.points),
                                   fused.visibility, size)


# The hair cap's edge from the forehead (0°) toward the ears (±90°), by the angle around the head
# seen from above, in sectors this wide, out to CAP_EDGE_TO_DEG (beyond, the cap meets the ear);
# the temples are the sectors beyond TEMPLE_FROM_DEG.
CAP_EDGE_SECTOR_DEG, CAP_EDGE_TO_DEG, TEMPLE_FROM_DEG = 15, 75, 45


def hairline_step(texture: np.ndarray) -> dict:
    """The colour step across the painted hair cap's edge in front of the ears (RGB distance).

    The atlas's texels (on the template's coarse texel grid, each with its 3-D point and its
    ``hair`` weight) either side of the cap's edge (``hair`` above and below one half, within
    ``RING_WIDTH_M`` of the other side, in front of the ears and above their middle) are cut into
    sectors by the angle around the head seen from above (to ``CAP_EDGE_TO_DEG`` either side); per sector the two rings' median colours
    are compared, as ``fill_boundary_step`` compares the face's. Where the front photo shows hair
    down to the ears, a step there is a seam: the cap's colour cut off, or bare skin left below
    it. Returns ``sectors`` (the sector's middle angle in degrees, 0 the forehead, +90 the
    subject's left ear -> step), ``templeStep`` (the largest step beyond ``TEMPLE_FROM_DEG``
    either side) and ``maxStep``.
    """
    import cv2

    from pipeline.head_texture import head_texel_map

    head = head_template()
    tmap = head_texel_map()
    grid = tmap.grid
    colour = cv2.resize(texture, (grid, grid), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float64)
    skin = ((head.part == 0) & (head.fixed == 0)).astype(np.float32)
    fields = tmap.coarse(np.column_stack([head.positions, head.hair, skin])).reshape(-1, 5)
    p, hair, on_skin = fields[:, :3], fields[:, 3], fields[:, 4] > 0.999
    ear_middle = head.positions[np.abs(head.ear) > 0.99].mean(0)
    angle = np.degrees(np.arctan2(p[:, 0], p[:, 2] - ear_middle[2]))
    scalp = on_skin & (np.abs(angle) < CAP_EDGE_TO_DEG) & (p[:, 1] > ear_middle[1])
    cap, below = scalp & (hair >= 0.5), scalp & (hair < 0.5)
    sector = np.floor(angle / CAP_EDGE_SECTOR_DEG).astype(int)
    steps = {}
    for k in range(-CAP_EDGE_TO_DEG // CAP_EDGE_SECTOR_DEG, CAP_EDGE_TO_DEG // CAP_EDGE_SECTOR_DEG):
        a, b = cap & (sector == k), below & (sector == k)
        if a.sum() < 3 or b.sum() < 3:
            continue
        gap = np.linalg.norm(p[a][:, None] - p[b][None], axis=2)
        a_ring, b_ring = gap.min(1) < RING_WIDTH_M, gap.min(0) < RING_WIDTH_M
        middle = int((k + 0.5) * CAP_EDGE_SECTOR_DEG)
        steps[middle] = round(float(np.linalg.norm(np.median(colour[a][a_ring], 0) - np.median(colour[b][b_ring], 0))), 1)
    temples = [v for k, v in steps.items() if abs(k) > TEMPLE_FROM_DEG]
    return {"templeStep": max(temples), "maxStep": max(steps.values()), "sectors": steps}
