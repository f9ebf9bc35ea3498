"""Body of the built-in corpus's signers: hand forward kinematics, two-link arm IK, face blendshapes.

Metres, right-hand frame (the left hand is mirrored by the caller); the 21 hand landmarks and
the 128 face points are in the order of the 178-keypoint layout (data.py).
"""
import functools

import numpy as np

from data import ARTICULATORS, FACE_CONTOURS_178, HAND_FINGERS

# Right hand at scale 1, metres, hand frame: x toward the thumb, y along the fingers, z out of
# the palm. Finger MCP positions, phalanx lengths, resting splay angle and splay gain.
FINGER_MCP = np.array([[0.026, 0.094, 0.0], [0.004, 0.097, 0.0], [-0.016, 0.090, 0.0],
                       [-0.034, 0.080, 0.0]])
FINGER_BONES = np.array([[0.042, 0.025, 0.021], [0.046, 0.028, 0.023], [0.043, 0.027, 0.022],
                         [0.034, 0.020, 0.019]])
FINGER_SPLAY = np.array([0.06, 0.0, -0.06, -0.14])
SPLAY_GAIN = np.array([1.0, 0.3, -0.5, -1.0])
THUMB_CMC = np.array([0.020, 0.028, 0.012])
THUMB_BONES = np.array([0.042, 0.033, 0.028])
THUMB_OUT = np.array([0.75, 0.62, 0.20]) / np.linalg.norm([0.75, 0.62, 0.20])   # abducted
THUMB_IN = np.array([-0.15, 0.55, 0.82]) / np.linalg.norm([-0.15, 0.55, 0.82])  # opposed
THUMB_CURL = np.array([-0.7, 0.0, 0.7]) / np.linalg.norm([-0.7, 0.0, 0.7])      # flexion target


def _turn_toward(v, w, angle):
    """Rotate unit vectors v toward w (in their common plane) by `angle` radians."""
    w_perp = w - np.sum(w * v, -1, keepdims=True) * v
    w_perp = w_perp / np.linalg.norm(w_perp, axis=-1, keepdims=True)
    return np.cos(angle)[..., None] * v + np.sin(angle)[..., None] * w_perp


def hand_pose(flexions, spread, wrist, rotation, scale=1.0):
    """21 MediaPipe hand landmarks of a right hand by forward kinematics.

    flexions (..., 5, 3): thumb (CMC opposition, MCP, IP) and fingers (MCP, PIP, DIP) radians;
    spread (...): finger abduction; wrist (..., 3); rotation (..., 3, 3) hand frame -> world;
    scale: bone lengths relative to the reference hand. Returns (..., 21, 3).
    """
    flexions, spread = np.asarray(flexions, float), np.asarray(spread, float)
    batch = flexions.shape[:-2]
    local = np.zeros(batch + (21, 3))
    # fingers: each phalanx turns from the splayed palm direction toward the palm normal (+z)
    phi = FINGER_SPLAY + spread[..., None] * SPLAY_GAIN                      # (..., 4)
    palm_dir = np.stack([np.sin(phi), np.cos(phi), np.zeros_like(phi)], -1)  # (..., 4, 3)
    angle = np.cumsum(flexions[..., 1:, :], -1)                              # (..., 4, 3)
    seg = (np.cos(angle)[..., None] * palm_dir[..., None, :]
           + np.sin(angle)[..., None] * np.array([0.0, 0.0, 1.0]))           # (..., 4, 3, 3)
    joints = FINGER_MCP[:, None, :] + np.cumsum(FINGER_BONES[..., None] * seg, -2)
    for f, chain in enumerate(tuple(HAND_FINGERS.values())[1:]):
        local[..., chain[0], :] = FINGER_MCP[f]
        local[..., chain[1]:chain[3] + 1, :] = joints[..., f, :, :]
    # thumb: opposition turns the metacarpal from THUMB_OUT toward THUMB_IN, then MCP and IP curl
    thumb = HAND_FINGERS["thumb"]
    meta = _turn_toward(np.broadcast_to(THUMB_OUT, batch + (3,)), THUMB_IN, flexions[..., 0, 0])
    curl = np.broadcast_to(THUMB_CURL, batch + (3,))
    prox = _turn_toward(meta, curl, flexions[..., 0, 1])
    dist = _turn_toward(meta, curl, flexions[..., 0, 1] + flexions[..., 0, 2])
    local[..., thumb[0], :] = THUMB_CMC
    local[..., thumb[1], :] = THUMB_CMC + THUMB_BONES[0] * meta
    local[..., thumb[2], :] = local[..., thumb[1], :] + THUMB_BONES[1] * prox
    local[..., thumb[3], :] = local[..., thumb[2], :] + THUMB_BONES[2] * dist
    world = (scale * local) @ np.swapaxes(rotation, -1, -2)                 # (..., 21, 3)
    return world + np.asarray(wrist)[..., None, :]


def reach(shoulder, wrist, upper, fore):
    """Pull wrist targets into the annulus an arm of segment lengths (upper, fore) can reach."""
    v = wrist - shoulder
    d = np.linalg.norm(v, axis=-1, keepdims=True)
    return shoulder + v / d * np.clip(d, abs(upper - fore) + 1e-3, upper + fore - 1e-3)


def arm_ik(shoulder, wrist, upper, fore, pole):
    """Elbow of a two-link arm ending at a reachable wrist, bent toward the `pole` direction."""
    v = wrist - shoulder
    d = np.linalg.norm(v, axis=-1, keepdims=True)
    n = v / d
    a = (upper ** 2 - fore ** 2 + d ** 2) / (2 * d)        # distance along n to the elbow circle
    h = np.sqrt(np.maximum(upper ** 2 - a ** 2, 0.0))      # radius of the elbow circle
    p = pole - np.sum(pole * n, -1, keepdims=True) * n
    return shoulder + a * n + h * p / np.linalg.norm(p, axis=-1, keepdims=True)


def _contour(name):
    return np.array(FACE_CONTOURS_178[name]) - ARTICULATORS["face"].start


@functools.lru_cache(maxsize=1)
def face_model():
    """Neutral face (128, 3) around the face centre (metres) and 5 blendshapes (5, 128, 3):
    mouth open, lip rounding, brow raise, brow furrow, eye blink."""
    face, shapes = np.zeros((128, 3)), np.zeros((5, 128, 3))
    a = 2 * np.pi * np.arange(36) / 36                     # face oval from the forehead, clockwise
    oval = _contour("face_oval")
    face[oval] = np.stack([np.sin(a) * (0.068 + 0.006 * np.cos(a)), 0.10 * np.cos(a),
                           -0.035 * np.abs(np.sin(a))], -1)
    jaw = np.clip((-0.05 - face[oval, 1]) / 0.05, 0, 1)    # 1 at the chin, 0 above the mouth
    shapes[0, oval, 1] = -0.010 * jaw
    for side, eye in ((-1, "right_eye"), (1, "left_eye")):
        k = np.arange(16)                                   # outer corner, lower lid, upper lid
        idx = _contour(eye)
        face[idx] = np.stack([side * (0.032 + 0.014 * np.cos(np.pi * k / 8)),
                              0.028 - 0.005 * np.sin(np.pi * k / 8), np.zeros(16)], -1)
        shapes[4, idx, 1] = np.where(k > 8, 1.0, 0.3) * (0.0265 - face[idx, 1])  # lids meet
        for row, dy in (("upper", 0.0), ("lower", -0.004)):
            brow = _contour(f"{'right' if side < 0 else 'left'}_eyebrow_{row}")
            t = np.arange(5) / 4                            # outer -> inner
            face[brow] = np.stack([side * (0.052 - 0.036 * t), 0.048 + dy + 0.006 * np.sin(
                np.pi * (t + 0.2) / 1.4), np.full(5, 0.004)], -1)
            shapes[2, brow, 1] = 0.007
            shapes[3, brow] = np.stack([-side * 0.003 * t, -0.002 - 0.003 * t, np.zeros(5)], -1)
    for name, width, low, up in (("lips_outer", 0.026, 0.011, 0.009), ("lips_inner", 0.019, 0.002,
                                                                       0.002)):
        k = np.arange(20)                                   # right corner, lower lip, upper lip
        idx = _contour(name)
        s = np.sin(np.pi * k / 10)
        face[idx] = np.stack([-width * np.cos(np.pi * k / 10),
                              -0.050 - np.where(s > 0, low, up) * s, np.full(20, 0.008)], -1)
        shapes[0, idx, 1] = np.where(s > 0, -0.013 * s, 0.001 * -s)
        shapes[1, idx, 0] = -0.35 * face[idx, 0]
        shapes[1, idx, 1] = -0.003 * s
        shapes[1, idx, 2] = 0.008
    return face, shapes
