"""Gloss attention (§3.2): banded attention against a naive per-query loop and the dense form;
the GlossAttention module against independent computations.

    .venv/bin/python -m pytest tests/test_gloss_attention.py -q
"""
import math

import pytest
import torch
import torch.nn.functional as F

import gloss_attention as GA
from gloss_attention import GlossAttention, banded_attention, dense_banded_attention


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------

def naive_banded(q, k, v, window, key_mask=None):
    """One query at a time: softmax over the window frames that exist and are real; 0 if none."""
    batch, heads, length, dim = q.shape
    half = (window - 1) // 2
    rows = []
    for b in range(batch):
        for h in range(heads):
            for t in range(length):
                keys = [s for s in range(t - half, t + half + 1)
                        if 0 <= s < length and (key_mask is None or bool(key_mask[b, s]))]
                if not keys:
                    rows.append(v.new_zeros(v.shape[-1]))
                    continue
                idx = torch.tensor(keys)
                scores = k[b, h, idx] @ q[b, h, t] / math.sqrt(dim)            # (len,)
                rows.append(torch.softmax(scores, 0) @ v[b, h, idx])            # (Dv,)
    return torch.stack(rows).view(batch, heads, length, v.shape[-1])


def make_qkv(shape, layout="bhtd", dtype=torch.float64, seed=0, dv=None):
    """q, k, v (B, H, T, D) requiring grad; layout "bthd" stores them as (B, T, H, D) in memory."""
    g = torch.Generator().manual_seed(seed)
    batch, heads, length, dim = shape
    out = []
    for d in (dim, dim, dv or dim):
        if layout == "bhtd":
            x = torch.randn(batch, heads, length, d, generator=g, dtype=dtype)
        else:
            x = torch.randn(batch, length, heads, d, generator=g, dtype=dtype).transpose(1, 2)
        out.append(x.requires_grad_())
    return out


def make_mask(batch, length, seed=0):
    """Row 0 all padding (every window empty), row 1 random, row 2 (if any) without padding."""
    g = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(batch, length, generator=g) < 0.5
    mask[0] = False
    if batch > 2:
        mask[2] = True
    return mask


def value_and_grads(fn, q, k, v, grad_out):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def assert_all_close(got, want, atol):
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------
# banded_attention and dense_banded_attention
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("block", [None, 4])
@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("length", [1, 2, 5, 13])
def test_banded_matches_naive_loop(length, window, block, padding):
    q, k, v = make_qkv((2, 2, length, 5), dv=3, seed=length * 10 + window)
    mask = make_mask(2, length) if padding else None
    grad_out = torch.randn(2, 2, length, 3, dtype=q.dtype)
    want = value_and_grads(lambda *a: naive_banded(*a, window, mask), q, k, v, grad_out)
    got = value_and_grads(lambda *a: banded_attention(*a, window, mask, block=block), q, k, v, grad_out)
    assert_all_close(got, want, atol=1e-10)
    dense = value_and_grads(lambda *a: dense_banded_attention(*a, window, mask), q, k, v, grad_out)
    assert_all_close(dense, want, atol=1e-10)


@pytest.mark.parametrize("layout", ["bhtd", "bthd"])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("block", [None, 1, 3, 16])
@pytest.mark.parametrize("window", [1, 3, 5, 11])
@pytest.mark.parametrize("length", [1, 2, 37, 129, 390])
def test_banded_matches_dense(length, window, block, padding, layout):
    # T < window, T not a multiple of any block, halos longer than a block (block 1, 3 with N 11);
    # block=None takes the dense form up to DENSE_MAX_T (384) and the blocked form at T = 390
    shape = (3, 2, length, 4)
    q, k, v = make_qkv(shape, layout, seed=length + window)
    mask = make_mask(3, length, seed=length) if padding else None
    grad_out = torch.randn(shape, dtype=q.dtype)
    want = value_and_grads(lambda *a: dense_banded_attention(*a, window, mask), q, k, v, grad_out)
    got = value_and_grads(lambda *a: banded_attention(*a, window, mask, block=block), q, k, v, grad_out)
    assert_all_close(got, want, atol=1e-10)


@pytest.mark.parametrize("layout", ["bhtd", "bthd"])
@pytest.mark.parametrize("window", [3, 11])
def test_float32_blocked_path_to_rounding(window, layout):
    # Paper-sized heads, long enough for the automatic blocked path; float32 rounding only.
    shape = (2, 4, 400, 64)
    q, k, v = make_qkv(shape, layout, dtype=torch.float32, seed=window)
    mask = torch.arange(400)[None, :] < torch.tensor([[400], [263]])
    grad_out = torch.randn(shape)
    want = value_and_grads(lambda *a: dense_banded_attention(*a, window, mask), q, k, v, grad_out)
    got = value_and_grads(lambda *a: banded_attention(*a, window, mask), q, k, v, grad_out)
    assert_all_close(got, want, atol=2e-5)


@pytest.mark.parametrize("fn", [dense_banded_attention, banded_attention,
                                lambda *a: banded_attention(*a, block=2)])
def test_all_padding_window_gives_zero_and_no_gradient(fn):
    q, k, v = make_qkv((2, 2, 9, 4))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 4] = True                               # one real frame: windows of frames 3, 4, 5
    out = fn(q, k, v, 3, mask)
    assert torch.isfinite(out).all()
    empty = torch.ones(2, 9, dtype=torch.bool)
    empty[1, 3:6] = False
    assert (out[empty[:, None, :].expand(2, 2, 9)] == 0).all()
    torch.testing.assert_close(out[1, :, 3:6], v[1, :, 4:5].expand(2, 3, 4).detach(), atol=1e-12, rtol=0)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)
    padded = ~mask[:, None, :].expand(2, 2, 9)
    assert (grads[0][empty[:, None, :].expand(2, 2, 9)] == 0).all()   # empty windows: no q grad
    assert (grads[1][padded] == 0).all() and (grads[2][padded] == 0).all()  # padding: no k, v grad
    assert (grads[2][1, :, 4] != 0).all()


def test_global_attention_is_masked_softmax_and_zero_for_an_empty_sequence():
    q, k, v = make_qkv((3, 2, 7, 4))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False                             # padded sequence
    mask[2] = False                                 # nothing real at all
    grad_out = torch.randn(3, 2, 7, 4, dtype=q.dtype)
    got = value_and_grads(lambda *a: GA.global_attention(*a, mask), q, k, v, grad_out)

    def manual(q, k, v):                            # rows 0 and 1 only: row 2 is all padding
        scores = (q[:2] @ k[:2].transpose(-1, -2) / 2.0).masked_fill(~mask[:2, None, None, :], -math.inf)
        return torch.cat([torch.softmax(scores, -1) @ v[:2], torch.zeros_like(v[2:])])

    want = value_and_grads(manual, q, k, v, grad_out)
    assert_all_close(got, want, atol=1e-12)
    assert (got[0][2] == 0).all() and all((g[2] == 0).all() for g in got[1:])  # no NaN, no gradient


def test_long_sequence_uses_block_local_sdpa(monkeypatch):
    # One SDPA call whose key axis is one block plus its halos: no T × T work.
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), tuple(k.shape), tuple(attn_mask.shape)))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = make_qkv((2, 2, 2000, 4), dtype=torch.float32)
    banded_attention(q, k, v, 5, make_mask(2, 2000))
    block = GA.block_size(5, 2000)
    assert len(calls) == 1
    assert calls[0][1][-2] == block + 4 and calls[0][2][-1] == block + 4


@pytest.mark.parametrize("window,length,expected", [
    (3, 1000, 16), (11, 1000, 32), (21, 5000, 64), (101, 5000, 256), (3, 5, 8), (3, 1, 1)])
def test_block_size_grows_with_the_window_and_fits_the_sequence(window, length, expected):
    assert GA.block_size(window, length) == expected


@pytest.mark.parametrize("bad", [
    dict(window=2), dict(window=0), dict(window=-3), dict(window=3.0), dict(window=True),
    dict(k=torch.randn(2, 2, 6, 4)), dict(v=torch.randn(2, 2, 6, 4)), dict(q=torch.randn(2, 5, 4)),
    dict(key_mask=torch.ones(2, 6, dtype=torch.bool)), dict(key_mask=torch.ones(2, 5)),
    dict(block=0), dict(block=2.5),
    dict(q=torch.randn(2, 2, 0, 4), k=torch.randn(2, 2, 0, 4), v=torch.randn(2, 2, 0, 4)),
])
def test_bad_arguments_fail_an_assert(bad):
    args = dict(q=torch.randn(2, 2, 5, 4), k=torch.randn(2, 2, 5, 4), v=torch.randn(2, 2, 5, 4),
                window=3, key_mask=None, block=None)
    args.update(bad)
    with pytest.raises(AssertionError):
        banded_attention(args["q"], args["k"], args["v"], args["window"], args["key_mask"],
                         block=args["block"])
    if "block" not in bad:
        with pytest.raises(AssertionError):
            dense_banded_attention(args["q"], args["k"], args["v"], args["window"], args["key_mask"])


# ---------------------------------------------------------------------------------------------
# GlossAttention
# ---------------------------------------------------------------------------------------------

VARIANTS = [(query, fusion) for query in GA.QUERY_TYPES for fusion in GA.FUSIONS]


def make_module(seed=0, **kwargs):
    torch.manual_seed(seed)
    return GlossAttention(16, 2, **kwargs).double().eval()


@pytest.mark.parametrize("query,fusion", VARIANTS)
@pytest.mark.parametrize("length", [12, 100, 400])  # 400: the blocked form
def test_padding_does_not_reach_real_frames(query, fusion, length):
    module = make_module(window=5, query=query, query_span=3, fusion=fusion)
    g = torch.Generator().manual_seed(1)
    lengths = [length, length - 7]
    real = [torch.randn(n, 16, generator=g, dtype=torch.float64) for n in lengths]
    outputs = []
    for extra, scale in ((0, 1.0), (9, 100.0)):             # two different paddings of the batch
        width = length + extra
        x = scale * torch.randn(2, width, 16, generator=g, dtype=torch.float64)
        mask = torch.zeros(2, width, dtype=torch.bool)
        for b, seq in enumerate(real):
            x[b, :len(seq)] = seq
            mask[b, :len(seq)] = True
        x.requires_grad_()
        out = module(x, mask)
        loss = sum(out[b, :n].sum() for b, n in enumerate(lengths))
        (grad,) = torch.autograd.grad(loss, x)
        assert (grad[~mask] == 0).all()                       # no path from a padded frame
        outputs.append([out[b, :n].detach() for b, n in enumerate(lengths)])
    alone = [module(seq[None])[0].detach() for seq in real]  # unpadded, mask=None
    for a, b, c in zip(outputs[0], outputs[1], alone):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
        torch.testing.assert_close(a, c, atol=1e-10, rtol=0)


@pytest.mark.parametrize("query,fusion", VARIANTS)
@pytest.mark.parametrize("window", [3, 5, 7, 9, 11])
def test_every_variant_runs_and_is_finite(query, fusion, window):
    torch.manual_seed(0)
    module = GlossAttention(32, 4, window=window, query=query, query_span=5, fusion=fusion, dropout=0.1)
    x = torch.randn(3, 17, 32, requires_grad=True)
    mask = torch.arange(17)[None, :] < torch.tensor([[17], [9], [1]])
    out = module(x, mask)
    assert out.shape == (3, 17, 32) and torch.isfinite(out).all()
    out[mask].square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def split_heads(t, heads):
    batch, length, width = t.shape
    return t.view(batch, length, heads, width // heads).transpose(1, 2)       # (B, H, T, Dh)


def manual_attention(module, x, allowed):
    """Softmax attention with the module's weights; allowed (B, T, T) bool (query, key)."""
    w_q, b_q = module.q_proj.weight, module.q_proj.bias
    w_kv, b_kv = module.kv_proj.weight, module.kv_proj.bias
    q = split_heads(x @ w_q.T + b_q, module.num_heads)
    k, v = (split_heads(t, module.num_heads) for t in (x @ w_kv.T + b_kv).chunk(2, -1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])                 # (B, H, T, T)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    heads = torch.softmax(scores, -1) @ v                                     # (B, H, T, Dh)
    merged = heads.transpose(1, 2).reshape(x.shape)
    return merged @ module.out_proj.weight.T + module.out_proj.bias


@pytest.mark.parametrize("length", [7, 90])
def test_global_is_plain_full_attention(length):
    module = make_module(fusion="global")
    x = torch.randn(2, length, 16, dtype=torch.float64)
    mask = torch.arange(length)[None, :] < torch.tensor([[length], [length - 4]])
    allowed = mask[:, None, :].expand(2, length, length)
    want = manual_attention(module, x, allowed)
    got = module(x, mask)
    torch.testing.assert_close(got[mask], want[mask], atol=1e-10, rtol=0)


@pytest.mark.parametrize("window", [3, 7])
@pytest.mark.parametrize("length", [9, 120])
def test_local_is_band_attention(window, length):
    module = make_module(window=window)
    x = torch.randn(2, length, 16, dtype=torch.float64)
    mask = torch.arange(length)[None, :] < torch.tensor([[length], [length - 5]])
    pos = torch.arange(length)
    band = (pos[:, None] - pos[None, :]).abs() <= (window - 1) // 2
    want = manual_attention(module, x, band[None] & mask[:, None, :])
    torch.testing.assert_close(module(x, mask)[mask], want[mask], atol=1e-10, rtol=0)


def test_local_plus_global_is_the_gated_mix():
    mixed = make_module(fusion="local+global")
    with torch.no_grad():
        mixed.fusion_logit.copy_(torch.tensor([-1.0, 2.0]))
    local, full = make_module(fusion="local"), make_module(fusion="global")
    local.load_state_dict(mixed.state_dict(), strict=False)
    full.load_state_dict(mixed.state_dict(), strict=False)
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    mask = torch.arange(30)[None, :] < torch.tensor([[30], [21]])
    gate = torch.sigmoid(mixed.fusion_logit)                                  # (H,)

    def head_outputs(module):                # inputs of out_proj, per head
        store = {}
        hook = module.out_proj.register_forward_hook(lambda m, i, o: store.update(x=i[0]))
        module(x, mask)
        hook.remove()
        return split_heads(store["x"], 2)                                     # (B, H, T, Dh)

    want = gate[:, None, None] * head_outputs(local) + (1 - gate[:, None, None]) * head_outputs(full)
    torch.testing.assert_close(head_outputs(mixed), want, atol=1e-12, rtol=0)


def test_mean_query_is_padding_aware_average():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 11, generator=g) < 0.6
    mask[:, 5] = True
    for span in (1, 3, 5):
        got = GA.mean_query(x, mask, span)
        half = (span - 1) // 2
        for b in range(2):
            for t in range(11):
                frames = [s for s in range(t - half, t + half + 1) if 0 <= s < 11 and mask[b, s]]
                want = x[b, frames].mean(0) if frames else x[b, t]
                torch.testing.assert_close(got[b, t], want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("query,span", [("none", 3), ("mean", 3), ("mean", 5), ("attention", 5)])
@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("length,frame", [(20, 0), (20, 10), (20, 19), (100, 57)])
def test_window_locality(query, span, window, length, frame):
    module = make_module(window=window, query=query, query_span=span)
    radius = max((window - 1) // 2, (span - 1) // 2 if query != "none" else 0)
    x = torch.randn(1, length, 16, dtype=torch.float64)
    y = x.clone()
    y[0, frame] += 3.0
    changed = (module(x) - module(y)).abs().amax(-1)[0]                       # (T,)
    far = (torch.arange(length) - frame).abs() > radius
    assert (changed[far] == 0).all()            # outside the receptive field, also no wrap-around
    assert (changed[~far] > 1e-6).all()         # both neighbours inside it (symmetric window)


@pytest.mark.parametrize("kwargs", [
    dict(window=4), dict(window=0), dict(query="max"), dict(fusion="sum"), dict(query_span=2),
    dict(dropout=1.0), dict(d_model=15), dict(num_heads=0),
])
def test_module_bad_arguments_fail_an_assert(kwargs):
    args = dict(d_model=16, num_heads=2)
    args.update(kwargs)
    with pytest.raises(AssertionError):
        GlossAttention(**args)


def test_module_bad_inputs_fail_an_assert():
    module = GlossAttention(16, 2)
    with pytest.raises(AssertionError):
        module(torch.randn(2, 5, 8))
    with pytest.raises(AssertionError):
        module(torch.randn(2, 5, 16), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(AssertionError):
        module(torch.randn(2, 5, 16), torch.ones(2, 5))
