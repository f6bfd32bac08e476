"""Procedural NTU-25 gesture sequences: a dataset that needs no download (tests, smoke runs, demos).

Each sample is a forward-kinematics skeleton (metres, y up, facing the camera) that performs the same four
gestures, :data:`GESTURES`, once each: the left arm raised forward, the right arm raised sideways, the left knee
raised, and a bow of the trunk. Each gesture rises and falls smoothly within its own time slot. The classes
differ only in the **order** of the four gestures, :data:`ORDERS` (e.g. left arm, bow, right arm, left knee). So:

- the static pose, the per-joint amount of motion, body size and position carry no label: every class makes the
  same four movements for the same (random) durations, so the mean pose and every joint's marginal distribution
  over the sequence are the same in every class;
- what separates the classes is when joints move relative to each other, which a masked-prediction encoder must
  model to fill in hidden frames, and which a random-init encoder's time-pooled per-joint features do not keep:
  its linear probe stays near chance (tests/test_synthetic.py). On a prototype of this generator (600 sequences,
  8 classes, chance 12.5%), the ``tiny`` preset pretrained 300 epochs at 32 frames through the framework-free loop
  lifted the per-joint probe from 15.9% (its own init) to 62.5% (150 epochs: 29.7%); the quickstart's figures are
  in the README.

The generator of the sixth session made the classes differ in the relative phases of four rhythmically swinging
limbs; pretraining did not learn those at any budget tried (14.9% against 11.8% after 300 epochs).

Nuisances, all independent of the class: body size per subject (x0.85-1.15), gesture amplitudes, slot durations
and the pauses between them, static posture of the limbs, length (40-64 frames), viewpoint yaw (+-0.7 rad) and
tilt, idle sway of the spine, and Gaussian sensor noise (``noise_std``, default 0.01 m). Each sequence is centred
on the spine-middle joint of its first frame, as the NTU reader does (issue 14: the generator before it sat 2.95 m
from the origin, so random rotations swung bodies by about 0.9 m).

Options: ``num_samples`` (default 240), ``num_classes`` (2-12, default 10), ``seed`` (default 0),
``num_subjects`` (default 10). Sample ``i`` has label ``i % num_classes`` and subject
``(i // num_classes) % num_subjects + 1``; benchmark ``synthetic`` trains on odd subjects (the ``split``
column holds the same split for ``custom``). Sample ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import itertools
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

# The four gestures, in the index order of ORDERS' entries.
GESTURES = ("left arm forward", "right arm sideways", "left knee up", "bow")
MIN_FRAMES, MAX_FRAMES = 40, 64


def _class_orders(k: int = 12) -> np.ndarray:
    """``(k, 4)`` orders of the four gestures (each row a permutation of 0..3): greedy farthest-point choice among
    the 24 permutations, in the distance ``sum_g |slot(g) - slot'(g)|``, starting from the order of GESTURES."""
    perms = np.array(list(itertools.permutations(range(4))))  # (24, 4) gesture per slot
    slots = np.argsort(perms, axis=1)  # (24, 4) slot per gesture
    d = np.abs(slots[:, None] - slots[None]).sum(-1)  # (24, 24)
    chosen = [0]
    while len(chosen) < k:
        chosen.append(int(np.argmax(d[:, chosen].min(axis=1))))  # first maximiser: deterministic
    return perms[chosen]


ORDERS: np.ndarray = _class_orders()  # (12, 4): the gesture in each of the four slots, per class
_SHORT = ("left arm", "right arm", "knee", "bow")
ACTIONS = tuple(" > ".join(_SHORT[g] for g in order) for order in ORDERS)  # class names, e.g. "left arm > bow > ..."
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


def _slots(rng: np.random.Generator) -> list[tuple[float, float]]:
    """Four consecutive ``(start, end)`` time slots in [0, 1]: random durations, random pauses before, between and
    after them."""
    dur, pause = rng.uniform(0.7, 1.3, 4), rng.uniform(0.0, 0.3, 5)
    total = dur.sum() + pause.sum()
    edges, t = [], pause[0]
    for k in range(4):
        edges.append((t / total, (t + dur[k]) / total))
        t += dur[k] + pause[k + 1]
    return edges


def _bump(s: np.ndarray, a: float, b: float) -> np.ndarray:
    """Raised cosine on ``[a, b]``, 0 elsewhere: ``(T,)`` in [0, 1], peaking at the middle of the slot."""
    u = (s - a) / (b - a)
    return np.where((u >= 0) & (u <= 1), 0.5 * (1 - np.cos(2 * np.pi * np.clip(u, 0, 1))), 0.0)


def generate_sample(i: int, seed: int, num_classes: int, num_subjects: int, noise_std: float) -> RawSample:
    """Sample ``i`` of the synthetic dataset: x float32 ``(1, T, 25, 3)`` metres, T in [40, 64], centred."""
    label = i % num_classes
    subject = (i // num_classes) % num_subjects + 1
    body = np.random.Generator(np.random.PCG64([seed, 1_000_003, subject]))
    scale = body.uniform(0.85, 1.15)
    rng = np.random.Generator(np.random.PCG64([seed, i]))
    t = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
    s = np.linspace(0.0, 1.0, t)  # (T,)
    local = np.tile(np.eye(3), (t, 25, 1, 1))  # (T, 25, 3, 3)
    rx, rz = (lambda a: _rot(0, a)), (lambda a: _rot(2, a))

    def apply(j: int, r: np.ndarray) -> None:
        local[:, j] = local[:, j] @ r

    for j, axis, amp in ((4, 2, 0.15), (8, 2, 0.15), (12, 0, 0.1), (16, 0, 0.1), (5, 0, 0.3), (9, 0, 0.3)):
        apply(j, _rot(axis, np.full(t, rng.uniform(-amp, amp))))  # static posture of shoulders, hips, elbows
    # rx(+a) turns a hanging segment forward (-z) and an upright one backward; rz(-a) lifts the right arm outward
    for (a, b), g in zip(_slots(rng), ORDERS[label]):
        e = _bump(s, a, b) * rng.uniform(0.7, 1.0)  # (T,) this gesture's envelope and amplitude
        if g == 0:  # left arm raised forward, elbow bending a little
            apply(4, rx(1.4 * e))
            apply(5, rx(0.4 * e))
        elif g == 1:  # right arm raised sideways
            apply(8, rz(-1.4 * e))
        elif g == 2:  # left knee raised: thigh forward, shank back
            apply(12, rx(1.3 * e))
            apply(13, rx(-1.6 * e))
        else:  # bow: the trunk above spine_mid tips forward
            apply(1, rx(-0.7 * e))
    for j in (1, 20, 2):  # idle sway of the spine and neck, class-independent
        axis = int(rng.integers(0, 3))
        apply(j, _rot(axis, rng.uniform(0.01, 0.06) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * s
                                                             + rng.uniform(0, 2 * np.pi))))
    pos = _forward_kinematics(local, scale)  # (T, 25, 3), root (spine_base) at the origin
    r = _rot(1, np.full(t, rng.uniform(-0.7, 0.7))) @ rx(np.full(t, rng.uniform(-0.15, 0.15)))  # (T, 3, 3) viewpoint
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
