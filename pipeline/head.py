"""The whole head: the template (``models/head_template.npz``) fitted to the fused landmarks.

Everything here is in the canonical face frame: metres, +Y up, the face toward +Z, +X the
subject's left. Per avatar the fit is a handful of small matrix products, because everything that
does not depend on the photo is computed once per process (``fitting_operators``):

1. **Pose.** A similarity takes the template's landmarks onto the fused ones (rigid landmarks);
   the fused landmarks are brought into the template's frame with its inverse.
2. **Identity and expression.** What the landmarks still differ by is explained, in one bounded
   least-squares solve, by the template's identity components (regularised) and the 52 ARKit
   targets' landmark offsets (weights in [0, 1], a small cost per unit of weight, so an
   expression is only used where the landmarks need it).
3. **Residual.** What is left at the landmarks is spread over the skin by a compactly supported
   radial basis function (Wendland's C2 kernel, ``RESIDUAL_RADIUS_M``): the face meets its
   landmarks, the skull, ears and neck away from the face keep the template's shape. Eyeballs,
   teeth and tongue move with the field at their centre, rigidly.
4. **Rest shape and morph targets.** The rest shape holds identity and residual but no
   expression; the expression is the mesh's default morph weights. The ARKit targets are carried
   onto the fitted head through each vertex's deformation gradient (Sumner and Popović's
   per-triangle frames, averaged at the vertices), so a wider mouth smiles wider.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models import load_head_template, load_topology
from pipeline.glb import vertex_normals
from pipeline.mesh import Pose, fit_similarity

SKIN, EYE_RIGHT, EYE_LEFT, TEETH_UPPER, TEETH_LOWER, TONGUE = range(6)
EYES = (EYE_RIGHT, EYE_LEFT)

# Support radius of the residual's kernel (metres): a landmark's residual fades to nothing this
# far away, so the back of the head never moves with the face's noise.
RESIDUAL_RADIUS_M = 0.06
# Kernel regularisation: the larger, the smoother the residual and the less exactly the landmarks
# are met (1e-3: ~0.3 mm rms left at the landmarks on real photos).
RESIDUAL_SMOOTHING = 1e-3
# The most a morph target is stretched or shrunk when carried onto a fitted head.
MAX_TRANSFER_STRETCH = 1.5
# How far from an eyeball's surface the lids it moves with may be (metres; see ``eye_anchors``).
ANCHOR_REACH_M = 0.0015
# Landmark noise against the identity prior and the price of expression (both in metres² per
# unit): an identity coefficient is a standard deviation of hm08's shape targets.
LANDMARK_NOISE_M = 0.0015
IDENTITY_PRIOR_SD = 3.0
EXPRESSION_COST = 20.0
EXPRESSION_SMOOTHING = 0.02
# The face outline is where the landmark model is least sure: its landmarks count less.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
FACE_OVAL_WEIGHT = 0.3
SOLVER_ITERATIONS = 200
# Weights this small are reported as 0 (a rest shape does not need a 1% smile).
MIN_EXPRESSION_WEIGHT = 0.02


@dataclass(frozen=True)
class HeadTemplate:
    """The template's arrays (see models/MODEL_CARD.md) with float32 offsets, read-only."""

    positions: np.ndarray  # [V,3]
    uvs: np.ndarray  # [V,2] glTF orientation
    triangles: np.ndarray  # [F,3]
    weld: np.ndarray  # [V] the vertex that stands for every copy of a point split at UV seams
    part: np.ndarray  # [V] SKIN, EYE_RIGHT, ... TONGUE
    landmark_vertices: np.ndarray  # [468,3] the corners of the triangle each landmark lies on
    landmark_weights: np.ndarray  # [468,3] its barycentric weights
    identity_landmarks: np.ndarray  # [K,468,3]
    identity_offsets: np.ndarray  # [K,V,3]
    morph_names: tuple[str, ...]
    morph_start: np.ndarray  # [T+1]
    morph_vertex: np.ndarray  # [N]
    morph_offset: np.ndarray  # [N,3]
    texture_trust: np.ndarray  # [V]
    hair: np.ndarray  # [V]
    hairline: np.ndarray  # [V] the band above the face where the photos show the hairline
    fixed: np.ndarray  # [V]
    fixed_colour: np.ndarray  # [V,3] uint8
    eye_disc: np.ndarray  # [5] centre u, v, radius, iris radius, pupil radius (atlas units)
    ear: np.ndarray  # [V] how rigidly each vertex moves with its ear (+ left, - right)

    def landmarks_of(self, positions: np.ndarray) -> np.ndarray:
        """[468,3] where the landmarks lie on a mesh with this template's topology."""
        return (positions[self.landmark_vertices] * self.landmark_weights[:, :, None]).sum(1)

    def morph(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertex ids and offsets [n,3] of one ARKit target."""
        lo, hi = self.morph_start[index], self.morph_start[index + 1]
        return self.morph_vertex[lo:hi], self.morph_offset[lo:hi]


@lru_cache(maxsize=1)
def head_template() -> HeadTemplate:
    raw = load_head_template()
    triangles = raw["triangles"]
    corners = triangles[raw["landmark_triangle"]]
    return HeadTemplate(
        positions=raw["positions"].astype(np.float64), uvs=raw["uvs"], triangles=triangles, weld=raw["weld"],
        part=raw["part"], landmark_vertices=corners, landmark_weights=raw["landmark_bary"].astype(np.float64),
        identity_landmarks=raw["identity_landmarks"].astype(np.float64),
        identity_offsets=raw["identity_offsets"].astype(np.float32),
        morph_names=tuple(str(n) for n in raw["morph_names"]), morph_start=raw["morph_start"],
        morph_vertex=raw["morph_vertex"], morph_offset=raw["morph_offset"].astype(np.float32),
        texture_trust=raw["texture_trust"].astype(np.float32), hair=raw["hair"].astype(np.float32),
        hairline=raw["hairline"].astype(np.float32),
        fixed=raw["fixed"].astype(np.float32), fixed_colour=raw["fixed_colour"], eye_disc=raw["eye_disc"],
        ear=raw["ear"].astype(np.float64))


def wendland(distance: np.ndarray, radius: float) -> np.ndarray:
    """Wendland's C2 kernel: positive definite in 3-D, zero beyond ``radius``."""
    q = np.clip(distance / radius, 0.0, 1.0)
    return (1 - q) ** 4 * (4 * q + 1)


def eye_anchors(positions: np.ndarray, part: np.ndarray) -> dict[int, np.ndarray]:
    """Per eyeball, the skin it moves with: its lid margins and the inside of the lids, which lie
    on its front within ``ANCHOR_REACH_M`` of its surface (so the lids keep covering it)."""
    skin = np.nonzero(part == SKIN)[0]
    anchors: dict[int, np.ndarray] = {}
    for eye in EYES:
        members = positions[part == eye]
        if len(members):
            centre = members.mean(0)
            radius = np.linalg.norm(members - centre, axis=1).mean()
            gap = np.abs(np.linalg.norm(positions[skin] - centre, axis=1) - radius)
            anchors[eye] = skin[(gap < ANCHOR_REACH_M) & (positions[skin, 2] > centre[2] + 0.3 * radius)]
    return anchors


def residual_operator(positions: np.ndarray, part: np.ndarray, landmarks: np.ndarray,
                      ear: np.ndarray | None = None) -> np.ndarray:
    """[V,468] float32: landmark residuals [468,3] -> displacement of every vertex [V,3].

    A Wendland RBF centred on ``landmarks`` (the template's, metres), regularised by
    ``RESIDUAL_SMOOTHING``. Teeth and tongue follow the field like the lips around them; an
    eyeball moves, as a whole, with the mean displacement of its lids (``eye_anchors``); an ear
    (``ear``: [V] stiffness, + on the left ear, - on the right) moves with the field's mean over
    it, blending into the field at its base, so the field cannot shear and fold it.
    (A second, 2 cm kernel for what the wide one leaves was tried: the landmarks' rms moved by
    under 0.05 mm, what is left being lip points that sit together on the template but apart in
    the photo, which no smooth field separates.)
    """
    kernel = wendland(np.linalg.norm(landmarks[:, None] - landmarks[None], axis=2), RESIDUAL_RADIUS_M)
    solve = np.linalg.inv(kernel + RESIDUAL_SMOOTHING * np.eye(len(landmarks)))
    evaluate = wendland(np.linalg.norm(positions[:, None] - landmarks[None], axis=2), RESIDUAL_RADIUS_M)
    operator = evaluate @ solve
    for eye, anchor in eye_anchors(positions, part).items():
        operator[part == eye] = operator[anchor].mean(0)
    if ear is not None:
        for side in (1.0, -1.0):
            stiffness = np.clip(ear * side, 0.0, 1.0)
            whole = operator[stiffness >= 0.999].mean(0)
            moved = stiffness > 0
            operator[moved] = (1 - stiffness[moved, None]) * operator[moved] + stiffness[moved, None] * whole
    return operator.astype(np.float32)


class RegionalTransfer:
    """Carries sparse morph targets onto a reshaped head: each target's offsets are multiplied by
    the linear part of the affine map that best takes the target's region from the rest shape to
    the reshaped one (each vertex weighted by how far the target moves it), its stretches clipped
    to [1 / MAX_TRANSFER_STRETCH, MAX_TRANSFER_STRETCH]. One map per region, not a per-vertex
    gradient that would follow every wrinkle of the fit: a wider mouth smiles wider, smoothly.
    Eyeball offsets (the eyes turning) are kept as they are.

    Everything that depends on the rest shape alone is computed here, once: per target the
    weighted centre and the inverse of the weighted second moment of its region.
    """

    def __init__(self, rest: np.ndarray, starts: np.ndarray, vertices: np.ndarray, offsets: np.ndarray,
                 keep: np.ndarray):
        self.starts, self.vertices, self.offsets = starts, vertices, offsets.astype(np.float32)
        self.segment = starts[:-1]
        self.keep = keep[vertices]
        weight = np.linalg.norm(offsets, axis=1).astype(np.float64)
        total = np.add.reduceat(weight, self.segment)
        x = rest[vertices]
        mean = np.add.reduceat(weight[:, None] * x, self.segment) / total[:, None]
        owner = np.repeat(np.arange(len(self.segment)), np.diff(starts))
        centred = x - mean[owner]
        moment = np.add.reduceat((weight[:, None, None] * centred[:, :, None] * centred[:, None, :]).reshape(-1, 9),
                                 self.segment).reshape(-1, 3, 3)
        ridge = np.trace(moment, axis1=1, axis2=2)[:, None, None] * 1e-3 * np.eye(3)
        self.moment_inverse = np.linalg.inv(moment + ridge)
        self.owner = owner
        # sum w (y - ȳ)(x - x̄)ᵀ = sum y (w (x - x̄))ᵀ, since the weighted centred x sum to zero: one
        # [V,3]ᵀ @ [V, 3T] product gives every target's cross moment.
        self.weighted_centred = np.zeros((len(rest), 3 * len(self.segment)), np.float32)
        columns = 3 * owner[:, None] + np.arange(3)
        np.add.at(self.weighted_centred, (np.repeat(vertices, 3), columns.ravel()),
                  (weight[:, None] * centred).ravel())

    def maps(self, deformed: np.ndarray) -> np.ndarray:
        """[T,3,3] each target's linear map from the rest shape to ``deformed``."""
        cross = np.asarray(deformed, np.float32).T @ self.weighted_centred  # [3, 3T]
        cross = cross.reshape(3, -1, 3).transpose(1, 0, 2)
        maps = cross.astype(np.float64) @ self.moment_inverse
        u, stretch, vt = np.linalg.svd(maps)
        stretch = np.clip(stretch, 1 / MAX_TRANSFER_STRETCH, MAX_TRANSFER_STRETCH)
        return (u * stretch[:, None, :]) @ vt

    def carry(self, deformed: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """[N,3] all targets' offsets carried onto ``deformed``, then turned by ``frame`` [3,3]."""
        linear = (frame @ self.maps(deformed)).astype(np.float32)  # per target: the frame after the map
        carried = np.einsum("nij,nj->ni", linear[self.owner], self.offsets)
        carried[self.keep] = self.offsets[self.keep] @ frame.T.astype(np.float32)
        return carried


@dataclass(frozen=True)
class FittingOperators:
    """What the fit needs that does not depend on the photo (built once per process)."""

    template_landmarks: np.ndarray  # [468,3]
    landmark_weight: np.ndarray  # [468] how much each landmark counts
    expression_landmarks: np.ndarray  # [T,468,3] each ARKit target's landmark offsets
    design: np.ndarray  # [1404, K+T] identity then expression columns
    hessian: np.ndarray  # [K+T, K+T] of the regularised least-squares cost, Jacobi-scaled
    unscale: np.ndarray  # [K+T] 1 / sqrt(diag(hessian)): the scaled unknowns times this are the weights
    linear: np.ndarray  # [K+T] constant part of its gradient (the expression cost)
    step: float  # 1 / the scaled hessian's largest eigenvalue
    residual: np.ndarray  # [V,468] float32 (``residual_operator``)
    identity_offsets: np.ndarray  # [V*3, K] float32, for one matrix-vector product
    transfer: RegionalTransfer


def landmark_weights() -> np.ndarray:
    """[468] how much each landmark counts in the fit (the face outline less)."""
    weight = np.ones(468)
    weight[list(FACE_OVAL)] = FACE_OVAL_WEIGHT
    return weight


@lru_cache(maxsize=1)
def fitting_operators() -> FittingOperators:
    head = head_template()
    p0 = head.positions
    landmarks = head.landmarks_of(p0)
    weight = landmark_weights()
    expression = np.stack([_landmark_offsets(head, *head.morph(k)) for k in range(len(head.morph_names))])
    k_id, k_ex = len(head.identity_landmarks), len(expression)
    design = np.concatenate([head.identity_landmarks.reshape(k_id, -1), expression.reshape(k_ex, -1)]).T
    w3 = np.repeat(weight, 3)
    hessian = design.T @ (design * w3[:, None]) / LANDMARK_NOISE_M ** 2
    hessian[np.arange(k_id), np.arange(k_id)] += 1.0 / IDENTITY_PRIOR_SD ** 2
    hessian[np.arange(k_id, k_id + k_ex), np.arange(k_id, k_id + k_ex)] += EXPRESSION_SMOOTHING
    linear = np.concatenate([np.zeros(k_id), np.full(k_ex, EXPRESSION_COST)])
    # Identity and expression unknowns differ in scale by orders of magnitude (condition number
    # ~2e7): scaled by the diagonal, the bounded solver converges in a couple of hundred steps.
    unscale = 1.0 / np.sqrt(np.diag(hessian))
    hessian = hessian * unscale[:, None] * unscale[None, :]
    step = 1.0 / float(np.linalg.eigvalsh(hessian)[-1])
    return FittingOperators(
        landmarks, weight, expression, design, hessian, unscale, linear, step,
        residual_operator(p0, head.part, landmarks, head.ear),
        np.ascontiguousarray(head.identity_offsets.reshape(k_id, -1).T),
        RegionalTransfer(p0, head.morph_start, head.morph_vertex, head.morph_offset, np.isin(head.part, EYES)))


def _landmark_offsets(head: HeadTemplate, vertices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    dense = np.zeros_like(head.positions)
    dense[vertices] = offsets
    return head.landmarks_of(dense)


def solve_bounded(hessian: np.ndarray, gradient_at_zero: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                  step: float, iterations: int = SOLVER_ITERATIONS) -> np.ndarray:
    """argmin ½xᵀHx + gᵀx subject to lower ≤ x ≤ upper, by accelerated projected gradient (FISTA)."""
    x = np.clip(np.zeros_like(gradient_at_zero), lower, upper)
    y, t = x.copy(), 1.0
    shift = step * gradient_at_zero
    descent = np.eye(len(x)) - step * hessian  # y - step (H y + g) = descent @ y - shift
    for _ in range(iterations):
        x_next = descent @ y
        x_next -= shift
        np.maximum(x_next, lower, out=x_next)
        np.minimum(x_next, upper, out=x_next)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x_next + ((t - 1) / t_next) * (x_next - x)
        x, t = x_next, t_next
    return x


@dataclass(frozen=True)
class FittedHead:
    """The head fitted to one subject (canonical frame, metres)."""

    rest_positions: np.ndarray  # [V,3] float32, neutral: identity and residual, no expression
    expression_weights: np.ndarray  # [T] the photo's expression as ARKit weights in [0,1]
    morph_names: tuple[str, ...]
    morph_start: np.ndarray  # [T+1] where each target's entries start in the two arrays below
    morph_vertex: np.ndarray  # [N] vertex ids, ascending within each target
    morph_offset: np.ndarray  # [N,3] float32 offsets on the fitted head
    pose: Pose  # template frame -> canonical frame
    landmark_rms_mm: float  # fitted landmarks (rest shape + default weights) vs the fused ones
    identity: np.ndarray  # [K] identity coefficients (standard deviations)

    def morph(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertex ids and offsets [n,3] of one target on the fitted head."""
        lo, hi = self.morph_start[index], self.morph_start[index + 1]
        return self.morph_vertex[lo:hi], self.morph_offset[lo:hi]

    @property
    def morph_targets(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """ARKit name -> (vertex ids, offsets), sparse."""
        return {name: self.morph(k) for k, name in enumerate(self.morph_names)}

    def posed(self, weights: dict[str, float] | None = None) -> np.ndarray:
        """[V,3] the rest shape with morph weights applied (default: the photo's expression)."""
        if weights is None:
            weights = dict(zip(self.morph_names, self.expression_weights))
        out = self.rest_positions.astype(np.float32)
        for name, weight in weights.items():
            if weight:
                vertices, offsets = self.morph(self.morph_names.index(name))
                out[vertices] += np.float32(weight) * offsets
        return out

    @property
    def posed_positions(self) -> np.ndarray:
        """The rest shape with the default weights applied: what the GLB shows at first."""
        return self.posed()


def fit_head(landmarks_canonical_m: np.ndarray) -> FittedHead:
    """The template fitted to ``landmarks_canonical_m`` [468,3] (the fused face, metres)."""
    head = head_template()
    ops = fitting_operators()
    target = np.asarray(landmarks_canonical_m, np.float64)
    topo = load_topology()
    ids = topo.procrustes_ids
    pose = fit_similarity(ops.template_landmarks[ids], target[ids], topo.procrustes_weights.astype(np.float64))
    in_template = ((target - pose.translation) @ pose.rotation) / pose.scale
    residual0 = (in_template - ops.template_landmarks).ravel()
    w3 = np.repeat(ops.landmark_weight, 3)
    gradient = -(ops.design.T @ (residual0 * w3)) / LANDMARK_NOISE_M ** 2 + ops.linear
    k_id = len(head.identity_landmarks)
    k_ex = len(head.morph_names)
    lower = np.concatenate([np.full(k_id, -3.0), np.zeros(k_ex)])
    upper = np.concatenate([np.full(k_id, 3.0), np.ones(k_ex)])
    scaled = solve_bounded(ops.hessian, gradient * ops.unscale, lower / ops.unscale, upper / ops.unscale, ops.step)
    solution = scaled * ops.unscale
    identity, weights = solution[:k_id], solution[k_id:]
    weights = np.where(weights < MIN_EXPRESSION_WEIGHT, 0.0, weights)

    shaped = head.positions + (ops.identity_offsets @ identity.astype(np.float32)).reshape(-1, 3)
    explained = ops.template_landmarks + np.tensordot(identity, head.identity_landmarks, axes=1) \
        + np.tensordot(weights, ops.expression_landmarks, axes=1)
    rest_template = shaped + ops.residual @ (in_template - explained).astype(np.float32)
    to_canonical = pose.scale * pose.rotation
    rest = (rest_template @ to_canonical.T + pose.translation).astype(np.float32)
    carried = ops.transfer.carry(rest_template, to_canonical)
    close_the_lids(head, rest, carried)
    fitted = FittedHead(rest, weights, head.morph_names, head.morph_start, head.morph_vertex, carried, pose,
                        0.0, identity)
    # The landmarks of what the GLB shows first (rest shape + default weights) against the fused ones.
    shown = head.landmarks_of(fitted.posed().astype(np.float64))
    rms = float(np.sqrt(((shown - target) ** 2).sum(1).mean()) * 1000)
    return FittedHead(rest, weights, head.morph_names, head.morph_start, head.morph_vertex, carried, pose,
                      round(rms, 3), identity)


# Upper and lower lid landmarks, paired across each eye (MediaPipe's eye contours).
LID_PAIRS = {"eyeBlinkRight": ((159, 145), (158, 153), (160, 144)),
             "eyeBlinkLeft": ((386, 374), (385, 380), (387, 373))}


def close_the_lids(head: HeadTemplate, rest: np.ndarray, offsets: np.ndarray) -> None:
    """Scale each eye's blink target (in place, in ``offsets``) so that at weight 1 it closes the
    fitted head's lids exactly: the fit gives every subject their own lid opening, which the
    carried target would otherwise leave a slit of or push the lids through each other."""
    rest_landmarks = head.landmarks_of(rest.astype(np.float64))
    for name, pairs in LID_PAIRS.items():
        index = head.morph_names.index(name)
        lo, hi = head.morph_start[index], head.morph_start[index + 1]
        moved = np.zeros_like(rest, dtype=np.float64)
        moved[head.morph_vertex[lo:hi]] = offsets[lo:hi]
        shift = head.landmarks_of(moved)
        upper, lower = (np.array(ids) for ids in zip(*pairs))
        gap = rest_landmarks[upper] - rest_landmarks[lower]
        closing = ((shift[lower] - shift[upper]) * gap).sum(1) / np.maximum((gap * gap).sum(1), 1e-12)
        travel = float(np.mean(closing))  # share of the opening the target closes at weight 1
        if travel > 0.1:
            offsets[lo:hi] *= np.float32(np.clip(1.0 / travel, 0.5, 2.5))


def head_normals(positions: np.ndarray) -> np.ndarray:
    """[V,3] smooth unit normals, equal on every copy of a vertex split at a UV seam."""
    head = head_template()
    welded = vertex_normals(positions, head.weld[head.triangles])
    return welded[head.weld]
