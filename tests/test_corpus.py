"""Tests of the built-in synthetic corpus (corpus/): release format, determinism, splits,
language properties, kinematic consistency and readability of the signs."""
import itertools
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import corpus
from corpus import body, language, signing
from conftest import ROOT
from data import ARTICULATORS, FACE_POSITION, HAND_FINGERS, NUM_JOINTS, skeleton_bones

SPLITS = ("train", "dev", "test")
SMALL = {"num_train": 60, "num_dev": 8, "num_test": 8}


def load(directory):
    return {s: torch.load(os.path.join(directory, f"{s}.pt"), weights_only=True) for s in SPLITS}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    counts = corpus.write_corpus(str(out), seed=0, **SMALL)
    return out, counts, load(out)


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(123)
    return [language.make_sentence(rng) for _ in range(3000)]


def test_release_format(small):
    out, counts, data = small
    assert counts == {"train": 60, "dev": 8, "test": 8}
    assert sorted(os.listdir(out)) == ["dev.pt", "test.pt", "train.pt"]   # no temp files left
    names = set()
    for split, samples in data.items():
        assert type(samples) is dict and len(samples) == counts[split]
        for key, sample in samples.items():
            assert set(sample) == {"name", "text", "gloss", "poses_3d", "speaker"}
            assert sample["name"] == key and re.fullmatch(rf"synthetic_{split}_\d{{6}}", key)
            assert all(type(sample[f]) is str for f in ("name", "text", "gloss", "speaker"))
            assert re.fullmatch(r"Signer\d\d", sample["speaker"])
            assert re.fullmatch(r"[a-zäöüß]+( [a-zäöüß]+)*", sample["text"])
            assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", sample["gloss"])
            poses = sample["poses_3d"]
            assert isinstance(poses, torch.Tensor) and poses.dtype == torch.float32
            assert poses.ndim == 3 and poses.shape[1:] == (NUM_JOINTS, 3) and len(poses) > 20
            assert torch.isfinite(poses).all()
            names.add(key)
    assert len(names) == sum(counts.values())


def test_same_seed_same_bytes_other_seed_other_data(small, tmp_path):
    out, _, data = small
    corpus.write_corpus(str(tmp_path / "again"), seed=0, **SMALL)
    corpus.write_corpus(str(tmp_path / "other"), seed=1, **SMALL)
    for split in SPLITS:
        with open(out / f"{split}.pt", "rb") as a, open(tmp_path / "again" / f"{split}.pt", "rb") as b:
            assert a.read() == b.read()
    other = load(tmp_path / "other")
    assert [s["text"] for s in other["train"].values()] != [s["text"] for s in data["train"].values()]
    first = "synthetic_train_000000"
    a, b = data["train"][first]["poses_3d"], other["train"][first]["poses_3d"]
    assert a.shape != b.shape or not torch.equal(a, b)


def test_command_line_writes_the_same_files(small, tmp_path):
    out = small[0]
    flags = [f"--num-{k[4:]}={v}" for k, v in SMALL.items()]
    cmd = [sys.executable, "-m", "corpus", "--out-dir", str(tmp_path), "--seed", "0", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for split in SPLITS:
        with open(out / f"{split}.pt", "rb") as a, open(tmp_path / f"{split}.pt", "rb") as b:
            assert a.read() == b.read()
    cmd[4] = str(tmp_path / "fresh")
    bad = subprocess.run(cmd[:-3] + ["--num-train", "0"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "error: num_train must be an integer >= 1" in bad.stderr


def test_dev_and_test_are_unseen_sentences_of_seen_signs(small):
    data = small[2]
    train_texts = {s["text"] for s in data["train"].values()}
    train_glosses = {g for s in data["train"].values() for g in s["gloss"].split()}
    dev = {s["text"] for s in data["dev"].values()}
    test = {s["text"] for s in data["test"].values()}
    assert not dev & train_texts and not test & train_texts and not dev & test
    for split in ("dev", "test"):
        for sample in data[split].values():
            assert set(sample["gloss"].split()) <= train_glosses


def test_vocabulary_sentence_length_and_text_to_gloss_function(sentences):
    words = {w for text, _ in sentences for w in text.split()}
    assert len(words) >= 150
    assert all(4 <= len(text.split()) <= 14 for text, _ in sentences)
    mapping = {}
    for text, gloss in sentences:   # the gloss sequence is a function of the text
        assert mapping.setdefault(text, gloss) == gloss
    inventory = set(language.gloss_inventory())
    assert {g for _, gloss in sentences for g in gloss.split()} == inventory
    assert set(signing.gloss_lexicon()) == inventory


def test_sign_order_differs_from_word_order(sentences):
    # place each gloss at the first word that spells it (REGEN <- "regen", STARK <- "starker")
    inverted = unsigned = late_first_sign = 0
    for text, gloss in sentences:
        spelled = [language.gloss_of(w) for w in text.split()]
        positions = [next((i for i, w in enumerate(spelled) if w.startswith(g)), None)
                     for g in gloss.split() if len(g) >= 3]
        positions = [p for p in positions if p is not None]
        inverted += any(a > b for a, b in zip(positions, positions[1:]))
        unsigned += len(gloss.split()) < len(text.split())
        # e.g. "regen zieht am mittwoch ..." -> "MITTWOCH ...": the first sign is a later word
        first = gloss.split()[0]
        late_first_sign += any(w == first for w in spelled[2:]) and first not in spelled[:2]
    assert inverted / len(sentences) > 0.2
    assert unsigned / len(sentences) > 0.9
    assert late_first_sign / len(sentences) > 0.05


def test_two_realizations_of_one_sentence_differ():
    signers = signing.make_signers(6)
    glosses = "MORGEN SUED REGEN STARK KOMMEN"
    a = signing.render_sign_sequence(glosses, signers[0], np.random.default_rng(1))
    b = signing.render_sign_sequence(glosses, signers[0], np.random.default_rng(2))
    c = signing.render_sign_sequence(glosses, signers[3], np.random.default_rng(1))
    for x, y in ((a, b), (a, c)):
        n = min(len(x), len(y))
        assert len(x) != len(y) or np.abs(x[:n] - y[:n]).max() > 0.02
    same = signing.render_sign_sequence(glosses, signers[0], np.random.default_rng(1))
    assert np.array_equal(a, same)


def test_rest_pose_at_start_and_end(small):
    for samples in small[2].values():
        for sample in samples.values():
            poses = sample["poses_3d"].numpy()
            hands = np.r_[2, 5, np.arange(8, 50)]
            for frame in (poses[0], poses[-1]):
                width = np.linalg.norm(frame[0] - frame[3])
                assert frame[hands, 1].max() < frame[[0, 3], 1].min() - 0.5 * width
            # and the hands do leave the rest pose in between
            assert np.linalg.norm(poses[:, 2] - poses[0, 2], axis=-1).max() > 0.15


def reference_hand_bones(scale):
    """Bone lengths of the 21-point hand from the model constants (wrist -> chain -> tip)."""
    lengths = {}
    for f, (name, chain) in enumerate(HAND_FINGERS.items()):
        base = body.THUMB_CMC if name == "thumb" else body.FINGER_MCP[f - 1]
        bones = body.THUMB_BONES if name == "thumb" else body.FINGER_BONES[f - 1]
        lengths[(0, chain[0])] = np.linalg.norm(base) * scale
        for k in range(3):
            lengths[(chain[k], chain[k + 1])] = bones[k] * scale
    return lengths


@pytest.mark.parametrize("signer_index", [0, 2, 5])
def test_bone_lengths_are_constant_and_match_the_signer(signer_index):
    signer = signing.make_signers(6)[signer_index]
    rng = np.random.default_rng(signer_index)
    poses = signing.render_sign_sequence(language.make_sentence(rng)[1], signer, rng).astype(float)
    expected = reference_hand_bones(signer["hand_scale"])
    for side, (shoulder, elbow, wrist) in (("right_hand", (0, 1, 2)), ("left_hand", (3, 4, 5))):
        base = ARTICULATORS[side].start
        np.testing.assert_allclose(poses[:, wrist], poses[:, base], atol=1e-7)
        for (a, b), length in expected.items():
            measured = np.linalg.norm(poses[:, base + a] - poses[:, base + b], axis=-1)
            np.testing.assert_allclose(measured, length, rtol=1e-5)
        upper = np.linalg.norm(poses[:, shoulder] - poses[:, elbow], axis=-1)
        fore = np.linalg.norm(poses[:, elbow] - poses[:, wrist], axis=-1)
        np.testing.assert_allclose(upper, signer["upper_arm"], rtol=1e-5)
        np.testing.assert_allclose(fore, signer["forearm"], rtol=1e-5)
    # every hand bone of the drawing skeleton is one of the bones checked above
    drawn = {(a - 8, b - 8) for a, b in skeleton_bones()["right_hand"] if a >= 8}
    assert drawn == set(expected)


def test_hand_pose_joint_angles_match_the_flexions():
    rng = np.random.default_rng(0)
    flex = rng.uniform(0.1, 1.4, (50, 5, 3))
    spread = rng.uniform(0, 0.3, 50)
    local = body.hand_pose(flex, spread, np.zeros(3), np.eye(3))

    def angle(u, v):
        cos = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        return np.arccos(np.clip(cos, -1, 1))

    for f, chain in enumerate(HAND_FINGERS.values()):
        seg = [local[:, chain[k + 1]] - local[:, chain[k]] for k in range(3)]
        # thumb: (CMC->MCP, MCP->IP, IP->tip); fingers: (MCP->PIP, PIP->DIP, DIP->tip)
        np.testing.assert_allclose(angle(seg[0], seg[1]), flex[:, f, 1], atol=1e-9)
        np.testing.assert_allclose(angle(seg[1], seg[2]), flex[:, f, 2], atol=1e-9)
    np.testing.assert_allclose(angle(local[:, 2] - local[:, 1], body.THUMB_OUT), flex[:, 0, 0],
                               atol=1e-9)
    # rigid motion: the world hand is the rotated and shifted local hand
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rot *= np.linalg.det(rot)
    wrist = rng.normal(size=3)
    world = body.hand_pose(flex, spread, wrist, rot, scale=1.3)
    np.testing.assert_allclose(world, 1.3 * local @ rot.T + wrist, atol=1e-12)
    # a straight finger is a straight line as long as its bones
    straight = body.hand_pose(np.zeros((5, 3)), 0.0, np.zeros(3), np.eye(3))
    index = HAND_FINGERS["index"]
    assert np.isclose(np.linalg.norm(straight[index[3]] - straight[index[0]]),
                      body.FINGER_BONES[0].sum())


def test_arm_ik_reaches_with_fixed_segments():
    rng = np.random.default_rng(0)
    shoulder = np.array([-0.18, 0.0, 0.0])
    target = shoulder + rng.normal(size=(200, 3)) * 0.4
    pole = np.array([-0.4, -1.0, -0.3])
    wrist = body.reach(shoulder, target, 0.29, 0.26)
    elbow = body.arm_ik(shoulder, wrist, 0.29, 0.26, pole)
    np.testing.assert_allclose(np.linalg.norm(elbow - shoulder, axis=-1), 0.29, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(wrist - elbow, axis=-1), 0.26, rtol=1e-9)
    distance = np.linalg.norm(target - shoulder, axis=-1)
    reachable = (distance > 0.031) & (distance < 0.549)
    assert reachable.sum() > 50 and (distance > 0.551).sum() > 20
    np.testing.assert_allclose(wrist[reachable], target[reachable])           # reached exactly
    np.testing.assert_allclose(np.linalg.norm(wrist[distance > 0.551] - shoulder, axis=-1), 0.549)
    # the elbow bends toward the pole: its offset from the shoulder-wrist line points along it
    n = (wrist - shoulder) / np.linalg.norm(wrist - shoulder, axis=-1, keepdims=True)
    side = pole - np.sum(pole * n, -1, keepdims=True) * n
    assert np.all(np.sum((elbow - shoulder) * side, -1) > 0)


def test_sign_durations_and_spans():
    signers = signing.make_signers(6)
    rng = np.random.default_rng(5)
    seen = []
    for i in range(40):
        signer = signers[i % 6]
        glosses = language.make_sentence(rng)[1]
        poses, spans = signing.render_sign_sequence(glosses, signer, rng, return_spans=True)
        assert [g for g, _, _ in spans] == glosses.split()
        assert spans[0][1] >= 4 and len(poses) - spans[-1][2] >= 4       # rest + transition
        for (_, s0, e0), (_, s1, _) in zip(spans, spans[1:]):
            assert s1 - e0 >= 1
        for gloss, start, end in spans:
            seen.append(end - start)
            assert signing.SIGN_FRAMES[0] <= end - start <= signing.SIGN_FRAMES[1]
            mid = (start + end) // 2   # the dominant hand signs, it does not rest
            assert np.linalg.norm(poses[mid, 2] - poses[0, 2]) > 0.12
        # smooth co-articulated motion: no wrist moves faster than 11 cm per frame (2.75 m/s)
        assert np.linalg.norm(np.diff(poses[:, [2, 5]], axis=0), axis=-1).max() < 0.11
    assert min(seen) <= 10 and max(seen) >= 16   # the range is used


def test_mouth_opens_and_blendshapes_stay_on_the_face():
    face, shapes = body.face_model()
    upper, lower = FACE_POSITION[13], FACE_POSITION[14]   # inner lip midpoints (MediaPipe)
    gaps = [np.linalg.norm((face + w * shapes[0])[upper] - (face + w * shapes[0])[lower])
            for w in (0.0, 0.5, 1.0)]
    assert gaps[0] < gaps[1] < gaps[2] and gaps[2] - gaps[0] > 0.01
    eye_top, eye_bottom = FACE_POSITION[159], FACE_POSITION[145]
    closed = face + shapes[4]
    assert (np.linalg.norm(closed[eye_top] - closed[eye_bottom])
            < 0.3 * np.linalg.norm(face[eye_top] - face[eye_bottom]))
    signer = signing.make_signers(1)[0]
    poses = signing.render_sign_sequence("GUT ABEND ZUSCHAUER", signer, np.random.default_rng(0))
    f0 = ARTICULATORS["face"].start
    mouth = np.linalg.norm(poses[:, f0 + upper] - poses[:, f0 + lower], axis=-1)
    assert mouth.max() - mouth.min() > 0.005   # mouthing moves the lips


def test_signs_are_distinct_and_readable_from_poses():
    lexicon = signing.gloss_lexicon()
    keys = [(e["mode"], e["shape"], e["location"], e["movement"], e["orientation"])
            for e in lexicon.values()]
    assert min(sum(a != b for a, b in zip(k1, k2)) for k1, k2 in itertools.combinations(keys, 2)) >= 2
    # one isolated realization per gloss by two different signers: nearest neighbour on the
    # hands (neck-centred, shoulder-width scaled, 10 frames) finds the same gloss
    signers = signing.make_signers(6)
    glosses = sorted(lexicon)

    def features(signer, seed):
        rows = []
        for i, gloss in enumerate(glosses):
            poses, [(_, s, e)] = signing.render_sign_sequence(
                [gloss], signer, np.random.default_rng([seed, i]), return_spans=True)
            neck = (poses[:, 0:1] + poses[:, 3:4]) / 2
            hands = (poses[s:e, 8:50] - neck[s:e]) / np.linalg.norm(poses[0, 0] - poses[0, 3])
            rows.append(hands[np.linspace(0, e - s - 1, 10).round().astype(int)].ravel())
        return np.array(rows)

    a, b = features(signers[0], 1), features(signers[4], 2)
    nearest = ((a[:, None] - b[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == np.arange(len(glosses))).mean() > 0.95


def test_signers_differ():
    signers = signing.make_signers(6)
    assert [s["name"] for s in signers] == [f"Signer0{i}" for i in range(1, 7)]
    for key in ("shoulder_width", "upper_arm", "hand_scale", "face_scale", "tempo", "jitter"):
        assert len({round(s[key], 6) for s in signers}) == 6
    assert signing.make_signers(6)[2] == signers[2]


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"num_dev": -1}, {"seed": -3},
                                    {"signers": 0}, {"num_train": 1.5}])
def test_bad_arguments_raise(kwargs, tmp_path):
    with pytest.raises(ValueError):
        corpus.write_corpus(str(tmp_path), **{**SMALL, **kwargs})


def test_bad_glosses_raise():
    signer = signing.make_signers(1)[0]
    with pytest.raises(ValueError, match="not in the lexicon"):
        signing.render_sign_sequence("REGEN BLAU", signer, np.random.default_rng(0))
    with pytest.raises(ValueError):
        signing.render_sign_sequence([], signer, np.random.default_rng(0))


def test_mediapipe_tracking_is_the_clean_motion_plus_tracker_noise(small, tmp_path):
    """--tracking mediapipe: the same motion, jittered (more in depth than in the image plane, more
    on the hands), with missed hand detections interpolated: finite, deterministic, and the gaps
    show as frames where the hand moves on a straight line (what fill_missing puts there)."""
    _, _, clean = small
    corpus.write_corpus(str(tmp_path), seed=0, **SMALL, tracking="mediapipe")
    noisy = load(tmp_path)
    assert list(noisy["train"]) == list(clean["train"])
    diffs = {"hands": [], "body": []}
    for name, sample in noisy["train"].items():
        a, b = sample["poses_3d"].numpy(), clean["train"][name]["poses_3d"].numpy()
        assert a.shape == b.shape and np.isfinite(a).all()
        d = a - b
        diffs["hands"].append(d[:, ARTICULATORS["right_hand"]].reshape(-1, 3))
        diffs["body"].append(d[:, ARTICULATORS["body"]].reshape(-1, 3))
    hands, bodies = np.concatenate(diffs["hands"]), np.concatenate(diffs["body"])
    sd_body = bodies.std(0)
    np.testing.assert_allclose(sd_body, [corpus.JITTER["body_face"][0]] * 2 + [corpus.JITTER["body_face"][1]], rtol=0.1)
    # the hands' differences are jitter where detected; interpolated gaps add the motion's own error
    assert (np.median(np.abs(hands), 0) > np.median(np.abs(bodies), 0)).all()
    # interpolated frames: the second difference over time of a filled hand is exactly linear
    straight = 0
    for sample in noisy["train"].values():
        w = sample["poses_3d"].numpy()[:, ARTICULATORS["right_hand"]].astype(np.float64)
        second = np.abs(w[2:] - 2 * w[1:-1] + w[:-2]).max((1, 2))
        straight += int((second < 1e-5).sum())
    n_frames = sum(len(s["poses_3d"]) for s in noisy["train"].values())
    assert 0.03 < straight / n_frames < 0.2        # runs of 2-9 missed frames started at 3 % per frame
    again = tmp_path / "again"
    corpus.write_corpus(str(again), seed=0, **SMALL, tracking="mediapipe")
    assert (again / "train.pt").read_bytes() == (tmp_path / "train.pt").read_bytes()
    with pytest.raises(ValueError, match="tracking"):
        corpus.write_corpus(str(tmp_path / "x"), seed=0, **SMALL, tracking="kinect")


# ---------------------------------------------------------------------------------------------
# --mode fingerspelling
# ---------------------------------------------------------------------------------------------

from corpus import fingerspelling  # noqa: E402


def test_fingerspelling_alphabet_is_26_distinct_two_handed_configurations():
    letters = fingerspelling.alphabet()
    assert sorted(letters) == list("abcdefghijklmnopqrstuvwxyz")
    for (a, x), (b, y) in itertools.combinations(letters.items(), 2):
        assert x[:2] != y[:2], (a, b)                                       # right hands differ
        assert sum(u != v for u, v in zip(x, y)) >= 2, (a, b)
    assert all(x[0] in signing.HANDSHAPES and x[2] in signing.HANDSHAPES for x in letters.values())


def test_fingerspelling_letters_are_held_then_change_quickly_in_a_small_space():
    people = signing.make_signers(6)
    rng = np.random.default_rng(5)
    holds, travel_fs = [], []
    for i in range(12):
        text, gloss = fingerspelling.make_sentence(rng)
        assert 1 <= len(text.split()) <= 3 and gloss == text.upper()
        assert sum(len(w) for w in text.split()) <= fingerspelling.MAX_LETTERS
        poses, spans = fingerspelling.render_fingerspelling(gloss, people[i % 6], rng, return_spans=True)
        assert [c for c, _, _ in spans] == [c for c in text if c != " "]          # letter by letter
        assert poses.shape[1:] == (NUM_JOINTS, 3) and np.isfinite(poses).all()
        holds += [b - a for _, a, b in spans]
        gaps = [b[1] - a[2] for a, b in zip(spans, spans[1:])]
        assert min(gaps) >= 2 and max(gaps) <= 12
        wrist = poses[spans[0][1]:spans[-1][2], 2]                                # right wrist while spelling
        travel_fs.append(np.linalg.norm(wrist - wrist.mean(0), axis=1).max())
    assert 6 <= min(holds) and max(holds) <= 15 and 8 <= np.mean(holds) <= 13
    assert max(travel_fs) < 0.15                # the hands stay within ~15 cm while spelling
    # hand shapes change from letter to letter: finger joints relative to the wrist differ
    poses, spans = fingerspelling.render_fingerspelling("quiz", people[0], np.random.default_rng(1), True)
    rh = ARTICULATORS["right_hand"]
    mids = [poses[(a + b) // 2, rh] - poses[(a + b) // 2, rh.start] for _, a, b in spans]
    assert min(np.abs(x - y).max() for x, y in zip(mids, mids[1:])) > 0.01


def test_fingerspelling_corpus_splits_and_command_line(tmp_path):
    counts = corpus.write_corpus(str(tmp_path / "a"), seed=0, num_train=40, num_dev=5, num_test=5,
                                 mode="fingerspelling")
    assert counts == {"train": 40, "dev": 5, "test": 5}
    data = load(tmp_path / "a")
    seen = {w for s in data["train"].values() for w in s["gloss"].split()}
    texts = {s["text"] for s in data["train"].values()}
    for split in ("dev", "test"):
        for s in data[split].values():
            assert s["text"] not in texts and seen.issuperset(s["gloss"].split())
    proc = subprocess.run([sys.executable, "-m", "corpus", "--out-dir", str(tmp_path / "b"), "--mode",
                           "fingerspelling", "--num-train", "40", "--num-dev", "5", "--num-test", "5"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for split in SPLITS:
        assert (tmp_path / "a" / f"{split}.pt").read_bytes() == (tmp_path / "b" / f"{split}.pt").read_bytes()
    with pytest.raises(ValueError, match="mode"):
        corpus.write_corpus(str(tmp_path / "c"), mode="finger")
