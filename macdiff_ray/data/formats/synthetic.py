"""Procedural NTU-25 coordination actions: a dataset that needs no download (tests, smoke runs, demos).

Each sample is a forward-kinematics skeleton (metres, y up, facing the camera) whose four limbs swing
rhythmically: each arm swings forward and back at the shoulder with the elbow following, each leg at the hip
with the knee following. Every class moves every limb, at the same tempo, with the same distribution of
amplitudes and postures; the classes differ only in the **relative phases** of the four limbs (quarter turns,
e.g. arms in anti-phase with the legs in phase with the opposite arm, as in walking), :data:`PHASES`. So:

- the static pose, the per-joint amount of motion, body size and position carry no label: with a uniform
  global phase every joint's marginal distribution is the same in every class (limbs hang from separate chains,
  and nothing couples them, not even ground contact);
- what separates the classes is how joints move *together over time* (velocity correlations, who leads whom),
  which is what a masked-prediction encoder must model to fill in hidden joints, and what a random-init
  encoder's linear probe cannot read off easily (tests/test_synthetic.py measures both).

Nuisances, all independent of the class: body size per subject (x0.85-1.15), tempo (2-4 cycles per sequence,
with a mild time warp), global phase, per-limb amplitude and static posture, length (32-64 frames), viewpoint
yaw (+-0.7 rad) and tilt, idle sway of the spine, and Gaussian sensor noise (``noise_std``, default 0.01 m).
Each sequence is centred on the spine-middle joint of its first frame, as the NTU reader does (issue 14: the
previous generator sat 2.95 m from the origin, so random rotations swung bodies by about 0.9 m).

Options: ``num_samples`` (default 240), ``num_classes`` (2-12, default 10), ``seed`` (default 0),
``num_subjects`` (default 10). Sample ``i`` has label ``i % num_classes`` and subject
``(i // num_classes) % num_subjects + 1``; benchmark ``synthetic`` trains on odd subjects (the ``split``
column holds the same split for ``custom``). Sample ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec
from macdiff_ray.data.layouts import NTU25
from macdiff_ray.data.samples import RawSample, center_on_joint

CHUNK = 256  # samples per virtual input "file"
_DEFAULTS = {"num_samples": 240, "num_classes": 10, "seed": 0, "num_subjects": 10, "noise_std": 0.01}

# Rest offsets (metres, body scale 1) of each joint from its parent, body frame: +x = actor's left, y up,
# -z = forward (towards the camera).
_OFFSETS = np.zeros((25, 3))
for _j, _o in {
    1: (0, 0.25, 0), 20: (0, 0.25, 0), 2: (0, 0.08, 0), 3: (0, 0.15, 0),
    4: (0.18, -0.02, 0), 5: (0, -0.28, 0), 6: (0, -0.25, 0), 7: (0, -0.08, 0), 21: (0, -0.06, 0),
    22: (0.02, -0.03, -0.03),
    12: (0.10, -0.05, 0), 13: (0, -0.42, 0), 14: (0, -0.42, 0), 15: (0, -0.05, -0.10),
}.items():
    _OFFSETS[_j] = _o
for _l, _r in ((4, 8), (5, 9), (6, 10), (7, 11), (21, 23), (22, 24), (12, 16), (13, 17), (14, 18), (15, 19)):
    _OFFSETS[_r] = _OFFSETS[_l] * (-1, 1, 1)

# The four oscillating limbs: (name, proximal joint swung about x, distal joint that follows).
LIMBS = (("left_arm", 4, 5), ("right_arm", 8, 9), ("left_leg", 12, 13), ("right_leg", 16, 17))


def _class_phases(k: int = 12) -> np.ndarray:
    """``(k, 4)`` quarter-turn phase codes, left arm fixed at 0: greedy farthest-point choice among the 64 codes,
    in the distance ``sum_limbs |exp(i theta) - exp(i theta')|^2``, starting from "all limbs in phase"."""
    codes = np.array([(0, a, b, c) for a in range(4) for b in range(4) for c in range(4)])  # (64, 4)
    z = np.exp(0.5j * np.pi * codes)  # (64, 4)
    d = (np.abs(z[:, None] - z[None]) ** 2).sum(-1)  # (64, 64)
    chosen = [0]
    while len(chosen) < k:
        chosen.append(int(np.argmax(d[:, chosen].min(axis=1))))  # first maximiser: deterministic
    return codes[chosen]


PHASES: np.ndarray = _class_phases()  # (12, 4): quarter turns of (left arm, right arm, left leg, right leg)
ACTIONS = tuple("phase " + "".join(str(q) for q in code) for code in PHASES)  # class names, e.g. "phase 0202"
_PARENTS = NTU25.parents
_ORDER: list[int] = []  # topological order (parents first)
while len(_ORDER) < 25:
    _ORDER += [j for j in range(25) if j not in _ORDER and (_PARENTS[j] == -1 or _PARENTS[j] in _ORDER)]


def _rot(axis: int, a: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(T, 3, 3)`` about x (0), y (1) or z (2) by angles ``a (T,)``."""
    c, s = np.cos(a), np.sin(a)
    r = np.zeros(a.shape + (3, 3))
    i, k = [(1, 2), (2, 0), (0, 1)][axis]
    r[..., axis, axis] = 1
    r[..., i, i], r[..., k, k], r[..., i, k], r[..., k, i] = c, c, -s, s
    return r


def _forward_kinematics(local: np.ndarray, scale: float) -> np.ndarray:
    """Joint positions ``(T, 25, 3)`` from local rotations ``(T, 25, 3, 3)`` (root at the origin)."""
    t = local.shape[0]
    glob = np.zeros_like(local)  # (T, 25, 3, 3)
    pos = np.zeros((t, 25, 3))  # (T, 25, 3)
    for j in _ORDER:
        p = _PARENTS[j]
        if p < 0:
            glob[:, j] = local[:, j]
            continue
        pos[:, j] = pos[:, p] + np.einsum("tab,b->ta", glob[:, p], _OFFSETS[j] * scale)  # (T, 3)
        glob[:, j] = glob[:, p] @ local[:, j]
    return pos


def generate_sample(i: int, seed: int, num_classes: int, num_subjects: int, noise_std: float) -> RawSample:
    """Sample ``i`` of the synthetic dataset: x float32 ``(1, T, 25, 3)`` metres, T in [32, 64], centred."""
    label = i % num_classes
    subject = (i // num_classes) % num_subjects + 1
    body = np.random.Generator(np.random.PCG64([seed, 1_000_003, subject]))
    scale = body.uniform(0.85, 1.15)
    rng = np.random.Generator(np.random.PCG64([seed, i]))
    t = int(rng.integers(32, 65))
    s = np.linspace(0.0, 1.0, t)  # (T,)
    warp = 0.04 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * s + rng.uniform(0, 2 * np.pi))  # (T,) tempo drift
    phase = 2 * np.pi * rng.uniform(2.0, 4.0) * (s + warp) + rng.uniform(0, 2 * np.pi)  # (T,) shared clock
    local = np.tile(np.eye(3), (t, 25, 1, 1))  # (T, 25, 3, 3)
    rx, ry, rz = (lambda a: _rot(0, a)), (lambda a: _rot(1, a)), (lambda a: _rot(2, a))

    def apply(j: int, r: np.ndarray) -> None:
        local[:, j] = local[:, j] @ r

    for (name, prox, dist), q in zip(LIMBS, PHASES[label]):
        ph = phase + 0.5 * np.pi * q  # (T,) this limb's phase: the only class-dependent quantity
        arm = name.endswith("arm")
        side = 1.0 if name.startswith("left") else -1.0
        swing = rng.uniform(0.35, 0.8) if arm else rng.uniform(0.25, 0.55)  # rad
        follow = rng.uniform(0.2, 0.6)  # distal flexion amplitude, rad
        lag = rng.uniform(0.3, 0.9)  # the distal joint trails the proximal one, rad
        abduct = side * (rng.uniform(0.05, 0.6) if arm else rng.uniform(0.0, 0.15))  # static posture, rad
        apply(prox, rz(np.full(t, abduct)) @ rx(swing * np.sin(ph)))
        bend = follow * 0.5 * (1 + np.sin(ph - lag))  # (T,) flexes one way only
        apply(dist, rx(bend) if arm else rx(-bend))  # rx(+a) turns a hanging segment forward (-z): elbow
        # flexion brings the forearm forward, knee flexion the shank back
    for j in (1, 20, 2):  # idle sway of the spine and neck, class-independent
        axis = int(rng.integers(0, 3))
        apply(j, _rot(axis, rng.uniform(0.01, 0.06) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * s
                                                             + rng.uniform(0, 2 * np.pi))))
    pos = _forward_kinematics(local, scale)  # (T, 25, 3), root (spine_base) at the origin
    r = ry(np.full(t, rng.uniform(-0.7, 0.7))) @ rx(np.full(t, rng.uniform(-0.15, 0.15)))  # (T, 3, 3) viewpoint
    pos = np.einsum("tab,tvb->tva", r, pos)  # (T, 25, 3)
    pos += rng.normal(0.0, noise_std, pos.shape)
    x = center_on_joint(pos.astype(np.float32)[None], NTU25.center_joint)  # (1, T, 25, 3) spine_mid of frame 0
    split = "train" if subject % 2 == 1 else "test"
    return RawSample(f"syn{i:06d}", x, label, subject=subject, split=split)


def _opts(options: dict) -> dict:
    o = dict(_DEFAULTS)
    o.update(options)
    for k in ("num_samples", "num_classes", "seed", "num_subjects"):
        if isinstance(o[k], bool) or not isinstance(o[k], (int, np.integer)):
            raise ValueError(f"synthetic option {k} must be an integer, got {o[k]!r}")
    if not 2 <= o["num_classes"] <= len(ACTIONS):
        raise ValueError(f"synthetic option num_classes must be in [2, {len(ACTIONS)}], got {o['num_classes']}")
    if o["num_samples"] < 2 * o["num_classes"]:
        raise ValueError(f"synthetic option num_samples must be >= 2 * num_classes, got {o['num_samples']}")
    if o["num_subjects"] < 2 or o["seed"] < 0:
        raise ValueError(f"synthetic options need num_subjects >= 2 and seed >= 0, got {o}")
    if not isinstance(o["noise_std"], (int, float)) or o["noise_std"] < 0:
        raise ValueError(f"synthetic option noise_std must be a number >= 0, got {o['noise_std']!r}")
    return o


def list_inputs(input_path: Path | None, options: dict) -> tuple[list[Path], list[dict]]:
    n = _opts(options)["num_samples"]
    return [Path(f"synthetic/chunk-{k:05d}") for k in range((n + CHUNK - 1) // CHUNK)], []


def read(path: Path, options: dict) -> list[RawSample]:
    o = _opts(options)
    k = int(Path(path).name.split("-")[1])
    stop = min(o["num_samples"], (k + 1) * CHUNK)
    return [generate_sample(i, o["seed"], o["num_classes"], o["num_subjects"], float(o["noise_std"]))
            for i in range(k * CHUNK, stop)]


SYNTHETIC_FORMAT = FormatSpec(
    name="synthetic",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "synthetic",
    layout=NTU25,
    num_classes=None,
    max_persons=1,
    option_names=frozenset(_DEFAULTS),
)
