"""Procedural NTU-25 skeleton actions: a dataset that needs no download (tests, smoke runs, demos).

Each sample is a forward-kinematics skeleton (Kinect-like camera space: metres, y up, the actor about 3 m in
front of the camera, facing it) performing one of up to 12 parametric actions (:data:`ACTIONS`). Nuisance
factors make it learnable but not trivially separable: body size per subject (x0.85-1.15), tempo
(0.6-1.5 cycles), amplitude (x0.6-1.2), phase, length (40-120 frames), viewpoint yaw (+-0.7 rad) and tilt,
position, idle sway on every limb, a weak secondary action from another class on half the samples, and
Gaussian sensor noise (``noise_std``, default 0.01 m).

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
from macdiff_ray.data.samples import RawSample

ACTIONS = ("wave left arm", "wave right arm", "squat", "kick right leg", "punch right", "jump", "bow",
           "turn around", "raise both arms", "kick left leg", "punch left", "clap")
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


def _motion(action: int, s: np.ndarray, cyc: float, amp: float, ph: float) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Local joint rotations ``{joint: (T, 3, 3)}``, whole-body yaw ``(T,)`` and vertical lift ``(T,)`` for an
    action over normalised time ``s (T,)`` in [0, 1]."""
    osc = np.sin(2 * np.pi * cyc * s + ph)  # (T,)
    env = np.sin(np.pi * s)  # (T,) rise and fall over the sequence
    pulse = np.clip(osc, 0, None)  # (T,) repeated strokes
    rx, rz = (lambda a: _rot(0, a)), (lambda a: _rot(2, a))
    rots: dict[int, np.ndarray] = {}
    yaw, lift = np.zeros_like(s), np.zeros_like(s)
    if action in (0, 1):  # wave: arm raised sideways, forearm swinging
        sh, el, sg = (4, 5, 1) if action == 0 else (8, 9, -1)
        rots[sh] = rz(sg * amp * (2.4 * env))
        rots[el] = rz(sg * amp * 0.7 * osc * env)
    elif action == 2:  # squat
        k = amp * 1.1 * pulse
        for hip, knee in ((12, 13), (16, 17)):
            rots[hip], rots[knee] = rx(k), rx(-2 * k)
        rots[1] = rx(0.3 * k)
    elif action in (3, 9):  # kick
        hip, knee = (16, 17) if action == 3 else (12, 13)
        rots[hip] = rx(amp * 1.3 * pulse ** 2)
        rots[knee] = rx(-amp * 0.8 * (1 - pulse) * env)
    elif action in (4, 10):  # punch: arm raised forward, elbow extends on each stroke
        sh, el = (8, 9) if action == 4 else (4, 5)
        rots[sh] = rx(amp * 1.5 * env)
        rots[el] = rx(amp * 1.6 * (1 - pulse) * env)
    elif action == 5:  # jump
        lift = amp * 0.3 * pulse ** 2
        crouch = amp * 0.5 * (1 - pulse) * env
        for hip, knee in ((12, 13), (16, 17)):
            rots[hip], rots[knee] = rx(crouch), rx(-2 * crouch)
        rots[4], rots[8] = rz(0.8 * pulse), rz(-0.8 * pulse)
    elif action == 6:  # bow
        rots[1] = rx(amp * 1.0 * env)
        rots[20] = rx(amp * 0.3 * env)
    elif action == 7:  # turn around
        yaw = amp * np.pi * (s if ph > np.pi else -s)
        rots[12], rots[16] = rx(0.3 * pulse), rx(0.3 * (1 - pulse))
    elif action == 8:  # raise both arms
        rots[4], rots[8] = rz(amp * 2.7 * env), rz(-amp * 2.7 * env)
    elif action == 11:  # clap: both arms forward, hands meeting
        rots[4], rots[8] = rx(1.3 * env * amp), rx(1.3 * env * amp)
        rots[5], rots[9] = rz(-0.6 * (0.5 + 0.5 * osc) * env), rz(0.6 * (0.5 + 0.5 * osc) * env)
    return rots, yaw, lift


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
    """Sample ``i`` of the synthetic dataset: x float32 ``(1, T, 25, 3)`` metres, T in [40, 120]."""
    label = i % num_classes
    subject = (i // num_classes) % num_subjects + 1
    body = np.random.Generator(np.random.PCG64([seed, 1_000_003, subject]))
    scale = body.uniform(0.85, 1.15)
    rng = np.random.Generator(np.random.PCG64([seed, i]))
    t = int(rng.integers(40, 121))
    s = np.linspace(0.0, 1.0, t)  # (T,)
    local = np.tile(np.eye(3), (t, 25, 1, 1))  # (T, 25, 3, 3)

    def apply(rots: dict[int, np.ndarray]) -> None:
        for j, r in rots.items():
            local[:, j] = local[:, j] @ r

    rots, yaw, lift = _motion(label, s, rng.uniform(0.6, 1.5), rng.uniform(0.6, 1.2), rng.uniform(0, 2 * np.pi))
    apply(rots)
    if rng.random() < 0.5:  # a weak secondary action from another class
        other = int(rng.choice([k for k in range(num_classes) if k != label]))
        r2, y2, l2 = _motion(other, s, rng.uniform(0.6, 1.5), rng.uniform(0.15, 0.3), rng.uniform(0, 2 * np.pi))
        apply(r2)
        yaw, lift = yaw + 0.3 * y2, lift + 0.3 * l2
    for j in (1, 2, 4, 5, 8, 9, 12, 13, 16, 17):  # idle sway on every major joint
        axis = int(rng.integers(0, 3))
        apply({j: _rot(axis, rng.uniform(0.02, 0.12) * np.sin(2 * np.pi * rng.uniform(0.3, 2) * s + rng.uniform(0, 6.3)))})

    pos = _forward_kinematics(local, scale)  # (T, 25, 3)
    pos[..., 1] -= pos[:, [14, 15, 18, 19], 1].min(axis=1, keepdims=True)  # lowest foot joint on the ground
    pos[..., 1] += lift[:, None]
    view = rng.uniform(-0.7, 0.7)
    r = _rot(1, yaw + view) @ _rot(0, np.full(t, rng.uniform(-0.15, 0.15)))  # (T, 3, 3)
    pos = np.einsum("tab,tvb->tva", r, pos)  # (T, 25, 3)
    pos += np.array([rng.uniform(-0.5, 0.5), -1.0, rng.uniform(2.5, 3.5)])  # camera 1 m above the floor
    pos += rng.normal(0.0, noise_std, pos.shape)
    split = "train" if subject % 2 == 1 else "test"
    return RawSample(f"syn{i:06d}", pos.astype(np.float32)[None], label, subject=subject, split=split)


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
