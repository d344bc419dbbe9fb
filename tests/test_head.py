"""The whole head: the template's geometry, the fit to landmarks, the expression taken out of the
rest shape, the ARKit targets on a fitted head, the filled texture and the GLB's size."""
from __future__ import annotations

import numpy as np
import pytest

from bench.head_report import morph_target_report
from bench.photos import avatar_views, encode_jpeg, grace_hopper_rgb
from models import load_topology
from models.head_build import ARKIT_NAMES, boundary_edges, edge_loops
from pipeline.features import _measures
from pipeline.head import (EYE_LEFT, EYE_RIGHT, SKIN, TEETH_LOWER, TONGUE, fit_head, head_normals,
                           head_template)
from pipeline.models import FaceModels
from pipeline.stages import infer_landmarks, prepare_views, run_pipeline

MOUTH_CORNER_LEFT, MOUTH_CORNER_RIGHT, LIP_UPPER, LIP_LOWER, CHIN = 291, 61, 13, 14, 152
LEFT_LIDS, RIGHT_LIDS = (386, 374), (159, 145)


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load()


def fused_landmarks_m(models: FaceModels, views: dict[str, bytes]) -> np.ndarray:
    from pipeline.mesh import fuse_views

    prepared = prepare_views(views, models)
    return fuse_views(infer_landmarks(prepared, models).by_view()).canonical_cm / 100.0


@pytest.fixture(scope="module")
def astronaut_landmarks(models) -> np.ndarray:
    return fused_landmarks_m(models, avatar_views(1024))


@pytest.fixture(scope="module")
def grace_landmarks(models) -> np.ndarray:
    return fused_landmarks_m(models, {v: encode_jpeg(grace_hopper_rgb()) for v in ("front", "left", "right")})


# -- the template -----------------------------------------------------------------------------------

def test_the_head_is_closed_except_at_a_clean_neck_cut():
    head = head_template()
    skin = head.triangles[head.part[head.triangles[:, 0]] == SKIN]
    loops = edge_loops(boundary_edges(head.weld[skin]))  # UV seams welded
    assert len(loops) == 1, f"{len(loops)} open loops in the skin"
    cut = head.positions[loops[0]]
    # One planar loop, below the chin, around the neck.
    centred = cut - cut.mean(0)
    assert np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(cut)) < 0.001
    chin = head.landmarks_of(head.positions)[CHIN]
    assert cut[:, 1].max() < chin[1] - 0.02
    assert 0.07 < np.ptp(cut[:, 0]) < 0.18  # a neck, not shoulders
    for part in (EYE_RIGHT, EYE_LEFT):  # the eyeballs are closed too
        eye = head.triangles[head.part[head.triangles[:, 0]] == part]
        assert len(boundary_edges(eye)) == 0


def uv_islands(head) -> list[np.ndarray]:
    """The atlas's islands as triangle index arrays; the two eyeballs share the eye disc, so they
    are one (only the eyeball's front hemisphere is laid out flat: its back is folded into the
    disc's rim, never seen)."""
    from models.head_build import island_labels

    labels = island_labels(head.triangles.astype(np.int64), len(head.positions))
    part = head.part[head.triangles[:, 0]]
    eyes = (part == EYE_RIGHT) | (part == EYE_LEFT)
    islands = [np.nonzero(~eyes & (labels[head.triangles[:, 0]] == k))[0] for k in np.unique(labels[head.triangles[~eyes, 0]])]
    front = eyes & (head.positions[head.triangles, 2].min(1) > head.positions[head.triangles[eyes]][:, :, 2].mean())
    return islands + [np.nonzero(front)[0]]


def test_the_atlas_islands_neither_fold_nor_overlap():
    import cv2

    head = head_template()
    uv = head.uvs.astype(np.float64)
    a, b, c = (uv[head.triangles[:, k]] for k in range(3))
    signed_area = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    size = 1024
    covered = np.zeros((size, size), np.int32)
    for island in uv_islands(head):
        sides = np.sign(signed_area[island])
        assert (sides > 0).all() or (sides < 0).all(), f"{(sides > 0).sum()} / {(sides < 0).sum()} triangles turned"
        mask = np.zeros((size, size), np.uint8)
        pts = np.round(uv[head.triangles[island]] * size * 16).astype(np.int32)
        cv2.fillPoly(mask, list(pts), 1, lineType=cv2.LINE_8, shift=4)
        covered += mask
    assert covered.max() == 1  # no texel belongs to two islands
    assert (uv >= 0).all() and (uv <= 1).all()


def test_the_face_gets_most_of_the_atlas():
    from pipeline.head import FACE_OVAL
    from pipeline.head_texture import atlas_face_share

    head = head_template()
    landmark_uv = (head.uvs[head.landmark_vertices] * head.landmark_weights[:, :, None]).sum(1)
    width, height = np.ptp(landmark_uv[list(FACE_OVAL)], axis=0)
    # Ear to ear at the cheeks, forehead to chin: over two thirds of the atlas's width, about half its height.
    assert width > 0.65 and height > 0.47 and atlas_face_share() > 0.47


def test_the_template_holds_the_52_arkit_targets_by_their_names():
    head = head_template()
    assert head.morph_names == ARKIT_NAMES and len(ARKIT_NAMES) == 52
    assert np.all(np.diff(head.morph_start) > 0)  # every target moves something


# -- fitting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_the_fitted_face_meets_its_landmarks_within_a_millimetre_rms(photo, astronaut_landmarks, grace_landmarks):
    landmarks = astronaut_landmarks if photo == "astronaut" else grace_landmarks
    fitted = fit_head(landmarks)
    # What the GLB shows first (rest shape + the expression's default weights) against the fused face.
    shown = head_template().landmarks_of(fitted.posed().astype(np.float64))
    rms = np.sqrt(((shown - landmarks) ** 2).sum(1).mean()) * 1000
    assert rms <= 1.0 and fitted.landmark_rms_mm == pytest.approx(rms, abs=0.01)


def exaggerated_faces() -> dict[str, np.ndarray]:
    """Extreme but valid faces: the canonical face stretched, reshaped, asymmetric, mouth open."""
    canonical = load_topology().vertices.astype(np.float64) / 100.0
    faces = {"wide": canonical * [1.18, 1.0, 1.0], "narrow": canonical * [0.85, 1.0, 1.0],
             "long": canonical * [1.0, 1.15, 1.0], "flat": canonical * [1.0, 1.0, 0.85]}
    nose = canonical[4]
    bump = np.exp(-((canonical - nose) ** 2).sum(1) / (2 * 0.012 ** 2))[:, None]
    faces["big nose"] = canonical + bump * [0.0, -0.004, 0.015]
    below_lips = np.clip((canonical[LIP_LOWER, 1] + 0.002 - canonical[:, 1]) / 0.01, 0, 1)[:, None]
    faces["mouth open 2 cm"] = canonical + below_lips * [0.0, -0.02, -0.004]
    faces["asymmetric"] = canonical + (canonical[:, 0:1] > 0) * [0.0, 0.006, 0.0]
    return faces


@pytest.mark.parametrize("name", list(exaggerated_faces()))
def test_extreme_faces_give_no_spikes_folds_or_moving_skull(name):
    head = head_template()
    fitted = fit_head(exaggerated_faces()[name])
    rest = fitted.rest_positions.astype(np.float64)
    # The template after the fit's similarity: what the rest shape is compared with.
    pose = fitted.pose
    template = head.positions @ (pose.scale * pose.rotation).T + pose.translation
    skin = head.triangles[head.part[head.triangles[:, 0]] == SKIN]
    edges = np.unique(np.sort(np.concatenate([skin[:, [0, 1]], skin[:, [1, 2]], skin[:, [2, 0]]]), axis=1), axis=0)
    before = np.linalg.norm(template[edges[:, 0]] - template[edges[:, 1]], axis=1)
    stretch = np.linalg.norm(rest[edges[:, 0]] - rest[edges[:, 1]], axis=1) / before
    # No spike: no edge of a millimetre or more grows or shrinks wildly, and almost all stay close.
    opened = name == "mouth open 2 cm"  # the lips' corners stretch to open the mouth
    real = stretch[before >= 0.001]
    # (Opened: an inner-lip edge of ~3 mm at the mouth's corner folds to ~15% of its length in
    # the neutral rest shape, where the lip line crumples the same way at any template build.)
    assert (0.12 if opened else 0.25) < real.min() and real.max() < 3.5, (real.min(), real.max())
    assert (0.4 if opened else 0.5) < np.percentile(stretch, 0.1)
    assert np.percentile(stretch, 99.9) < (3.0 if opened else 2.0)
    # No fold: triangles that turn over are hm08's needle-thin ones at the lid margins and the
    # mouth's corners (creases under a few mm²), never a visible part of the surface.
    def face_normals(p):
        return np.cross(p[skin[:, 1]] - p[skin[:, 0]], p[skin[:, 2]] - p[skin[:, 0]])
    area = np.linalg.norm(face_normals(template), axis=1) / 2 * 1e6  # mm²
    turned = (face_normals(rest) * face_normals(template)).sum(1) <= 0
    assert area[turned].sum() < (15.0 if opened else 6.0) and area[turned].max(initial=0) < 3.0
    # The back of the skull (its rearmost 15%) stays within 1.5 cm of where the pose puts it.
    back = (head.part == SKIN) & (head.positions[:, 2] < np.percentile(head.positions[:, 2], 15))
    assert np.linalg.norm(rest[back] - template[back], axis=1).max() < 0.015


# -- expression ------------------------------------------------------------------------------------

def corner_lift(landmarks: np.ndarray) -> float:
    return _measures(landmarks)["corner_lift"]


def test_a_smiling_photo_gives_a_neutral_rest_shape_and_smile_weights(astronaut_landmarks):
    head = head_template()
    fitted = fit_head(astronaut_landmarks)
    weights = dict(zip(fitted.morph_names, fitted.expression_weights))
    assert weights["mouthSmileLeft"] > 0.2 and weights["mouthSmileRight"] > 0.2
    canonical = load_topology().vertices.astype(np.float64)
    neutral = corner_lift(canonical)
    photo = corner_lift(astronaut_landmarks)
    rest = corner_lift(head.landmarks_of(fitted.rest_positions.astype(np.float64)))
    shown = corner_lift(head.landmarks_of(fitted.posed().astype(np.float64)))
    # The photo's mouth corners are lifted; the rest shape's are back near the neutral face's, and
    # the default weights put the smile back.
    assert photo - neutral > 0.02
    assert abs(rest - neutral) < 0.35 * (photo - neutral)
    assert shown == pytest.approx(photo, abs=0.15 * (photo - neutral))


def test_a_neutral_photo_gets_small_expression_weights(grace_landmarks):
    weights = dict(zip(ARKIT_NAMES, fit_head(grace_landmarks).expression_weights))
    assert weights["mouthSmileLeft"] < 0.2 and weights["mouthSmileRight"] < 0.2
    assert max(weights.values()) < 0.5


def test_the_canonical_face_itself_has_no_expression():
    canonical = load_topology().vertices.astype(np.float64) / 100.0
    assert fit_head(canonical).expression_weights.max() < 0.1


# -- the ARKit targets on a fitted head ----------------------------------------------------------------

REGION_OF = {"brow": {"brows", "eyes"}, "eye": {"eyes"}, "cheekSquint": {"cheeks", "eyes"},
             "cheekPuff": {"mouth", "cheeks"}, "jaw": {"mouth", "jaw"}, "mouth": {"mouth"},
             "noseSneer": {"nose"}, "tongue": {"mouth"}}


@pytest.fixture(scope="module")
def fitted_grace(grace_landmarks):
    return fit_head(grace_landmarks)


@pytest.mark.parametrize("name", ARKIT_NAMES)
def test_each_arkit_target_moves_its_own_region(name, fitted_grace):
    report = morph_target_report(fitted_grace)[name]
    assert 2.0 < report["maxMm"] < 45.0, report
    prefix = next(p for p in sorted(REGION_OF, key=len, reverse=True) if name.startswith(p))
    assert report["region"] in REGION_OF[prefix], report
    if name.startswith("brow"):
        assert report["aboveEyes"]
    if name.startswith("eyeLook"):
        assert ("eyeLeft" if name.endswith("Left") else "eyeRight") in report["parts"]
    if name.startswith("jaw"):
        assert "teethLower" in report["parts"]
    if name == "tongueOut":
        assert report["parts"] == ["tongue"]
    vertices, offsets = fitted_grace.morph(ARKIT_NAMES.index(name))
    sideways = float(offsets[:, 0].mean())
    if name in ("jawLeft", "mouthLeft"):  # the jaw or mouth moves toward the subject's left (+X)
        assert sideways > 0
    elif name in ("jawRight", "mouthRight"):
        assert sideways < 0
    elif name.endswith("Left"):
        assert report["side"] >= 0 and report["centre"][0] > 0.002
    elif name.endswith("Right"):
        assert report["side"] <= 0 and report["centre"][0] < -0.002


def test_targets_keep_their_meaning_on_the_fitted_head(fitted_grace):
    head = head_template()
    rest_landmarks = head.landmarks_of(fitted_grace.rest_positions.astype(np.float64))

    def posed(**weights) -> np.ndarray:
        return fitted_grace.posed(weights).astype(np.float64)

    # jawOpen opens the mouth about the jaw: the chin drops, the lips part, teeth and tongue go along.
    opened = posed(jawOpen=1.0)
    landmarks = head.landmarks_of(opened)
    assert rest_landmarks[CHIN, 1] - landmarks[CHIN, 1] > 0.015
    assert landmarks[LIP_UPPER, 1] - landmarks[LIP_LOWER, 1] > 0.015
    for part in (TEETH_LOWER, TONGUE):
        members = head.part == part
        assert (fitted_grace.rest_positions[members, 1] - opened[members, 1]).mean() > 0.005
    # eyeBlinkLeft closes the left lids over the eyeball and leaves the right eye open.
    blink = head.landmarks_of(posed(eyeBlinkLeft=1.0))
    gap = lambda lm, lids: np.linalg.norm(lm[lids[0]] - lm[lids[1]])  # noqa: E731
    # (The lid contours' middle points meet up to a millimetre or two apart across the closed lids.)
    assert gap(rest_landmarks, LEFT_LIDS) > 0.004 and gap(blink, LEFT_LIDS) < 0.25 * gap(rest_landmarks, LEFT_LIDS)
    assert gap(blink, RIGHT_LIDS) == pytest.approx(gap(rest_landmarks, RIGHT_LIDS), abs=2e-4)
    # eyeLookUpLeft turns the left eyeball up: its front pole rises, its centre stays.
    eye = head.part == EYE_LEFT
    before, after = fitted_grace.rest_positions[eye].astype(np.float64), posed(eyeLookUpLeft=1.0)[eye]
    front = np.argmax(before[:, 2])
    assert after[front, 1] - before[front, 1] > 0.002
    assert np.linalg.norm(after.mean(0) - before.mean(0)) < 0.001
    # mouthSmileLeft lifts the left mouth corner and draws it outward.
    smile = head.landmarks_of(posed(mouthSmileLeft=1.0))
    assert smile[MOUTH_CORNER_LEFT, 1] - rest_landmarks[MOUTH_CORNER_LEFT, 1] > 0.004
    assert smile[MOUTH_CORNER_LEFT, 0] > rest_landmarks[MOUTH_CORNER_LEFT, 0]
    # tongueOut pushes the tongue forward out of the mouth.
    tongue = head.part == TONGUE
    assert posed(tongueOut=1.0)[tongue, 2].max() - fitted_grace.rest_positions[tongue, 2].max() > 0.01


# -- texture and GLB -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut_head(models):
    return run_pipeline(avatar_views(1024), models)


def test_filled_skin_matches_the_measured_skin_tone(astronaut_head):
    from pipeline.glb import read_glb_json

    head = head_template()
    colours = read_glb_json(astronaut_head.glb)["scenes"][0]["extras"]["colours"]
    skin = np.array(colours["skin"], np.float64)
    # Texels no photo colours: skin (not hair, not a painted part) the photos are not trusted on,
    # behind the ears and down the neck.
    texture = astronaut_head.texture.astype(np.float64)
    size = texture.shape[0]
    filled = (head.texture_trust == 0) & (head.hair < 0.01) & (head.fixed == 0) & (head.part == SKIN)
    uv = head.uvs[filled]
    texels = texture[np.clip((uv[:, 1] * size).astype(int), 0, size - 1), np.clip((uv[:, 0] * size).astype(int), 0, size - 1)]
    assert np.linalg.norm(np.median(texels, axis=0) - skin) < 6  # the fill is that tone
    assert np.percentile(np.linalg.norm(texels - skin, axis=1), 95) < 12  # everywhere, smoothly
    # And that tone is the subject's: close to the cheeks' colour the features report.
    tone = astronaut_head.facial_features["skinTone"]
    assert np.linalg.norm(skin - [tone["r"], tone["g"], tone["b"]]) < 35


@pytest.mark.parametrize("photo", ["astronaut", "grace"])
def test_the_fill_meets_the_photographed_face_without_a_colour_step(photo, models):
    from bench.head_report import bake_head, fill_boundary_step

    views = avatar_views(1024) if photo == "astronaut" else {v: encode_jpeg(grace_hopper_rgb()) for v in ("front", "left", "right")}
    _, atlas = bake_head(models, views)
    sectors = fill_boundary_step(atlas.texture, atlas.coverage)["sectors"]
    # Around the face's sides and chin (the top is the hairline, where hair meets skin for real):
    # the last photographed ring and the first painted one differ by under 21 on average (RGB
    # distance of their median colours; 18 and 12 here, where a flat skin-tone fill beside a
    # 1.2 cm fade, as the bake had before, left 32 and 26).
    sides_and_chin = [step for angle, step in sectors.items() if not 30 <= angle < 150]
    assert len(sides_and_chin) >= 5 and np.mean(sides_and_chin) < 21, sectors


def test_the_hair_cap_meets_the_temples_without_a_seam(models):
    """The astronaut's photo shows her bob beside the face down to the ears. The painted cap's
    edge in front of the ears, at the temples, shows no colour step: the cap's hair runs on down
    the temples instead of stopping above a bare skin wedge. Largest temple step
    (``hairline_step``): 26 here; 52 when the cap stopped high above the ears and the temples
    stayed skin."""
    from bench.head_report import bake_head, hairline_step

    _, atlas = bake_head(models, avatar_views(1024))
    step = hairline_step(atlas.texture)
    assert step["templeStep"] < 30, step


def temple_vertices(head) -> np.ndarray:
    """bool [V]: the hairline band's vertices at the temples, below the cap, off the face."""
    p = head.positions
    angle = np.degrees(np.arctan2(p[:, 0], p[:, 2] - p[np.abs(head.ear) > 0.99, 2].mean()))
    return (head.hairline > 0.5) & (head.hair < 0.5) & (head.texture_trust < 0.1) & (np.abs(angle) > 50)


def median_colour(atlas, vertices: np.ndarray) -> np.ndarray:
    """The atlas's median colour at the texels of ``vertices`` (bool [V])."""
    head = head_template()
    size = atlas.texture.shape[0]
    uv = np.clip((head.uvs[vertices] * size).astype(int), 0, size - 1)
    return np.median(atlas.texture[uv[:, 1], uv[:, 0]].astype(np.float64), 0)


def test_a_hat_is_not_hair_below_its_rim(models):
    """Grace Hopper wears a dark navy hat over short grey hair. The cap's colour (the hat's,
    measured above the forehead) stays on the cap: beside the face the photo shows grey hair, the
    glasses' arms and skin, brighter than the hat, so the temples are painted skin (median temple
    colour here (215, 138, 108), her skin tone (245, 158, 121); (79, 52, 48), near the hat's
    (39, 26, 30), when the dark strip beside her face was taken for the cap's hair: a helmet
    down to the ears), and the band's colour is not spread there from the hat's rim and the
    glasses' arms (it ran down the temples as dark streaks beside the eyes). The fill meets the face's top as it did before the
    cap came down to the ears (``fill_boundary_step``, top sectors 39.5 and 53.2 at 30° and 120°
    then; 36.5 and 11.3 here; 88 and 77 with the streaks)."""
    from bench.head_report import bake_head, fill_boundary_step

    _, atlas = bake_head(models, {v: encode_jpeg(grace_hopper_rgb()) for v in ("front", "left", "right")})
    temples = median_colour(atlas, temple_vertices(head_template()))
    assert np.linalg.norm(temples - atlas.skin) < np.linalg.norm(temples - atlas.hair) / 4, (temples, atlas.skin)
    sectors = fill_boundary_step(atlas.texture, atlas.coverage)["sectors"]
    assert sectors[30] < 45 and sectors[120] < 60, sectors


def astronaut_photo_landmarks(models) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """The astronaut's photo (a copy, to paint on), its landmarks (photo px), its face height
    (forehead top to chin, px) and the skin colour on her cheek."""
    from bench.photos import astronaut_rgb

    photo = astronaut_rgb().copy()
    prepared = prepare_views({v: encode_jpeg(photo) for v in ("front", "left", "right")}, models)
    xy = (infer_landmarks(prepared, models).points[0][:, :2] + prepared.region_corners[0]) / prepared.photo_scales[0]
    face_height = float(np.linalg.norm(xy[152] - xy[10]))
    skin = np.median(photo[int(xy[50, 1]) - 4:int(xy[50, 1]) + 5, int(xy[50, 0]) - 4:int(xy[50, 0]) + 5].reshape(-1, 3), 0)
    return photo, xy, face_height, skin


def test_the_temples_stay_skin_where_the_photo_shows_skin(models):
    """The astronaut's photo with skin painted beside her face at the temples (short hair there):
    the temples stay skin, where her own photo brings the cap's hair down them. (Median temple
    colour here: (154, 132, 91) from her photo, her hair (154, 132, 90); (187, 158, 131) with the
    skin painted in, her skin tone (194, 163, 140).)"""
    from bench.head_report import bake_head
    from pipeline.head_texture import TEMPLE_OUTLINE

    photo, xy, face_height, skin = astronaut_photo_landmarks(models)
    temples = temple_vertices(head_template())

    def temple_colours(views):
        _, atlas = bake_head(models, views)
        return atlas, median_colour(atlas, temples)

    hair_atlas, with_hair = temple_colours({v: encode_jpeg(photo) for v in ("front", "left", "right")})
    for ids in TEMPLE_OUTLINE:
        outline = xy[list(ids)]
        x0, x1 = int(outline[:, 0].min() - 0.2 * face_height), int(outline[:, 0].max() + 0.2 * face_height)
        inner = int(outline[:, 0].max()) if outline[0, 0] < xy[10, 0] else int(outline[:, 0].min())
        x0, x1 = (x0, inner) if outline[0, 0] < xy[10, 0] else (inner, x1)
        photo[int(outline[:, 1].min() - 0.1 * face_height):int(outline[:, 1].max()) + 1, max(0, x0):x1] = skin
    _, with_skin = temple_colours({v: encode_jpeg(photo) for v in ("front", "left", "right")})
    tone, hair = hair_atlas.skin, hair_atlas.hair
    assert temples.sum() >= 6
    assert np.linalg.norm(with_hair - hair) < np.linalg.norm(with_hair - tone)  # her own photo: hair
    assert np.linalg.norm(with_skin - tone) < np.linalg.norm(with_skin - hair), (with_skin, tone)


def test_the_hairline_follows_the_photo(models):
    """A receding hairline: the astronaut's photo with skin painted over her hair at both temple
    corners of the forehead (her hair left in the middle, where the cap's colour is measured).
    The head shows skin there, where the painted cap alone would put hair."""
    from bench.head_report import bake_head

    photo, xy, face_height, skin = astronaut_photo_landmarks(models)
    top, bottom = int(xy[10, 1] - 0.4 * face_height), int(xy[10, 1])
    for outer, inner in ((127, 109), (356, 338)):  # the face's side, the hair band's side
        x0, x1 = sorted((int(xy[outer, 0]), int(xy[inner, 0])))
        photo[top:bottom, x0:x1] = skin
    _, atlas = bake_head(models, {v: encode_jpeg(photo) for v in ("front", "left", "right")})

    head = head_template()
    landmarks = head.landmarks_of(head.positions)
    # Where the cap is painted, beyond the face's photographed margin, in the corners: skin.
    corners = np.abs(head.positions[:, 0]) > np.abs(landmarks[[109, 338], 0]).max() + 0.005
    cap = (head.hair > 0.5) & (head.texture_trust < 0.1) & (head.hairline > 0.7) & corners
    size = atlas.texture.shape[0]
    uv = np.clip((head.uvs[cap] * size).astype(int), 0, size - 1)
    colours = atlas.texture[uv[:, 1], uv[:, 0]].astype(np.float64)
    assert cap.sum() >= 3
    to_skin = np.linalg.norm(colours - skin, axis=1)
    to_hair = np.linalg.norm(colours - atlas.hair, axis=1)
    assert np.linalg.norm(atlas.hair - skin) > 60  # her hair, measured in the middle, is not skin
    assert np.median(to_skin) < 0.5 * np.median(to_hair), (np.median(to_skin), np.median(to_hair))


def test_texels_seen_only_at_grazing_angles_are_filled_not_sampled():
    from pipeline.head_texture import FULL_FACING, MIN_FACING

    assert 0.3 <= MIN_FACING < FULL_FACING <= 0.9  # cos 72°..45°: the photo's edge is never sampled


def test_iris_takes_the_photo_colour(models):
    import cv2

    from pipeline.head_texture import iris_colour

    prepared = prepare_views(avatar_views(1024), models)
    xy = infer_landmarks(prepared, models).points[0][:, :2]
    image = prepared.images[0].copy()
    brown = iris_colour(image, xy)
    assert brown[0] >= brown[2]  # her eyes are brown-grey: not blue
    # Her irises painted blue in the photo: the measured iris colour follows.
    for lids in ((159, 145, 33, 133), (386, 374, 263, 362)):
        centre = xy[list(lids)].mean(0)
        radius = int(round(np.linalg.norm(xy[lids[2]] - xy[lids[3]]) / 6))  # an iris: about a sixth of the eye
        cv2.circle(image, (int(round(centre[0])), int(round(centre[1]))), radius, (40, 70, 160), -1)
    blue = iris_colour(image, xy)
    assert blue[2] > blue[0] + 30


def test_glb_at_a_2048_texture_stays_under_3_mb(astronaut_head, astronaut_landmarks, models, validate_gltf):
    from pipeline.glb import GlbMesh, write_glb
    from pipeline.head_texture import bake_head_atlas
    from pipeline.mesh import fuse_views
    from pipeline.texture import encode_jpeg

    head = head_template()
    prepared = prepare_views(avatar_views(1024), models)
    landmarks = infer_landmarks(prepared, models)
    fused = fuse_views(landmarks.by_view())
    fitted = fit_head(fused.canonical_cm / 100.0)
    atlas = bake_head_atlas(fitted, fused.canonical_cm, prepared.images, list(landmarks.points), fused.visibility, 2048)
    glb = write_glb(GlbMesh(positions=fitted.rest_positions, normals=head_normals(fitted.rest_positions),
                            uvs=head.uvs, triangles=head.triangles, texture_jpeg=encode_jpeg(atlas.texture),
                            morph_targets=fitted.morph_targets, morph_weights=list(fitted.expression_weights),
                            double_sided=True))
    assert atlas.texture.shape == (2048, 2048, 3)
    assert len(glb) <= 3_000_000
    report = validate_gltf(glb)["issues"]
    assert (report["numErrors"], report["numWarnings"]) == (0, 0), report["messages"][:5]


def test_the_glb_carries_the_expression_as_default_weights(astronaut_head):
    from pipeline.glb import read_glb_json

    mesh = read_glb_json(astronaut_head.glb)["meshes"][0]
    weights = dict(zip(mesh["extras"]["targetNames"], mesh["weights"]))
    assert mesh["extras"]["targetNames"] == list(ARKIT_NAMES)
    assert weights["mouthSmileLeft"] > 0.2 and weights["mouthSmileRight"] > 0.2
    assert weights == pytest.approx(astronaut_head.morph_weights)
    sparse = [t["POSITION"] for t in mesh["primitives"][0]["targets"]]
    accessors = read_glb_json(astronaut_head.glb)["accessors"]
    assert sum("sparse" in accessors[a] for a in sparse) >= 48  # a face unit moves a small part of the head
