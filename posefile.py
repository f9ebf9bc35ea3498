"""`.pose` files of the pose-format library in and out: your MediaPipe recordings in, viewable poses out.

Import (§4.1, the MediaPipe path the paper uses for CSL-Daily): a folder of MediaPipe Holistic `.pose`
files (components POSE_LANDMARKS, FACE_LANDMARKS, LEFT_HAND_LANDMARKS, RIGHT_HAND_LANDMARKS; 2D or 3D;
any fps) plus a CSV `name,text[,gloss,speaker,split]` become `train.pt`, `dev.pt`, `test.pt` in the
release format: the 178 keypoints (data.holistic_to_178), hands missing in a frame interpolated over
time (data.fill_missing), 25 fps, every frame centred at the neck and scaled by the shoulder width
(data.normalize_pose). Export: any (N, 178, 3) sequence becomes a `.pose` file with the four MediaPipe
Holistic components (body 8, face 128, left hand 21, right hand 21 points, with limbs and colours),
in the coordinates it has, which pose-format reads back and its visualiser draws.

    python data.py import-pose --poses DIR --texts texts.csv --out-dir D [--split-by column|ratio]
    python sample.py --generator G --data-dir D --split test --format pose --out preds/  # NAME.pose each
    visualize_pose -i preds/NAME.pose -o NAME.mp4 --normalize        # pose-format's viewer (needs opencv)

pose-format is optional (`pip install pose-format`, requirements-pose.txt): only these paths import it.
"""
import csv
import io
import json
import os
import shutil

import numpy as np
import torch

import data
import harness
import render
from data import ARTICULATORS, FPS, NUM_JOINTS, DataError

POSE_FORMAT_MISSING = ".pose files need the pose-format package (pip install pose-format)"

# MediaPipe's landmark names, as pose-format's Holistic components name their points.
BODY_NAMES = ("RIGHT_SHOULDER", "RIGHT_ELBOW", "RIGHT_WRIST", "LEFT_SHOULDER", "LEFT_ELBOW",
              "LEFT_WRIST", "RIGHT_HIP", "LEFT_HIP")                   # data.BODY_MEDIAPIPE, in order
HAND_NAMES = ("WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP",
              *(f"{finger}_{joint}" for finger in ("INDEX_FINGER", "MIDDLE_FINGER", "RING_FINGER", "PINKY")
                for joint in ("MCP", "PIP", "DIP", "TIP")))
FACE_NAMES = tuple(str(i) for i in data.FACE_MEDIAPIPE)                # face-mesh indices as strings
assert len(HAND_NAMES) == 21

# Component name → (part of the 178 layout, point names); pose-format's Holistic order.
COMPONENTS = {
    "POSE_LANDMARKS": ("body", BODY_NAMES),
    "FACE_LANDMARKS": ("face", FACE_NAMES),
    "LEFT_HAND_LANDMARKS": ("left_hand", HAND_NAMES),
    "RIGHT_HAND_LANDMARKS": ("right_hand", HAND_NAMES),
}
IGNORED_COMPONENTS = ("POSE_WORLD_LANDMARKS",)    # metric body-only copy of POSE_LANDMARKS: not needed
SPLITS = ("train", "dev", "test")


def pose_format():
    """The pose-format classes (Pose, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions,
    NumPyPoseBody); a DataError with the one-line install hint when the package is missing."""
    try:
        from pose_format import Pose, PoseHeader
        from pose_format.numpy import NumPyPoseBody
        from pose_format.pose_header import PoseHeaderComponent, PoseHeaderDimensions
    except ImportError:
        raise DataError(POSE_FORMAT_MISSING) from None
    return Pose, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions, NumPyPoseBody


# ---------------------------------------------------------------------------------------------
# Import: one .pose file → (N, 178, 3) at 25 fps, normalised
# ---------------------------------------------------------------------------------------------

def read_holistic(path, z_scale="width"):
    """A MediaPipe Holistic .pose file → (poses (N, 178, 3) float32 with NaN where a part is missing,
    fps). The first person of each frame is used; a point is missing where its confidence is 0.

    pose-format's MediaPipe writer stores x, y in pixels (x·width, y·height) but z as MediaPipe gives
    it, in units of the image width; z_scale="width" multiplies z by the header's width so that all
    three axes share one unit ("1": keep z as stored). 2D files ("XYC") get z = 0.
    """
    Pose = pose_format()[0]
    try:
        with open(path, "rb") as f:
            pose = Pose.read(f.read())
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - struct/index/value errors of a file that is not a .pose
        raise DataError(f"{path}: not a readable .pose file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'truncated or damaged'})") from None
    names = [c.name for c in pose.header.components]
    unknown = [n for n in names if n not in COMPONENTS and n not in IGNORED_COMPONENTS]
    missing = [n for n in COMPONENTS if n not in names]
    if unknown or missing:
        faults = ([f"unknown component(s) {', '.join(unknown)}"] if unknown else []) + \
                 ([f"missing {', '.join(missing)}"] if missing else [])
        raise DataError(f"{path}: not MediaPipe Holistic: {'; '.join(faults)} (expected {', '.join(COMPONENTS)})")
    fps = float(pose.body.fps)
    if not np.isfinite(fps) or fps <= 0:
        raise DataError(f"{path}: the file's fps is {fps:g}; a frame rate > 0 is needed to resample to {FPS} fps")
    values = np.ma.getdata(pose.body.data)                             # (F, people, points, dims)
    if values.ndim != 4 or values.shape[0] == 0 or values.shape[1] == 0:
        raise DataError(f"{path}: no frames or no person (data of shape {values.shape})")
    if values.shape[-1] < 2:
        raise DataError(f"{path}: points have {values.shape[-1]} coordinate(s), expected 2 (x, y) or 3 (x, y, z)")
    xyz = np.zeros(values.shape[:1] + values.shape[2:3] + (3,))       # (F, points, 3), first person
    xyz[..., :min(3, values.shape[-1])] = values[:, 0, :, :3]
    if values.shape[-1] >= 3 and z_scale == "width":
        xyz[..., 2] *= max(pose.header.dimensions.width, 1)
    absent = np.ma.getmaskarray(pose.body.data)[:, 0].any(-1) | (np.asarray(pose.body.confidence)[:, 0] <= 0)
    xyz[absent | ~np.isfinite(xyz).all(-1)] = np.nan                  # (F, points, 3)
    parts, start = {}, 0
    for c in pose.header.components:
        if c.name in COMPONENTS:
            part, wanted = COMPONENTS[c.name]
            index = {p: k for k, p in enumerate(c.points)}
            lacking = [p for p in wanted if p not in index]
            if lacking:
                raise DataError(f"{path}: component {c.name} lacks {len(lacking)} point(s) the 178 layout needs, "
                                f"e.g. {lacking[:3]}")
            parts[part] = xyz[:, [start + index[p] for p in wanted]]
        start += len(c.points)
    frames = len(xyz)
    pose33 = np.full((frames, 33, 3), np.nan)                          # only the 8 used joints are set
    pose33[:, list(data.BODY_MEDIAPIPE)] = parts["body"]
    face = np.full((frames, 468, 3), np.nan)
    face[:, list(data.FACE_MEDIAPIPE)] = parts["face"]
    return data.holistic_to_178(pose33, face, parts["left_hand"], parts["right_hand"]), fps


def align_hand_depth(poses):
    """MediaPipe gives a hand's z relative to its own wrist: shift each hand's z so that its wrist
    lies at the depth of the body's wrist, frame by frame. (N, 178, 3) → a new array. Applied after
    filling, so a lost hand's depth is interpolated relative to its wrist; on a file exported here
    (hands already at the wrist's depth) it changes nothing."""
    out = poses.copy()
    for part, wrist in (("right_hand", 2), ("left_hand", 5)):
        sl = ARTICULATORS[part]
        out[:, sl, 2] += (poses[:, wrist, 2] - poses[:, sl.start, 2])[:, None]   # (N, 21)
    return out


def resample(poses, fps, target=FPS):
    """(N, 178, 3) at `fps` → (M, 178, 3) at `target` fps by linear interpolation in time, output frame
    k at time k / target; M = floor((N - 1) · target / fps) + 1 (the clip's duration is kept)."""
    if fps == target:
        return poses
    n = len(poses)
    m = int(np.floor((n - 1) * target / fps + 1e-6)) + 1
    t = np.arange(m) * (fps / target)                                  # source position of each frame
    i0 = np.minimum(np.floor(t).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (t - i0)[:, None, None]                                        # (M, 1, 1)
    return ((1 - w) * poses[i0] + w * poses[i1]).astype(np.float32)   # (M, 178, 3)


def import_sequence(path, z_scale="width"):
    """One .pose file → (poses float32 (M, 178, 3) at 25 fps, normalised, report dict): what the real-data
    path does (holistic_to_178 → fill_missing → normalize_pose), plus the hands' depth (align_hand_depth)
    and the frame rate (resample), both between filling and normalising. The report counts, per part, the source frames that were filled."""
    raw, fps = read_holistic(path, z_scale)
    missing = ~np.isfinite(raw).all(-1)                                # (N, 178)
    report = {"frames": len(raw), "fps": fps}
    for part in data.ARTICULATOR_ORDER:
        lost = missing[:, ARTICULATORS[part]].any(1)                   # (N,)
        report[part] = "whole clip" if part.endswith("hand") and lost.all() else int(lost.sum())
    try:
        filled = align_hand_depth(data.fill_missing(raw))
        poses = data.normalize_pose(resample(filled, fps))
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    report["frames_25fps"] = len(poses)
    return poses, report


# ---------------------------------------------------------------------------------------------
# Import: a folder of .pose files + a CSV of texts → train.pt, dev.pt, test.pt
# ---------------------------------------------------------------------------------------------

def read_texts(path):
    """The CSV `name,text[,gloss,speaker,split]` (a header row first) → {name: row dict}, in file order."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows and list(rows[0]) or []
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a UTF-8 CSV file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not rows or not {"name", "text"} <= set(header):
        raise DataError(f"{path}: expected a header row with the columns name,text[,gloss,speaker,split] "
                        f"and one row per file, got columns {header} and {len(rows)} row(s)")
    out = {}
    for line, row in enumerate(rows, start=2):
        name, text = (row.get("name") or "").strip(), (row.get("text") or "").strip()
        if not name:
            raise DataError(f"{path}: line {line}: empty name")
        if name in out:
            raise DataError(f"{path}: line {line}: the name {name!r} appears twice")
        if not text:
            raise DataError(f"{path}: line {line}: {name!r} has no text")
        split = (row.get("split") or "").strip()
        if "split" in header and split not in SPLITS:
            raise DataError(f"{path}: line {line}: {name!r} has split {split!r}, expected one of {', '.join(SPLITS)}")
        out[name] = {"name": name, "text": text, "gloss": (row.get("gloss") or "").strip(),
                     "speaker": (row.get("speaker") or "").strip() or "unknown", "split": split}
    return out


def assign_splits(rows, split_by, ratio, seed, where):
    """{name: split}: from the CSV's split column, or a seeded random draw with the (train, dev, test)
    `ratio`; every split gets at least one sample (load_split refuses empty splits)."""
    names = list(rows)
    if split_by == "column":
        if not all(r["split"] for r in rows.values()):
            raise DataError(f"{where}: --split-by column needs a 'split' column (train, dev or test) in every row")
        chosen = {n: rows[n]["split"] for n in names}
    else:
        order = np.random.default_rng(seed).permutation(len(names))
        n_dev, n_test = (max(1, round(r * len(names))) for r in ratio[1:])
        if len(names) - n_dev - n_test < 1:
            raise DataError(f"{where}: {len(names)} sample(s) cannot fill train, dev and test")
        chosen = {names[i]: "dev" if k < n_dev else "test" if k < n_dev + n_test else "train"
                  for k, i in enumerate(order)}
    empty = [s for s in SPLITS if s not in chosen.values()]
    if empty:
        raise DataError(f"{where}: no sample goes to the {' and '.join(empty)} split; each split needs at least one")
    return chosen


def import_folder(poses_dir, texts_csv, out_dir, split_by=None, ratio=(0.8, 0.1, 0.1), seed=0,
                  z_scale="width", overwrite=False, log=print):
    """Convert every DIR/NAME.pose with its CSV row; write OUT_DIR/{train,dev,test}.pt and
    OUT_DIR/import_summary.json only after every file has been read and checked. Returns the summary."""
    pose_format()                                                      # the install hint before any work
    if not os.path.isdir(poses_dir):
        raise DataError(f"--poses {poses_dir}: no such folder")
    targets = [os.path.join(out_dir, f"{s}.pt") for s in SPLITS]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not overwrite:
        raise DataError(f"{existing[0]} exists; choose another --out-dir or pass --overwrite")
    rows = read_texts(texts_csv)
    files = {f[:-len(".pose")]: os.path.join(poses_dir, f) for f in sorted(os.listdir(poses_dir)) if f.endswith(".pose")}
    if not files:
        raise DataError(f"--poses {poses_dir}: no .pose files in this folder")
    no_text = [n for n in files if n not in rows]
    if no_text:
        raise DataError(f"{files[no_text[0]]}: no row in {texts_csv} names it "
                        f"({len(no_text)} such file(s): {', '.join(no_text[:3])})")
    no_file = [n for n in rows if n not in files]
    if no_file:
        raise DataError(f"{texts_csv}: {no_file[0]!r} has a text but no file {no_file[0]}.pose in {poses_dir} "
                        f"({len(no_file)} such row(s))")
    split_of = assign_splits(rows, split_by or ("column" if all(r["split"] for r in rows.values()) else "ratio"),
                             ratio, seed, texts_csv)
    releases, summary = {s: {} for s in SPLITS}, {}
    for name, path in files.items():
        poses, report = import_sequence(path, z_scale)
        row = rows[name]
        sample = {"name": name, "text": row["text"], "gloss": row["gloss"], "speaker": row["speaker"],
                  "poses_3d": torch.from_numpy(poses)}
        releases[split_of[name]][name] = data.validate_sample(name, sample, path)
        summary[name] = {"split": split_of[name], **report}
        filled = ", ".join(f"{part.replace('_', ' ')} {report[part]}" + ("" if report[part] == "whole clip" else " frames")
                           for part in data.ARTICULATOR_ORDER if report[part])
        log(f"{name}: {report['frames']} frames at {report['fps']:g} fps -> {report['frames_25fps']} at {FPS} fps, "
            f"{split_of[name]}; filled: {filled or 'nothing'}")
    whole = [f"{n} ({p.replace('_', ' ')})" for n, r in summary.items() for p in ("right_hand", "left_hand")
             if r[p] == "whole clip"]
    if whole:
        log(f"warning: {len(whole)} hand(s) never detected in a whole clip, placed on the body's wrist: "
            + ", ".join(whole[:10]) + (" ..." if len(whole) > 10 else ""))
    os.makedirs(out_dir, exist_ok=True)
    for split, target in zip(SPLITS, targets):
        harness.atomic_save(releases[split], target)
    write_atomic(os.path.join(out_dir, "import_summary.json"), json.dumps(summary, indent=1).encode())
    log(f"wrote {', '.join(f'{s}.pt ({len(releases[s])})' for s in SPLITS)} and import_summary.json to {out_dir}")
    return summary


# ---------------------------------------------------------------------------------------------
# Export: (N, 178, 3) → .pose
# ---------------------------------------------------------------------------------------------

RGB = {part: tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for part, h in render.COLORS.items()}   # render's


def pose_header():
    """The header of an exported file: pose-format's four Holistic components holding the 178 points,
    each with its bones (data.skeleton_bones, the wrist-to-hand bones left out: limbs stay inside a
    component) and one colour; dimensions 1 × 1 × 1 (coordinates are the data's own, not pixels)."""
    _, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions, _ = pose_format()
    bones = data.skeleton_bones()
    components = []
    for name, (part, points) in COMPONENTS.items():
        base = ARTICULATORS[part].start
        limbs = [(a - base, b - base) for a, b in bones[part] if a >= base and b >= base]
        components.append(PoseHeaderComponent(name, list(points), limbs, [RGB[part]], "XYZC"))
    return PoseHeader(0.2, PoseHeaderDimensions(1, 1, 1), components)


# Position in the 178 layout of each point of an exported file, component after component.
FILE_ORDER = np.concatenate([np.arange(NUM_JOINTS)[ARTICULATORS[part]] for part, _ in COMPONENTS.values()])


def write_atomic(path, payload):
    """Bytes to a temporary file beside `path`, then renamed over it (whole or absent)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def pose_bytes(poses, fps=FPS):
    """(N, 178, 3) tensor or array → the bytes of a .pose file (one person, confidence 1)."""
    Pose, _, _, _, NumPyPoseBody = pose_format()
    x = np.asarray(poses, dtype=np.float32)
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 3) or not len(x) or not np.isfinite(x).all():
        raise DataError(f"poses of shape {x.shape} (or non-finite): a .pose export needs finite (N, {NUM_JOINTS}, 3)")
    x = x[:, None, FILE_ORDER]                                         # (N, 1, 178, 3)
    body = NumPyPoseBody(fps=fps, data=x, confidence=np.ones(x.shape[:3], dtype=np.float32))
    buf = io.BytesIO()
    Pose(pose_header(), body).write(buf)
    return buf.getvalue()


def write_pose_folder(sequences, out_dir, fps=FPS):
    """{file stem: (N, 178, 3)} → OUT_DIR/STEM.pose for each. All files are written into a fresh
    temporary folder first and moved into OUT_DIR only when all are done: an error leaves nothing."""
    for stem in sequences:
        if not stem or os.path.basename(stem) != stem or stem.startswith("."):     # no path, no hidden file
            raise DataError(f"the name {stem!r} cannot be a file name in {out_dir}")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.tmp.{os.getpid()}")
    os.makedirs(tmp, exist_ok=False)
    try:
        for stem, poses in sequences.items():
            with open(os.path.join(tmp, f"{stem}.pose"), "wb") as f:
                f.write(pose_bytes(poses, fps))
        os.makedirs(out_dir, exist_ok=True)
        for stem in sequences:
            os.replace(os.path.join(tmp, f"{stem}.pose"), os.path.join(out_dir, f"{stem}.pose"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [os.path.join(out_dir, f"{stem}.pose") for stem in sequences]


def sample_stems(name, k):
    """File stems of a sentence's mean and its k samples: NAME, NAME.sample01, ..."""
    return [name] + [f"{name}.sample{i + 1:02d}" for i in range(k)]
