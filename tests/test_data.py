"""Data layer: layout, release-format loader, MediaPipe mapping, normalisation, batching, embeddings."""
import os
import pickle

import numpy as np
import pytest
import torch

import data
import harness


def sample(name="s0", n=5, **over):
    s = {"name": name, "text": "am montag regen", "gloss": "MONTAG REGEN",
         "poses_3d": torch.randn(n, 178, 3), "speaker": "Signer01"}
    s.update(over)
    return s


def write(path, obj):
    torch.save(obj, path)
    return str(path)


# --- layout ---------------------------------------------------------------------------------

def test_articulators_partition_the_178_keypoints_in_order():
    covered = []
    for name in ("body", "right_hand", "left_hand", "face"):
        sl = data.ARTICULATORS[name]
        covered += list(range(178))[sl]
    assert covered == list(range(178))
    assert [len(range(178)[data.ARTICULATORS[a]]) for a in data.ARTICULATOR_ORDER] == [8, 21, 21, 128]
    assert data.JOINT_NAMES[:8] == ("RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "LHip")
    assert data.JOINT_NAMES[8] == "RWrist" and data.JOINT_NAMES[29] == "LWrist"


def test_face_selection_is_the_sorted_contour_set():
    idx = data.FACE_MEDIAPIPE
    assert len(idx) == 128 and len(set(idx)) == 128 and list(idx) == sorted(idx)
    assert all(0 <= i < 468 for i in idx)
    # landmarks every face-mesh user knows: lip corners and centres, eye corners, forehead, chin
    for known in (0, 13, 14, 17, 61, 291, 33, 133, 263, 362, 10, 152, 70, 300):
        assert known in idx
    # not contour points: nose tip, iris centres
    for other in (1, 4, 468, 473):
        assert other not in idx
    # each contour point belongs to exactly one contour; together they give all 128
    counts = {}
    for loop in data.FACE_CONTOURS.values():
        for i in loop:
            counts[i] = counts.get(i, 0) + 1
    assert set(counts.values()) == {1} and len(counts) == 128


# --- MediaPipe path -------------------------------------------------------------------------

@pytest.mark.parametrize("face_points", [468, 478])
def test_holistic_to_178_places_every_landmark(face_points):
    rng = np.random.default_rng(0)
    pose, face = rng.normal(size=(7, 33, 4)), rng.normal(size=(7, face_points, 3))
    lh, rh = rng.normal(size=(7, 21, 3)), rng.normal(size=(7, 21, 3))
    out = data.holistic_to_178(pose, face, lh, rh)
    assert out.shape == (7, 178, 3) and out.dtype == np.float32
    body_mp = [12, 14, 16, 11, 13, 15, 24, 23]
    for j, mp in enumerate(body_mp):
        np.testing.assert_allclose(out[:, j], pose[:, mp, :3], rtol=1e-6)
    for k in range(21):
        np.testing.assert_allclose(out[:, 8 + k], rh[:, k], rtol=1e-6)
        np.testing.assert_allclose(out[:, 29 + k], lh[:, k], rtol=1e-6)
    for k, mp in enumerate(sorted(data.FACE_MEDIAPIPE)):
        np.testing.assert_allclose(out[:, 50 + k], face[:, mp], rtol=1e-6)


def test_missing_hands_become_nan_and_are_filled():
    rng = np.random.default_rng(1)
    pose, face = rng.normal(size=(5, 33, 3)), rng.normal(size=(5, 468, 3))
    rh = rng.normal(size=(5, 21, 3))
    rh[2] = 0.0                                          # not detected in frame 2
    out = data.holistic_to_178(pose, face, None, rh)     # left hand never detected
    assert np.isnan(out[:, 29:50]).all() and np.isnan(out[2, 8:29]).all()
    assert np.isfinite(out[[0, 1, 3, 4], 8:29]).all()
    filled = data.fill_missing(out)
    np.testing.assert_allclose(filled[2, 8:29], (rh[1] + rh[3]) / 2, atol=1e-5)   # linear in time
    np.testing.assert_allclose(filled[:, 29:50], np.repeat(out[:, 5:6], 21, 1), rtol=1e-6)  # on LWrist
    assert np.isfinite(filled).all()


def test_fill_missing_refuses_a_body_joint_never_seen():
    x = np.random.default_rng(2).normal(size=(4, 178, 3)).astype(np.float32)
    x[:, 6] = np.nan
    with pytest.raises(ValueError, match="RHip"):
        data.fill_missing(x)


def test_normalize_pose_centres_at_the_neck_and_scales_by_shoulder_width():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 178, 3, generator=g) * 5 + 7
    y = data.normalize_pose(x)
    neck = (y[..., 0, :] + y[..., 3, :]) / 2
    assert torch.allclose(neck, torch.zeros_like(neck), atol=1e-5)
    assert torch.allclose((y[..., 0, :] - y[..., 3, :]).norm(dim=-1), torch.ones(3, 6), atol=1e-5)
    # independent: any translation and positive scale of the input gives the same result
    assert torch.allclose(data.normalize_pose(x * 3.5 - 2.0), y, atol=1e-5)
    np.testing.assert_allclose(data.normalize_pose(x.numpy()), y.numpy(), atol=1e-6)
    x[1, 2, 3] = x[1, 2, 0]
    with pytest.raises(ValueError, match="shoulder width"):
        data.normalize_pose(x)


# --- loader ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["float16", "float32", "float64", "numpy32", "numpy64"])
def test_load_split_round_trip(tmp_path, kind):
    poses = torch.randn(9, 178, 3, dtype=torch.float64)
    stored = {"float16": poses.half(), "float32": poses.float(), "float64": poses,
              "numpy32": poses.float().numpy(), "numpy64": poses.numpy()}[kind]
    path = write(tmp_path / "train.pt", {"a": sample("a", poses_3d=stored), "b": sample("b", n=3)})
    out = data.load_split(path)
    assert [s["name"] for s in out] == ["a", "b"]
    assert out[0]["poses_3d"].dtype == torch.float32 and out[0]["poses_3d"].shape == (9, 178, 3)
    tol = 1e-2 if kind == "float16" else 1e-6
    assert torch.allclose(out[0]["poses_3d"].double(), poses, atol=tol)
    assert out[0]["text"] == "am montag regen" and out[0]["speaker"] == "Signer01"


BAD = {
    "wrong joint count": (lambda: sample("x", poses_3d=torch.zeros(4, 177, 3)), "shape"),
    "NaN": (lambda: sample("x", poses_3d=torch.full((4, 178, 3), float("nan"))), "non-finite"),
    "empty sequence": (lambda: sample("x", poses_3d=torch.zeros(0, 178, 3)), "N >= 1"),
    "missing text": (lambda: {k: v for k, v in sample("x").items() if k != "text"}, "missing key"),
    "empty text": (lambda: sample("x", text="  "), "empty text"),
    "integer poses": (lambda: sample("x", poses_3d=torch.zeros(4, 178, 3, dtype=torch.int64)), "floating"),
    "text not str": (lambda: sample("x", text=3), "must be a str"),
    "sample not dict": (lambda: [1, 2], "expected a dict"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sample_names_file_sample_and_fault(tmp_path, case):
    make, fault = BAD[case]
    path = write(tmp_path / "dev.pt", {"good": sample("good"), "bad_one": make()})
    with pytest.raises(data.DataError) as e:
        data.load_split(path)
    msg = str(e.value)
    assert "dev.pt" in msg and "bad_one" in msg and fault in msg
    with pytest.warns(UserWarning, match="skipped 1 bad sample"):
        kept = data.load_split(path, skip_bad=True)
    assert [s["name"] for s in kept] == ["good"]


def test_bad_files(tmp_path):
    with pytest.raises(data.DataError, match="not_a_dict.pt.*expected a dict"):
        data.load_split(write(tmp_path / "not_a_dict.pt", [sample()]))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(data.DataError, match="garbage.pt: cannot load"):
        data.load_split(garbage)
    with pytest.raises(data.DataError, match="missing.pt: no such"):
        data.load_split(tmp_path / "missing.pt")
    with pytest.raises(data.DataError, match="empty.pt.*empty"):
        data.load_split(write(tmp_path / "empty.pt", {}))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"a": _Payload(str(marker))}, f)
    with pytest.raises(data.DataError, match="evil.pt.*refused"):
        data.load_split(path)
    assert not marker.exists()


# --- batching -------------------------------------------------------------------------------

def test_collate_pads_and_masks_real_positions():
    items = [{"name": f"n{i}", "text": "t", "poses": torch.randn(n, 178, 3), "text_emb": torch.randn(m, 4),
              "latent": torch.randn(n, 160)} for i, (n, m) in enumerate([(3, 2), (5, 4), (1, 1)])]
    b = data.collate(items)
    assert b["poses"].shape == (3, 5, 178, 3) and b["text_emb"].shape == (3, 4, 4)
    assert b["frame_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]]
    assert b["text_mask"].tolist() == [[1, 1, 0, 0], [1] * 4, [1, 0, 0, 0]]
    assert b["lengths"].tolist() == [3, 5, 1]
    for i, it in enumerate(items):
        n = len(it["poses"])
        assert torch.equal(b["poses"][i, :n], it["poses"]) and (b["poses"][i, n:] == 0).all()
        assert torch.equal(b["latent"][i, :n], it["latent"])


# --- text embeddings (the offline package model) --------------------------------------------

def test_embeddings_equal_a_direct_transformers_call_and_are_cached(tmp_path, monkeypatch):
    from transformers import AutoModel, AutoTokenizer
    texts = ["am montag regen im norden", "morgen sonnig"]
    emb = data.text_embeddings(texts, cache_dir=tmp_path)
    path = data.resolve_bert(data.OFFLINE_BERT)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    for t in texts:
        with torch.no_grad():
            ref = model(**tok([t], return_tensors="pt")).last_hidden_state[0]
        assert emb[t].shape == ref.shape and emb[t].shape[-1] == model.config.hidden_size == 384
        assert torch.allclose(emb[t], ref, atol=2e-2)          # cached as float16
    monkeypatch.setattr(data, "embed_texts", lambda *a, **k: pytest.fail("cache was not used"))
    again = data.text_embeddings(texts, cache_dir=tmp_path)
    assert all(torch.equal(again[t], emb[t]) for t in texts)


def test_long_text_is_truncated_with_a_warning():
    long = " ".join(["regen"] * 80)
    with pytest.warns(UserWarning, match="truncated to 52"):
        (e,) = data.embed_texts([long])
    assert e.shape[0] == 52
    with pytest.raises(data.DataError, match="empty text"):
        data.embed_texts(["  "])


class _InterruptWhilePickled:
    """Sends this process a Ctrl-C (SIGINT) while torch.save is writing it; loads back as 7."""
    def __reduce__(self):
        import signal
        os.kill(os.getpid(), signal.SIGINT)
        return int, (7,)


def test_a_ctrl_c_during_a_save_waits_for_the_file_to_be_whole(tmp_path):
    """torch.save turns an interrupt in mid-write into a RuntimeError about its zip stream; atomic_save
    holds the Ctrl-C until the file is written and renamed, then raises it as usual."""
    import signal
    path = tmp_path / "ckpt.pt"
    # Python's Ctrl-C handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            harness.atomic_save({"w": torch.arange(5), "x": _InterruptWhilePickled()}, path)
        ran_on = []
        with pytest.raises(KeyboardInterrupt):
            with harness.sigint_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                ran_on.append("after the signal")
        assert ran_on == ["after the signal"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler        # restored
    finally:
        signal.signal(signal.SIGINT, before)
    got = torch.load(path, weights_only=False)                                  # int(7) is a call to unpickle
    assert got["x"] == 7 and torch.equal(got["w"], torch.arange(5))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]                           # no temporary file left


def test_text_layout_follows_the_wordpiece_tokens():
    """Spans and characters against the token strings: a WordPiece token owns its letters ('##'
    stripped) and, when it starts a word after the first, the space before it."""
    texts = ["zwickau leipzig kino", "anna", "quirihyk bremen"]
    tokenizer = data.load_text_encoder(with_model=False)[0]
    layout = data.text_layout(texts)
    for text in texts:
        spans, chars = layout[text]
        pieces = tokenizer.tokenize(text)
        widths = [0] + [len(p[2:]) if p.startswith("##") else len(p) + (i > 0)
                        for i, p in enumerate(pieces)] + [0]
        ends = np.cumsum(widths)
        assert spans.tolist() == [[float(e - w), float(e)] for e, w in zip(ends, widths)]
        assert len(data.text_embeddings([text])[text]) == len(spans)
        want = [0] + [1 + ord(c) % (data.CHAR_BUCKETS - 1) for c in text] + [0]
        assert chars.tolist() == want
