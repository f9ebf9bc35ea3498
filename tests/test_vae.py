"""The disentangled VAE: Eq. 1, 5, 6 against independent computations, sizes, disentanglement."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import vae as V
from data import ARTICULATORS


def test_latent_sizes_and_order():
    assert list(V.LATENT_SIZES) == ["body", "right_hand", "left_hand", "face"]
    assert [V.LATENT_SIZES[a] for a in V.LATENT_SIZES] == [8, 28, 28, 16] and V.LATENT_DIM == 80
    s = V.split_articulators(torch.arange(80))
    assert [(int(s[a][0]), int(s[a][-1]) + 1) for a in s] == [(0, 8), (8, 36), (36, 64), (64, 80)]


@pytest.mark.parametrize("variant,first_layers", [
    ("base", {"body": [(24, 16)], "right_hand": [(63, 56)], "left_hand": [(63, 56)], "face": [(384, 32)]}),
    ("csl", {"body": [(24, 24)], "right_hand": [(63, 84), (84, 56)], "left_hand": [(63, 84), (84, 56)],
             "face": [(384, 48), (48, 32)]}),
])
def test_encoder_sizes_follow_section_3_1(variant, first_layers):
    m = V.DisentangledVAE(variant)
    for a, dims in first_layers.items():
        enc = m.encoders[a]
        got = [(l.in_features, l.out_features) for l in enc.mlp.layers]
        assert got == dims
        assert enc.mlp.residual.in_features == enc.mlp.residual.out_features == dims[-1][1]
        assert enc.mu.out_features == enc.logvar.out_features == V.LATENT_SIZES[a]
        # symmetric decoder: latent → reversed hidden sizes → the articulator's J·3 values
        dec = m.decoders[a]
        assert dec.mlp.layers[0].in_features == V.LATENT_SIZES[a]
        assert dec.out.out_features == dims[0][0]


def test_entangled_variant_has_one_80_d_latent():
    m = V.DisentangledVAE("entangled")
    assert list(m.encoders) == ["all"] and m.encoders["all"].mu.out_features == 80
    x = torch.randn(2, 3, 178, 3)
    x_hat, mu, logvar = m(x)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (2, 3, 80)


def test_articulators_are_disentangled():
    """Changing only the right hand changes only the right-hand latents and right-hand output."""
    torch.manual_seed(0)
    m = V.DisentangledVAE("base").eval()
    x = torch.randn(4, 178, 3)
    y = x.clone()
    y[:, ARTICULATORS["right_hand"]] += 1.0
    (mx, lx), (my, ly) = m.encode(x), m.encode(y)
    parts = [V.split_articulators(t) for t in (mx, my, lx, ly)]
    for a in V.LATENT_SIZES:
        same = torch.equal(parts[0][a], parts[1][a]) and torch.equal(parts[2][a], parts[3][a])
        assert same == (a != "right_hand")
    z = torch.randn(4, 80)
    z2 = z.clone()
    V.split_articulators(z2)["face"] += 1.0                 # a view: changes z2
    d1, d2 = m.decode(z), m.decode(z2)
    changed = (d1 != d2).any(-1).any(0)                   # (178,)
    assert changed[ARTICULATORS["face"]].all() and not changed[:50].any()


def test_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(3, 7, 80, generator=g), torch.randn(3, 7, 80, generator=g)
    mask = torch.rand(3, 7, generator=g) > 0.3
    mask[:, 0] = True
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)   # (3, 7)
    expected = ref[mask].mean()
    assert torch.allclose(V.kl_standard_normal(mu, logvar, mask), expected, atol=1e-5)
    # padded frames do not count, whatever they hold
    mu2 = mu.clone()
    mu2[~mask] = 1e3
    assert torch.allclose(V.kl_standard_normal(mu2, logvar, mask), expected, atol=1e-5)


def test_reparameterize_has_the_right_mean_and_variance():
    torch.manual_seed(0)
    mu = torch.tensor([0.5, -2.0, 3.0])
    logvar = torch.tensor([0.0, -1.0, 1.5])
    z = V.reparameterize(mu.expand(200_000, 3), logvar.expand(200_000, 3))
    assert torch.allclose(z.mean(0), mu, atol=0.02)
    assert torch.allclose(z.var(0), logvar.exp(), rtol=0.02)


def test_weighted_reconstruction_matches_a_per_articulator_loop():
    g = torch.Generator().manual_seed(2)
    x, x_hat = torch.randn(2, 6, 178, 3, generator=g), torch.randn(2, 6, 178, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    weights = {"body": 1.0, "right_hand": 10.0, "left_hand": 14.0, "face": 2.0}
    ranges = {"body": range(0, 8), "right_hand": range(8, 29), "left_hand": range(29, 50), "face": range(50, 178)}
    expected, terms = 0.0, {}
    for a, joints in ranges.items():
        total, count = 0.0, 0
        for b in range(2):
            for t in range(6):
                if mask[b, t]:
                    total += sum(abs(float(x_hat[b, t, j, c] - x[b, t, j, c])) for j in joints for c in range(3)) / (3 * len(joints))
                    count += 1
        terms[a] = total / count
        expected += weights[a] * terms[a]
    rec, got = V.reconstruction_loss(x_hat, x, mask, weights)
    assert abs(rec.item() - expected) < 1e-4
    for a in ranges:
        assert abs(got[a].item() - terms[a]) < 1e-5
    mu, logvar = torch.randn(2, 6, 80, generator=g), torch.randn(2, 6, 80, generator=g)
    loss, logs = V.vae_loss(x_hat, x, mu, logvar, mask, weights, beta=0.25)
    assert torch.allclose(loss, rec + 0.25 * V.kl_standard_normal(mu, logvar, mask))
    assert set(logs) == {"rec", "kl", "L_body", "L_right_hand", "L_left_hand", "L_face"}


def test_pose_stats_are_undone_by_decode():
    m = V.DisentangledVAE("base")
    mean, std = torch.randn(178, 3), torch.rand(178, 3) + 0.5
    m.set_pose_stats(mean, std)
    z = torch.randn(5, 80)
    m2 = V.DisentangledVAE("base")
    m2.load_state_dict({k: v for k, v in m.state_dict().items()})
    assert torch.allclose(m2.decode(z), m.decode(z))
    raw = V.DisentangledVAE("base")
    raw.load_state_dict({**m.state_dict(), "pose_mean": torch.zeros(178, 3), "pose_std": torch.ones(178, 3)})
    assert torch.allclose(m.decode(z), raw.decode(z) * std + mean, atol=1e-5)


def test_unknown_variant_fails_an_assert():
    """The flag is refused by argparse (--vae-variant has choices) and a checkpoint holding an unknown
    variant by its loaders (tests/test_reliability.py); the model itself asserts."""
    with pytest.raises(AssertionError, match="'huge'"):
        V.DisentangledVAE("huge")


def test_hand_shape_error_matches_a_naive_loop():
    """Finger joints relative to their wrist, L1 per coordinate, over real frames only; a hand that
    is moved as a whole has no shape error."""
    from vae import hand_shape_error, selection_error, reconstruction_loss
    g = torch.Generator().manual_seed(3)
    x, x_hat = torch.randn(2, 4, 178, 3, generator=g), torch.randn(2, 4, 178, 3, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    got = hand_shape_error(x_hat, x, mask)
    for a, wrist in (("right_hand", 8), ("left_hand", 29)):
        total, n = 0.0, 0
        for b in range(2):
            for t in range(4):
                if mask[b, t]:
                    n += 1
                    for j in range(wrist + 1, wrist + 21):
                        for c in range(3):
                            total += abs((x_hat[b, t, j, c] - x_hat[b, t, wrist, c]) - (x[b, t, j, c] - x[b, t, wrist, c])).item() / 60
        assert float(got[a]) == pytest.approx(total / n, rel=1e-5)
    shifted = x.clone()
    shifted[:, :, 8:29] += torch.tensor([0.3, -0.2, 0.1])
    assert float(hand_shape_error(shifted, x, mask)["right_hand"]) == pytest.approx(0.0, abs=1e-6)
    w = {"body": 1.0, "right_hand": 10.0, "left_hand": 14.0, "face": 2.0}
    value, logs = selection_error(x_hat, x, mask, w)
    expected = reconstruction_loss(x_hat, x, mask, w)[0] + 10 * got["right_hand"] + 14 * got["left_hand"]
    assert float(value) == pytest.approx(float(expected), rel=1e-6) and logs["select"] is value
