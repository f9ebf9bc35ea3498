"""`.pose` files in and out (posefile.py, data.py import-pose, sample.py --format pose) and several
samples per sentence (sample.py / evaluate.py --samples). The .pose files are written here with
pose-format itself, laid out as its MediaPipe Holistic writer lays them out; nothing is downloaded."""
import csv
import os

import numpy as np
import pytest
import torch

import data

# pose-format is optional for users but a test dependency: `make test` installs requirements-pose.txt.
from pose_format import Pose, PoseHeader
from pose_format.numpy import NumPyPoseBody
from pose_format.pose_header import PoseHeaderComponent, PoseHeaderDimensions

# MediaPipe's 33 pose landmarks in index order (what pose-format's Holistic writer names them).
MP_POSE = ["NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
           "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
           "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
           "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP",
           "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL",
           "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX"]
MP_HAND = ["WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP", "INDEX_FINGER_PIP",
           "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP",
           "MIDDLE_FINGER_TIP", "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP",
           "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP"]
# The 178 layout in MediaPipe terms, written out here independently of data.py / posefile.py.
BODY_178 = ["RIGHT_SHOULDER", "RIGHT_ELBOW", "RIGHT_WRIST", "LEFT_SHOULDER", "LEFT_ELBOW", "LEFT_WRIST",
            "RIGHT_HIP", "LEFT_HIP"]
W, H, SCALE = 640, 480, 150.0      # image size and pixels per unit of the test sequences


def smooth_sequence(frames, seed=0):
    """A random but smooth (N, 178, 3) sequence whose hands hang at the body's wrists, as MediaPipe
    data has them once the hands' wrist-relative depth is put at the wrist."""
    g = np.random.default_rng(seed)
    base = g.normal(0, 0.3, (178, 3))
    base[0], base[3] = (-0.5, 0, 0), (0.5, 0, 0)                       # shoulders 1 apart
    t = np.arange(frames)[:, None, None] / 25.0
    seq = base + 0.05 * np.sin(2 * np.pi * (0.7 * t + g.uniform(0, 1, (178, 3))))
    for hand, wrist in ((slice(8, 29), 2), (slice(29, 50), 5)):
        seq[:, hand] += seq[:, wrist:wrist + 1] - seq[:, hand.start:hand.start + 1]
    return seq.astype(np.float32)


def holistic_header(two_d=False, face_points=468):
    fmt = "XYC" if two_d else "XYZC"
    comp = lambda name, points: PoseHeaderComponent(name, points, [(0, 1)], [(255, 0, 0)], fmt)  # noqa: E731
    return PoseHeader(0.2, PoseHeaderDimensions(W, H, 1), [
        comp("POSE_LANDMARKS", MP_POSE), comp("FACE_LANDMARKS", [str(i) for i in range(face_points)]),
        comp("LEFT_HAND_LANDMARKS", MP_HAND), comp("RIGHT_HAND_LANDMARKS", MP_HAND),
        comp("POSE_WORLD_LANDMARKS", MP_POSE)])


def write_holistic(path, seq, fps=25.0, lost=None, two_d=False, header=None):
    """Write a (N, 178, 3) sequence as pose-format's MediaPipe writer would: x, y in pixels, z in image
    widths, hands' z relative to their wrist, unused landmarks random, a hand not detected in a frame
    all zero with confidence 0. lost: {"left"/"right": frames where that hand is not detected}."""
    g = np.random.default_rng(1)
    n = len(seq)
    px = seq * SCALE + np.array([W / 2, H / 2, 0])                      # pixels
    px[..., 2] /= W                                                     # z in image widths
    pose = g.uniform(0, W, (n, 33, 3))
    pose[:, [MP_POSE.index(j) for j in BODY_178]] = px[:, :8]
    face = g.uniform(0, W, (n, 468, 3))
    face[:, list(data.FACE_MEDIAPIPE)] = px[:, 50:]
    hands, conf_hands = {}, {}
    for side, sl in (("right", slice(8, 29)), ("left", slice(29, 50))):
        hand = px[:, sl].copy()
        hand[..., 2] -= hand[:, :1, 2]                                 # MediaPipe: depth relative to the wrist
        c = np.ones((n, 21))
        frames = list((lost or {}).get(side, []))
        hand[frames], c[frames] = 0.0, 0.0
        hands[side], conf_hands[side] = hand, c
    world = g.normal(0, 1, (n, 33, 3))
    xyz = np.concatenate([pose, face, hands["left"], hands["right"], world], axis=1)     # (N, 576, 3)
    conf = np.concatenate([np.full((n, 33), 0.9), np.ones((n, 468)), conf_hands["left"],
                           conf_hands["right"], np.full((n, 33), 0.9)], axis=1)
    if two_d:
        xyz = xyz[..., :2]
    body = NumPyPoseBody(fps=fps, data=xyz[:, None].astype(np.float32), confidence=conf[:, None].astype(np.float32))
    with open(path, "wb") as f:
        Pose(header or holistic_header(two_d), body).write(f)


def normalised(seq):
    """Centre at the shoulders' midpoint, divide by their distance: the expected import, by hand."""
    neck = (seq[:, 0] + seq[:, 3]) / 2
    width = np.linalg.norm(seq[:, 0] - seq[:, 3], axis=-1)
    return (seq - neck[:, None]) / width[:, None, None]


def interpolate_lost(seq, part, frames):
    """The sequence with `part`'s joints at `frames` replaced by linear interpolation between the
    nearest kept frames (a plain per-frame loop; the ends hold the nearest kept value)."""
    out, kept = seq.copy(), [t for t in range(len(seq)) if t not in set(frames)]
    for t in frames:
        before, after = [k for k in kept if k < t], [k for k in kept if k > t]
        if not before or not after:
            out[t, part] = seq[(before or after)[-1 if before else 0], part]
            continue
        a, b = before[-1], after[0]
        out[t, part] = seq[a, part] + (t - a) / (b - a) * (seq[b, part] - seq[a, part])
    return out


def write_csv(path, rows, header=("name", "text", "gloss", "speaker", "split")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def recordings(tmp_path):
    """Five recordings: 25, 50 and 12.5 fps, one 2D, lost hand frames, one hand never seen."""
    d = tmp_path / "poses"
    d.mkdir()
    seqs = {f"clip{i}": smooth_sequence(n, seed=i) for i, n in enumerate((30, 40, 16, 20, 24))}
    write_holistic(d / "clip0.pose", seqs["clip0"], 25, lost={"right": [0, 1, 7, 8, 9, 29]})
    write_holistic(d / "clip1.pose", seqs["clip1"], 50)
    write_holistic(d / "clip2.pose", seqs["clip2"], 12.5)
    write_holistic(d / "clip3.pose", seqs["clip3"], 25, two_d=True)
    write_holistic(d / "clip4.pose", seqs["clip4"], 25, lost={"left": range(24)})
    rows = [["clip0", "am montag regen", "MONTAG REGEN", "Signer01", "train"],
            ["clip1", "im norden sonne", "NORDEN SONNE", "Signer01", "train"],
            ["clip2", "morgen wind", "MORGEN WIND", "Signer02", "dev"],
            ["clip3", "heute schnee", "HEUTE SCHNEE", "", "test"],
            ["clip4", "abends nebel", "", "Signer02", "train"]]
    write_csv(tmp_path / "texts.csv", rows)
    return tmp_path, seqs


def test_import_fills_resamples_and_normalises_like_a_hand_computation(recordings, caplog):
    root, seqs = recordings
    caplog.set_level("INFO", logger="a2vslp")
    out = root / "release"
    data.main(["import-pose", "--poses", str(root / "poses"), "--texts", str(root / "texts.csv"), "--out-dir", str(out)])
    splits = {s: data.load_split(out / f"{s}.pt") for s in ("train", "dev", "test")}
    got = {x["name"]: x for samples in splits.values() for x in samples}
    assert sorted(x["name"] for x in splits["train"]) == ["clip0", "clip1", "clip4"]
    assert [x["name"] for x in splits["dev"]] == ["clip2"] and got["clip3"]["speaker"] == "unknown"
    assert got["clip0"]["text"] == "am montag regen" and got["clip0"]["gloss"] == "MONTAG REGEN"
    # 25 fps with lost right-hand frames: filled by interpolation in time
    # (x, y as they are; z relative to the wrist, as MediaPipe gives a hand, then put at the body wrist's depth)
    rel = seqs["clip0"].copy()
    rel[:, 8:29, 2] -= rel[:, 2:3, 2]
    expect = interpolate_lost(rel, slice(8, 29), [0, 1, 7, 8, 9, 29])
    expect[:, 8:29, 2] += expect[:, 2:3, 2]
    expect = normalised(expect)
    np.testing.assert_allclose(got["clip0"]["poses_3d"].numpy(), expect, atol=2e-5)
    # 50 fps → every second frame; 12.5 fps → the midpoints in between
    np.testing.assert_allclose(got["clip1"]["poses_3d"].numpy(), normalised(seqs["clip1"][::2]), atol=2e-5)
    s2 = seqs["clip2"]
    up = np.stack([s2[t // 2] if t % 2 == 0 else (s2[t // 2] + s2[t // 2 + 1]) / 2 for t in range(2 * len(s2) - 1)])
    np.testing.assert_allclose(got["clip2"]["poses_3d"].numpy(), normalised(up), atol=2e-5)
    # 2D: z = 0, x and y as in 3D
    flat = seqs["clip3"].copy()
    flat[..., 2] = 0
    np.testing.assert_allclose(got["clip3"]["poses_3d"].numpy(), normalised(flat), atol=2e-5)
    # a hand never seen sits on its body wrist, and the summary says so
    clip4 = got["clip4"]["poses_3d"].numpy()
    np.testing.assert_allclose(clip4[:, 29:50], np.repeat(clip4[:, 5:6], 21, 1), atol=1e-6)
    log = caplog.text
    assert "clip0: 30 frames at 25 fps -> 30 at 25 fps, train; filled: right hand 6 frames" in log
    assert "clip1: 40 frames at 50 fps -> 20 at 25 fps" in log and "clip4 (left hand)" in log
    import json
    summary = json.loads((out / "import_summary.json").read_text())
    assert summary["clip4"]["left_hand"] == "whole clip" and summary["clip0"]["right_hand"] == 6


def test_import_by_ratio_gives_every_split_a_sample_and_is_seeded(recordings):
    root, _ = recordings
    write_csv(root / "nosplit.csv", [[f"clip{i}", f"satz {i}"] for i in range(5)], header=("name", "text"))
    names = []
    for k in range(2):
        out = root / f"r{k}"
        data.main(["import-pose", "--poses", str(root / "poses"), "--texts", str(root / "nosplit.csv"),
                   "--out-dir", str(out), "--seed", "3"])
        names.append({s: [x["name"] for x in data.load_split(out / f"{s}.pt")] for s in ("train", "dev", "test")})
    assert names[0] == names[1] and [len(names[0][s]) for s in ("train", "dev", "test")] == [3, 1, 1]


def bad_case(root, case):
    """Break the recordings folder or CSV as `case` says; returns (extra argv, text the error must hold)."""
    poses, csv_path = root / "poses", root / "texts.csv"
    if case == "unreadable":
        (poses / "clip1.pose").write_bytes(b"not a pose file at all")
        return [], "clip1.pose: not a readable .pose file"
    if case == "truncated":
        full = (poses / "clip1.pose").read_bytes()
        (poses / "clip1.pose").write_bytes(full[:len(full) // 2])
        return [], "clip1.pose: not a readable .pose file"
    if case == "unknown components":
        hdr = holistic_header()
        hdr.components[2].name = "BODY_135"
        write_holistic(poses / "clip2.pose", smooth_sequence(5), header=hdr)
        return [], "clip2.pose: not MediaPipe Holistic: unknown component(s) BODY_135; missing LEFT_HAND_LANDMARKS"
    if case == "name without text":
        write_holistic(poses / "extra.pose", smooth_sequence(5))
        return [], "extra.pose: no row in"
    if case == "empty text":
        rows = list(csv.reader(open(csv_path, encoding="utf-8")))
        rows[3][1] = " "
        write_csv(csv_path, rows[1:])
        return [], "line 4: 'clip2' has no text"
    if case == "text without file":
        os.remove(poses / "clip3.pose")
        return [], "'clip3' has a text but no file clip3.pose"
    if case == "fps 0":
        write_holistic(poses / "clip2.pose", smooth_sequence(5), fps=0)
        return [], "clip2.pose: the file's fps is 0"
    if case == "face never detected":
        xyz = np.random.default_rng(0).uniform(0, 1, (5, 1, 33 + 468 + 42 + 33, 3)).astype(np.float32)
        conf = np.ones((5, 1, 576), np.float32)
        conf[:, :, 33:501] = 0                          # FACE_LANDMARKS never detected
        with open(poses / "clip2.pose", "wb") as f:
            Pose(holistic_header(), NumPyPoseBody(25, xyz, conf)).write(f)
        return [], "clip2.pose: keypoints ['Face0'"
    if case == "bad split":
        rows = list(csv.reader(open(csv_path, encoding="utf-8")))
        rows[2][4] = "validation"
        write_csv(csv_path, rows[1:])
        return [], "line 3: 'clip1' has split 'validation'"
    if case == "missing points":                         # a face of 100 points, not the 468 (or 128) named
        xyz = np.random.default_rng(0).uniform(0, 1, (5, 1, 33 + 100 + 42 + 33, 3)).astype(np.float32)
        with open(poses / "clip2.pose", "wb") as f:
            Pose(holistic_header(face_points=100), NumPyPoseBody(25, xyz, np.ones(xyz.shape[:3], np.float32))).write(f)
        return [], "clip2.pose: component FACE_LANDMARKS lacks"
    if case == "duplicate name":
        rows = list(csv.reader(open(csv_path, encoding="utf-8")))
        write_csv(csv_path, rows[1:] + [rows[1]])
        return [], "line 7: the name 'clip0' appears twice"
    if case == "no text column":
        write_csv(csv_path, [["clip0", "x"]], header=("name", "sentence"))
        return [], "texts.csv: expected a header row with the columns name,text"
    if case == "csv not utf-8":
        csv_path.write_bytes("name,text\nclip0,gr\xfc\xdfe\n".encode("latin-1"))
        return [], "texts.csv: not a UTF-8 CSV file"
    if case == "no such csv":
        os.remove(csv_path)
        return [], "texts.csv: cannot read"
    if case == "bad ratio":
        return ["--split-by", "ratio", "--ratio", "0.9,0.1"], "--ratio 0.9,0.1"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unreadable", "truncated", "unknown components", "name without text", "empty text",
                                  "text without file", "fps 0", "face never detected", "bad split", "missing points",
                                  "duplicate name", "no text column", "csv not utf-8", "no such csv", "bad ratio"])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(recordings, case, capsys):
    root, _ = recordings
    extra, needle = bad_case(root, case)
    out = root / "release"
    with pytest.raises(SystemExit) as e:
        data.main(["import-pose", "--poses", str(root / "poses"), "--texts", str(root / "texts.csv"),
                   "--out-dir", str(out), *extra])
    msg = str(e.value.code)
    if e.value.code == 2:                                                 # argparse: usage, then one error line
        msg = capsys.readouterr().err.strip().splitlines()[-1].split(": ", 1)[1]
    assert msg.startswith("error: ") and "\n" not in msg and needle in msg, msg
    assert not out.exists() or not os.listdir(out), os.listdir(out)


def test_pose_formats_own_reduced_holistic_imports_as_the_full_file(recordings, tmp_path):
    """pose-format's reduce_holistic (8 body joints, the 128 contour face points, no world landmarks)
    keeps every point the layout needs: the import is the same as from the full file."""
    import posefile
    from pose_format.utils.generic import reduce_holistic
    root, _ = recordings
    full = root / "poses" / "clip0.pose"
    reduced = reduce_holistic(Pose.read(full.read_bytes()))
    assert len(reduced.header.components[1].points) == 128
    with open(tmp_path / "r.pose", "wb") as f:
        reduced.write(f)
    np.testing.assert_array_equal(posefile.import_sequence(tmp_path / "r.pose")[0], posefile.import_sequence(full)[0])


def test_an_existing_release_is_not_replaced_without_overwrite(recordings):
    root, _ = recordings
    out = root / "release"
    out.mkdir()
    (out / "train.pt").write_bytes(b"precious")
    with pytest.raises(SystemExit) as e:
        data.main(["import-pose", "--poses", str(root / "poses"), "--texts", str(root / "texts.csv"), "--out-dir", str(out)])
    assert "train.pt exists" in str(e.value.code) and (out / "train.pt").read_bytes() == b"precious"


def test_export_round_trip_and_what_pose_format_reads_back(recordings, tmp_path):
    """import → export (.pose) → import gives the same array; pose-format sees four Holistic
    components with the 178 points, limbs inside each component, colours, 25 fps."""
    import posefile
    from pose_format.utils.generic import pose_normalization_info
    root, _ = recordings
    first, _ = posefile.import_sequence(root / "poses" / "clip0.pose")
    files = posefile.write_pose_folder({"clip0": first, "clip0.sample01": first[::-1]}, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["clip0.pose", "clip0.sample01.pose"]
    again, report = posefile.import_sequence(files[0])
    np.testing.assert_allclose(again, first, atol=1e-5)
    assert report["right_hand"] == 0 and report["frames"] == len(first)
    pose = Pose.read((tmp_path / "out" / "clip0.pose").read_bytes())
    assert pose.body.fps == 25 and pose.body.data.shape == (len(first), 1, 178, 3)
    comps = {c.name: c for c in pose.header.components}
    assert [len(comps[n].points) for n in ("POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS",
                                           "RIGHT_HAND_LANDMARKS")] == [8, 128, 21, 21]
    for c in comps.values():
        assert c.colors is not None and len(c.colors) >= 1 and len(c.limbs) > 0
        assert all(0 <= a < len(c.points) and 0 <= b < len(c.points) for a, b in c.limbs)
    # the points by name hold the array's values: right wrist (178 index 2), left hand tip, a face point
    flat = np.asarray(pose.body.data.data)[:, 0]
    idx = lambda comp, point: pose.header.get_point_index(comp, point)  # noqa: E731
    np.testing.assert_allclose(flat[:, idx("POSE_LANDMARKS", "RIGHT_WRIST")], first[:, 2], atol=1e-7)
    np.testing.assert_allclose(flat[:, idx("LEFT_HAND_LANDMARKS", "PINKY_TIP")], first[:, 49], atol=1e-7)
    k = data.FACE_MEDIAPIPE[5]
    np.testing.assert_allclose(flat[:, idx("FACE_LANDMARKS", str(k))], first[:, 55], atol=1e-7)
    # pose-format's own normalisation (what its viewer's --normalize uses) finds the shoulders
    info = pose_normalization_info(pose.header)
    assert (info.p1, info.p2) == (idx("POSE_LANDMARKS", "RIGHT_SHOULDER"), idx("POSE_LANDMARKS", "LEFT_SHOULDER")) or \
           (info.p2, info.p1) == (idx("POSE_LANDMARKS", "RIGHT_SHOULDER"), idx("POSE_LANDMARKS", "LEFT_SHOULDER"))


def test_missing_pose_format_is_one_line(monkeypatch, recordings):
    import sys
    root, _ = recordings
    monkeypatch.setitem(sys.modules, "pose_format", None)              # as if not installed
    with pytest.raises(SystemExit) as e:
        data.main(["import-pose", "--poses", str(root / "poses"), "--texts", str(root / "texts.csv"),
                   "--out-dir", str(root / "out")])
    assert str(e.value.code) == "error: .pose files need the pose-format package (pip install pose-format)"
    assert not (root / "out").exists()


# ---------------------------------------------------------------------------------------------
# Several samples per sentence; .pose output of sample.py
# ---------------------------------------------------------------------------------------------

TEXTS = ["am montag regen im norden", "morgen sonne"]


@pytest.fixture(scope="module")
def generator_ckpt(tmp_path_factory):
    """An untrained tiny generator whose predicted log σ̂² is pinned near -7 (σ̂ ≈ 0.03), with its
    VAE, saved as train.py saves a generator checkpoint."""
    from generator import A2VSLP
    from vae import DisentangledVAE
    torch.manual_seed(0)
    model_args = dict(text_dim=384, d_model=16, enc_layers=1, enc_heads=2, dec_layers=1, dec_heads=2, ff=32,
                      dropout=0.0, max_frames=20)
    model = A2VSLP(**model_args)
    model.set_reference_pose(torch.randn(178, 3))
    with torch.no_grad():
        model.head.weight[80:] *= 0.01
        model.head.bias[80:] = -7.0                                      # log σ̂²
        model.length_head.bias.fill_(3.0)                                # ~19 frames
    vae = DisentangledVAE()
    path = tmp_path_factory.mktemp("gen") / "gen.pt"
    torch.save({"stage": "generator", "model": model.state_dict(), "model_args": model_args, "args": {},
                "vae": vae.state_dict(), "vae_model_args": {"variant": "base"}, "bert": data.OFFLINE_BERT}, path)
    return path


def test_samples_differ_and_average_to_the_mean_prediction(generator_ckpt, tmp_path):
    """--samples 12: 12 different realisations per sentence, each as long as the mean; with a small σ̂
    the decoder is nearly linear around μ̂, so their average lies far closer to the mean prediction
    (z = μ̂, computed separately with --mean) than any one sample does (1/√12 of it in the limit)."""
    import sample
    texts = sum((["--text", t] for t in TEXTS), [])
    common = ["--generator", str(generator_ckpt), *texts, "--cache-dir", str(tmp_path / "cache")]
    sample.main([*common, "--samples", "12", "--out", str(tmp_path / "s.pt")])
    sample.main([*common, "--mean", "--out", str(tmp_path / "m.pt")])
    got = torch.load(tmp_path / "s.pt", weights_only=True)
    mean = torch.load(tmp_path / "m.pt", weights_only=True)
    assert sorted(got) == sorted(mean) == ["text_000", "text_001"]
    for name, entry in got.items():
        draws = entry["samples"]                                          # (12, N, 178, 3)
        assert draws.shape[0] == 12 and draws.shape[1:] == mean[name].shape
        torch.testing.assert_close(entry["poses_3d"], mean[name])
        apart = [(draws[a] - draws[b]).abs().mean() for a in range(12) for b in range(a)]
        one = torch.stack([(d - mean[name]).abs().mean() for d in draws])
        avg = (draws.mean(0) - mean[name]).abs().mean()
        assert min(apart) > 0.2 * one.mean() > 0, (min(apart), one.mean())
        assert avg < 0.45 * one.mean(), (avg, one.mean())


def test_sample_format_pose_writes_one_file_per_sentence_and_sample(generator_ckpt, tmp_path):
    import posefile
    import sample
    common = ["--generator", str(generator_ckpt), "--text", TEXTS[0], "--cache-dir", str(tmp_path / "cache")]
    sample.main([*common, "--samples", "2", "--format", "pose", "--out", str(tmp_path / "poses")])
    sample.main([*common, "--samples", "2", "--out", str(tmp_path / "s.pt")])
    assert sorted(os.listdir(tmp_path / "poses")) == ["text_000.pose", "text_000.sample01.pose", "text_000.sample02.pose"]
    ref = torch.load(tmp_path / "s.pt", weights_only=True)["text_000"]
    for stem, want in (("text_000", ref["poses_3d"]), ("text_000.sample02", ref["samples"][1])):
        pose = Pose.read((tmp_path / "poses" / f"{stem}.pose").read_bytes())
        assert pose.body.fps == 25 and len(pose.body.data) == len(want)
        flat = np.asarray(pose.body.data.data)[:, 0]                      # file order: body, face, left, right
        rw = pose.header.get_point_index("RIGHT_HAND_LANDMARKS", "WRIST")
        np.testing.assert_allclose(flat[:, rw], want[:, 8].numpy(), atol=1e-6)
        np.testing.assert_allclose(flat[:, posefile.FILE_ORDER.argsort()], want.numpy(), atol=1e-6)


def test_sample_spread_matches_a_naive_loop():
    from metrics import sample_spread
    g = np.random.default_rng(0)
    sets = [g.normal(size=(3, 5, 178, 3)), g.normal(size=(3, 2, 178, 3))]
    dists = []                                                            # every (pair, frame, joint) once
    for x in sets:
        for a in range(3):
            for b in range(a + 1, 3):
                for t in range(x.shape[1]):
                    dists.append([np.sqrt(((x[a, t, j] - x[b, t, j]) ** 2).sum()) for j in range(178)])
    dists = np.array(dists)                                               # (pairs × frames, 178)
    got = sample_spread(sets)
    assert got["all"] == pytest.approx(dists.mean(), rel=1e-12)
    assert got["left_hand"] == pytest.approx(dists[:, 29:50].mean(), rel=1e-12)
    assert got["face"] == pytest.approx(dists[:, 50:].mean(), rel=1e-12)


def test_a_failing_export_leaves_no_pose_file(tmp_path):
    """The second sequence cannot be written (wrong shape): the first, already written into the
    temporary folder, never reaches --out, and no temporary folder is left behind."""
    import posefile
    good = np.zeros((3, 178, 3), np.float32)
    with pytest.raises(data.DataError, match=r"shape \(3, 177, 3\)"):
        posefile.write_pose_folder({"a": good, "b": np.zeros((3, 177, 3), np.float32)}, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_sample_format_pose_without_pose_format_is_one_line(generator_ckpt, tmp_path, monkeypatch, capsys):
    import sys
    import sample
    monkeypatch.setitem(sys.modules, "pose_format", None)              # as if not installed
    with pytest.raises(SystemExit) as e:
        sample.main(["--generator", str(generator_ckpt), "--text", TEXTS[0], "--format", "pose", "--out", str(tmp_path / "p")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--format pose: .pose files need the pose-format package (pip install pose-format)")
    assert not (tmp_path / "p").exists()
