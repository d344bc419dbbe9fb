"""The whole head's UV atlas, baked from the photos through the fitted head.

The atlas layout is the template's (``models/head_template.npz``): which triangle covers each
texel, and where inside it, is computed once per process and texture size (``head_texel_map``).
Per avatar and per photo, the fitted head's vertices are projected into the photo (the view's
pose, corrected so its own landmarks land exactly where the landmark model put them), and
``cv2.remap`` samples the photo through that map. Photos are blended per texel by how squarely
they see the surface; texels no photo sees well (grazing angles, the back of the head, under the
chin, the neck), and everything away from the face where the fitted shape is a guess, are filled
with the subject's skin tone, or with their hair colour on the hair cap, with smooth transitions:
beside the photographed skin the fill takes that skin's own colour (a shaded temple, a ruddy
cheek), fading to the overall tone a few centimetres away, so the two read as one skin. Above
the face, the front photo's own colours (blurred) show where the hair starts, and the cap's hair
runs down the temples to the ears where the photo shows hair beside the face there.
Eyes, teeth, tongue and the inside of the mouth are painted; the iris takes the subject's colour.

Lighting: the photos' large-scale shading is taken out (a first-order spherical-harmonics fit
of each photo's skin brightness against the head's normals, divided out), so the atlas is close
to an albedo and the GLB's ordinary PBR material lights it once, under the viewer's lights.
Shadows smaller than the face (under the nose, in the eye sockets) stay in the texture.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pipeline.head import FittedHead, head_normals, head_template, wendland
from pipeline.mesh import Pose, fit_similarity, image_to_camera
from pipeline.preview import visible_fragments
from pipeline.texture import MAX_TEXTURE_SIZE, colour_gains, texture_size_for_height

# The per-vertex fields (photo coordinates, blend weights, the painted fill) are interpolated on a
# grid this fine at every atlas size: the painted part of the head island (scalp, ears, back) is
# squeezed into few texels, and a coarser grid shows its hairline as streaks.
COARSE_GRID = 256
# MediaPipe landmarks: forehead top and chin (the face's height), the skin patches that measure
# skin tone and lighting, the band above the forehead that shows the hair, the eye contours.
FOREHEAD_TOP, CHIN = 10, 152
SKIN_LANDMARKS = (50, 280, 101, 330, 205, 425, 117, 346, 151, 9, 108, 337, 6, 197, 195)  # cheeks, forehead, bridge
HAIR_BAND_CORNERS = (109, 338)
# The face's outline at the temples (subject's right, left), and the strip beside it where the
# front photo shows whether hair comes down there (from, to: shares of the face's height outward).
TEMPLE_OUTLINE, TEMPLE_STRIP = ((21, 162, 127), (251, 389, 356)), (0.02, 0.10)
# The strip's brightness over the cap's at which it counts fully, and no longer, as the cap's hair.
TEMPLE_HAIR_BRIGHTER = (1.2, 1.6)
EYE_CONTOURS = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
# A photo is used where it sees the surface at least this squarely (cosine), fully from
# FULL_FACING up: texels seen at grazing angles smear the background and are filled instead.
MIN_FACING, FULL_FACING = 0.45, 0.75
BLEND_TEMPERATURE = 0.04
FRONT_PREFERENCE = 0.15
# De-lighting: a first-order fit cannot tell shading from the skin's own shades (a darker chin, a
# shadow cast by glasses), so only part of the shading it finds is divided out, within bounds.
DELIGHT_STRENGTH = 0.5
MIN_SHADING_GAIN, MAX_SHADING_GAIN = 0.8, 1.25
# The rim of the photographed part, by coverage: where the fill's skin tone is measured.
RIM_COVERAGE = (0.3, 0.9)
MIN_RIM_VERTICES = 30
CENTRE_SHARE = 0.35
# The fill takes the photographed skin's own colour where it meets it (``fill_spread``): the local
# colour (over about FILL_NODE_SPACING_M) of the nearest photographed skin, fading to the overall
# skin tone at FILL_REACH_M from it.
FILL_REACH_M, FILL_NODE_SPACING_M = 0.04, 0.01
HAIRLINE_REACH_M = 0.025  # how far the band's photographed colour spreads over the band
FILL_TONE_PRIOR = 0.03  # the overall tone's weight against a neighbourhood wholly photographed
SKIN_HUE_DISTANCE = 0.04  # chromaticity off the skin tone's hue at which a colour counts e^-1 as skin
SKIN_BRIGHTNESS = (0.35, 1.7)  # of the skin tone's, for a colour to count as skin
# The hairline band's fill is the front photo's colour blurred over this much face (millimetres),
# where the photo sees the surface at least this squarely (cosine), fully from FULL_FACING.
HAIRLINE_BLUR_MM, HAIRLINE_MIN_FACING = 4.0, 0.2
CANONICAL_FACE_HEIGHT_MM = 176.7  # forehead top to chin on MediaPipe's canonical face
# The photos' blend weights (0 to MAX_SHADING_GAIN) are applied as 8-bit values of this scale.
BLEND_SCALE = 127.5
# Each photo is sampled in bands of this many atlas rows (``contribution_boxes``).
BAND_TEXELS = 128
SCLERA = np.array([232, 228, 222], np.float32)
DEFAULT_IRIS = np.array([96, 70, 48], np.float32)
DEFAULT_HAIR = np.array([70, 52, 40], np.float32)


@dataclass(frozen=True)
class HeadTexelMap:
    """For each coarse texel of the atlas: its triangle's three vertices and barycentric weights
    (texels outside every island borrow the nearest island texel's triangle, at its nearest
    point, so the islands are padded and mipmaps show no seams)."""

    grid: int
    vertex_ids: tuple[np.ndarray, np.ndarray, np.ndarray]  # each [G*G] int32
    weights: tuple[np.ndarray, np.ndarray, np.ndarray]  # each [G*G] float32
    photographed: np.ndarray  # [K] the texels whose triangle the photos may colour (trust > 0)

    def coarse(self, values: np.ndarray, photographed_only: bool = False) -> np.ndarray:
        """[G,G,C] float32: per-vertex ``values`` [V,C] interpolated at the coarse texels (with
        ``photographed_only``, at the photographed texels alone, zero elsewhere: a third of the work)."""
        values = np.asarray(values, np.float32)
        (v0, v1, v2), (w0, w1, w2) = self.vertex_ids, self.weights
        if photographed_only:
            at = self.photographed
            v0, v1, v2, w0, w1, w2 = v0[at], v1[at], v2[at], w0[at], w1[at], w2[at]
        out = np.take(values, v0, axis=0)
        out *= w0[:, None]
        for ids, w in ((v1, w1), (v2, w2)):
            part = np.take(values, ids, axis=0)
            part *= w[:, None]
            out += part
        if not photographed_only:
            return out.reshape(self.grid, self.grid, -1)
        full = np.zeros((self.grid * self.grid, values.shape[1]), np.float32)
        full[self.photographed] = out
        return full.reshape(self.grid, self.grid, -1)

    def spread(self, values: np.ndarray, size: int) -> np.ndarray:
        """[size,size,C] float32: per-vertex ``values`` [V,C] (C <= 4) interpolated over the atlas
        (on the coarse grid, then upsampled linearly: the fields are piecewise linear)."""
        return upsample(self.coarse(values), size, (0, 0, self.grid, self.grid))


@lru_cache(maxsize=4)
def head_texel_map(grid: int = COARSE_GRID) -> HeadTexelMap:
    """Rasterise the template's UV triangles onto a ``grid`` square (texel centres)."""
    head = head_template()
    uv_px = head.uvs.astype(np.float64) * grid
    pixel, triangle_of, bary = visible_fragments(uv_px, np.zeros(len(uv_px)), head.triangles, grid,
                                                 cull_back_faces=False)
    triangle = np.full(grid * grid, -1, np.int64)
    weights = np.zeros((grid * grid, 3))
    triangle[pixel], weights[pixel] = triangle_of, bary
    inside = (triangle >= 0).reshape(grid, grid)
    _, labels = cv2.distanceTransformWithLabels((~inside).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    label_to_pixel = np.zeros(labels.max() + 1, np.int64)
    iy, ix = np.nonzero(inside)
    label_to_pixel[labels[iy, ix]] = iy * grid + ix
    outside = np.nonzero(~inside.ravel())[0]
    triangle[outside] = triangle[label_to_pixel[labels.ravel()[outside]]]
    # Barycentric weights of the outside texel centres in their borrowed triangles.
    corners = uv_px[head.triangles[triangle[outside]]]
    centre = np.column_stack([outside % grid + 0.5, outside // grid + 0.5])
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    q = centre - a
    w1 = (q[:, 0] * (c[:, 1] - a[:, 1]) - q[:, 1] * (c[:, 0] - a[:, 0])) / det
    w2 = (q[:, 1] * (b[:, 0] - a[:, 0]) - q[:, 0] * (b[:, 1] - a[:, 1])) / det
    # Clamped onto the triangle: the padding repeats the island's edge outward (extrapolated
    # further than a texel or two, a colour gradient runs away into black and white streaks).
    outside_weights = np.clip(np.column_stack([1 - w1 - w2, w1, w2]), 0.0, None)
    weights[outside] = outside_weights / outside_weights.sum(1, keepdims=True)
    ids = head.triangles[triangle]
    photographed = np.nonzero((photo_trust()[ids] > 0).any(1))[0]
    return HeadTexelMap(grid, tuple(np.ascontiguousarray(ids[:, k], np.int32) for k in range(3)),
                        tuple(np.ascontiguousarray(weights[:, k], np.float32) for k in range(3)), photographed)


def upsample(coarse: np.ndarray, size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part ``box`` (x0, y0, x1, y1, in coarse texels) of a coarse field [G,G,C] upsampled
    linearly to the atlas's texels, as that part of ``cv2.resize`` of the whole field would be:
    the box and a one-texel margin are resized, the margin cropped (edges then see their real
    neighbours)."""
    grid = coarse.shape[0]
    factor = size // grid
    x0, y0, x1, y1 = box
    mx0, my0, mx1, my1 = max(0, x0 - 1), max(0, y0 - 1), min(grid, x1 + 1), min(grid, y1 + 1)
    part = np.ascontiguousarray(coarse[my0:my1, mx0:mx1])
    out = cv2.resize(part, ((mx1 - mx0) * factor, (my1 - my0) * factor), interpolation=cv2.INTER_LINEAR)
    out = out[(y0 - my0) * factor:(y1 - my0) * factor, (x0 - mx0) * factor:(x1 - mx0) * factor]
    return out if out.ndim == 3 else out[:, :, None]


@lru_cache(maxsize=1)
def atlas_face_share() -> float:
    """How much of the atlas's height the face (forehead top to chin) spans."""
    head = head_template()
    landmark_uv = (head.uvs[head.landmark_vertices] * head.landmark_weights[:, :, None]).sum(1)
    return float(landmark_uv[CHIN, 1] - landmark_uv[FOREHEAD_TOP, 1])


def head_texture_size_for(image_xy: np.ndarray, requested: int | None = None,
                          max_size: int = MAX_TEXTURE_SIZE) -> int:
    """``requested`` when given (one of ``TEXTURE_SIZES``), else the power-of-two atlas side that
    gives the face as many texels as the front photo has pixels across it (``texture_size_for`` for
    the head's layout)."""
    from pipeline.texture import FACE_SHARE_OF_UV, check_texture_size

    if requested is not None:
        return check_texture_size(requested)
    face_height = float(np.ptp(image_xy[:, 1]))
    return texture_size_for_height(face_height * FACE_SHARE_OF_UV / atlas_face_share(), max_size)


# -- per view -------------------------------------------------------------------------------------

def view_projection(fitted_cm: np.ndarray, landmarks_image: np.ndarray) -> Pose:
    """The pose that best projects the fused face (canonical cm) onto one photo's landmarks."""
    return fit_similarity(fitted_cm, image_to_camera(landmarks_image).astype(np.float64), np.ones(len(fitted_cm)))


def project_to_image(points_m: np.ndarray, pose: Pose) -> np.ndarray:
    """[N,2] image pixels of canonical-frame points (metres) under ``pose``."""
    camera = (points_m * 100.0) @ (pose.scale * pose.rotation).T + pose.translation
    return np.column_stack([camera[:, 0], -camera[:, 1]])


def measured_colour(image: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """[N,3] median colour of a square patch around each point (pixels) of ``image``."""
    h, w = image.shape[:2]
    out = np.empty((len(points), 3), np.float32)
    for k, (x, y) in enumerate(np.rint(points).astype(int)):
        patch = image[max(0, y - radius):min(h, y + radius + 1), max(0, x - radius):min(w, x + radius + 1)]
        out[k] = np.median(patch.reshape(-1, 3), axis=0) if patch.size else np.nan
    return out


def shading_model(luminance: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """[4] a + b·n fitted to skin brightness against the normals (in the camera's frame),
    normalised to a mean of 1 over the samples."""
    design = np.column_stack([np.ones(len(normals)), normals])
    coefficients, *_ = np.linalg.lstsq(design, luminance, rcond=None)
    mean = float((design @ coefficients).mean())
    if mean <= 1e-6:
        return np.array([1.0, 0.0, 0.0, 0.0])
    model = coefficients / mean
    model[1:] *= DELIGHT_STRENGTH
    model[0] = 1.0 + DELIGHT_STRENGTH * (model[0] - 1.0)
    return model


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def hair_colour(image: np.ndarray, xy: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """The hair's colour: pixels of a band above the forehead (front photo) that are not skin
    coloured; the skin colour where most of the band is skin (a bald head or high forehead)."""
    top, chin = xy[FOREHEAD_TOP], xy[CHIN]
    face_h = float(np.linalg.norm(chin - top))
    x0, x1 = sorted(int(v) for v in xy[list(HAIR_BAND_CORNERS), 0])
    y0, y1 = int(top[1] - 0.28 * face_h), int(top[1] - 0.08 * face_h)
    h, w = image.shape[:2]
    band = image[max(0, y0):max(0, min(h, y1)), max(0, x0):max(0, min(w, x1))].reshape(-1, 3).astype(np.float32)
    if len(band) < 20:
        return DEFAULT_HAIR
    not_skin = np.linalg.norm(band - skin, axis=1) > 40
    if not_skin.mean() < 0.3:
        return skin
    return np.median(band[not_skin], axis=0)


def temple_hair(image: np.ndarray, xy: np.ndarray, skin: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """[2] in [0, 1], for the subject's right and left temple: how much the front photo shows the
    cap's hair there, a bob or side hair, in a strip beside the face's outline from the temple
    down to the top of the ear: not skin (1 - ``skin_likeness`` of the strip's median colour), and
    no brighter than the cap's colour ``hair``. (Beside the face the hair is seen edge-on and in
    the head's shade: as dark as on top or darker. A strip markedly brighter than the cap is
    something else under a dark cap: grey hair or skin below a hat's rim, glasses' arms on skin.)"""
    face_h = float(np.linalg.norm(xy[CHIN] - xy[FOREHEAD_TOP]))
    h, w = image.shape[:2]
    colours = []
    for ids, outward in ((TEMPLE_OUTLINE[0], -1), (TEMPLE_OUTLINE[1], 1)):
        outline = xy[list(ids)]
        edge = outline[:, 0].min() if outward < 0 else outline[:, 0].max()
        x0, x1 = sorted(int(edge + outward * share * face_h) for share in TEMPLE_STRIP)
        y0, y1 = int(outline[:, 1].min()), int(outline[:, 1].max()) + 1
        strip = image[max(0, y0):max(0, min(h, y1)), max(0, x0):max(0, min(w, x1))].reshape(-1, 3)
        colours.append(np.median(strip, axis=0) if len(strip) >= 20 else skin)
    colours = np.array(colours, np.float32)
    brighter = luminance(colours) / max(float(luminance(np.asarray(hair, np.float32))), 1.0)
    as_dark = np.clip((TEMPLE_HAIR_BRIGHTER[1] - brighter) / (TEMPLE_HAIR_BRIGHTER[1] - TEMPLE_HAIR_BRIGHTER[0]), 0, 1)
    return (1 - skin_likeness(colours, skin)) * as_dark


def iris_colour(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """The iris's colour: inside both eye contours of the front photo, without the bright sclera
    and the darkest pixels (pupil, lashes)."""
    pixels = []
    for contour in EYE_CONTOURS:
        polygon = np.rint(xy[list(contour)]).astype(np.int32)
        x0, y0 = polygon.min(0)
        x1, y1 = polygon.max(0) + 1
        if x0 < 0 or y0 < 0 or x1 > image.shape[1] or y1 > image.shape[0] or x1 - x0 < 3 or y1 - y0 < 2:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [polygon - [x0, y0]], 1)
        pixels.append(image[y0:y1, x0:x1][mask.astype(bool)])
    if not pixels:
        return DEFAULT_IRIS
    eye = np.concatenate(pixels).astype(np.float32)
    value = eye.max(1)
    spread = value - eye.min(1)
    keep = (value < np.percentile(value, 70)) & (value > np.percentile(value, 15))
    keep &= ~((value > 150) & (spread < 40))  # sclera: bright and grey
    return np.median(eye[keep], axis=0) if keep.sum() >= 5 else DEFAULT_IRIS


@dataclass(frozen=True)
class HeadAtlas:
    """The baked atlas and what was measured on the way."""

    texture: np.ndarray  # [S,S,3] RGB uint8
    skin: np.ndarray  # [3] the de-lit skin tone the fill has away from the face
    hair: np.ndarray  # [3]
    iris: np.ndarray  # [3]
    coverage: np.ndarray  # [V] the share of each vertex's colour the photos give (the rest is painted)


def bake_head_atlas(fitted: FittedHead, fused_cm: np.ndarray, images: list[np.ndarray],
                    landmarks_image: list[np.ndarray], visibility: np.ndarray, size: int,
                    normals: np.ndarray | None = None) -> HeadAtlas:
    """The head's atlas [size,size,3] from the photos (front first).

    Parameters
    ----------
    fitted
        The head fitted to the fused landmarks (``pipeline.head.fit_head``).
    fused_cm
        [468,3] the fused landmarks (canonical frame, centimetres).
    images, landmarks_image
        Per photo, the RGB image and its [468,3] landmarks (pixels, depth on the same scale).
    visibility
        [views,468] how squarely each landmark faces each photo (``FusedShape.visibility``).
    size
        Atlas side in texels (a power of two).
    normals
        [V,3] the head's unit normals, if already computed (``head_normals``).
    """
    head = head_template()
    tmap = head_texel_map()
    landmarks_xy = [points[:, :2] for points in landmarks_image]
    posed = fitted.posed_positions.astype(np.float64)  # the photo shows the expression
    normals = head_normals(posed).astype(np.float64) if normals is None else np.asarray(normals, np.float64)
    landmarks_m = head.landmarks_of(posed)
    skin_ids = list(SKIN_LANDMARKS)
    skin_normals = head.landmarks_of(normals)[skin_ids]
    skin_normals /= np.linalg.norm(skin_normals, axis=1, keepdims=True)
    gains = colour_gains(images, landmarks_xy, visibility)

    poses = [view_projection(fused_cm, points) for points in landmarks_image]
    # Each view's own landmarks land exactly where the model put them: their 2-D residual spread
    # over the face with the fit's residual field (zero far from the face). One product for all.
    corrections = np.concatenate([xy - project_to_image(landmarks_m, pose) for xy, pose in zip(landmarks_xy, poses)],
                                 axis=1)
    corrected = fitted_residual_2d(corrections)
    vertex_xy, facing, gain, skin_colour = [], [], [], []
    for k, (image, xy, pose) in enumerate(zip(images, landmarks_xy, poses)):
        vertex_xy.append((project_to_image(posed, pose) + corrected[:, 2 * k:2 * k + 2]).astype(np.float32))
        toward_camera = pose.rotation.T @ np.array([0.0, 0.0, 1.0])
        facing.append(normals @ toward_camera)
        # De-lighting: this photo's skin brightness against the normals, a + b·n, divided out.
        colours = measured_colour(image, xy[skin_ids], 2) * gains[k]
        seen = np.isfinite(colours).all(1) & (skin_normals @ toward_camera > FULL_FACING)
        if seen.sum() >= 6:
            model = shading_model(luminance(colours[seen]), skin_normals[seen] @ pose.rotation.T)
        else:
            model = np.array([1.0, 0.0, 0.0, 0.0])
        shade = lambda n: np.clip(1.0 / np.maximum(model[0] + n @ pose.rotation.T @ model[1:], 1e-3),  # noqa: E731
                                  MIN_SHADING_GAIN, MAX_SHADING_GAIN)
        gain.append(shade(normals))
        skin_colour.append(np.where(seen[:, None], colours * shade(skin_normals)[:, None], np.nan))

    # Blend: a softmax over how squarely each photo sees each vertex (front preferred), times how
    # far the photos may be trusted there; the rest of each texel is the painted fill.
    facing = np.stack(facing)  # [views,V]
    fade = np.clip((facing - MIN_FACING) / (FULL_FACING - MIN_FACING), 0.0, 1.0)
    score = np.where(fade > 0, facing, -np.inf)
    score[0] += FRONT_PREFERENCE
    best = np.max(score, axis=0)
    share = np.exp((score - np.where(np.isfinite(best), best, 0.0)) / BLEND_TEMPERATURE)
    share /= np.maximum(share.sum(0), 1e-12)
    seen = (share * fade).sum(0)
    # The side photos colour the face and its margin; the hairline band beyond, the front photo
    # alone (the side photos see the temples, but the shape there is a guess, and a side photo's
    # hair or skin lands wherever the guess puts it).
    trusted_share = share * np.where(np.arange(len(images))[:, None] == 0, photo_trust(), head.texture_trust)
    coverage = trusted_share.sum(0) * seen
    face_coverage = head.texture_trust * seen

    # The skin tone the fill uses away from the face: the photos' colour, de-lit and blended as the
    # texels are, along the rim of the part they colour; near the face the fill takes the colour
    # of the photographed skin beside it (``spread_skin_colour``).
    spread = fill_spread()
    photographed = photo_colours(images, vertex_xy, share, gain, gains, spread.sources)
    rim = ((face_coverage > RIM_COVERAGE[0]) & (face_coverage < RIM_COVERAGE[1]) & (head.hair < 0.2)
           & (head.hairline < 0.2) & (head.part == 0))
    skin = None
    if rim.sum() >= MIN_RIM_VERTICES:
        skin = np.median(photographed[rim[spread.sources]], axis=0)
    samples = np.stack(skin_colour)
    centre = np.nanmedian(samples.reshape(-1, 3), axis=0) if np.isfinite(samples).any() else None
    if skin is None or not np.isfinite(skin).all():
        skin = centre if centre is not None else np.array([200, 160, 140], np.float32)
    elif centre is not None:
        # The rim is often in the photo's shadow: lean a little toward the cheeks' tone.
        skin = (1 - CENTRE_SHARE) * skin + CENTRE_SHARE * centre
    hair = hair_colour(images[0], landmarks_xy[0], skin)
    iris = iris_colour(images[0], landmarks_xy[0])

    skin_field = spread_skin_colour(spread, photographed, face_coverage[spread.sources], skin)
    fill_colour = np.where(head.fixed[:, None] > 0, head.fixed_colour.astype(np.float32),
                           head.hair[:, None] * hair + (1 - head.hair[:, None]) * skin_field)
    # On the hairline band the fill is the front photo's own colour there, blurred (hair where it
    # shows hair, skin where it shows skin), out to steeper angles than the photos are sampled at
    # (a blurred colour needs less precision): the photo fades into its own colours, then into
    # the painted cap and skin. Where the front photo does not see the band (the temples, down to
    # the ears) and shows the cap's hair beside the face (``temple_hair``), the band takes the
    # colour the photo shows on the band nearby, further off the cap's hair: no bare wedge
    # between the cap and the face. Where it shows skin (or grey hair under a dark hat), the
    # painted fill: spread there, the band's colour would carry a hat's rim or glasses' arms
    # down the temples as dark streaks.
    band = hairline_vertices()
    front_sees = np.clip((facing[0, band] - HAIRLINE_MIN_FACING) / (FULL_FACING - HAIRLINE_MIN_FACING), 0.0, 1.0)
    band_colour = photo_colours(images[:1], vertex_xy[:1], np.ones((1, len(head.part)), np.float32), gain[:1],
                                gains[:1], band, blur_mm=HAIRLINE_BLUR_MM,
                                pixels_per_mm=[face_pixels_per_mm(landmarks_xy[0])])
    temple = temple_hair(images[0], landmarks_xy[0], skin, hair)[(head.positions[band, 0] > 0).astype(int), None]
    hair_beside = spread_band_colour(band_colour, front_sees, np.broadcast_to(hair, band_colour.shape))
    unseen = temple * hair_beside + (1 - temple) * fill_colour[band]
    band_colour += (1 - front_sees)[:, None] * (unseen - band_colour)
    band_weight = head.hairline[band, None]
    fill_colour[band] = (1 - band_weight) * fill_colour[band] + band_weight * band_colour
    fill = np.clip(tmap.coarse(fill_colour * (1 - coverage)[:, None]) + 0.5, 0, 255).astype(np.uint8)
    total = cv2.resize(fill, (size, size), interpolation=cv2.INTER_LINEAR)
    factor = size // tmap.grid
    for k in range(len(images)):
        weight = seen * trusted_share[k] * gain[k]  # in [0, MAX_SHADING_GAIN]
        coarse = tmap.coarse(np.column_stack([vertex_xy[k], weight]), photographed_only=True)
        image = images[k]
        if np.any(np.abs(gains[k] - 1) > 0.01):  # on the photo: it has fewer pixels than its texels
            image = cv2.transform(image, np.diag(gains[k]).astype(np.float32))
        for box in contribution_boxes(coarse[:, :, 2], max(1, BAND_TEXELS // factor)):
            texels = _sample(image, upsample(coarse[:, :, :2], size, box))
            # Weights as uint8 on a 0..2 scale: OpenCV's saturating uint8 arithmetic is several
            # times faster than float, and the rounding stays within a grey level or two.
            blend = cv2.convertScaleAbs(upsample(coarse[:, :, 2:], size, box)[:, :, 0], alpha=BLEND_SCALE)
            cv2.multiply(texels, cv2.cvtColor(blend, cv2.COLOR_GRAY2RGB), dst=texels, scale=1 / BLEND_SCALE)
            x0, y0, x1, y1 = (v * factor for v in box)
            region = total[y0:y1, x0:x1]
            cv2.add(region, texels, dst=region)
    paint_eyes(total, iris)
    return HeadAtlas(total, skin.astype(np.float32), np.asarray(hair, np.float32), np.asarray(iris, np.float32),
                     coverage.astype(np.float32))


def contribution_boxes(weight: np.ndarray, band: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1; coarse texels) that hold every atlas texel a photo's blend weight
    ``weight`` [G,G] (on the coarse grid) gives a share of at least one 8-bit step: the coarse
    texels where it does and their neighbours (the texels between two coarse ones take from both),
    one box per ``band`` rows of coarse texels, as wide as the contribution is within it.

    A photo colours a rounded part of the atlas: one box around all of it holds about half again
    as many texels as the bands do, and sampling the photo is most of the bake's time."""
    used = cv2.dilate((weight * BLEND_SCALE >= 0.5).astype(np.uint8), np.ones((3, 3), np.uint8))
    boxes = []
    for top in range(0, len(used), band):
        rows, cols = np.nonzero(used[top:top + band])
        if len(rows):
            boxes.append((int(cols.min()), top + int(rows.min()), int(cols.max()) + 1, top + int(rows.max()) + 1))
    return boxes


def photo_colours(images: list[np.ndarray], vertex_xy: list[np.ndarray], share: np.ndarray,
                  gain: list[np.ndarray], gains: list[np.ndarray], vertices: np.ndarray,
                  blur_mm: float = 0.0, pixels_per_mm: list[float] | None = None) -> np.ndarray:
    """[K,3] float32: the photos' colour at ``vertices`` as the atlas shows it there (each photo's
    pixel under the vertex, de-lit and colour-matched, blended by ``share``); zero where no photo
    sees the vertex. With ``blur_mm``, each photo is box-blurred over that many millimetres of face
    (``pixels_per_mm`` per photo) around the vertices first: their colour, not a strand's."""
    colours = np.zeros((len(vertices), 3), np.float32)
    for k, image in enumerate(images):
        used = share[k, vertices] > 0
        if not used.any():
            continue
        h, w = image.shape[:2]
        x = np.clip(np.rint(vertex_xy[k][vertices, 0]).astype(int), 0, w - 1)
        y = np.clip(np.rint(vertex_xy[k][vertices, 1]).astype(int), 0, h - 1)
        box = int(round(blur_mm * pixels_per_mm[k])) if blur_mm else 0
        if box > 1:
            # Only the part of the photo under the vertices is blurred.
            x0, y0 = max(0, x[used].min() - box), max(0, y[used].min() - box)
            x1, y1 = min(w, x[used].max() + box + 1), min(h, y[used].max() + box + 1)
            region = cv2.blur(image[y0:y1, x0:x1], (box, box))
            picked = region[np.clip(y - y0, 0, y1 - y0 - 1), np.clip(x - x0, 0, x1 - x0 - 1)]
        else:
            picked = image[y, x]
        colours += (share[k, vertices] * gain[k][vertices])[:, None] * picked * gains[k]
    return colours / np.maximum(share[:, vertices].sum(0), 1e-12)[:, None]


def face_pixels_per_mm(landmarks_xy: np.ndarray) -> float:
    """A photo's pixels per millimetre of face, from its landmarks' forehead-to-chin distance (the
    canonical face's, ``CANONICAL_FACE_HEIGHT_MM``)."""
    return float(np.linalg.norm(landmarks_xy[FOREHEAD_TOP] - landmarks_xy[CHIN])) / CANONICAL_FACE_HEIGHT_MM


@lru_cache(maxsize=1)
def photo_trust() -> np.ndarray:
    """[V] how much the photos may colour each vertex: the face and the margin around it
    (``texture_trust``), and the hairline band (the front photo alone there)."""
    head = head_template()
    return np.maximum(head.texture_trust, head.hairline)


@lru_cache(maxsize=1)
def hairline_vertices() -> np.ndarray:
    return np.nonzero(head_template().hairline > 0)[0]


@dataclass(frozen=True)
class FillSpread:
    """How the photographed skin's colour spreads into the fill (3-D distances on the template):
    the vertices the photos may colour (``sources``) are averaged into nodes about
    ``FILL_NODE_SPACING_M`` apart, and the nodes spread over the skin within ``FILL_REACH_M``
    (``targets``), the nearest counting most: two products of a few hundred columns per avatar
    instead of one vertex-by-vertex one."""

    sources: np.ndarray  # [S] vertex ids (texture trust > 0)
    targets: np.ndarray  # [T] vertex ids: painted skin within reach of a node
    gather: np.ndarray  # [N,S] float32, sources -> nodes, each row over the node's kernel mass on all skin
    scatter: np.ndarray  # [T,N] float32, nodes -> targets (Wendland's kernel, peak 1)
    prior: float  # the overall tone's weight, in the scatter's units


@lru_cache(maxsize=1)
def fill_spread() -> FillSpread:
    """The template's ``FillSpread`` (computed once per process, a few tenths of a second)."""
    head = head_template()
    return node_spread(np.nonzero(head.texture_trust > 0)[0], np.nonzero((head.part == 0) & (head.fixed == 0))[0],
                       FILL_REACH_M)


@lru_cache(maxsize=1)
def hairline_spread() -> FillSpread:
    """How the front photo's colour on the hairline band spreads over the band where the photo
    does not see it (the temples, turned away from the front camera): a ``FillSpread`` from the
    band's vertices to the band, over ``HAIRLINE_REACH_M``."""
    band = hairline_vertices()
    return node_spread(band, band, HAIRLINE_REACH_M)


def node_spread(sources: np.ndarray, spread_over: np.ndarray, reach: float) -> FillSpread:
    """A ``FillSpread`` from the vertices ``sources`` to those of ``spread_over`` within ``reach``
    of them (3-D distances on the template, metres), through nodes ``FILL_NODE_SPACING_M`` apart."""
    p = head_template().positions
    # Nodes: farthest-point samples of the sources, until every source has one within the spacing.
    nodes, nearest = [0], None
    while True:
        d = np.linalg.norm(p[sources] - p[sources[nodes[-1]]], axis=1)
        nearest = d if nearest is None else np.minimum(nearest, d)
        if nearest.max() < FILL_NODE_SPACING_M:
            break
        nodes.append(int(np.argmax(nearest)))
    node_xyz = p[sources[nodes]]

    def distance(points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points[:, None] - node_xyz[None], axis=2)

    local = 2 * FILL_NODE_SPACING_M
    to_nodes = distance(p[spread_over])
    # A node's colour is the mean of the sources around it (the photographed skin); its weight,
    # the share of all it spreads over around it that is a source (so a node on the rim counts
    # for less).
    mass = wendland(to_nodes, local).sum(0)
    gather = (wendland(distance(p[sources]), local) / mass).T
    reached = to_nodes.min(1) < reach
    targets = spread_over[reached]
    scatter = wendland(to_nodes[reached], reach)
    prior = FILL_TONE_PRIOR * float(np.median(scatter.sum(1)))
    return FillSpread(sources, targets, np.ascontiguousarray(gather, np.float32),
                      np.ascontiguousarray(scatter, np.float32), prior)


def skin_likeness(colours: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """[K] in [0, 1]: how much ``colours`` [K,3] look like skin of ``tone`` [3], lit or shaded.

    Judged by chromaticity (colour over brightness) against grey: skin keeps the tone's hue and
    at least part of its saturation (in shade it is as saturated or more); grey or white hair,
    blue clothes, a green background do not. Brightness must stay within a range of the tone's
    (not black glasses frames, not a blown-out highlight). Brown hair passes: it is the hair
    cap's business."""
    total = np.maximum(colours.sum(1), 1.0)
    tone_total = max(float(np.sum(tone)), 1.0)
    off_grey = colours / total[:, None] - 1 / 3
    tone_off_grey = np.asarray(tone, np.float32) / tone_total - 1 / 3
    norm = max(float(tone_off_grey @ tone_off_grey), 1e-6)
    along = off_grey @ tone_off_grey / norm  # 1: as saturated as the tone, in its hue
    across = np.linalg.norm(off_grey - along[:, None] * tone_off_grey, axis=1)
    saturated = np.clip((along - 0.4) / 0.3, 0.0, 1.0)
    bright = (total / tone_total > SKIN_BRIGHTNESS[0]) & (total / tone_total < SKIN_BRIGHTNESS[1])
    return saturated * np.exp(-(across / SKIN_HUE_DISTANCE) ** 2) * bright


def spread_skin_colour(spread: FillSpread, colours: np.ndarray, coverage: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """[V,3] the fill's skin colour: near the photographed skin its own colour there (``colours``
    [S,3] at ``spread.sources``, counted by ``coverage`` [S] and by how skin-like they are, so
    brows, eyes, lips and hair do not spread), fading to ``tone`` further away."""
    skin_like = skin_likeness(colours, tone)
    weight = (coverage * skin_like).astype(np.float32)
    nodes = spread.gather @ np.column_stack([colours * weight[:, None], weight])  # [N,4]
    near = spread.scatter @ nodes
    field = np.empty((len(head_template().positions), 3), np.float32)
    field[:] = tone
    field[spread.targets] = (near[:, :3] + spread.prior * tone) / (near[:, 3:] + spread.prior)
    return field


def spread_band_colour(colours: np.ndarray, seen: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """[B,3] the hairline band's colour spread from where the front photo sees it: ``colours``
    [B,3] on ``hairline_vertices()``, counted by ``seen`` [B]; ``fallback`` [B,3] where no seen
    part of the band is within ``HAIRLINE_REACH_M``."""
    spread = hairline_spread()
    nodes = spread.gather @ np.column_stack([colours * seen[:, None], seen])
    near = spread.scatter @ nodes
    out = fallback.astype(np.float32).copy()
    at = np.searchsorted(spread.sources, spread.targets)
    out[at] = (near[:, :3] + spread.prior * fallback[at]) / (near[:, 3:] + spread.prior)
    return out


def fitted_residual_2d(corrections: np.ndarray) -> np.ndarray:
    """[V,C] the fit's residual field applied to 2-D landmark residuals [468,C] (image pixels, two
    columns per photo), on the vertices the photos may colour (zero elsewhere, where the photos
    are not used)."""
    rows, operator = _trusted_residual()
    out = np.zeros((len(head_template().positions), corrections.shape[1]), np.float32)
    out[rows] = operator @ corrections.astype(np.float32)
    return out


@lru_cache(maxsize=1)
def _trusted_residual() -> tuple[np.ndarray, np.ndarray]:
    from pipeline.head import fitting_operators

    rows = np.nonzero(photo_trust() > 0)[0]
    return rows, np.ascontiguousarray(fitting_operators().residual[rows])


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    # Fixed-point maps (1/32 px) make remap about twice as fast as float maps, invisibly.
    fixed, fraction = cv2.convertMaps(xy, None, cv2.CV_16SC2)
    return cv2.remap(image, fixed, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class EyeLayers:
    """The painted eye disc at one atlas size, as layers that only need the iris colour."""

    box: tuple[int, int, int, int]  # the disc's bounding box in atlas texels (x0, y0, x1, y1)
    colour: np.ndarray  # [h,w,3] uint8: sclera and pupil (under the iris, its dark base)
    iris_box: tuple[int, int, int, int]  # the iris's bounding box within ``box``
    iris_base: np.ndarray  # [ih,iw,3] float32: the colour there without the iris's
    iris_factor: np.ndarray  # [ih,iw,1] float32: the iris colour's factor (a darker rim, a lighter middle, soft edges)
    inside: np.ndarray  # [h,w] float32: the disc's coverage (its edge anti-aliased)
    outside: np.ndarray  # [h,w] float32: 1 - inside


@lru_cache(maxsize=4)
def _eye_layers(size: int) -> EyeLayers:
    """``EyeLayers`` at atlas side ``size`` (the disc is ~a quarter of the atlas's side across:
    painting it whole per avatar, in float, cost 5 ms at 2048²)."""
    cu, cv, radius, iris_r, pupil_r = (float(x) for x in head_template().eye_disc)
    x0, y0 = max(0, int((cu - radius) * size) - 1), max(0, int((cv - radius) * size) - 1)
    x1, y1 = min(size, int(np.ceil((cu + radius) * size)) + 1), min(size, int(np.ceil((cv + radius) * size)) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    distance = np.hypot((xs + 0.5) / size - cu, (ys + 0.5) / size - cv)
    texel = 1.0 / size
    edge = lambda r: np.clip((r - distance) / (1.5 * texel) + 0.5, 0.0, 1.0)[:, :, None]  # noqa: E731
    t = np.clip((distance - pupil_r) / max(iris_r - pupil_r, texel), 0.0, 1.0)[:, :, None]
    iris, pupil = edge(iris_r) * (1 - edge(pupil_r)), edge(pupil_r)
    base = (SCLERA * (1 - edge(iris_r)) + np.array([12, 10, 10], np.float32) * pupil).astype(np.float32)
    factor = (iris * (1.15 - 0.45 * t ** 2)).astype(np.float32)  # lighter near the pupil, a dark limbal ring
    rows, cols = np.nonzero(factor[:, :, 0] > 0)
    ix0, iy0, ix1, iy1 = int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
    inside = np.ascontiguousarray(edge(radius)[:, :, 0], np.float32)
    return EyeLayers((x0, y0, x1, y1), np.clip(base + 0.5, 0, 255).astype(np.uint8), (ix0, iy0, ix1, iy1),
                     base[iy0:iy1, ix0:ix1].copy(), factor[iy0:iy1, ix0:ix1].copy(), inside, 1 - inside)


def paint_eyes(texture: np.ndarray, iris: np.ndarray) -> None:
    """Paint the eye disc (in place): sclera, an iris in ``iris`` colour, a pupil."""
    layers = _eye_layers(texture.shape[0])
    colour = layers.colour.copy()
    ix0, iy0, ix1, iy1 = layers.iris_box
    colour[iy0:iy1, ix0:ix1] = np.clip(layers.iris_base + layers.iris_factor * np.asarray(iris, np.float32) + 0.5,
                                       0, 255).astype(np.uint8)
    x0, y0, x1, y1 = layers.box
    region = texture[y0:y1, x0:x1]
    cv2.blendLinear(colour, region, layers.inside, layers.outside, dst=region)
