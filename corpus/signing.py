"""Signs of the built-in corpus: the lexicon (one sign per gloss), the signers, and rendering a
gloss sequence into a pose sequence (N, 178, 3) at 25 fps.

A sign is hands (one, two symmetric, two alternating, hand on hand), handshape, location,
movement and palm orientation, plus mouthing, brows, head and torso. A gloss sequence becomes
rest pose, signs joined by minimum-jerk transitions, rest pose; then co-articulation smoothing and
the signer's tracking noise (on joint angles, wrist targets and head pose, never on single hand or
arm joints, so bone lengths stay exact).
"""
import functools

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from corpus.body import arm_ik, face_model, hand_pose, reach
from corpus.language import gloss_inventory
from data import ARTICULATORS, FPS, NUM_JOINTS

LEXICON_SEED = 2014   # fixes the sign of every gloss: all corpus seeds speak the same language
SIGNER_SEED = 7       # fixes the bodies of Signer01, Signer02, ...
SIGN_FRAMES = (8, 20)  # a sign (without its transitions) lasts 8-20 frames at 25 fps
assert FPS == 25

# ---------------------------------------------------------------------------------------------
# Lexicon: each gloss is a sign (hands, handshape, location, movement, palm orientation)
# ---------------------------------------------------------------------------------------------

# Finger flexions in radians. Rows: thumb (CMC opposition, MCP, IP), then index, middle, ring,
# pinky (MCP, PIP, DIP). The second value is the finger spread (abduction) in radians.
_EXT, _FIST, _CURVE = (0.0, 0.0, 0.0), (1.45, 1.6, 1.0), (0.55, 0.75, 0.45)
_BENT, _CLAW, _HALF = (1.45, 0.1, 0.05), (0.2, 1.3, 0.9), (0.8, 0.9, 0.5)
_T_OUT, _T_SIDE, _T_ACROSS = (0.0, 0.05, 0.05), (0.45, 0.15, 0.05), (1.1, 0.55, 0.7)
_T_C, _T_O = (0.75, 0.25, 0.25), (1.05, 0.45, 0.45)
HANDSHAPES = {
    "B": ((_T_SIDE, _EXT, _EXT, _EXT, _EXT), 0.0), "5": ((_T_OUT, _EXT, _EXT, _EXT, _EXT), 0.28),
    "A": ((_T_SIDE, _FIST, _FIST, _FIST, _FIST), 0.0),
    "S": ((_T_ACROSS, _FIST, _FIST, _FIST, _FIST), 0.0),
    "1": ((_T_ACROSS, _EXT, _FIST, _FIST, _FIST), 0.0),
    "V": ((_T_ACROSS, _EXT, _EXT, _FIST, _FIST), 0.3),
    "H": ((_T_ACROSS, _EXT, _EXT, _FIST, _FIST), 0.0),
    "W": ((_T_ACROSS, _EXT, _EXT, _EXT, _FIST), 0.25),
    "3": ((_T_OUT, _EXT, _EXT, _FIST, _FIST), 0.3),
    "L": ((_T_OUT, _EXT, _FIST, _FIST, _FIST), 0.05),
    "Y": ((_T_OUT, _FIST, _FIST, _FIST, _EXT), 0.25),
    "I": ((_T_ACROSS, _FIST, _FIST, _FIST, _EXT), 0.0),
    "C": ((_T_C, _CURVE, _CURVE, _CURVE, _CURVE), 0.05),
    "O": ((_T_O, _HALF, _HALF, _HALF, _HALF), 0.0),
    "bentB": ((_T_SIDE, _BENT, _BENT, _BENT, _BENT), 0.0),
    "claw": (((0.5, 0.3, 0.5), _CLAW, _CLAW, _CLAW, _CLAW), 0.25),
    "F": ((_T_O, _HALF, _EXT, _EXT, _EXT), 0.25),
}
RELAXED = (((0.4, 0.1, 0.1), (0.25, 0.3, 0.2), (0.3, 0.35, 0.2), (0.35, 0.4, 0.2),
            (0.4, 0.45, 0.2)), 0.05)
# Wrist targets in the space of a right hand (x < 0 is the hand's own side): anchored at the
# neck ("body", scaled by shoulder width) or at the face centre ("face", scaled by face size).
LOCATIONS = {
    "neutral": ("body", (-0.06, -0.20, 0.30)), "neutral_ipsi": ("body", (-0.24, -0.16, 0.26)),
    "neutral_contra": ("body", (0.10, -0.18, 0.27)), "neutral_high": ("body", (-0.08, 0.02, 0.30)),
    "neutral_low": ("body", (-0.07, -0.34, 0.25)), "chest": ("body", (-0.05, -0.17, 0.16)),
    "shoulder_contra": ("body", (0.10, -0.08, 0.13)), "chin": ("face", (-0.03, -0.22, 0.10)),
    "cheek": ("face", (-0.12, -0.12, 0.07)), "forehead": ("face", (-0.06, -0.04, 0.12)),
    "base": ("body", (-0.02, -0.12, 0.30)),
}
BASE_HAND = ("body", (-0.04, -0.24, 0.30))   # passive hand of a hand-on-hand sign
TWO_HANDED_LOCATIONS = ("neutral", "neutral_high", "neutral_low", "chest", "neutral_ipsi")
# palm orientation as (finger direction, palm normal) of a right hand
ORIENTATIONS = {
    "up_fwd": ((0, 1, 0.15), (0, 0, 1)), "up_body": ((0, 1, 0.15), (0, 0, -1)),
    "up_side": ((0, 1, 0.1), (1, 0, 0)), "fwd_down": ((0.2, 0, 1), (0, -1, 0)),
    "fwd_up": ((0.2, 0, 1), (0, 1, 0)), "fwd_side": ((0.2, 0, 1), (1, 0, 0)),
    "side_down": ((1, 0.1, 0.3), (0, -1, 0)), "side_body": ((1, 0.2, 0.2), (0, 0, -1)),
}
# hands hanging by the hips (palms to the thighs) and the idle second hand of one-handed signs
IDLE_ORIENTATIONS = {"rest": ((0, -1, 0.15), (1, 0, 0)), "wait": ((0.4, -0.3, 0.8), (0.3, -0.9, 0))}
MOVEMENTS = ("hold", "down", "forward", "outward", "arc", "circle_v", "circle_h", "tap", "zigzag",
             "wiggle", "twist", "close", "open")
REPEATED = ("circle_v", "circle_h", "tap", "zigzag", "wiggle")
MODES = ("one", "sym", "alt", "base")   # one hand, two symmetric, two alternating, hand on hand
MODE_P = (0.56, 0.2, 0.12, 0.12)


def _syllables(gloss):
    """Number of vowel groups of a gloss (drives the mouthing)."""
    groups, prev = 0, False
    for ch in gloss:
        vowel = ch in "AEIOUY"
        groups += vowel and not prev
        prev = vowel
    return max(1, min(groups, 4))


@functools.lru_cache(maxsize=1)
def gloss_lexicon():
    """{gloss: sign parameters}, drawn from LEXICON_SEED so that any two glosses differ in at
    least three of (hands, handshape, location, movement, orientation) where possible."""
    rng = np.random.default_rng(LEXICON_SEED)
    shapes, locs, oris = sorted(HANDSHAPES), sorted(set(LOCATIONS) - {"base"}), sorted(ORIENTATIONS)
    values = (MODES, shapes, sorted(LOCATIONS), MOVEMENTS, oris)
    allowed = [np.array([values[2].index(x) for x in {"one": locs, "base": ["base"]}.get(
        mode, TWO_HANDED_LOCATIONS)]) for mode in MODES]
    lexicon, codes, n = {}, np.zeros((0, 5), dtype=int), 2000
    for gloss in gloss_inventory():
        # n candidate signs; keep the first at least 3 attributes away from every sign so far,
        # else the first at least 2 away (the space of 3-apart signs gets crowded)
        mode, pick, loc = rng.choice(len(MODES), size=n, p=MODE_P), rng.integers(2 ** 30, size=n), \
            np.zeros(n, int)
        for m, options in enumerate(allowed):   # one-handed, two-handed or hand-on-hand places
            loc[mode == m] = options[pick[mode == m] % len(options)]
        cand = np.stack([mode, rng.integers(len(shapes), size=n), loc,
                         rng.integers(len(MOVEMENTS), size=n), rng.integers(len(oris), size=n)], 1)
        dist = (cand[:, None, :] != codes[None]).sum(-1).min(1) if len(codes) else np.full(n, 5)
        best = int(np.argmax(dist >= 3)) if (dist >= 3).any() else int(np.argmax(dist >= 2))
        codes = np.vstack([codes, cand[best]])
        key = tuple(v[c] for v, c in zip(values, cand[best]))
        mode, shape, loc, move, ori = key
        end = shape
        if move in ("close", "open"):
            end = "S" if shape not in ("S", "A") else "5"
            shape, end = (shape, end) if move == "close" else (end, shape)
        vowels = gloss.replace("AE", "E").replace("OE", "O").replace("UE", "U")
        lexicon[gloss] = {
            "mode": mode, "shape": shape, "end_shape": end, "location": loc, "movement": move,
            "orientation": ori, "frames": int(rng.integers(8, 13)) + 3 * (move in REPEATED),
            "amplitude": float(rng.uniform(0.8, 1.2)), "repeats": int(rng.integers(2, 4)),
            "syllables": _syllables(gloss), "rounding": 0.7 * any(c in "OU" for c in vowels),
            "brow": float(rng.choice([0.0, 0.0, 1.0, -1.0])),
            "head": ("shake" if gloss == "KEIN" else
                     ("none", "none", "none", "nod", "tilt")[rng.integers(5)]),
            "lean": float(rng.choice([0.0, 0.0, 0.04, -0.03])),
        }
    return lexicon


def make_signers(count):
    """`count` signers "Signer01", ... with their own body, hand and face size, tempo, amplitude
    and tracking noise (drawn from SIGNER_SEED: a signer is the same person in every corpus)."""
    if not 1 <= count <= 99:
        raise ValueError(f"signers must be between 1 and 99, got {count}")
    signers = []
    for i in range(count):
        r = np.random.default_rng([SIGNER_SEED, i])
        width = r.uniform(0.32, 0.40)
        arm = r.uniform(0.93, 1.07) * width / 0.36
        signers.append({
            "name": f"Signer{i + 1:02d}", "shoulder_width": width, "upper_arm": 0.29 * arm,
            "forearm": 0.26 * arm, "hand_scale": r.uniform(0.9, 1.1) * width / 0.36,
            "face_scale": r.uniform(0.9, 1.1) * width / 0.36,
            "torso": r.uniform(0.47, 0.55) * width / 0.36, "hip_width": r.uniform(0.55, 0.68) * width,
            "tempo": r.uniform(0.8, 1.2), "amplitude": r.uniform(0.85, 1.2),
            "jitter": r.uniform(0.0015, 0.004), "expressive": r.uniform(0.6, 1.2),
        })
    return signers


# ---------------------------------------------------------------------------------------------
# Rendering a gloss sequence
# ---------------------------------------------------------------------------------------------

def _minimum_jerk(u):
    return 10 * u ** 3 - 15 * u ** 4 + 6 * u ** 5


def _euler(angles):
    """Rotation matrices (..., 3, 3) from (pitch about x, yaw about y, roll about z)."""
    return Rotation.from_euler("YXZ", np.asarray(angles)[..., [1, 0, 2]].reshape(-1, 3)).as_matrix(
    ).reshape(angles.shape[:-1] + (3, 3))


@functools.lru_cache(maxsize=None)
def _orientation(finger, normal):
    """Hand rotation whose fingers point along `finger` and whose palm faces `normal`."""
    finger = np.array(finger, float) / np.linalg.norm(finger)
    normal = np.array(normal, float) - np.dot(normal, finger) * finger
    normal /= np.linalg.norm(normal)
    return Rotation.from_matrix(np.stack([np.cross(finger, normal), finger, normal], -1))


def _shape_vector(name):
    flex, spread = HANDSHAPES[name] if isinstance(name, str) else name
    return np.append(np.ravel(flex), spread)               # (16,)


def _geometry(signer):
    """Anchor points of a signer in the torso frame (right-hand space for hand targets)."""
    body, face_s = signer["shoulder_width"] / 0.36, signer["face_scale"]
    face_centre = np.array([0.0, 0.12 * body + 0.10 * face_s, 0.06 * body])
    shoulder = np.array([-signer["shoulder_width"] / 2, 0.0, 0.0])
    arm = signer["upper_arm"] + signer["forearm"]
    return {"body": body, "face_scale": face_s, "face_centre": face_centre, "shoulder": shoulder,
            "rest": shoulder + np.array([0.03, -0.86 * arm, 0.10]),
            "wait": np.array([-0.13, -0.36, 0.18]) * body}


def _anchor(spec, geo):
    anchor, offset = spec
    if anchor == "face":
        return geo["face_centre"] + np.array(offset) * geo["face_scale"]
    return np.array(offset) * geo["body"]


def _movement(kind, u, amp, repeats):
    """Path offset (n, 3), twist about the finger axis (n,), handshape blend (n,) and finger
    wiggle (n, 5, 3) of a movement at sign times u in [0, 1]."""
    n = len(u)
    s = _minimum_jerk(u)
    off, twist, blend, wiggle = np.zeros((n, 3)), np.zeros(n), np.zeros(n), np.zeros((n, 5, 3))
    ring = 2 * np.pi * s
    if kind == "hold":
        off[:, 2] = 0.2 * amp * np.sin(np.pi * u)
    elif kind == "down":
        off[:, 1] = amp * (0.5 - s)
    elif kind == "forward":
        off[:, 2] = amp * (s - 0.5)
    elif kind == "outward":
        off[:, 0] = -amp * (s - 0.5)
    elif kind == "arc":
        off[:, 0], off[:, 1] = -amp * (s - 0.5), 0.45 * amp * np.sin(np.pi * s)
    elif kind == "circle_v":
        off[:, 0], off[:, 1] = 0.4 * amp * np.sin(ring), 0.4 * amp * np.cos(ring)
    elif kind == "circle_h":
        off[:, 0], off[:, 2] = 0.4 * amp * np.sin(ring), 0.4 * amp * np.cos(ring)
    elif kind == "tap":
        off[:, 1] = -0.3 * amp * (1 - np.cos(2 * np.pi * repeats * u)) / 2
    elif kind == "zigzag":
        off[:, 0], off[:, 1] = 0.3 * amp * np.sin(2 * np.pi * repeats * u), amp * (0.5 - u)
    elif kind == "wiggle":
        phase = 2 * np.pi * 3 * u[:, None] + np.arange(4) * 0.8
        wiggle[:, 1:, 0] = 0.4 * (1 - np.cos(phase)) / 2
    elif kind == "twist":
        twist = 1.3 * (s - 0.5)
    else:   # close / open: the handshape changes along the sign
        blend = s
        off[:, 2] = 0.15 * amp * (s - 0.5)
    return off, twist, blend, wiggle


def _hand_piece(sign, role, n, geo, signer, rng):
    """Tracks of one hand during one sign: wrist (n, 3), quaternion (n, 4), shape (n, 16)."""
    if role in ("rest", "wait"):
        return {"wrist": np.tile(geo[role], (n, 1)),
                "quat": np.tile(_orientation(*IDLE_ORIENTATIONS[role]).as_quat(), (n, 1)),
                "shape": np.tile(_shape_vector(RELAXED), (n, 1))}
    u = np.linspace(0.0, 1.0, n)
    if role == "base":
        wrist = _anchor(BASE_HAND, geo) + rng.normal(0, 0.006, 3)
        return {"wrist": np.tile(wrist, (n, 1)),
                "quat": np.tile(_orientation(*ORIENTATIONS["fwd_up"]).as_quat(), (n, 1)),
                "shape": np.tile(_shape_vector("B"), (n, 1))}
    if role == "alternate":   # the second hand moves half a cycle (or backwards) behind
        u = (u + (0.5 / sign["repeats"] if sign["movement"] == "tap" else 0.5)) % 1.0 \
            if sign["movement"] in REPEATED else 1.0 - u
    target = _anchor(LOCATIONS[sign["location"]], geo)
    if sign["mode"] in ("sym", "alt") and sign["location"] != "neutral_ipsi":
        target = target + np.array([-0.05 * geo["body"], 0, 0])  # keep the two hands apart
    target = target + rng.normal(0, 0.008, 3) * geo["body"]
    amp = 0.08 * geo["body"] * sign["amplitude"] * signer["amplitude"] * rng.uniform(0.9, 1.1)
    off, twist, blend, wiggle = _movement(sign["movement"], u, amp, sign["repeats"])
    start, end = _shape_vector(sign["shape"]), _shape_vector(sign["end_shape"])
    shape = start + blend[:, None] * (end - start) + rng.normal(0, 0.04, 16)
    shape[:, :15] += wiggle.reshape(n, 15)
    rot = Rotation.from_rotvec(rng.normal(0, 0.05, 3)) * _orientation(
        *ORIENTATIONS[sign["orientation"]])
    quat = (rot * Rotation.from_rotvec(twist[:, None] * np.array([0.0, 1.0, 0.0]))).as_quat()
    return {"wrist": target + off, "quat": quat, "shape": shape}


def _nonmanual_piece(sign, n, signer, rng):
    """Face blendshape weights (n, 5), head angles (n, 3) and torso angles (n, 3) of a sign."""
    face, head, torso = np.zeros((n, 5)), np.zeros((n, 3)), np.zeros((n, 3))
    if sign is None:
        return {"face": face, "head": head, "torso": torso}
    u = np.linspace(0.0, 1.0, n)
    hump = np.sin(np.pi * u)
    expressive = signer["expressive"] * rng.uniform(0.8, 1.1)
    face[:, 0] = 0.8 * expressive * np.abs(np.sin(np.pi * sign["syllables"] * u))  # mouthing
    face[:, 1] = sign["rounding"] * hump
    face[:, 2] = max(sign["brow"], 0.0) * expressive * hump
    face[:, 3] = max(-sign["brow"], 0.0) * expressive * hump
    wave = np.sin(2 * np.pi * 2 * u)
    if sign["head"] == "nod":
        head[:, 0] = 0.08 * expressive * wave
    elif sign["head"] == "shake":
        head[:, 1] = 0.15 * expressive * wave
    elif sign["head"] == "tilt":
        head[:, 2] = 0.07 * expressive * hump
    torso[:, 0] = sign["lean"] * hump
    return {"face": face, "head": head, "torso": torso}


def _assemble(pieces, gaps, key):
    """Concatenate pieces[i][key] with minimum-jerk transitions of gaps[i] frames in between."""
    out = [pieces[0][key]]
    for gap, piece in zip(gaps, pieces[1:]):
        a, b = out[-1][-1], piece[key]
        if key.endswith("quat") and np.dot(a, b[0]) < 0:  # stay on one quaternion hemisphere
            b = -b
        w = _minimum_jerk(np.arange(1, gap + 1) / (gap + 1)).reshape((-1,) + (1,) * a.ndim)
        out += [a + w * (b[0] - a), b]
    return np.concatenate(out)


def _noise(rng, shape, sigma):
    """Slightly correlated tracking noise of unit standard deviation (before scaling)."""
    x = gaussian_filter1d(rng.normal(size=shape), 0.8, axis=0)
    return x / np.sqrt(1 / (2 * np.sqrt(np.pi) * 0.8)) * sigma


def render_sign_sequence(glosses, signer, rng, return_spans=False):
    """Pose sequence (N, 178, 3) float32 of a gloss sequence signed by `signer`.

    glosses: a space-separated string or a list of glosses of gloss_lexicon(); signer: one of
    make_signers(); rng: numpy Generator (tempo, amplitude, targets and noise of this
    realization). With return_spans=True also returns [(gloss, first_frame, end_frame), ...].
    """
    lexicon = gloss_lexicon()
    glosses = glosses.split() if isinstance(glosses, str) else list(glosses)
    if not glosses:
        raise ValueError("render_sign_sequence needs at least one gloss")
    unknown = [g for g in glosses if g not in lexicon]
    if unknown:
        raise ValueError(f"glosses not in the lexicon: {unknown}")
    geo, tempo = _geometry(signer), signer["tempo"]
    frames = [int(np.clip(round(lexicon[g]["frames"] * tempo * rng.uniform(0.88, 1.12)),
                          *SIGN_FRAMES)) for g in glosses]
    rests = rng.integers(2, 5, size=2)
    # per-piece tracks: rest, sign 1, ..., sign K, rest (hands in their own right-hand space)
    pieces = []
    for sign, n in [(None, rests[0])] + [(lexicon[g], f) for g, f in zip(glosses, frames)] \
            + [(None, rests[1])]:
        mode = sign["mode"] if sign else "rest"
        roles = {"rest": ("rest", "rest"), "one": ("active", "wait"), "sym": ("active", "active"),
                 "alt": ("active", "alternate"), "base": ("active", "base")}[mode]
        piece = _nonmanual_piece(sign, n, signer, rng)
        for side, role in zip("rl", roles):
            for key, value in _hand_piece(sign, role, n, geo, signer, rng).items():
                piece[f"{key}_{side}"] = value
        pieces.append(piece)
    # transitions: a few frames, longer for long paths (peak hand speed about 2.5 m/s)
    gaps = []
    for k, (before, after) in enumerate(zip(pieces[:-1], pieces[1:])):
        low, high = (5, 7) if k in (0, len(pieces) - 2) else (2, 5)
        path = max(np.linalg.norm(after[f"wrist_{s}"][0] - before[f"wrist_{s}"][-1]) for s in "rl")
        gaps.append(max(int(round(rng.uniform(low, high) * tempo)),
                        int(np.ceil(path * 1.875 / 0.1)) - 1))
    poses = finish_tracks({key: _assemble(pieces, gaps, key) for key in pieces[0]}, signer, geo, rng)
    if not return_spans:
        return poses
    spans, start = [], 0
    for k, piece in enumerate(pieces):   # piece k begins after pieces 0..k-1 and gaps 0..k-1
        if 0 < k < len(pieces) - 1:
            spans.append((glosses[k - 1], start, start + len(piece["face"])))
        start += len(piece["face"]) + (gaps[k] if k < len(gaps) else 0)
    return poses, spans


def finish_tracks(tracks, signer, geo, rng):
    """Poses (N, 178, 3) float32 from assembled tracks: co-articulation smoothing, the signer's
    tracking noise, head and torso sway, blinks, then the skeleton (tracks are changed in place)."""
    total = len(tracks["face"])
    # co-articulation: smooth every track a little, then add this signer's tracking noise
    jitter = signer["jitter"]
    for key in tracks:
        tracks[key] = gaussian_filter1d(tracks[key], 1.2 if key != "face" else 0.7, axis=0,
                                        mode="nearest")
    for side in "rl":
        tracks[f"wrist_{side}"] += _noise(rng, (total, 3), jitter)
        tracks[f"shape_{side}"] += _noise(rng, (total, 16), 8 * jitter)
        quat = tracks[f"quat_{side}"]
        quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
        tracks[f"quat_{side}"] = (Rotation.from_rotvec(_noise(rng, (total, 3), 5 * jitter))
                                  * Rotation.from_quat(quat)).as_matrix()
    tracks["head"] += _noise(rng, (total, 3), 3 * jitter) + np.sin(
        2 * np.pi * np.arange(total)[:, None] / rng.uniform(40, 90, 3)) * 0.02
    tracks["torso"] += np.sin(2 * np.pi * np.arange(total)[:, None] / rng.uniform(60, 120, 3)) \
        * np.array([0.01, 0.015, 0.01])
    blink = np.zeros(total)
    for start in np.cumsum(rng.integers(30, 90, size=total // 30 + 1)):
        blink[start:start + 4] = (0.6, 1.0, 1.0, 0.5)[:len(blink[start:start + 4])]
    tracks["face"][:, 4] = np.maximum(tracks["face"][:, 4], blink)
    poses = _skeleton(tracks, signer, geo)
    poses += _noise(rng, (total, 1, 3), 0.5 * jitter)             # whole-body tracking shift
    return poses.astype(np.float32)


def _skeleton(tracks, signer, geo):
    """Joint positions (T, 178, 3) from the assembled tracks."""
    total = len(tracks["face"])
    poses = np.zeros((total, NUM_JOINTS, 3))
    mirror = np.array([-1.0, 1.0, 1.0])
    upper, fore = signer["upper_arm"], signer["forearm"]
    pole = np.array([-0.4, -1.0, -0.3])   # elbows hang down, out and slightly back
    for side, (s_idx, e_idx, w_idx), hand in (("r", (0, 1, 2), ARTICULATORS["right_hand"]),
                                              ("l", (3, 4, 5), ARTICULATORS["left_hand"])):
        flip = mirror if side == "l" else 1.0
        wrist = reach(geo["shoulder"], tracks[f"wrist_{side}"], upper, fore)        # (T, 3)
        shape = tracks[f"shape_{side}"]
        points = hand_pose(shape[:, :15].reshape(-1, 5, 3), shape[:, 15], wrist,
                           tracks[f"quat_{side}"], signer["hand_scale"])           # (T, 21, 3)
        elbow = arm_ik(geo["shoulder"], wrist, upper, fore, pole)
        poses[:, s_idx] = geo["shoulder"] * flip
        poses[:, e_idx] = elbow * flip
        poses[:, w_idx] = wrist * flip
        poses[:, hand] = points * flip
    face, shapes = face_model()
    face = face + (tracks["face"] @ shapes.reshape(5, -1)).reshape(total, 128, 3)   # (T, 128, 3)
    pivot = np.array([0.0, 0.10 * geo["body"], 0.0])
    head = _euler(tracks["head"])                                                   # (T, 3, 3)
    centre = geo["face_centre"] - pivot
    poses[:, ARTICULATORS["face"]] = pivot + (centre + geo["face_scale"] * face) @ np.swapaxes(
        head, 1, 2)
    # the torso leans and turns about the hip centre; the hips stay where they are
    hip_y = -signer["torso"]
    hips = np.array([[-signer["hip_width"] / 2, hip_y, -0.02], [signer["hip_width"] / 2, hip_y,
                                                                  -0.02]])
    centre = np.array([0.0, hip_y, -0.02])
    torso = _euler(tracks["torso"])
    poses = centre + (poses - centre) @ np.swapaxes(torso, 1, 2)
    poses[:, 6:8] = hips
    return poses
