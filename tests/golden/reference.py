#!/usr/bin/env python3
"""Independent PyTorch reference for whale's golden fixtures.

Writes tiny random DeepSeek-V2 / V3 / V3.2, Qwen2 and Llama-3 checkpoints in the
Hugging Face layout (config.json + safetensors) together with the logits a correct
engine must produce for a fixed token sequence.

    /usr/bin/python3 tests/golden/reference.py --out tests/golden/fixtures

Every forward pass runs in float64 on the weights AS STORED (bf16-rounded, or fp8
codes times their block scale). Only torch and numpy are needed; the safetensors
and fp8 e4m3 formats are written by hand below. The equations follow
/work/shared/MISSION.md section 1 (and its "Conventions fixed by the published
weights"); see tests/golden/README.md for the exact semantics chosen.
"""
import argparse
import json
import math
import os
import shutil
import struct

import numpy as np
import torch

torch.set_num_threads(1)

F64 = torch.float64


# ----------------------------------------------------------------------------
# FP8 e4m3fn: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no inf,
# NaN = S.1111.111, max finite 448, subnormals m/8 * 2^-6.

def e4m3_decode_table():
    vals = []
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> 3) & 0xF
        m = code & 0x7
        if e == 0xF and m == 0x7:
            vals.append(float("nan"))
        elif e == 0:
            vals.append(sign * (m / 8.0) * 2.0 ** -6)
        else:
            vals.append(sign * (1.0 + m / 8.0) * 2.0 ** (e - 7))
    return torch.tensor(vals, dtype=F64)


E4M3_TABLE = e4m3_decode_table()          # code -> value
E4M3_POS = E4M3_TABLE[:127]               # codes 0..126: 0 .. 448, increasing
E4M3_MAX = 448.0


def e4m3_encode(x):
    """Round to nearest e4m3fn value (ties to even mantissa), saturating at +-448.
    Returns uint8 codes. Negative values keep their sign bit (also for -0)."""
    x = x.to(F64)
    mag = x.abs().clamp(max=E4M3_MAX)
    hi = torch.searchsorted(E4M3_POS, mag).clamp(max=126)      # first value >= mag
    lo = (hi - 1).clamp(min=0)
    d_lo = mag - E4M3_POS[lo]
    d_hi = E4M3_POS[hi] - mag
    # positive codes are ordered like the values, so the even code has mantissa LSB 0
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = torch.where(pick_hi, hi, lo)
    neg = torch.signbit(x)
    code = torch.where(neg, code | 0x80, code)
    return code.to(torch.uint8)


def e4m3_decode(code):
    return E4M3_TABLE[code.long()]


def e4m3_round(x):
    """Value of round_to_e4m3fn(x), in x's dtype."""
    return e4m3_decode(e4m3_encode(x)).to(x.dtype)


def pow2_ceil(x):
    """2^ceil(log2(x)) for x > 0, exactly (the UE8M0 scale format)."""
    m, e = torch.frexp(x)                  # x = m * 2^e, m in [0.5, 1)
    e = torch.where(m == 0.5, e - 1, e)    # exact powers of two stay
    return torch.ldexp(torch.ones_like(x), e)


# ----------------------------------------------------------------------------
# safetensors writer: u64 little-endian header length N, N bytes of JSON header
# (padded with spaces to a multiple of 8), then the raw little-endian data.

def tensor_bytes(dtype, t):
    if dtype == "F32":
        return t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
    if dtype == "BF16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "F16":
        return t.to(torch.float16).contiguous().numpy().astype("<f2").tobytes()
    if dtype == "F8_E4M3":
        assert t.dtype == torch.uint8
        return t.contiguous().numpy().tobytes()
    raise ValueError(dtype)


def write_safetensors(path, entries):
    """entries: list of (name, dtype, shape, bytes), written in that order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for _, _, _, data in entries:
            f.write(data)


# ----------------------------------------------------------------------------
# Checkpoint: for every tensor, what is stored (dtype, bytes) and its value as
# stored (float64) which the forward uses.

class Checkpoint:
    def __init__(self, cfg, gen):
        self.cfg = cfg
        self.gen = gen
        self.w = {}          # name -> float64 tensor, value as stored
        self.entries = []    # (name, dtype, shape, bytes) in generation order
        q = cfg.get("quantization_config")
        self.fp8 = q is not None and q.get("quant_method") == "fp8"
        self.ue8m0 = q is not None and q.get("scale_fmt") == "ue8m0"
        self.float_dtype = "F32" if cfg["torch_dtype"] == "float32" else "BF16"

    def randn(self, shape, std, mean=0.0):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float32) * std + mean

    def add_float(self, name, value, dtype=None):
        dtype = dtype or self.float_dtype
        stored = value.to(torch.bfloat16) if dtype == "BF16" else value.to(torch.float32)
        self.w[name] = stored.to(F64)
        self.entries.append((name, dtype, list(value.shape), tensor_bytes(dtype, stored)))

    def add_fp8(self, name, value):
        """128x128 block quantization: scale = amax/448 (or its power-of-two ceiling
        for ue8m0), code = e4m3(w / scale); stored scale tensor is '<name>_scale_inv'
        and the value is code * scale_inv."""
        out_f, in_f = value.shape
        B = 128
        so, si = -(-out_f // B), -(-in_f // B)
        scale = torch.empty(so, si, dtype=torch.float32)
        for i in range(so):
            for j in range(si):
                amax = value[i * B:(i + 1) * B, j * B:(j + 1) * B].abs().max()
                scale[i, j] = amax / E4M3_MAX
        if self.ue8m0:
            scale = pow2_ceil(scale.to(F64)).to(torch.float32)
        full = scale.repeat_interleave(B, 0).repeat_interleave(B, 1)[:out_f, :in_f].to(F64)
        codes = e4m3_encode((value.to(F64) / full).clamp(-E4M3_MAX, E4M3_MAX))
        self.w[name] = e4m3_decode(codes) * full
        self.entries.append((name, "F8_E4M3", [out_f, in_f], tensor_bytes("F8_E4M3", codes)))
        self.entries.append((name + "_scale_inv", "F32", [so, si], tensor_bytes("F32", scale)))

    # convenience initialisers ------------------------------------------------
    def linear(self, name, out_f, in_f, gain=1.0, quantizable=True):
        v = self.randn((out_f, in_f), gain / math.sqrt(in_f))
        if self.fp8 and quantizable:
            self.add_fp8(name, v)
        else:
            self.add_float(name, v)

    def norm(self, name, n):
        self.add_float(name, self.randn((n,), 0.1, 1.0))

    def vector(self, name, n, std, dtype=None):
        self.add_float(name, self.randn((n,), std), dtype)


# ----------------------------------------------------------------------------
# Model helpers

def is_deepseek(cfg):
    return cfg["model_type"].startswith("deepseek")


def is_moe_layer(cfg, i):
    return (cfg.get("n_routed_experts") is not None and i >= cfg["first_k_dense_replace"]
            and i % cfg["moe_layer_freq"] == 0)


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * w + b


def silu(x):
    return x * torch.sigmoid(x)


def swiglu(W, p, x):
    """down(silu(gate(x)) * up(x)), weights under prefix p."""
    return linear(silu(linear(x, W[p + "gate_proj.weight"])) * linear(x, W[p + "up_proj.weight"]),
                  W[p + "down_proj.weight"])


# ----------------------------------------------------------------------------
# RoPE

def yarn_get_mscale(scale, mscale):
    return 0.1 * mscale * math.log(scale) + 1.0 if scale > 1 else 1.0


def yarn_find_correction_dim(num_rotations, dim, base, max_pos):
    return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def rope_inv_freq(cfg, dim):
    """Returns (inv_freq [dim/2], cos/sin multiplier)."""
    base = cfg["rope_theta"]
    idx = torch.arange(0, dim, 2, dtype=F64) / dim
    inv_freq = 1.0 / (base ** idx)
    rs = cfg.get("rope_scaling")
    if rs is None:
        return inv_freq, 1.0
    kind = rs.get("type", rs.get("rope_type"))
    if kind == "yarn":   # HF DeepseekV3YarnRotaryEmbedding
        factor = rs["factor"]
        orig = rs["original_max_position_embeddings"]
        low = math.floor(yarn_find_correction_dim(rs["beta_fast"], dim, base, orig))
        high = math.ceil(yarn_find_correction_dim(rs["beta_slow"], dim, base, orig))
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=F64) - low) / (high - low)).clamp(0, 1)
        mask = 1.0 - ramp                      # 1 = keep original frequency
        freq_extra = inv_freq
        freq_inter = inv_freq / factor
        inv_freq = freq_inter * (1 - mask) + freq_extra * mask
        mult = yarn_get_mscale(factor, rs.get("mscale", 1)) / yarn_get_mscale(factor, rs.get("mscale_all_dim", 0))
        return inv_freq, mult
    if kind == "llama3":  # HF _compute_llama3_parameters
        factor = rs["factor"]
        lo_f, hi_f = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo_f, old / hi_f
        wavelen = 2 * math.pi / inv_freq
        out = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - lo_f) / (hi_f - lo_f)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, out), 1.0
    raise ValueError("unsupported rope_scaling " + str(rs))


def rope_cos_sin(cfg, dim, positions, dtype):
    inv_freq, mult = rope_inv_freq(cfg, dim)
    ang = positions.to(F64)[:, None] * inv_freq[None, :]      # [T, dim/2]
    return (ang.cos() * mult).to(dtype), (ang.sin() * mult).to(dtype)


def rope_interleaved(x, cos, sin):
    """Pairs (x[2i], x[2i+1]) rotate by angle i. x: [T, ..., d], cos/sin [T, d/2]."""
    shape = [cos.shape[0]] + [1] * (x.dim() - 2) + [cos.shape[1]]
    c, s = cos.view(shape), sin.view(shape)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)


def rope_halves(x, cos, sin):
    """Pairs (x[i], x[i+d/2]) rotate by angle i (HF rotate_half)."""
    shape = [cos.shape[0]] + [1] * (x.dim() - 2) + [cos.shape[1]]
    c, s = cos.view(shape), sin.view(shape)
    h = x.shape[-1] // 2
    x0, x1 = x[..., :h], x[..., h:]
    return torch.cat([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)


# ----------------------------------------------------------------------------
# Attention

def causal_softmax_attention(q, k, v, scale, keep):
    """q [T,H,d], k [S,H,d], v [S,H,dv]; keep [T,S] bool. Returns [T,H,dv]."""
    scores = torch.einsum("thd,shd->hts", q, k) * scale
    scores = scores.masked_fill(~keep[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", probs, v)


def hadamard(n, dtype):
    """Sylvester Hadamard matrix times n^-0.5 (orthonormal, symmetric)."""
    H = torch.ones(1, 1, dtype=F64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    assert H.shape[0] == n, "index_head_dim must be a power of two"
    return (H * n ** -0.5).to(dtype)


def act_quant(x, ue8m0):
    """Per-block fp8 quantization along the last dim (blocks of min(128, d)).
    Returns (e4m3 values [..., d], scales [..., nblocks])."""
    d = x.shape[-1]
    B = min(128, d)
    assert d % B == 0
    xb = x.reshape(*x.shape[:-1], d // B, B)
    amax = xb.abs().amax(-1).clamp(min=1e-4)
    scale = amax / E4M3_MAX
    if ue8m0:
        scale = pow2_ceil(scale)
    xq = e4m3_round((xb / scale[..., None]).clamp(-E4M3_MAX, E4M3_MAX))
    return xq.reshape(x.shape), scale


def perturb(stats, x, kind):
    """Robustness test only: relative noise on the inputs of discrete decisions."""
    if "perturb" not in stats:
        return x
    gen, rel = stats["perturb"]
    return x * (1 + rel[kind] * torch.randn(x.shape, generator=gen, dtype=F64).to(x.dtype))


def indexer_keep(cfg, W, p, x, qr, cos, sin, stats):
    """V3.2 lightning indexer. x: normed hidden [T, hidden], qr: normed q latent [T, q_lora].
    Returns keep [T, T] (top-k causal positions per query)."""
    T = x.shape[0]
    nh, hd, rd = cfg["index_n_heads"], cfg["index_head_dim"], cfg["qk_rope_head_dim"]
    ue8m0 = (cfg.get("quantization_config") or {}).get("scale_fmt") == "ue8m0"
    x, qr = perturb(stats, x, "index"), perturb(stats, qr, "index")
    q = linear(qr, W[p + "wq_b.weight"]).view(T, nh, hd)
    k = layer_norm(linear(x, W[p + "wk.weight"]), W[p + "k_norm.weight"], W[p + "k_norm.bias"], 1e-6)
    # rope part first, non-interleaved halves
    q = torch.cat([rope_halves(q[..., :rd], cos, sin), q[..., rd:]], -1)
    k = torch.cat([rope_halves(k[:, :rd], cos, sin), k[:, rd:]], -1)
    H = hadamard(hd, x.dtype)
    q, k = q @ H, k @ H
    q_q, q_s = act_quant(q, ue8m0)      # [T,nh,hd], [T,nh,nb]
    k_q, k_s = act_quant(k, ue8m0)      # [T,hd], [T,nb]
    w = linear(x, W[p + "weights_proj.weight"]) * nh ** -0.5 * hd ** -0.5      # [T, nh]
    nb = q_s.shape[-1]
    if nb == 1:
        # kernel order: relu(q_q . k_q) * (w * q_scale), summed over heads, times k_scale
        dots = torch.einsum("tjd,sd->tsj", q_q, k_q)
        score = (dots.clamp(min=0) * (w * q_s[..., 0])[:, None, :]).sum(-1) * k_s[:, 0][None, :]
    else:
        # head_dim > 128: block dots dequantized inside the ReLU
        B = hd // nb
        qb, kb = q_q.view(T, nh, nb, B), k_q.view(T, nb, B)
        dots = torch.einsum("tjbd,sbd->tsjb", qb, kb) * q_s[:, None] * k_s[None, :, None, :]
        score = (dots.sum(-1).clamp(min=0) * w[:, None, :]).sum(-1)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    score = score.masked_fill(~causal, float("-inf"))
    keep = torch.zeros(T, T, dtype=torch.bool)
    topk = cfg["index_topk"]
    for t in range(T):
        n = min(topk, t + 1)
        order = torch.argsort(score[t], descending=True)
        keep[t, order[:n]] = True
        if t + 1 > topk:   # margin of the top-k cut, relative to the row's largest |score|
            srt = score[t, order[: t + 1]]
            gap = (srt[n - 1] - srt[n]).item() / max(srt[: t + 1].abs().max().item(), 1e-30)
            stats["index_gap"] = min(stats.get("index_gap", 1.0), gap)
    stats.setdefault("index_keep", []).append(keep)
    return keep


def mla(cfg, W, p, x, positions, stats):
    """Multi-head latent attention on normed input x [T, hidden]."""
    T = x.shape[0]
    H = cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    r = cfg["kv_lora_rank"]
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_cos_sin(cfg, dr, positions, x.dtype)
    qr = None
    if cfg.get("q_lora_rank") is None:
        q = linear(x, W[p + "q_proj.weight"])
    else:
        qr = rms_norm(linear(x, W[p + "q_a_proj.weight"]), W[p + "q_a_layernorm.weight"], eps)
        q = linear(qr, W[p + "q_b_proj.weight"])
    q = q.view(T, H, dn + dr)
    q_nope, q_rope = q[..., :dn], rope_interleaved(q[..., dn:], cos, sin)
    kv = linear(x, W[p + "kv_a_proj_with_mqa.weight"])
    c_kv = rms_norm(kv[:, :r], W[p + "kv_a_layernorm.weight"], eps)
    k_rope = rope_interleaved(kv[:, r:], cos, sin)                      # [T, dr], shared by heads
    kvb = linear(c_kv, W[p + "kv_b_proj.weight"]).view(T, H, dn + dv)
    k_nope, v = kvb[..., :dn], kvb[..., dn:]
    qf = torch.cat([q_nope, q_rope], -1)
    kf = torch.cat([k_nope, k_rope[:, None, :].expand(T, H, dr)], -1)
    scale = (dn + dr) ** -0.5
    rs = cfg.get("rope_scaling")
    if rs is not None and rs.get("type", rs.get("rope_type")) == "yarn":
        m = yarn_get_mscale(rs["factor"], rs.get("mscale_all_dim", 0))
        scale = scale * m * m
    keep = torch.ones(T, T, dtype=torch.bool).tril()
    if cfg["model_type"] == "deepseek_v32":
        keep = keep & indexer_keep(cfg, W, p + "indexer.", x, qr, cos, sin, stats)
    o = causal_softmax_attention(qf, kf, v, scale, keep)
    return linear(o.reshape(T, H * dv), W[p + "o_proj.weight"])


def gqa_attention(cfg, W, p, x, positions):
    """Llama / Qwen2 attention with grouped KV heads and rotate_half RoPE."""
    T = x.shape[0]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    bias = cfg["model_type"] == "qwen2"
    q = linear(x, W[p + "q_proj.weight"], W[p + "q_proj.bias"] if bias else None).view(T, H, hd)
    k = linear(x, W[p + "k_proj.weight"], W[p + "k_proj.bias"] if bias else None).view(T, KV, hd)
    v = linear(x, W[p + "v_proj.weight"], W[p + "v_proj.bias"] if bias else None).view(T, KV, hd)
    cos, sin = rope_cos_sin(cfg, hd, positions, x.dtype)
    q, k = rope_halves(q, cos, sin), rope_halves(k, cos, sin)
    k = k.repeat_interleave(H // KV, dim=1)     # head h uses kv head h // (H/KV)
    v = v.repeat_interleave(H // KV, dim=1)
    o = causal_softmax_attention(q, k, v, hd ** -0.5, torch.ones(T, T, dtype=torch.bool).tril())
    return linear(o.reshape(T, H * hd), W[p + "o_proj.weight"])


# ----------------------------------------------------------------------------
# MoE

def select_experts(cfg, c):
    """Expert ids for one token from its selection scores c [n] (biased for noaux_tc).
    Returns (ids [k], group gap at the topk_group cut (inf without groups),
    gap at the top-k cut, k-th best selection score)."""
    n, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    method = cfg["topk_method"]
    G = cfg["n_group"] if method in ("group_limited_greedy", "noaux_tc") else 1
    group_gap = float("inf")
    if G > 1:
        grouped = c.view(G, n // G)
        if method == "group_limited_greedy":
            gscore = grouped.max(-1).values                 # V2: best expert of the group
        else:
            gscore = grouped.topk(2, -1).values.sum(-1)     # V3: sum of the two best
        kg = cfg["topk_group"]
        gorder = torch.argsort(gscore, descending=True)
        group_gap = (gscore[gorder[kg - 1]] - gscore[gorder[kg]]).item()
        dropped = torch.ones(G, dtype=torch.bool)
        dropped[gorder[:kg]] = False
        c = grouped.masked_fill(dropped[:, None], float("-inf")).flatten()
    order = torch.argsort(c, descending=True)
    return order[:k], group_gap, (c[order[k - 1]] - c[order[k]]).item(), c[order[k - 1]].item()


def route(cfg, W, p, u, stats):
    """Returns (expert ids [T, k], gates [T, k]) for normed input u [T, hidden]."""
    u = perturb(stats, u, "route")
    logits = linear(u, W[p + "gate.weight"])
    scores = torch.softmax(logits, -1) if cfg["scoring_func"] == "softmax" else torch.sigmoid(logits)
    noaux = cfg["topk_method"] == "noaux_tc"
    choice = scores + W[p + "gate.e_score_correction_bias"] if noaux else scores
    ids, gates = [], []
    for t in range(u.shape[0]):
        sel, ggap, egap, kth = select_experts(cfg, choice[t])
        stats["group_gap"] = min(stats.get("group_gap", float("inf")), ggap)
        stats["expert_gap"] = min(stats.get("expert_gap", float("inf")), egap)
        if noaux:
            # the bias should matter, and every chosen biased score should be > 0
            # (HF's remote code masks dropped groups with 0.0 instead of -inf)
            plain = select_experts(cfg, scores[t])[0]
            stats["bias_changed"] = stats.get("bias_changed", 0) + int(set(plain.tolist()) != set(sel.tolist()))
            stats["min_chosen_biased"] = min(stats.get("min_chosen_biased", float("inf")), kth)
        g = scores[t, sel]                   # gates use the unbiased scores
        if cfg["norm_topk_prob"]:
            g = g / (g.sum() + 1e-20)
        g = g * cfg["routed_scaling_factor"]
        ids.append(sel)
        gates.append(g)
    ids, gates = torch.stack(ids), torch.stack(gates)
    stats.setdefault("routes", []).append(ids.sort(-1).values)
    return ids, gates


def moe(cfg, W, p, u, stats):
    ids, gates = route(cfg, W, p, u, stats)
    out = swiglu(W, p + "shared_experts.", u)
    for t in range(u.shape[0]):
        for e, g in zip(ids[t].tolist(), gates[t]):
            out[t] = out[t] + g * swiglu(W, p + "experts.%d." % e, u[t:t + 1])[0]
    return out


# ----------------------------------------------------------------------------
# Decoder layer, model, MTP

def decoder_layer(cfg, W, i, x, positions, stats):
    p = "model.layers.%d." % i
    eps = cfg["rms_norm_eps"]
    a = rms_norm(x, W[p + "input_layernorm.weight"], eps)
    if is_deepseek(cfg):
        h = x + mla(cfg, W, p + "self_attn.", a, positions, stats)
    else:
        h = x + gqa_attention(cfg, W, p + "self_attn.", a, positions)
    u = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
    if is_deepseek(cfg) and is_moe_layer(cfg, i):
        return h + moe(cfg, W, p + "mlp.", u, stats)
    return h + swiglu(W, p + "mlp.", u)


def forward(cfg, W, tokens, stats):
    """Causal forward over all tokens. Returns (logits [T, vocab], final normed hidden [T, hidden])."""
    T = len(tokens)
    positions = torch.arange(T)
    x = W["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        x = decoder_layer(cfg, W, i, x, positions, stats)
    h = rms_norm(x, W["model.norm.weight"], cfg["rms_norm_eps"])
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return linear(h, head), h


def mtp_forward(cfg, W, tokens, h, stats):
    """MTP module (D = 1) at positions 0..T-2: predicts token i+2 from h_i and token i+1."""
    L = cfg["num_hidden_layers"]
    p = "model.layers.%d." % L
    eps = cfg["rms_norm_eps"]
    T = len(tokens) - 1
    e = rms_norm(W[p + "embed_tokens.weight"][tokens[1:]], W[p + "enorm.weight"], eps)
    hh = rms_norm(h[:T], W[p + "hnorm.weight"], eps)
    x = linear(torch.cat([e, hh], -1), W[p + "eh_proj.weight"])
    x = decoder_layer(cfg, W, L, x, torch.arange(T), stats)
    x = rms_norm(x, W[p + "shared_head.norm.weight"], eps)
    return linear(x, W[p + "shared_head.head.weight"])


def run_model(cfg, W, tokens, dtype=F64, perturb_rel=None, perturb_seed=0):
    Wd = {k: v.to(dtype) for k, v in W.items()}
    stats = {}
    if perturb_rel:
        stats["perturb"] = (torch.Generator().manual_seed(perturb_seed), perturb_rel)
    logits, h = forward(cfg, Wd, tokens, stats)
    mtp = mtp_forward(cfg, Wd, tokens, h, stats) if cfg.get("num_nextn_predict_layers", 0) else None
    return logits, mtp, stats


# ----------------------------------------------------------------------------
# Weight generation

def build_weights(cfg, gen, std):
    """Draws every tensor of the checkpoint in a fixed order. std: init scales."""
    ck = Checkpoint(cfg, gen)
    V, D = cfg["vocab_size"], cfg["hidden_size"]
    ck.add_float("model.embed_tokens.weight", ck.randn((V, D), std["embed"]))

    def deepseek_layer(i):
        p = "model.layers.%d." % i
        H = cfg["num_attention_heads"]
        dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        r, qr = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
        ck.norm(p + "input_layernorm.weight", D)
        a = p + "self_attn."
        if qr is None:
            ck.linear(a + "q_proj.weight", H * (dn + dr), D)
        else:
            ck.linear(a + "q_a_proj.weight", qr, D)
            ck.norm(a + "q_a_layernorm.weight", qr)
            ck.linear(a + "q_b_proj.weight", H * (dn + dr), qr)
        ck.linear(a + "kv_a_proj_with_mqa.weight", r + dr, D)
        ck.norm(a + "kv_a_layernorm.weight", r)
        ck.linear(a + "kv_b_proj.weight", H * (dn + dv), r)
        ck.linear(a + "o_proj.weight", D, H * dv, gain=std["out"])
        if cfg["model_type"] == "deepseek_v32":
            nh, hd = cfg["index_n_heads"], cfg["index_head_dim"]
            ck.linear(a + "indexer.wq_b.weight", nh * hd, qr)
            ck.linear(a + "indexer.wk.weight", hd, D)
            ck.norm(a + "indexer.k_norm.weight", hd)
            ck.vector(a + "indexer.k_norm.bias", hd, 0.1)
            ck.linear(a + "indexer.weights_proj.weight", nh, D, gain=std["index_w"], quantizable=False)
        ck.norm(p + "post_attention_layernorm.weight", D)
        m = p + "mlp."
        if is_moe_layer(cfg, i):
            n, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
            ck.linear(m + "gate.weight", n, D, gain=std["router"], quantizable=False)
            if cfg["topk_method"] == "noaux_tc":
                ck.vector(m + "gate.e_score_correction_bias", n, std["router_bias"], dtype="F32")
            for j in range(n):
                ck.linear(m + "experts.%d.gate_proj.weight" % j, I, D)
                ck.linear(m + "experts.%d.up_proj.weight" % j, I, D)
                ck.linear(m + "experts.%d.down_proj.weight" % j, D, I, gain=std["out"])
            S = I * cfg["n_shared_experts"]
            ck.linear(m + "shared_experts.gate_proj.weight", S, D)
            ck.linear(m + "shared_experts.up_proj.weight", S, D)
            ck.linear(m + "shared_experts.down_proj.weight", D, S, gain=std["out"])
        else:
            I = cfg["intermediate_size"]
            ck.linear(m + "gate_proj.weight", I, D)
            ck.linear(m + "up_proj.weight", I, D)
            ck.linear(m + "down_proj.weight", D, I, gain=std["out"])

    def gqa_layer(i):
        p = "model.layers.%d." % i
        H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd = cfg.get("head_dim") or D // H
        bias = cfg["model_type"] == "qwen2"
        ck.norm(p + "input_layernorm.weight", D)
        for name, rows in (("q_proj", H * hd), ("k_proj", KV * hd), ("v_proj", KV * hd)):
            ck.linear(p + "self_attn.%s.weight" % name, rows, D)
            if bias:
                ck.vector(p + "self_attn.%s.bias" % name, rows, 0.1)
        ck.linear(p + "self_attn.o_proj.weight", D, H * hd, gain=std["out"])
        ck.norm(p + "post_attention_layernorm.weight", D)
        I = cfg["intermediate_size"]
        ck.linear(p + "mlp.gate_proj.weight", I, D)
        ck.linear(p + "mlp.up_proj.weight", I, D)
        ck.linear(p + "mlp.down_proj.weight", D, I, gain=std["out"])

    for i in range(cfg["num_hidden_layers"]):
        deepseek_layer(i) if is_deepseek(cfg) else gqa_layer(i)
    ck.norm("model.norm.weight", D)
    if not cfg["tie_word_embeddings"]:
        ck.add_float("lm_head.weight", ck.randn((V, D), std["head"]))
    if cfg.get("num_nextn_predict_layers", 0):
        L = cfg["num_hidden_layers"]
        p = "model.layers.%d." % L
        ck.norm(p + "enorm.weight", D)
        ck.norm(p + "hnorm.weight", D)
        ck.linear(p + "eh_proj.weight", D, 2 * D, quantizable=False)
        ck.add_float(p + "embed_tokens.weight", ck.randn((V, D), std["embed"]))
        deepseek_layer(L)
        ck.norm(p + "shared_head.norm.weight", D)
        ck.add_float(p + "shared_head.head.weight", ck.randn((V, D), std["head"]))
    return ck


# ----------------------------------------------------------------------------
# Cases

FP8_QUANT = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
             "weight_block_size": [128, 128]}
YARN = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}


def deepseek_config(model_type, **kw):
    arch = {"deepseek_v2": "DeepseekV2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
            "deepseek_v32": "DeepseekV32ForCausalLM"}[model_type]
    c = {
        "architectures": [arch], "model_type": model_type,
        "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": None, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_group": 1, "topk_group": 1,
        "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
        "max_position_embeddings": 4096, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16", "use_cache": True,
    }
    if model_type != "deepseek_v2":
        c["num_nextn_predict_layers"] = 0
    c.update(kw)
    if c["rope_scaling"] is not None:
        c["max_position_embeddings"] = c["rope_scaling"]["original_max_position_embeddings"] * c["rope_scaling"]["factor"]
    return c


def dense_config(model_type, **kw):
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[model_type]
    c = {
        "architectures": [arch], "model_type": model_type,
        "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
        "max_position_embeddings": 512, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16", "use_cache": True,
    }
    c.update(kw)
    return c


DEFAULT_STD = {"embed": 0.5, "head": 0.15, "out": 1.0, "router": 1.0, "router_bias": 0.1,
               "index_w": 1.0}

CASES = [
    # (name, config, T, seed, std overrides, number of shards)
    ("v2_lite", deepseek_config(
        "deepseek_v2", vocab_size=96, n_shared_experts=2, num_experts_per_tok=2),
     12, 1000, {}, 1),
    ("v2_group_yarn", deepseek_config(
        "deepseek_v2", vocab_size=112, q_lora_rank=48, topk_method="group_limited_greedy",
        n_group=4, topk_group=2, num_experts_per_tok=3, routed_scaling_factor=16.0,
        rope_scaling=dict(YARN, mscale=0.707, mscale_all_dim=0.707), torch_dtype="float32"),
     10, 2000, {"out": 0.5}, 1),
    ("v3_sharded", deepseek_config(
        "deepseek_v3", vocab_size=128, num_hidden_layers=3, q_lora_rank=48, n_routed_experts=16,
        num_experts_per_tok=4, n_group=4, topk_group=2, topk_method="noaux_tc",
        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
        rope_scaling=dict(YARN), num_nextn_predict_layers=1),
     14, 3000, {}, 2),
    ("v3_fp8", deepseek_config(
        "deepseek_v3", vocab_size=128, hidden_size=160, intermediate_size=136,
        moe_intermediate_size=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=16, n_routed_experts=8, num_experts_per_tok=2, topk_method="noaux_tc",
        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
        num_nextn_predict_layers=1, quantization_config=dict(FP8_QUANT)),
     11, 4000, {"head": 0.1}, 1),
    ("v32", deepseek_config(
        "deepseek_v32", vocab_size=160, q_lora_rank=48, n_routed_experts=8, num_experts_per_tok=2,
        n_group=4, topk_group=2, topk_method="noaux_tc", scoring_func="sigmoid",
        norm_topk_prob=True, routed_scaling_factor=2.5, rope_scaling=dict(YARN),
        num_nextn_predict_layers=1, index_n_heads=4, index_head_dim=32, index_topk=8),
     24, 5000, {}, 1),
    ("v32_fp8_ue8m0", deepseek_config(
        "deepseek_v32", vocab_size=128, hidden_size=128, q_lora_rank=48, n_routed_experts=8,
        num_experts_per_tok=2, n_group=4, topk_group=2, topk_method="noaux_tc",
        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
        rope_scaling=dict(YARN), num_nextn_predict_layers=1, index_n_heads=4,
        index_head_dim=128, index_topk=6, quantization_config=dict(FP8_QUANT, scale_fmt="ue8m0")),
     20, 6000, {}, 1),
    ("qwen2", dense_config(
        "qwen2", vocab_size=100, num_key_value_heads=2, tie_word_embeddings=True,
        rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=None),
     12, 7000, {"embed": 0.15}, 1),
    ("llama3", dense_config(
        "llama", vocab_size=120, intermediate_size=96, num_key_value_heads=1, head_dim=16,
        rms_norm_eps=1e-5, torch_dtype="float32", attention_bias=False, mlp_bias=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
     12, 8000, {}, 1),
]

# Minimum decision margins a case must have (else the next seed is tried), so that
# an engine computing in float32 makes the same discrete routing / top-k choices.
MIN_EXPERT_GAP = 1e-3     # absolute, on router scores
MIN_GROUP_GAP = 1e-3
MIN_INDEX_GAP = 1e-3      # relative to the row's largest |index score|
# decisions must also survive this relative noise on their inputs (router input u;
# indexer inputs x and q latent: the fp8 rounding inside makes those more fragile)
PERTURB_REL = {"route": 1e-3, "index": 1e-4}
PERTURB_TRIALS = 8


def decisions_equal(a, b):
    for key in ("routes", "index_keep"):
        xs, ys = a.get(key, []), b.get(key, [])
        if len(xs) != len(ys) or any(not torch.equal(x, y) for x, y in zip(xs, ys)):
            return False
    return True


def make_case(name, cfg, T, seed, std_over, shards, max_tries=50):
    std = dict(DEFAULT_STD, **std_over)
    for attempt in range(max_tries):
        gen = torch.Generator().manual_seed(seed + attempt)
        ck = build_weights(cfg, gen, std)
        tokens = torch.randint(0, cfg["vocab_size"], (T,), generator=gen).tolist()
        logits, mtp, stats = run_model(cfg, ck.w, tokens)
        logits32, mtp32, stats32 = run_model(cfg, ck.w, tokens, torch.float32)
        robust = all(decisions_equal(stats, run_model(cfg, ck.w, tokens, F64, PERTURB_REL, i)[2])
                     for i in range(PERTURB_TRIALS))
        ok = robust and (stats.get("expert_gap", 1) >= MIN_EXPERT_GAP and stats.get("group_gap", 1) >= MIN_GROUP_GAP
              and stats.get("index_gap", 1) >= MIN_INDEX_GAP and stats.get("min_chosen_biased", 1) > 0
              and stats.get("bias_changed", 1) > 0 and decisions_equal(stats, stats32))
        if ok:
            err32 = (logits32.to(F64) - logits).abs().max().item()
            if mtp is not None:
                err32 = max(err32, (mtp32.to(F64) - mtp).abs().max().item())
            return ck, tokens, logits, mtp, stats, seed + attempt, err32
    raise RuntimeError("no seed with safe margins for case " + name)


def new_case_dir(outdir, name, cfg, tokens=None):
    """A fresh fixture folder holding config.json (and tokens.json when tokens are given)."""
    d = os.path.join(outdir, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if tokens is not None:
        with open(os.path.join(d, "tokens.json"), "w") as f:
            json.dump({"tokens": tokens}, f)
            f.write("\n")
    return d


def write_case(outdir, name, cfg, ck, tokens, logits, mtp, shards):
    d = new_case_dir(outdir, name, cfg, tokens)
    np.save(os.path.join(d, "logits.npy"), np.ascontiguousarray(logits.numpy().astype(np.float32)))
    if mtp is not None:
        np.save(os.path.join(d, "mtp_logits.npy"), np.ascontiguousarray(mtp.numpy().astype(np.float32)))
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), ck.entries)
        return
    # split in generation order at equal byte counts (a layer may straddle two files)
    total = sum(len(e[3]) for e in ck.entries)
    files, cur, acc = [[] for _ in range(shards)], 0, 0
    for e in ck.entries:
        if acc >= total * (cur + 1) / shards and cur < shards - 1:
            cur += 1
        files[cur].append(e)
        acc += len(e[3])
    weight_map = {}
    for s, ents in enumerate(files):
        fname = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        write_safetensors(os.path.join(d, fname), ents)
        for e in ents:
            weight_map[e[0]] = fname
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------
# Self checks

def self_checks():
    # fp8: every finite code decodes and re-encodes to itself (0x80 = -0 included)
    for code in range(256):
        v = E4M3_TABLE[code]
        if torch.isnan(v):
            continue
        back = int(e4m3_encode(v.view(1))[0])
        assert back == code, (code, back)
    # fp8 rounding: midpoints go to the even code, saturation at 448, subnormals
    assert e4m3_round(torch.tensor([1.0625], dtype=F64)).item() == 1.0       # 1 + 1/16: tie -> 1.0
    assert e4m3_round(torch.tensor([1.1875], dtype=F64)).item() == 1.25      # tie -> even (1.25)
    assert e4m3_round(torch.tensor([500.0], dtype=F64)).item() == 448.0
    assert e4m3_round(torch.tensor([2.0 ** -10], dtype=F64)).item() == 0.0  # tie with 0 -> 0
    assert e4m3_round(torch.tensor([3 * 2.0 ** -10], dtype=F64)).item() == 2.0 ** -8
    # fp8 rounding against brute force nearest-value search (ties to the even code)
    g = torch.Generator().manual_seed(0)
    pos = E4M3_POS
    mids = (pos[1:] + pos[:-1]) / 2
    xs = torch.cat([torch.randn(4000, generator=g, dtype=F64) * 40, mids, -mids, pos, torch.tensor([460.0, -1e9])])
    codes = e4m3_encode(xs)
    mag = xs.abs().clamp(max=E4M3_MAX)
    dist = (mag[:, None] - pos[None, :]).abs()
    best = dist.min(1, keepdim=True).values
    cand = (dist == best)
    want = torch.where(cand.sum(1) > 1, cand.float().argmax(1) + (cand.float().argmax(1) % 2), cand.float().argmax(1))
    assert torch.equal(codes.long() & 0x7F, want), "fp8 rounding"
    # pow2_ceil
    x = torch.tensor([1.0, 1.5, 0.25, 0.3, 3.0], dtype=F64)
    assert pow2_ceil(x).tolist() == [1.0, 2.0, 0.25, 0.5, 4.0]
    # Hadamard orthonormal
    for n in (1, 2, 32, 128):
        H = hadamard(n, F64)
        assert torch.allclose(H @ H.t(), torch.eye(n, dtype=F64), atol=1e-14)
    # RoPE: rotations preserve norms; interleaved == halves after the pair permutation
    # RoPE against DeepSeek's complex-number form (interleaved) and the
    # 2025-11-17 non-interleaved form (view(2, -1).transpose, then cat of re/im)
    g = torch.Generator().manual_seed(1)
    xr = torch.randn(5, 3, 8, generator=g, dtype=F64)
    cfg = {"rope_theta": 10000.0, "rope_scaling": None}
    cos, sin = rope_cos_sin(cfg, 8, torch.arange(5), F64)
    yi = rope_interleaved(xr, cos, sin)
    assert torch.allclose(yi.norm(dim=-1), xr.norm(dim=-1))
    perm = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])
    assert torch.allclose(rope_halves(xr[..., perm], cos, sin), yi[..., perm])
    fc = torch.polar(torch.ones_like(cos), torch.atan2(sin, cos)).view(5, 1, 4)
    ref_i = torch.view_as_real(torch.view_as_complex(xr.reshape(5, 3, 4, 2).contiguous()) * fc).flatten(2)
    assert torch.allclose(yi, ref_i)
    xh = xr.view(5, 3, 2, 4).transpose(-1, -2).contiguous()
    yh = torch.view_as_real(torch.view_as_complex(xh) * fc).flatten(2)
    ref_h = torch.cat([yh[..., 0::2], yh[..., 1::2]], -1)
    assert torch.allclose(rope_halves(xr, cos, sin), ref_h)
    # YaRN frequencies for d=8, theta 1e4, factor 40, original 4096, beta 32/1:
    # correction range [1, 3] -> dims 0,1 keep, 2 blends half-half, 3 interpolates
    inv, mult = rope_inv_freq({"rope_theta": 10000.0, "rope_scaling": YARN}, 8)
    base = 1.0 / 10000.0 ** (torch.arange(0, 8, 2, dtype=F64) / 8)
    assert torch.allclose(inv, base * torch.tensor([1.0, 1.0, 0.5 + 0.5 / 40, 1 / 40.0], dtype=F64)) and mult == 1.0
    print("self checks: fp8 codec (255 finite codes round-trip, rounding), Hadamard, RoPE, YaRN ok")


def read_safetensors(path):
    """Minimal reader, used to check what was written."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        assert n % 8 == 0
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = np.frombuffer(data[b:e], dtype={"F32": "<f4", "BF16": "<u2", "F8_E4M3": "u1"}[info["dtype"]])
        if info["dtype"] == "BF16":
            t = torch.from_numpy((raw.astype(np.uint32) << 16).view(np.float32).copy())
        elif info["dtype"] == "F8_E4M3":
            t = e4m3_decode(torch.from_numpy(raw.copy()))
        else:
            t = torch.from_numpy(raw.copy())
        out[name] = (info["dtype"], t.to(F64).reshape(info["shape"]))
    return out


def check_readback(d, ck):
    """Reloads the case directory and rebuilds the float64 weights from the files."""
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    if "model.safetensors.index.json" in os.listdir(d):
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        assert sorted(set(wm.values())) == sorted(files) and len(files) > 1
    tensors = {}
    for f in files:
        for name, v in read_safetensors(os.path.join(d, f)).items():
            assert name not in tensors
            tensors[name] = v
    assert set(tensors) == set(ck.w) | {n + "_scale_inv" for n, (dt, _) in tensors.items() if dt == "F8_E4M3"}
    for name, want in ck.w.items():
        dt, t = tensors[name]
        if dt == "F8_E4M3":
            s = tensors[name + "_scale_inv"][1]
            t = t * s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:t.shape[0], :t.shape[1]]
        assert torch.equal(t, want), name


def check_causal(cfg, W, tokens, logits, mtp):
    """Logits at positions < t must not change when tokens t.. change."""
    t = len(tokens) // 2
    other = tokens[:t] + [(x + 7) % cfg["vocab_size"] for x in tokens[t:]]
    l2, m2, _ = run_model(cfg, W, other)
    assert (l2[:t] - logits[:t]).abs().max().item() < 1e-12, "main model is not causal"
    assert (l2[t:] - logits[t:]).abs().max().item() > 1e-6
    if mtp is not None:
        # MTP row i uses tokens up to i+1
        assert (m2[:t - 1] - mtp[:t - 1]).abs().max().item() < 1e-12, "MTP is not causal"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/golden/fixtures")
    ap.add_argument("--case", action="append", help="only these cases")
    args = ap.parse_args()
    self_checks()
    os.makedirs(args.out, exist_ok=True)
    for name, cfg, T, seed, std_over, shards in CASES:
        if args.case and name not in args.case:
            continue
        ck, tokens, logits, mtp, stats, used_seed, err32 = make_case(name, cfg, T, seed, std_over, shards)
        check_causal(cfg, ck.w, tokens, logits, mtp)
        write_case(args.out, name, cfg, ck, tokens, logits, mtp, shards)
        check_readback(os.path.join(args.out, name), ck)
        msg = "%-14s seed %d  logits std %.3f max %.3f" % (name, used_seed, logits.std().item(), logits.abs().max().item())
        if mtp is not None:
            msg += "  mtp std %.3f" % mtp.std().item()
        msg += "  f32-vs-f64 %.1e" % err32
        for key in ("expert_gap", "group_gap", "index_gap", "min_chosen_biased", "bias_changed"):
            if key in stats:
                msg += "  %s %s" % (key, ("%.2e" % stats[key]) if isinstance(stats[key], float) else stats[key])
        if "routes" in stats:
            used = torch.cat([r.flatten() for r in stats["routes"]]).unique().numel()
            msg += "  experts_used %d/%d" % (used, cfg["n_routed_experts"])
        if "index_keep" in stats:
            # how often the kept set differs from "the most recent index_topk positions"
            k = cfg["index_topk"]
            diff = 0
            for keep in stats["index_keep"]:
                for t in range(k, keep.shape[0]):
                    recent = torch.zeros_like(keep[t])
                    recent[t - k + 1:t + 1] = True
                    diff += int(not torch.equal(keep[t], recent))
            msg += "  index_rows_not_recent %d" % diff
        print(msg)


if __name__ == "__main__":
    main()
