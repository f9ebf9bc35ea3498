r"""Gloss attention: decoder self-attention restricted to a local temporal window (§3.2, Tables 2–4).

Each frame query t attends only to the N frames t-(N-1)/2 … t+(N-1)/2 that exist and are real
(N odd). Unlike the first public code of gloss attention (Yin et al. 2023), the window is
symmetric, positions never wrap around the sequence ends, and padded frames are always masked.

    .venv/bin/python -m pytest tests/test_gloss_attention.py   # exactness and module tests
    .venv/bin/python benchmarks/attention.py                   # speed beside one SDPA call

For one query t with the window set W(t) = {s : |s - t| ≤ (N-1)/2, 0 ≤ s < T, mask[s]}:

    o_t = Σ_{s ∈ W(t)} softmax_s(q_t · k_s / √D) v_s,         o_t = 0 if W(t) is empty.

`banded_attention` computes this exactly with torch.nn.functional.scaled_dot_product_attention
(SDPA). Up to T = DENSE_MAX_T it is one call with a (T, T) band mask (`dense_banded_attention`);
beyond, it works on block-local windows: the sequences of the batch are laid end to end as rows
and cut into blocks of Bq rows; each block attends to its own rows plus a halo of (N-1)/2 rows on
both sides (an overlapping strided view of one padded copy of k and v), and one boolean mask of
shape (blocks, 1, Bq, Bq + N - 1) encodes the band, the sequence ends (no wrap-around, no leaking
into the neighbouring sequence) and the padding. One SDPA call does all queries; time and memory
are O(T·(Bq + N)) instead of the O(T²) of the one call.

Convention for a query whose whole window is padding (W(t) empty): its output is 0 and it sends no
gradient to q, k or v. This is what SDPA itself does with a fully masked row since torch 2.5 (the
pinned torch is 2.13; tests/test_gloss_attention.py checks it), so no fix-up pass is needed.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

QUERY_TYPES = ("none", "mean", "attention")   # Table 4 query construction
FUSIONS = ("local", "global", "local+global")  # Table 2 (global) and Table 4 (local+global)

# Up to this length (and while the window is a large part of the sequence) banded_attention makes
# one dense SDPA call: with torch's default threads on a busy 2-core CPU the blocked form beats it
# only from T ≈ 256-384 on (N = 3 … 11, both layouts; one thread: from T = 128), see
# docs/benchmarks.md. All of the paper's sequences (T ≤ 300) take the dense call.
DENSE_MAX_T = 384


# ---------------------------------------------------------------------------------------------
# Banded attention: dense reference and blocked form
# ---------------------------------------------------------------------------------------------

def _check(q, k, v, window, key_mask):
    """Argument checks of the public attention functions (the ones a user calls directly)."""
    assert window is None or (type(window) is int and window % 2 == 1 and window > 0), f"odd window, got {window!r}"
    assert q.dim() == 4 and q.shape == k.shape and v.shape[:3] == k.shape[:3] and q.shape[2] >= 1, \
        f"need q, k (B, H, T, D), v (B, H, T, Dv); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    assert key_mask is None or (key_mask.dtype == torch.bool and key_mask.shape == (q.shape[0], q.shape[2])), \
        f"key_mask must be a bool (B, T) tensor, got {key_mask.dtype} {tuple(key_mask.shape)}"


def band_mask(length, window, device=None):
    """(T, T) bool, True where |t - s| ≤ (N-1)/2: the symmetric window, no wrap-around."""
    pos = torch.arange(length, device=device)
    return (pos[:, None] - pos[None, :]).abs() <= (window - 1) // 2          # (T, T)


def dense_banded_attention(q, k, v, window, key_mask=None):
    """Reference: one SDPA call with a (T, T) band mask; q, k (B, H, T, D), v (B, H, T, Dv).

    key_mask (B, T) bool is True at real frames. A query with no real frame in its window gets 0.
    """
    _check(q, k, v, window, key_mask)
    allowed = band_mask(q.shape[2], window, q.device)[None, None]             # (1, 1, T, T)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]                        # (B, 1, T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)         # (B, H, T, Dv)


def block_size(window, length):
    """Queries per block for the blocked form: a power of two ≥ 3(N-1), between 16 and 256.

    Each query scores Bq + N - 1 keys of which N are in its band, so small blocks waste less,
    while each block costs a fixed overhead in SDPA; ~3(N-1) balances the two (measured on CPU).
    Never larger than the sequence rounded up to a power of two.
    """
    size = 16
    while size < 3 * (window - 1) and size < 256:
        size *= 2
    return min(size, 1 << max(length - 1, 0).bit_length())


def banded_attention(q, k, v, window, key_mask=None, *, block=None):
    """Exact local attention: query t attends to keys t-(N-1)/2 … t+(N-1)/2 that exist and are real.

    q, k (B, H, T, D), v (B, H, T, Dv); window N odd; key_mask (B, T) bool, True at real frames.
    Returns (B, H, T, Dv); 0 for a query with no real frame in its window (and no gradient).
    block=None uses the dense form while T ≤ max(DENSE_MAX_T, 4N) and otherwise the blocked form
    with block_size(N, T) rows per block; an int forces the blocked form with that block size.
    Fastest when q is stored as (B, T, H, D) (a projection output split into heads).
    """
    _check(q, k, v, window, key_mask)
    length = q.shape[2]
    if block is None:
        if length <= max(DENSE_MAX_T, 4 * window):
            return dense_banded_attention(q, k, v, window, key_mask)
        block = block_size(window, length)
    assert type(block) is int and block >= 1, f"block must be a positive int or None, got {block!r}"
    return _blocked_banded_attention(q, k, v, window, key_mask, block)


class _HaloWindows(torch.autograd.Function):
    """Rows (R, G, D) → windows (nb, G, Bq + 2h, D): window i holds rows i·Bq-h … i·Bq+Bq+h-1.

    Rows outside [0, R) are zeros. The forward is one padded copy viewed with overlapping strides;
    the backward adds every window's gradient back onto its rows (overlap-add) in about one pass,
    where autograd's own unfold backward needs several.
    """

    @staticmethod
    def forward(ctx, rows, half, block):
        total, groups, dim = rows.shape
        num_blocks = -(-total // block)
        buffer = rows.new_empty(num_blocks * block + 2 * half, groups, dim)   # (Rp+2h, G, D)
        buffer[:half].zero_()
        buffer[half + total:].zero_()
        buffer[half:half + total].copy_(rows)
        ctx.half, ctx.block, ctx.total = half, block, total
        return buffer.unfold(0, block + 2 * half, block).permute(0, 1, 3, 2)  # (nb, G, span, D)

    @staticmethod
    def backward(ctx, grad):                                                  # (nb, G, span, D)
        half, block, total = ctx.half, ctx.block, ctx.total
        grad = grad.transpose(1, 2)                                           # (nb, span, G, D)
        num_blocks, span, groups, dim = grad.shape
        if half <= block:
            # Window i: its own block in the middle, the h rows before it (the end of block i-1)
            # and the h rows after it (the start of block i+1).
            rows = grad[:, half:half + block].clone()                         # (nb, Bq, G, D)
            if half:
                rows[:-1, block - half:] += grad[1:, :half]
                rows[1:, :half] += grad[:-1, half + block:]
            return rows.reshape(-1, groups, dim)[:total], None, None          # (R, G, D)
        # Halo longer than a block: add the windows back chunk by chunk of Bq rows.
        chunks = -(-span // block)
        acc = grad.new_zeros(num_blocks + chunks - 1, block, groups, dim)     # padded rows, by block
        for c in range(chunks):
            width = min(block, span - c * block)
            acc[c:c + num_blocks, :width] += grad[:, c * block:c * block + width]
        return acc.reshape(-1, groups, dim)[half:half + total], None, None    # (R, G, D)


def _blocked_banded_attention(q, k, v, window, key_mask, block):
    """Blocked form: all sequences laid end to end as rows, cut into blocks of Bq rows.

    Memory layout decides what a row is: with q stored as (B, T, H, D) (what a projection
    followed by a head split gives, and the layout of SDPA's CPU kernel) a row is one frame of
    all H heads; otherwise one frame of one head. Each block attends to its rows plus a halo of
    h = (N-1)/2 rows on each side; halo rows of a neighbouring sequence, past the ends or at
    padding are masked, so one SDPA call covers every query.
    """
    batch, heads, length, dim = q.shape
    half = (window - 1) // 2
    if q.transpose(1, 2).is_contiguous():
        groups, num_seqs = heads, batch                       # row = (frame) × H heads
        def to_rows(x):
            return x.transpose(1, 2).reshape(batch * length, heads, x.shape[-1])  # (B·T, H, ·)
        real = None if key_mask is None else key_mask.reshape(-1)                 # (B·T,)
    else:
        groups, num_seqs = 1, batch * heads                   # row = (frame, head)
        def to_rows(x):
            return x.reshape(batch * heads * length, 1, x.shape[-1])              # (B·H·T, 1, ·)
        real = None if key_mask is None else key_mask[:, None].expand(batch, heads, length).reshape(-1)
    total = num_seqs * length
    num_blocks = -(-total // block)
    padded = num_blocks * block
    span = block + 2 * half                                   # keys per block: its rows + halos
    device = q.device

    q_rows = to_rows(q)                                                       # (R, G, D)
    if padded > total:
        q_rows = F.pad(q_rows, (0, 0, 0, 0, 0, padded - total))               # (Rp, G, D)
    q_blocks = q_rows.view(num_blocks, block, groups, dim).transpose(1, 2)    # (nb, G, Bq, D)
    k_blocks = _HaloWindows.apply(to_rows(k), half, block)                    # (nb, G, span, D)
    v_blocks = _HaloWindows.apply(to_rows(v), half, block)                    # (nb, G, span, Dv)

    # Key j of query row r in a block is `offset` = j - h - r frames away from the query. It is
    # allowed when |offset| ≤ h (the band) and it stays inside the query's own sequence: with the
    # query at frame t, 0 ≤ t + offset < T. This also rules out wrap-around and the zero rows.
    row = torch.arange(block, device=device)[:, None]                         # (Bq, 1)
    col = torch.arange(span, device=device)[None, :]                          # (1, span)
    offset = col - half - row                                                 # (Bq, span)
    frame = (torch.arange(padded, device=device) % length).view(num_blocks, block, 1)  # (nb, Bq, 1)
    allowed = (offset.abs() <= half) & (offset >= -frame) & (offset < length - frame)  # (nb, Bq, span)
    if real is not None:
        real = F.pad(real, (half, half + padded - total), value=False)        # (Rp+2h,)
        allowed = allowed & real.unfold(0, span, block)[:, None, :]           # (nb, Bq, span)
    out = F.scaled_dot_product_attention(q_blocks, k_blocks, v_blocks,
                                         attn_mask=allowed[:, None])          # (nb, G, Bq, Dv)
    out = out.transpose(1, 2).reshape(padded, groups, -1)[:total]             # (R, G, Dv)
    if groups == heads:
        return out.view(batch, length, heads, -1).transpose(1, 2)             # (B, H, T, Dv)
    return out.view(batch, heads, length, -1)                                 # (B, H, T, Dv)


def global_attention(q, k, v, key_mask=None):
    """Full self-attention over the real frames (Table 2 baseline); (B, H, T, Dv).

    A sequence without any real frame gets 0, like an empty window in banded_attention.
    """
    _check(q, k, v, None, key_mask)
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v)                        # (B, H, T, Dv)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])  # (B, H, T, Dv)


# ---------------------------------------------------------------------------------------------
# Query construction (Table 4)
# ---------------------------------------------------------------------------------------------

def mean_query(x, mask, span):
    """Average of the real frames among the `span` frames centred on t (no wrap); (B, T, C).

    A frame whose span holds no real frame (only possible at padding) keeps its own value.
    """
    weight = torch.ones_like(x[..., 0]) if mask is None else mask.to(x.dtype)  # (B, T)
    half = (span - 1) // 2
    # avg_pool1d with zero padding and count_include_pad sums the span (divided by span, which
    # cancels in the ratio below).
    total = F.avg_pool1d((x * weight[..., None]).transpose(1, 2), span, 1, half,
                         count_include_pad=True).transpose(1, 2)              # (B, T, C)
    count = F.avg_pool1d(weight[:, None], span, 1, half, count_include_pad=True)[:, 0]  # (B, T)
    empty = count <= 0                                                        # (B, T)
    mean = total / count.masked_fill(empty, 1.0)[..., None]                   # (B, T, C)
    return torch.where(empty[..., None], x, mean)                             # (B, T, C)


# ---------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------

class GlossAttention(nn.Module):
    """Multi-head self-attention over frames whose score pattern is the band |t - s| ≤ (N-1)/2.

    window: N ∈ {3, 5, 7, 9, 11} in Table 3 (odd). query: how the query of frame t is formed
    (Table 4): "none" (frame t itself), "mean" (average of the query_span real frames centred on t) or
    "attention" (a learned single-head attention pooling over those query_span frames). fusion: "local"
    (gloss attention), "global" (ordinary self-attention over real frames, the Table 2 baseline)
    or "local+global". Defaults are the paper's best: N = 3, query "none", local only.
    Dropout acts on the output projection, never on the attention weights (SDPA on CPU would
    otherwise leave its fused kernel).
    """

    def __init__(self, d_model, num_heads, window=3, query="none", query_span=3, fusion="local",
                 dropout=0.0):
        super().__init__()
        assert num_heads > 0 and d_model % num_heads == 0, (d_model, num_heads)
        assert window > 0 and window % 2 == 1 and query_span > 0 and query_span % 2 == 1, \
            "window N and the query span q must be odd"
        assert query in QUERY_TYPES and fusion in FUSIONS and 0 <= dropout < 1, (query, fusion, dropout)
        self.d_model, self.num_heads, self.window = d_model, num_heads, window
        self.query, self.query_span, self.fusion = query, query_span, fusion
        head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        if query == "attention":
            # not specified in the paper: one head of width d_model/num_heads pools x over the span
            self.pool_proj = nn.Linear(d_model, 2 * head_dim)
        if fusion == "local+global":
            # not specified in the paper: out = g·local + (1-g)·global, g = sigmoid(a_h) per head,
            # a_h initialised to 0 (an even mix)
            self.fusion_logit = nn.Parameter(torch.zeros(num_heads))

    def extra_repr(self):
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, window={self.window}, "
                f"query={self.query!r}, query_span={self.query_span}, fusion={self.fusion!r}")

    def query_input(self, x, mask):
        """The frames the queries are projected from, following self.query; (B, T, C)."""
        if self.query == "none":
            return x
        if self.query == "mean":
            return mean_query(x, mask, self.query_span)
        a, b = self.pool_proj(x).chunk(2, dim=-1)                             # 2 × (B, T, Dh)
        # Attention pooling over the query_span (q) frames around t: softmax_s(a_t · b_s / √Dh) x_s.
        pooled = banded_attention(a[:, None], b[:, None], x[:, None], self.query_span, mask)  # (B, 1, T, C)
        return pooled[:, 0]                                                   # (B, T, C)

    def forward(self, x, mask=None):
        """x (B, T, d_model), mask (B, T) bool True at real frames → (B, T, d_model).

        Real frames never depend on padded ones; outputs at padded frames are unspecified.
        """
        batch, length, _ = x.shape
        assert x.shape[-1] == self.d_model and (mask is None or (
            mask.dtype == torch.bool and mask.shape == (batch, length))), "x (B, T, C), mask (B, T) bool"
        heads = self.num_heads

        def split(t):                                                         # (B, T, C) → (B, H, T, Dh)
            return t.reshape(batch, length, heads, -1).transpose(1, 2)

        q = split(self.q_proj(self.query_input(x, mask)))                     # (B, H, T, Dh)
        k, v = (split(t) for t in self.kv_proj(x).chunk(2, dim=-1))           # (B, H, T, Dh)
        if self.fusion == "local":
            out = banded_attention(q, k, v, self.window, mask)                # (B, H, T, Dh)
        elif self.fusion == "global":
            out = global_attention(q, k, v, mask)                             # (B, H, T, Dh)
        else:
            gate = torch.sigmoid(self.fusion_logit)[:, None, None]            # (H, 1, 1)
            out = (gate * banded_attention(q, k, v, self.window, mask)
                   + (1.0 - gate) * global_attention(q, k, v, mask))          # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(batch, length, self.d_model)        # (B, T, d_model)
        return self.dropout(self.out_proj(out))                               # (B, T, d_model)
