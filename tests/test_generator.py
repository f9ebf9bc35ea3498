"""Tests of generator.py: Eq. (2)–(4), (7)–(8), padding invariance, generation, a tiny fit."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import generator as G
from data import ARTICULATOR_ORDER, NUM_JOINTS
from vae import LATENT_SIZES

LATENT = sum(LATENT_SIZES.values())


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_model(query="none", fusion="local", text_dim=12, max_frames=16, dropout=0.1, seed=0,
               d_model=32, dec_layers=2, ff=64, time_queries="progress", alignment="none", char_embedding=None):
    torch.manual_seed(seed)
    model = G.A2VSLP(text_dim, d_model=d_model, enc_layers=1, enc_heads=4, dec_layers=dec_layers,
                     dec_heads=4, ff=ff, dropout=dropout, max_frames=max_frames, window=3,
                     query=query, query_span=3, fusion=fusion, time_queries=time_queries,
                     alignment=alignment,
                     char_embedding=alignment != "none" if char_embedding is None else char_embedding)
    model.set_reference_pose(torch.randn(NUM_JOINTS, 3))
    return model


def random_latents(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, LATENT, generator=g) for _ in range(4)]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [6, 7])
def test_sinusoidal_encoding_matches_formula(dim):
    pe = G.sinusoidal_encoding(9, dim, dtype=torch.float64)
    for p in range(9):
        for k in range(dim):
            angle = p / 10000 ** ((k - k % 2) / dim)
            expected = math.sin(angle) if k % 2 == 0 else math.cos(angle)
            assert abs(pe[p, k].item() - expected) < 1e-6


def test_sinusoidal_encoding_of_real_positions_matches_formula():
    pos = torch.tensor([[0.0, 2.5], [7.25, 120.0]])
    pe = G.sinusoidal_encoding(pos, 6, dtype=torch.float64)
    assert pe.shape == (2, 2, 6)
    for i in range(2):
        for j in range(2):
            for k in range(6):
                angle = pos[i, j].item() / 10000 ** ((k - k % 2) / 6)
                expected = math.sin(angle) if k % 2 == 0 else math.cos(angle)
                assert abs(pe[i, j, k].item() - expected) < 1e-5
    # integer positions give the table of the int form
    assert torch.allclose(G.sinusoidal_encoding(torch.arange(9.0), 6), G.sinusoidal_encoding(9, 6))


def test_split_articulators_order_and_sizes():
    x = torch.arange(2 * LATENT, dtype=torch.float32).reshape(2, LATENT)
    parts = G.split_articulators(x)
    assert list(parts) == list(ARTICULATOR_ORDER)
    start = 0
    for a in ARTICULATOR_ORDER:
        assert torch.equal(parts[a], x[:, start:start + LATENT_SIZES[a]])
        start += LATENT_SIZES[a]
    with pytest.raises(AssertionError, match="last dimension"):
        G.split_articulators(torch.zeros(3, LATENT + 1))


# ---------------------------------------------------------------------------------------------
# Losses, Eq. (3) and (4)
# ---------------------------------------------------------------------------------------------

MASK = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
WEIGHTS = {"body": 1.0, "right_hand": 14.0, "left_hand": 10.0, "face": 2.0}


def test_latent_l1_matches_naive_loop():
    mu_hat, logvar_hat, mu, logvar = random_latents(3, 5)
    loss, per = G.latent_l1_loss(mu_hat, logvar_hat, mu, logvar, MASK, WEIGHTS)
    expected_total, offset = 0.0, 0
    for a in ("body", "right_hand", "left_hand", "face"):
        size, total, frames = LATENT_SIZES[a], 0.0, 0
        for b in range(3):
            for t in range(5):
                if not MASK[b, t]:
                    continue
                frames += 1
                for d in range(offset, offset + size):
                    total += abs(mu_hat[b, t, d].item() - mu[b, t, d].item())
                    total += abs(logvar_hat[b, t, d].item() - logvar[b, t, d].item())
        term = total / (frames * size)
        assert float(per[a]) == pytest.approx(term, rel=1e-5)
        expected_total += WEIGHTS[a] * term
        offset += size
    assert float(loss) == pytest.approx(expected_total, rel=1e-5)


@pytest.mark.parametrize("floor,gamma", [(-0.5, 1.0), (0.3, 0.25), (None, 0.0)])
def test_latent_l1_with_floor_and_logvar_weight_matches_naive_loop(floor, gamma):
    """Eq. 3 with both log σ² clamped at the floor and γ on the log σ² term, element by element."""
    mu_hat, logvar_hat, mu, logvar = random_latents(3, 5, seed=4)
    loss, per = G.latent_l1_loss(mu_hat, logvar_hat, mu, logvar, MASK, WEIGHTS, floor, gamma)
    lo = -math.inf if floor is None else floor
    expected_total, offset = 0.0, 0
    for a in ("body", "right_hand", "left_hand", "face"):
        size, total, frames = LATENT_SIZES[a], 0.0, 0
        for b in range(3):
            for t in range(5):
                if MASK[b, t]:
                    frames += 1
                    for d in range(offset, offset + size):
                        total += abs(mu_hat[b, t, d].item() - mu[b, t, d].item())
                        total += gamma * abs(max(logvar_hat[b, t, d].item(), lo) - max(logvar[b, t, d].item(), lo))
        assert float(per[a]) == pytest.approx(total / (frames * size), rel=1e-5)
        expected_total += WEIGHTS[a] * total / (frames * size)
        offset += size
    assert float(loss) == pytest.approx(expected_total, rel=1e-5)


def test_logvar_floor_gives_no_gradient_below_it():
    """Below the floor a predicted log σ² gets no gradient from Eq. 3 or Eq. 4: it decodes alike."""
    mu_hat, logvar_hat, mu, logvar = random_latents(3, 5, seed=5)
    logvar_hat = (logvar_hat - 3.0).requires_grad_()
    l1, _ = G.latent_l1_loss(mu_hat, logvar_hat, mu, logvar, MASK, WEIGHTS, -2.0)
    kl = G.gaussian_kl(mu_hat, logvar_hat, mu, logvar, MASK, -2.0)
    grad, = torch.autograd.grad(l1 + kl, logvar_hat)
    below = (logvar_hat.detach() < -2.0) & MASK[..., None]
    above = (logvar_hat.detach() > -2.0) & MASK[..., None]
    assert below.any() and above.any()
    assert torch.all(grad[below] == 0) and torch.all(grad[above] != 0)


def test_gaussian_kl_with_floor_matches_torch_distributions_of_clamped_variances():
    mu_hat, logvar_hat, mu, logvar = random_latents(3, 5, seed=6)
    floor = -0.7
    kl = kl_divergence(Normal(mu_hat, torch.exp(0.5 * logvar_hat.clamp(min=floor))),
                       Normal(mu, torch.exp(0.5 * logvar.clamp(min=floor))))    # (B, T, 80)
    expected = (kl.sum(-1) * MASK).sum() / MASK.sum()
    got = G.gaussian_kl(mu_hat, logvar_hat, mu, logvar, MASK, floor)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_latent_l1_weights_must_name_all_articulators():
    lat = random_latents(3, 5)
    with pytest.raises(AssertionError, match="missing"):
        G.latent_l1_loss(*lat, MASK, {"body": 1.0, "right_hand": 1.0, "left_hand": 1.0})
    with pytest.raises(AssertionError, match="unknown"):
        G.latent_l1_loss(*lat, MASK, dict(WEIGHTS, hands=3.0))


def test_gaussian_kl_matches_torch_distributions():
    mu_hat, logvar_hat, mu, logvar = random_latents(3, 5, seed=1)
    kl = kl_divergence(Normal(mu_hat, torch.exp(0.5 * logvar_hat)),
                       Normal(mu, torch.exp(0.5 * logvar)))                     # (B, T, 80)
    expected = (kl.sum(-1) * MASK).sum() / MASK.sum()
    got = G.gaussian_kl(mu_hat, logvar_hat, mu, logvar, MASK)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # Identical distributions have zero divergence.
    assert float(G.gaussian_kl(mu, logvar, mu, logvar, MASK)) == pytest.approx(0.0, abs=1e-6)


def test_padded_frames_do_not_change_the_losses():
    lat = random_latents(3, 5, seed=2)
    noisy = []
    for i, t in enumerate(lat):
        junk = torch.full_like(t, float("nan")) if i == 0 else 1e3 * torch.randn_like(t)
        noisy.append(torch.where(MASK[..., None], t, junk))
    l1, per = G.latent_l1_loss(*lat, MASK, WEIGHTS)
    l1_noisy, per_noisy = G.latent_l1_loss(*noisy, MASK, WEIGHTS)
    assert torch.equal(l1, l1_noisy)
    assert all(torch.equal(per[a], per_noisy[a]) for a in ARTICULATOR_ORDER)
    assert torch.equal(G.gaussian_kl(*lat, MASK), G.gaussian_kl(*noisy, MASK))


def test_length_loss_closed_form():
    ratio = torch.tensor([0.1, 0.9, 0.5])
    got = G.length_loss(ratio, torch.tensor([30, 600, 150]), max_frames=300)
    expected = (abs(0.1 - 0.1) + abs(0.9 - 1.0) + abs(0.5 - 0.5)) / 3   # 600 frames clamp to 1
    assert float(got) == pytest.approx(expected, abs=1e-7)
    with pytest.raises(AssertionError, match="shape"):
        G.length_loss(ratio, torch.tensor([1, 2]), max_frames=300)


# ---------------------------------------------------------------------------------------------
# Dynamic hand weighting, Eq. (7)–(8)
# ---------------------------------------------------------------------------------------------

LOSSES = [(3.0, 1.0)] * 8 + [(0.2, 1.0)] * 12 + [(1.5, 1.0), (0.0, 0.5), (2.0, 1.0)]


def hand_run(losses, alpha, decay, s_max, eps):
    """The recurrence of Eq. (8) written out: EMAs start at the first values, s at 1."""
    s, ema_h, ema_o, out = 1.0, None, None, []
    for h, o in losses:
        if ema_h is None:
            ema_h, ema_o = h, o
        else:
            ema_h = decay * ema_h + (1 - decay) * h
            ema_o = decay * ema_o + (1 - decay) * o
        s = s * (ema_h / (ema_o + eps)) ** alpha
        s = max(1.0, min(s_max, s))
        out.append(s)
    return out


def test_hand_weight_boost_follows_the_recurrence():
    boost = G.HandWeightBoost(base=(3.5, 2.5), s_max=2.5, alpha=0.3, ema_decay=0.8, eps=1e-8)
    assert boost.weights() == {"body": 1.0, "right_hand": 3.5, "left_hand": 2.5, "face": 2.0}
    expected = hand_run(LOSSES, alpha=0.3, decay=0.8, s_max=2.5, eps=1e-8)
    got = []
    for h, o in LOSSES:
        got.append(boost.step(torch.tensor(h, dtype=torch.float64), o))
        w = boost.weights(face=2.0, body=1.0)
        assert w["right_hand"] == pytest.approx(3.5 * got[-1])               # Eq. (7)
        assert w["left_hand"] == pytest.approx(2.5 * got[-1])
    assert got == pytest.approx(expected, rel=1e-12)
    # The sequence reaches both clipping bounds.
    assert max(got) == 2.5 and got.index(2.5) < len(got) - 1
    assert 1.0 in got[got.index(2.5):]


def test_hand_weight_boost_state_dict_resumes_exactly(tmp_path):
    a = G.HandWeightBoost(alpha=0.2, ema_decay=0.9)
    for h, o in LOSSES[:10]:
        a.step(h, o)
    state = a.state_dict()
    assert all(isinstance(v, (float, int)) for v in state.values())
    torch.save(state, tmp_path / "boost.pt")
    b = G.HandWeightBoost(alpha=0.2, ema_decay=0.9)
    b.load_state_dict(torch.load(tmp_path / "boost.pt", weights_only=True))
    for h, o in LOSSES[10:]:
        assert a.step(h, o) == b.step(h, o)
    assert a.state_dict() == b.state_dict()


def test_hand_weight_boost_rejects_bad_values(capsys):
    """Values from the command line are refused by train.py's argparse, naming the flag; the class
    itself asserts, and a damaged state in a checkpoint is one error naming the file."""
    import harness
    import train
    from harness import DataError
    argv = ["--stage", "generator", "--vae", ".", "--data-dir", ".", "--out-dir", "."]
    for flag, value in (("--hand-base", "0 2.5"), ("--hand-base", "3.5 nan"), ("--s-max", "0.5"),
                        ("--boost-alpha", "-0.1"), ("--boost-decay", "1"), ("--boost-decay", "-0.5")):
        with pytest.raises(SystemExit) as e:
            train.get_args(argv + [flag, *value.split()], announce=False)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and f"error: {flag} must be" in err, err
    args = train.get_args(argv + ["--s-max", "1", "--boost-alpha", "0", "--boost-decay", "0"], announce=False)
    G.HandWeightBoost(base=tuple(args.hand_base), s_max=args.s_max, alpha=args.boost_alpha, ema_decay=args.boost_decay)
    with pytest.raises(AssertionError, match="s_max"):
        G.HandWeightBoost(s_max=0.5)
    with pytest.raises(AssertionError, match="ema_decay"):
        G.HandWeightBoost(ema_decay=1.0)
    with pytest.raises(AssertionError, match="nan"):
        G.HandWeightBoost().step(float("nan"), 1.0)
    state = {k: v for k, v in G.HandWeightBoost().state_dict().items() if k != "s"}
    with pytest.raises(DataError, match=r"^--init g\.pt: damaged 'stage_state': KeyError: 's'$"):
        harness.restore(G.HandWeightBoost(), {"stage_state": state}, "stage_state", "--init g.pt")


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,fusion", [("none", "local"), ("none", "global"),
                                          ("none", "local+global"), ("mean", "local"),
                                          ("attention", "local")])
def test_padding_does_not_change_real_positions(query, fusion):
    model = tiny_model(query, fusion).eval()
    g = torch.Generator().manual_seed(3)
    text = torch.randn(1, 5, 12, generator=g)
    alone = model(text, torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool))

    # The same sample in a batch, text padded to 9 tokens (random values) and frames to 12,
    # next to a longer sample.
    text_b = torch.randn(2, 9, 12, generator=g)
    text_b[0, :5] = text[0]
    text_mask = torch.tensor([[True] * 5 + [False] * 4, [True] * 9])
    frame_mask = torch.tensor([[True] * 7 + [False] * 5, [True] * 12])
    batched = model(text_b, text_mask, frame_mask)
    for key in ("mu", "logvar"):
        assert torch.allclose(batched[key][0, :7], alone[key][0], atol=1e-5)
        assert torch.isfinite(batched[key]).all()
    assert torch.allclose(batched["length_ratio"][0], alone["length_ratio"][0], atol=1e-6)


def _early_frames(model, T, frames=6):
    text = torch.randn(1, 4, 12, generator=torch.Generator().manual_seed(0))
    out = model(text, torch.ones(1, 4, dtype=torch.bool), torch.ones(1, T, dtype=torch.bool))
    return out["mu"][0, :frames]


def test_progress_queries_let_early_frames_depend_on_the_target_length():
    """With progress queries frame t knows t / (N - 1): the same early frames of a short and a long
    sentence differ. With the paper's absolute queries and a 3-frame window in 2 layers, frames
    0..5 see only frames 0..7 and the text, so they cannot tell N = 20 from N = 40."""
    model = tiny_model(dropout=0.0, max_frames=64).eval()
    with torch.no_grad():
        short, long = _early_frames(model, 20), _early_frames(model, 40)
    assert (short - long).abs().max() > 1e-2
    absolute = tiny_model(dropout=0.0, max_frames=64, time_queries="absolute").eval()
    with torch.no_grad():
        short, long = _early_frames(absolute, 20), _early_frames(absolute, 40)
    assert torch.allclose(short, long, atol=1e-5)


def test_forward_shapes_and_input_errors():
    model = tiny_model()
    text, tmask, fmask = torch.randn(2, 4, 12), torch.ones(2, 4, dtype=torch.bool), \
        torch.ones(2, 6, dtype=torch.bool)
    out = model(text, tmask, fmask)
    assert out["mu"].shape == out["logvar"].shape == (2, 6, LATENT)
    assert out["length_ratio"].shape == (2,) and bool(((0 < out["length_ratio"]) &
                                                        (out["length_ratio"] < 1)).all())
    with pytest.raises(AssertionError, match="bool"):
        model(text, tmask.float(), fmask)
    with pytest.raises(AssertionError, match="text_emb"):
        model(torch.randn(2, 4, 7), tmask, fmask)
    with pytest.raises(AssertionError, match="empty"):
        model(text, tmask, torch.zeros(2, 6, dtype=torch.bool))
    unset = G.A2VSLP(12, d_model=32, enc_layers=1, dec_layers=1, dec_heads=4, ff=64, alignment="none",
                     char_embedding=False)
    with pytest.raises(AssertionError, match="reference pose"):
        unset(text, tmask, fmask)
    with pytest.raises(AssertionError, match="178x3"):
        unset.set_reference_pose(torch.zeros(50, 3))


def test_checkpoint_dict_rebuilds_the_same_model(tmp_path):
    model = tiny_model(query="mean").eval()
    torch.save({"model": model.state_dict(), "args": model.config}, tmp_path / "gen.pt")
    ckpt = torch.load(tmp_path / "gen.pt", weights_only=True)
    rebuilt = G.A2VSLP(**ckpt["args"])
    rebuilt.load_state_dict(ckpt["model"])
    rebuilt.eval()
    assert torch.equal(rebuilt.reference_pose, model.reference_pose)
    text, tmask, fmask = torch.randn(1, 4, 12), torch.ones(1, 4, dtype=torch.bool), \
        torch.ones(1, 5, dtype=torch.bool)
    assert torch.equal(rebuilt(text, tmask, fmask)["mu"], model(text, tmask, fmask)["mu"])


class CountingDecoder:
    """A fixed linear 'VAE decoder' (..., 80) → (..., 178, 3) that counts its calls."""

    def __init__(self):
        g = torch.Generator().manual_seed(9)
        self.weight = torch.randn(LATENT, NUM_JOINTS * 3, generator=g)
        self.calls = 0

    def __call__(self, z):
        self.calls += 1
        return (z @ self.weight).reshape(*z.shape[:-1], NUM_JOINTS, 3)


def test_generate():
    model = tiny_model(max_frames=16)
    model.train()
    g = torch.Generator().manual_seed(4)
    text = torch.randn(3, 6, 12, generator=g)
    tmask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [True] * 4 + [False] * 2])
    decode = CountingDecoder()
    head_calls = []
    hook = model.head.register_forward_hook(lambda *args: head_calls.append(1))

    mean_poses = model.generate(text, tmask, decode, sample=False)
    assert decode.calls == 1 and len(head_calls) == 1          # one decoder pass for the batch
    assert model.training                                       # mode restored
    hook.remove()

    # Lengths as predicted, and sample=False equals decode(μ̂) of the teacher-forced forward.
    model.eval()
    with torch.no_grad():
        ratio = model(text, tmask, torch.ones(3, 1, dtype=torch.bool))["length_ratio"]
        lengths = [min(max(round(r * 16), 1), 16) for r in ratio.tolist()]
        fmask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
        out = model(text, tmask, fmask)
    assert [p.shape for p in mean_poses] == [(n, NUM_JOINTS, 3) for n in lengths]
    expected = decode(out["mu"])
    for i, n in enumerate(lengths):
        assert torch.allclose(mean_poses[i], expected[i, :n], atol=1e-5)
    assert all(torch.equal(a, b) for a, b in
               zip(mean_poses, model.generate(text, tmask, decode, sample=False)))

    # Sampling: z = μ̂ + σ̂ ⊙ ε with ε from the given generator.
    s1 = model.generate(text, tmask, decode, rng=torch.Generator().manual_seed(7))
    s2 = model.generate(text, tmask, decode, rng=torch.Generator().manual_seed(7))
    s3 = model.generate(text, tmask, decode, rng=torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert not all(torch.allclose(a, b) for a, b in zip(s1, s3))
    eps = torch.randn(out["mu"].shape, generator=torch.Generator().manual_seed(7))
    expected = decode(out["mu"] + torch.exp(0.5 * out["logvar"]) * eps)
    for i, n in enumerate(lengths):
        assert torch.allclose(s1[i], expected[i, :n], atol=1e-4)

    # Given lengths override the prediction.
    given = model.generate(text, tmask, decode, sample=False, lengths=[2, 9, 5])
    assert [len(p) for p in given] == [2, 9, 5]
    with pytest.raises(AssertionError, match="lengths"):
        model.generate(text, tmask, decode, lengths=[2, 0, 5])


# ---------------------------------------------------------------------------------------------
# A tiny end-to-end fit
# ---------------------------------------------------------------------------------------------

def test_tiny_model_fits_a_handful_of_pairs():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    max_frames, lengths, text_lens = 20, [5, 8, 11, 14, 17, 20], [4, 6, 3, 7, 5, 8]
    B, T, L = len(lengths), max(lengths), max(text_lens)
    text = torch.randn(B, L, 12, generator=g)
    tmask = torch.arange(L)[None] < torch.tensor(text_lens)[:, None]
    fmask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    # Smooth random targets: a few random sinusoids per latent dimension.
    t = torch.arange(T, dtype=torch.float32)[None, :, None, None]                # (1, T, 1, 1)
    amp, freq, phase = (torch.randn(B, 1, 2 * LATENT, 3, generator=g),
                        0.3 * torch.rand(B, 1, 2 * LATENT, 3, generator=g),
                        6.3 * torch.rand(B, 1, 2 * LATENT, 3, generator=g))
    target = (amp * torch.sin(freq * t + phase)).sum(-1)                         # (B, T, 160)
    mu, logvar = target[..., :LATENT], target[..., LATENT:]
    weights = {a: 1.0 for a in ARTICULATOR_ORDER}

    model = tiny_model(max_frames=max_frames, dropout=0.0, d_model=64, ff=128)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    frames = torch.tensor(lengths)

    def losses():
        out = model(text, tmask, fmask)
        l1, _ = G.latent_l1_loss(out["mu"], out["logvar"], mu, logvar, fmask, weights)
        return l1, G.length_loss(out["length_ratio"], frames, max_frames)

    with torch.no_grad():
        initial = float(losses()[0])
    for _ in range(400):
        l1, ll = losses()
        opt.zero_grad()
        (l1 + ll).backward()
        opt.step()
    with torch.no_grad():
        final = float(losses()[0])
    assert final < 0.1 * initial, (initial, final)
    model.eval()
    decode = CountingDecoder()
    poses = model.generate(text, tmask, decode, sample=False)
    assert all(abs(len(p) - n) <= 1 for p, n in zip(poses, lengths)), [len(p) for p in poses]


# ---------------------------------------------------------------------------------------------
# The monotonic alignment prior (aligned queries, guided attention)
# ---------------------------------------------------------------------------------------------

SPANS = torch.tensor([[[0, 0], [0, 4], [4, 10], [10, 11], [11, 11]],      # [CLS] 3 tokens [SEP]
                      [[0, 0], [0, 3], [3, 3], [0, 0], [0, 0]]], dtype=torch.float32)  # + padding
TEXT_MASK = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
# one character id per unit: [CLS], 4 + 6 + 1 characters, [SEP]; [CLS], 3 characters, [SEP]
CHARS = torch.tensor([[0, 5, 9, 9, 3, 1, 7, 7, 2, 8, 4, 6, 0], [0, 3, 2, 9, 0] + [0] * 8])
LAYOUT = (SPANS, CHARS)


def naive_units(spans, text_mask, alignment):
    """Per sample, by plain loops: each real token's [start, end) on the unit axis."""
    out, pos = [], 0.0
    for (a, b), m in zip(spans.tolist(), text_mask.tolist()):
        if m:
            width = 1.0 if alignment == "tokens" else max(b - a, 1.0)
            out.append((pos, pos + width))
            pos += width
    return out


def naive_positions(durations, n):
    """q_t for t < n by walking along the units."""
    q, start = [], 0.0
    for u, d in enumerate(durations):
        while len(q) < n and len(q) + 0.5 < start + d:
            q.append(u + min(max((len(q) + 0.5 - start) / d, 0.0), 1.0))
        start += d
    return q


@pytest.mark.parametrize("alignment", ["chars", "tokens"])
def test_constant_rate_alignment_reads_the_token_under_each_frame(alignment):
    model = tiny_model(alignment=alignment, dropout=0.0)
    frame_mask = G.lengths_to_mask(torch.tensor([9, 5]))
    memory = torch.randn(2, 5, 32)
    (q, intervals, chars), extra = model.align(memory, TEXT_MASK, LAYOUT, frame_mask)
    assert extra.keys() == {"positions"}
    for b in range(2):
        n = int(frame_mask[b].sum())
        tokens = naive_units(SPANS[b], TEXT_MASK[b], alignment)
        units = tokens[-1][1]
        want_q = naive_positions([n / units] * int(units), n)       # constant rate: q_t = (t+.5)/n·U
        torch.testing.assert_close(q[b, :n], torch.tensor(want_q), atol=1e-5, rtol=0)
        torch.testing.assert_close(intervals[b, :len(tokens)], torch.tensor(tokens))
        mu_hat, logvar_hat = model.decode(memory, TEXT_MASK, frame_mask, (q, intervals, chars))
        assert mu_hat.shape == logvar_hat.shape == (*frame_mask.shape, 80)   # runs with the positions
        feats = model.text_features(memory, intervals, TEXT_MASK, q, chars)
        for t in range(n):
            l = [i for i, (s, e) in enumerate(tokens) if s <= want_q[t] < e][0]
            want = model.align_proj(memory[b, l]) + G.sinusoidal_encoding(
                torch.tensor(4.0 * (want_q[t] - tokens[l][0])), 32) \
                + model.char_embedding.weight[CHARS[b, int(want_q[t])]]
            torch.testing.assert_close(feats[b, t], want, atol=1e-5, rtol=1e-5)


def test_frame_positions_match_a_walk_along_the_units():
    durations = torch.tensor([[2.0, 3.0, 1.0, 0.0], [1.5, 0.5, 2.25, 3.75]])
    frame_mask = G.lengths_to_mask(torch.tensor([6, 8]))
    q = G.frame_positions(durations, frame_mask)
    for b in range(2):
        n = int(frame_mask[b].sum())
        torch.testing.assert_close(q[b, :n], torch.tensor(naive_positions(durations[b].tolist(), n)))
    assert float(q[0, 6:].abs().sum()) == 0.0


def brute_force_alignment(cost, n, u):
    """The least-cost monotonic path by trying every split of n frames into u runs of >= 1 frame."""
    import itertools
    best = None
    for cuts in itertools.combinations(range(1, n), u - 1):
        bounds = (0,) + cuts + (n,)
        total = sum(float(cost[t, k]) for k in range(u) for t in range(bounds[k], bounds[k + 1]))
        if best is None or total < best[0]:
            best = (total, [bounds[k + 1] - bounds[k] for k in range(u)])
    return best[1]


def test_monotonic_alignment_finds_the_least_cost_path():
    g = torch.Generator().manual_seed(3)
    cost = torch.rand(3, 8, 4, generator=g, dtype=torch.float64)
    frame_mask = G.lengths_to_mask(torch.tensor([8, 6, 3]))
    unit_mask = G.lengths_to_mask(torch.tensor([4, 3, 4]))
    d = G.monotonic_alignment(cost, frame_mask, unit_mask)
    for b, (n, u) in enumerate([(8, 4), (6, 3)]):
        assert d[b, :u].tolist() == brute_force_alignment(cost[b], n, u)
        assert float(d[b, u:].sum()) == 0.0
    assert d[2].tolist() == [0.75] * 4           # 3 frames cannot cover 4 units: equal shares
    # a cost that is low on a known staircase is found exactly
    stairs = torch.ones(1, 9, 3)
    for t, k in enumerate([0, 0, 1, 1, 1, 1, 2, 2, 2]):
        stairs[0, t, k] = 0.0
    assert G.monotonic_alignment(stairs, G.lengths_to_mask(torch.tensor([9])),
                                 G.lengths_to_mask(torch.tensor([3]))).tolist() == [[2.0, 4.0, 3.0]]


def test_mas_alignment_losses_and_durations():
    torch.manual_seed(0)
    model = tiny_model(alignment="mas", dropout=0.0)
    frame_mask = G.lengths_to_mask(torch.tensor([14, 9]))
    text = torch.randn(2, 5, 12)
    target = torch.randn(2, 14, LATENT)
    out = model(text, TEXT_MASK, frame_mask, LAYOUT, target_mu=target)
    assert set(out) >= {"anchor", "duration", "positions"}
    memory = model.encode_text(text, TEXT_MASK)
    d, intervals, _ = model.durations(memory, TEXT_MASK, LAYOUT, frame_mask, target)
    assert d.sum(1).tolist() == [14.0, 9.0] and d.shape == (2, 13)      # units: 1+4+6+1+1 and 1+3+1
    assert bool((d[0] >= 1).all() and (d[1, :5] >= 1).all()) and float(d[1, 5:].sum()) == 0.0
    # the anchor loss is the anchors' squared error along the path that the search returns
    feats = model.unit_features(memory, intervals, TEXT_MASK, CHARS)
    anchors = model.anchor_head(feats)
    errs = []
    for b in range(2):
        t = 0
        for u, k in enumerate(d[b].long().tolist()):
            for _ in range(k):
                errs.append(float(((target[b, t] - anchors[b, u]) ** 2).mean().detach()))
                t += 1
    assert abs(float(out["anchor"].detach()) - sum(errs) / len(errs)) < 1e-5
    # at inference: predicted durations, rescaled to the frames
    d_hat, _, losses = model.durations(memory, TEXT_MASK, LAYOUT, frame_mask)
    torch.testing.assert_close(d_hat.sum(1), torch.tensor([14.0, 9.0]))
    assert losses == {} and float(d_hat[1, 5:].detach().abs().sum()) == 0.0


def test_guided_attention_loss_matches_naive_loop():
    torch.manual_seed(0)
    model = tiny_model(alignment="chars")
    frame_mask = G.lengths_to_mask(torch.tensor([7, 4]))
    att = torch.softmax(torch.randn(3, 2, 7, 5).masked_fill(~TEXT_MASK[None, :, None], -1e9), -1)
    p, prior = model.align(torch.randn(2, 5, 32), TEXT_MASK, LAYOUT, frame_mask)[1]["positions"]
    g = 0.15
    got = G.guided_attention_loss(att, prior, p, TEXT_MASK, frame_mask, g)
    total, count = 0.0, 0
    for layer in range(3):
        for b in range(2):
            n = int(frame_mask[b].sum())
            tokens = naive_units(SPANS[b], TEXT_MASK[b], "chars")
            units = tokens[-1][1]
            intervals = [(a / units, e / units) for a, e in tokens]
            ps = [(t + 0.5) / n for t in range(n)]
            for t in range(n):
                cost = 0.0
                for l, (a, e) in enumerate(intervals):
                    d = max(a - ps[t], 0.0, ps[t] - e)
                    cost += float(att[layer, b, t, l]) * (1 - math.exp(-d * d / (2 * g * g)))
                total, count = total + cost, count + 1
    assert abs(float(got) - total / count) < 1e-6
    # attention on the token under each frame costs nothing
    on = torch.zeros(3, 2, 7, 5)
    for b in range(2):
        n = int(frame_mask[b].sum())
        tokens = naive_units(SPANS[b], TEXT_MASK[b], "chars")
        intervals = [(a / tokens[-1][1], e / tokens[-1][1]) for a, e in tokens]
        ps = [(t + 0.5) / n for t in range(n)]
        for t in range(n):
            on[:, b, t, [l for l, (a, e) in enumerate(intervals) if a <= ps[t] < e][0]] = 1.0
    assert float(G.guided_attention_loss(on, prior, p, TEXT_MASK, frame_mask, g)) == 0.0


def test_aligned_model_forward_and_generate_use_the_spans():
    model = tiny_model(alignment="chars", dropout=0.0).eval()
    text = torch.randn(2, 5, 12)
    frame_mask = G.lengths_to_mask(torch.tensor([8, 6]))
    out = model(text, TEXT_MASK, frame_mask, LAYOUT, return_attention=True)
    assert out["attention"].shape == (2, 2, 8, 5)
    torch.testing.assert_close(out["attention"].sum(-1)[:, frame_mask], torch.ones(2, 14))
    other = SPANS.clone()
    other[0, 2:4] = torch.tensor([[4.0, 5.0], [5.0, 11.0]])        # move a token boundary
    changed = model(text, TEXT_MASK, frame_mask, (other, CHARS))["mu"]
    assert (changed[0] - out["mu"][0]).abs().max() > 1e-2                # sample 0 reads other tokens
    torch.testing.assert_close(changed[1], out["mu"][1], atol=1e-5, rtol=1e-5)   # sample 1 does not
    poses = model.generate(text, TEXT_MASK, lambda z: z[..., None, :].expand(*z.shape[:-1], 2, LATENT),
                           sample=False, lengths=[8, 6], layout=LAYOUT)
    torch.testing.assert_close(poses[0][:, 0], out["mu"][0], atol=1e-5, rtol=1e-5)


def test_training_loss_is_the_sum_of_the_section_3_3_terms():
    """G.training_loss against the terms assembled by hand from the model's outputs: phase 2 with
    fixed weights is Eq. 3 + w_len · length + w_KL · Eq. 4; with the boost, λ comes from Eq. 7 and
    one Eq. 8 step is taken with the batch's unweighted hand and other terms."""
    model = tiny_model(dropout=0.0).eval()
    B, T, L = 2, 9, 5
    g = torch.Generator().manual_seed(3)
    frame_mask = torch.arange(T)[None] < torch.tensor([[9], [6]])
    batch = {"text_emb": torch.randn(B, L, 12, generator=g), "text_mask": torch.arange(L)[None] < torch.tensor([[5], [3]]),
             "frame_mask": frame_mask, "latent": torch.randn(B, T, 2 * LATENT, generator=g),
             "lengths": frame_mask.sum(1)}
    cfg = G.GeneratorConfig(alignment="none", phase=2, hand_weights="fixed", kl_weight=0.01, length_weight=0.5,
                            logvar_floor=-4.0, max_frames=16)
    total, logs, out = G.training_loss(model, batch, cfg)
    mu, logvar = batch["latent"].chunk(2, -1)
    fixed = {"body": 1.0, "right_hand": 14.0, "left_hand": 10.0, "face": 2.0}
    l1, _ = G.latent_l1_loss(out["mu"], out["logvar"], mu, logvar, frame_mask, fixed, -4.0)
    length = (out["length_ratio"] - (frame_mask.sum(1) / 16).clamp(max=1)).abs().mean()
    kl = G.gaussian_kl(out["mu"], out["logvar"], mu, logvar, frame_mask, -4.0)
    torch.testing.assert_close(total, l1 + 0.5 * length + 0.01 * kl)
    assert set(logs) == {"latent_l1", "length", "kl", *(f"L_{a}" for a in ARTICULATOR_ORDER)}

    boost = G.HandWeightBoost(base=(3.0, 2.0), s_max=4.0, alpha=0.5, ema_decay=0.0)
    boost.s = 1.5
    cfg = G.GeneratorConfig(alignment="none", max_frames=16)                    # phase 1, dynamic
    model.train()
    torch.manual_seed(0)
    total, logs, out = G.training_loss(model, batch, cfg, boost)
    l1, terms = G.latent_l1_loss(out["mu"], out["logvar"], mu, logvar, frame_mask,
                                 {"body": 1.0, "right_hand": 4.5, "left_hand": 3.0, "face": 2.0}, -8.0)
    length = (out["length_ratio"] - (frame_mask.sum(1) / 16).clamp(max=1)).abs().mean()
    torch.testing.assert_close(total, l1 + length)
    ratio = (terms["right_hand"] + terms["left_hand"]) / (terms["body"] + terms["face"] + 1e-8)
    assert logs["s"].item() == pytest.approx(min(max(1.5 * ratio.item() ** 0.5, 1.0), 4.0), rel=1e-5)
