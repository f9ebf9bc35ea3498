"""Tests of the back-translation model (backtranslation.py): vocabulary, loss, decoding, learning."""
import itertools
import json
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import backtranslation as bt  # noqa: E402

TEXTS = ["heute sonne", "morgen regen im norden", "schnee in den alpen", "nachts frost und nebel"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def batch(seqs):
    T = max(len(s) for s in seqs)
    poses = torch.zeros(len(seqs), T, 178, 3)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, s in enumerate(seqs):
        poses[b, :len(s)], mask[b, :len(s)] = s, True
    return poses, mask


def tiny_model(vocab, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(d_model=32, num_heads=2, num_layers=1, ff=64, dropout=0.0)
    args.update(kw)
    return bt.SignToText(vocab, **args).eval()


def random_poses(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 178, 3, generator=g) for n in lengths]


# ---------------------------------------------------------------------------------------------
# vocabulary and positions
# ---------------------------------------------------------------------------------------------

def test_vocab_order_and_round_trip():
    vocab = bt.build_vocab(["b a c", "a b", "a über"], min_freq=1)
    assert vocab == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c", "über"]
    assert bt.build_vocab(["b a c", "a b"], min_freq=2) == list(bt.SPECIALS) + ["a", "b"]
    stoi = {w: i for i, w in enumerate(vocab)}
    for text in ["a b c", "über a", ""]:
        assert bt.decode(bt.encode(text, stoi), vocab) == text
    assert bt.encode("a zzz", stoi) == [4, bt.UNK]
    assert bt.decode([4, bt.UNK, 5, bt.EOS, 6], vocab) == "a b"  # <unk> dropped, stops at <eos>
    with pytest.raises(AssertionError, match="single string"):
        bt.build_vocab("a b")


def test_sinusoidal_positions_closed_form():
    pe = bt.sinusoidal_encoding(7, 6)                  # the generator's, shared
    for t in range(7):
        for k in range(3):
            angle = t / 10000 ** (2 * k / 6)
            assert pe[t, 2 * k].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[t, 2 * k + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_loss_is_shifted_token_cross_entropy(smoothing):
    vocab = bt.build_vocab(TEXTS)
    model = tiny_model(vocab, label_smoothing=smoothing)
    poses, mask = batch(random_poses([5, 8, 3, 6]))
    texts = ["heute sonne", "morgen regen im norden", "unbekannt schnee", "nebel"]
    loss, stats = model(poses, mask, texts)
    # independent: per sentence, feed <bos> w1..wn and score w1..wn <eos>
    total, smooth, count, correct = 0.0, 0.0, 0, 0
    for b, text in enumerate(texts):
        ids = [model.stoi.get(w, bt.UNK) for w in text.split()]
        inp = torch.tensor([[bt.BOS] + ids])
        logits = model.logits(poses[b:b + 1, :mask[b].sum()], mask[b:b + 1, :mask[b].sum()], inp,
                              torch.ones_like(inp, dtype=torch.bool))[0]
        logp = logits.log_softmax(-1)
        for t, target in enumerate(ids + [bt.EOS]):
            total -= logp[t, target].item()
            smooth -= logp[t].mean().item()
            correct += int(logits[t].argmax() == target)
            count += 1
    expected = (1 - smoothing) * total / count + smoothing * smooth / count
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["nll"] == pytest.approx(total / count, rel=1e-5)
    assert stats["tokens"] == count
    assert stats["accuracy"] == pytest.approx(correct / count)


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------

def greedy(model, poses, max_len):
    """Independent greedy decoder: one sequence at a time, re-running the teacher-forced forward."""
    out = []
    for p in poses:
        tokens = [bt.BOS]
        for _ in range(max_len):
            inp = torch.tensor([tokens])
            logits = model.logits(p[None], torch.ones(1, len(p), dtype=torch.bool), inp,
                                  torch.ones_like(inp, dtype=torch.bool))[0, -1]
            logits[[bt.PAD, bt.BOS]] = -math.inf
            tokens.append(int(logits.argmax()))
            if tokens[-1] == bt.EOS:
                break
        out.append(" ".join(model.vocab[t] for t in tokens[1:]
                            if t >= len(bt.SPECIALS)))
    return out


def test_beam_one_equals_greedy():
    vocab = bt.build_vocab(TEXTS)
    poses = random_poses([4, 9, 6, 1, 12], seed=1)
    for seed in range(3):
        model = tiny_model(vocab, seed=seed)
        with torch.no_grad():
            expected = greedy(model, poses, max_len=10)
        assert model.translate(*batch(poses), beam_size=1, max_len=10) == expected


def naive_beam_search(model, pose, beam_size, max_len, length_penalty):
    """Unbatched beam search over Python lists, with translate's documented rules."""
    mask = torch.ones(1, len(pose), dtype=torch.bool)
    beams = [([bt.BOS], 0.0, False)]  # (tokens, summed log-prob, ended)
    for _ in range(max_len):
        cands = []
        for tokens, score, ended in beams:
            if ended:
                cands.append((tokens, score, True))
                continue
            inp = torch.tensor([tokens])
            logp = model.logits(pose[None], mask, inp, torch.ones_like(inp, dtype=torch.bool))[0, -1]
            logp = logp.log_softmax(-1)
            cands += [(tokens + [w], score + logp[w].item(), w == bt.EOS)
                      for w in range(len(model.vocab)) if w not in (bt.PAD, bt.BOS)]
        beams = sorted(cands, key=lambda c: -c[1])[:beam_size]
        if all(ended for _, _, ended in beams):
            break
    best = max(beams, key=lambda c: c[1] / (len(c[0]) - 1) ** length_penalty)
    return " ".join(model.vocab[t] for t in best[0] if t >= len(bt.SPECIALS))


@pytest.mark.parametrize("beam_size", [2, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_equals_unbatched_reference(beam_size, length_penalty):
    vocab = bt.build_vocab(["sonne regen schnee wind"])
    poses = random_poses([5, 3, 8, 2, 6, 4], seed=6)
    for seed in range(8):
        model = tiny_model(vocab, seed=seed)
        with torch.no_grad():
            expected = [naive_beam_search(model, p, beam_size, 5, length_penalty) for p in poses]
        got = model.translate(*batch(poses), beam_size=beam_size, max_len=5,
                              length_penalty=length_penalty)
        assert got == expected


def exhaustive(model, pose, max_len, length_penalty):
    """Best complete or length-capped hypothesis over ALL word sequences, scored like translate."""
    allowed = [t for t in range(len(model.vocab)) if t not in (bt.PAD, bt.BOS, bt.EOS)]
    mask = torch.ones(1, len(pose), dtype=torch.bool)
    best, best_score = None, -math.inf
    candidates = [list(s) + [bt.EOS] for n in range(max_len) for s in
                  itertools.product(allowed, repeat=n)]
    candidates += [list(s) for s in itertools.product(allowed, repeat=max_len)]  # capped
    for seq in candidates:
        inp = torch.tensor([[bt.BOS] + seq[:-1]])
        logp = model.logits(pose[None], mask, inp, torch.ones_like(inp, dtype=torch.bool))[0]
        score = sum(logp[t].log_softmax(-1)[w].item() for t, w in enumerate(seq))
        score /= len(seq) ** length_penalty
        if score > best_score:
            best, best_score = seq, score
    return " ".join(model.vocab[t] for t in best if t >= len(bt.SPECIALS))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search(length_penalty):
    # 3 words + <unk> + <eos> and 3 steps: a beam of 128 never prunes, so it must find the optimum
    vocab = bt.build_vocab(["sonne regen schnee"])
    poses = random_poses([5, 3], seed=2)
    for seed in range(2):
        model = tiny_model(vocab, seed=seed)
        with torch.no_grad():
            expected = [exhaustive(model, p, 3, length_penalty) for p in poses]
        got = model.translate(*batch(poses), beam_size=128, max_len=3,
                              length_penalty=length_penalty)
        assert got == expected


def test_padding_and_batching_change_nothing():
    vocab = bt.build_vocab(TEXTS)
    model = tiny_model(vocab, seed=3)
    poses = random_poses([6, 3, 9], seed=3)
    p, m = batch(poses)
    extra = 7
    p2 = torch.cat([p, 1e3 * torch.randn(3, extra, 178, 3)], 1)  # garbage in padded frames
    p2[0, -1, 0, 0] = float("nan")
    p2[1, 3:6] = float("inf")                                       # inside the old padding too
    m2 = torch.cat([m, torch.zeros(3, extra, dtype=torch.bool)], 1)
    inp, _, tmask = model.tokenize(TEXTS[:3])
    with torch.no_grad():
        ref_logits = model.logits(p, m, inp, tmask)
        logits = model.logits(p2, m2, inp, tmask)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    model.train()  # batch statistics of the input BatchNorm: real frames only (dropout is 0)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(p2, m2, inp, tmask), model.logits(p, m, inp, tmask),
                                   atol=1e-5, rtol=1e-5)
    model.eval()
    out = model.translate(p, m, beam_size=3, max_len=8)
    assert model.translate(p2, m2, beam_size=3, max_len=8) == out
    singles = [model.translate(*batch([s]), beam_size=3, max_len=8)[0] for s in poses]
    assert singles == out


# ---------------------------------------------------------------------------------------------
# learning, checkpoint round trip, errors
# ---------------------------------------------------------------------------------------------

def test_overfits_four_sentences():
    vocab = bt.build_vocab(TEXTS)
    model = tiny_model(vocab, seed=0, d_model=64, num_heads=4, ff=128)
    poses, mask = batch(random_poses([7, 11, 5, 9], seed=4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss, stats = model(poses, mask, TEXTS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["accuracy"] == 1.0
    assert model.translate(poses, mask, beam_size=3) == TEXTS
    assert model.translate(poses, mask, beam_size=1) == TEXTS
    assert model.training  # translate restores the mode


def test_single_real_frame_batch_can_train():
    model = tiny_model(bt.build_vocab(TEXTS)).train()
    poses, mask = batch(random_poses([1]))
    loss, _ = model(poses, mask, TEXTS[:1])  # no batch statistics from one frame
    loss.backward()
    assert torch.isfinite(loss)


def test_config_round_trip():
    vocab = bt.build_vocab(TEXTS)
    model = tiny_model(vocab, seed=5, label_smoothing=0.1)
    cfg = json.loads(json.dumps(model.config()))  # plain Python types only
    clone = bt.SignToText.from_config(cfg).eval()
    clone.load_state_dict(model.state_dict())
    poses, mask = batch(random_poses([4, 6], seed=5))
    inp, _, tmask = model.tokenize(TEXTS[:2])
    with torch.no_grad():
        torch.testing.assert_close(clone.logits(poses, mask, inp, tmask), model.logits(poses, mask, inp, tmask))
    assert clone.vocab == vocab and clone.label_smoothing == 0.1
    assert "pe" not in model.state_dict()  # rebuilt from the config, not stored


def test_clear_errors():
    model = tiny_model(bt.build_vocab(TEXTS))
    poses, mask = batch(random_poses([4, 6]))
    with pytest.raises(AssertionError, match=r"\(B, T, 178, 3\)"):
        model.translate(poses.reshape(2, 6, 534), mask)
    with pytest.raises(AssertionError, match=r"\(B, T, 178, 3\)"):
        model(poses[:, :, :50], mask, TEXTS[:2])
    with pytest.raises(AssertionError, match="frame_mask"):
        model.translate(poses, mask.float())
    with pytest.raises(AssertionError, match="at least one real frame"):
        model.translate(poses, torch.zeros_like(mask))
    with pytest.raises(AssertionError, match="3 texts for 2"):
        model(poses, mask, TEXTS[:3])
    with pytest.raises(AssertionError, match="vocab must start"):
        bt.SignToText(["a", "b"])
    with pytest.raises(AssertionError, match="max_len"):
        bt.SignToText(bt.build_vocab(TEXTS), d_model=32, num_heads=2, max_len=4).translate(
            poses, mask)
