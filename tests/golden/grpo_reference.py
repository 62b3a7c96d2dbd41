#!/usr/bin/env python3
"""GRPO fixtures for whale's reinforcement-learning path.

    /usr/bin/python3 tests/golden/grpo_reference.py --out tests/golden/grpo_fixtures
    /usr/bin/python3 tests/golden/grpo_reference.py --out /tmp/g --case grpo_basic --fd-verbose

For each case this writes a tiny F32 DeepSeek-V3 checkpoint in the Hugging Face layout,
one GRPO group (batch.json: G sequences, prompt lengths, rewards, old and reference
log-probs, options, and for some cases sampling masks or replayed routing) and the
gradient of the GRPO loss with respect to every stored tensor, computed in float64 by
autograd on the forward of reference.py. See the section "GRPO fixtures" of
tests/golden/README.md for the exact objective (MISSION.md section 3).

Only torch and numpy are needed. The output is byte-for-byte deterministic.
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys

import torch

sys.dont_write_bytecode = True     # leave no __pycache__ next to the fixtures
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

torch.set_num_threads(1)

F64 = torch.float64
F32 = torch.float32


# ----------------------------------------------------------------------------
# Routing replay ("keep routing"). reference.moe() calls reference.route(); this wrapper
# (installed once, below) leaves it untouched unless stats["replay"] is set. With a
# replay, the experts of MoE layer i are replay[i] ([T, K] ids, any order, no duplicate
# within a row) instead of the router's choice; the gates are the current UNBIASED scores
# of those experts, normalized over them when norm_topk_prob, times routed_scaling_factor.
# The router's own choice on the same input is recorded in stats["own_routes"].

_reference_route = R.route


def layer_index(prefix):
    # "model.layers.<i>.mlp."
    return int(prefix.split(".")[2])


def _replay_route(cfg, W, p, u, stats):
    replay = stats.get("replay")
    if replay is None:
        return _reference_route(cfg, W, p, u, stats)
    ids = replay[layer_index(p)]
    with torch.no_grad():
        own, _ = _reference_route(cfg, W, p, u.detach(), {})
    stats.setdefault("own_routes", []).append(own)
    logits = R.linear(u, W[p + "gate.weight"])
    scores = torch.softmax(logits, -1) if cfg["scoring_func"] == "softmax" else torch.sigmoid(logits)
    g = scores.gather(1, ids)
    if cfg["norm_topk_prob"]:
        g = g / (g.sum(-1, keepdim=True) + 1e-20)
    g = g * cfg["routed_scaling_factor"]
    stats.setdefault("routes", []).append(ids.sort(-1).values)
    return ids, g


R.route = _replay_route


def moe_layers(cfg):
    return [i for i in range(cfg["num_hidden_layers"]) if R.is_moe_layer(cfg, i)]


# ----------------------------------------------------------------------------
# Objective

def seq_forward(cfg, W, tokens, replay=None, perturb=None):
    """Causal forward of one sequence alone. replay: {layer: LongTensor [T, K]} or None."""
    stats = {}
    if replay is not None:
        stats["replay"] = replay
    if perturb is not None:
        stats["perturb"] = perturb
    logits, _ = R.forward(cfg, W, tokens, stats)
    return logits, stats


def response_logprobs(cfg, W, tokens, plen, allowed=None, replay=None):
    """logp_t = log_softmax(logits[p-1])[tokens[p]] for p = plen..T-1. allowed: bool
    [T-plen, vocab] (keep sampling mask) or None."""
    logits, stats = seq_forward(cfg, W, tokens, replay)
    rows = logits[plen - 1:len(tokens) - 1]
    if allowed is not None:
        rows = rows.masked_fill(~allowed, float("-inf"))
    tgt = torch.tensor(tokens[plen:])
    return torch.log_softmax(rows, -1).gather(1, tgt[:, None])[:, 0], stats


def batch_tensors(cfg, batch):
    """The per-sequence inputs of batch.json as tensors (float64 / bool / long)."""
    V = cfg["vocab_size"]
    out = []
    opts = batch["options"]
    for i, seq in enumerate(batch["sequences"]):
        plen = batch["prompt_lengths"][i]
        allowed = None
        if opts["keep_sampling_mask"]:
            allowed = torch.zeros(len(seq) - plen, V, dtype=torch.bool)
            for t, ids in enumerate(batch["sampling_masks"][i]):
                allowed[t, ids] = True
        replay = None
        if opts["keep_routing"]:
            K = cfg["num_experts_per_tok"]
            replay = {l: torch.tensor(flat, dtype=torch.long).view(len(seq), K)
                      for l, flat in zip(moe_layers(cfg), batch["routing"][i])}
        out.append(dict(seq=seq, plen=plen, allowed=allowed, replay=replay,
                        old=torch.tensor(batch["old_logprobs"][i], dtype=F64),
                        ref=torch.tensor(batch["ref_logprobs"][i], dtype=F64)))
    return out


def advantages(rewards, dtype=F64):
    r = torch.tensor(rewards, dtype=F64).to(dtype)
    return (r - r.mean()) / (r.std() + 1e-4)           # sample std (N-1)


def objective(cfg, W, batch, dtype=F64):
    """loss = -J, J = (1/G) sum_i M_i mean_t [min(rho A, clip(rho) A) - beta KL].
    Returns (loss, info) with the per-token values and the discrete decisions."""
    opts = batch["options"]
    eps, beta, delta = opts["clip_eps"], opts["kl_beta"], opts["offpolicy_delta"]
    A = advantages(batch["rewards"], dtype)
    G = len(batch["sequences"])
    J = torch.zeros((), dtype=dtype)
    info = {"A": A.detach(), "logp": [], "rho": [], "mask": [], "drift": [], "routes": [],
            "own_routes": []}
    for i, s in enumerate(batch_tensors(cfg, batch)):
        lp, stats = response_logprobs(cfg, W, s["seq"], s["plen"], s["allowed"], s["replay"])
        old, ref = s["old"].to(dtype), s["ref"].to(dtype)
        rho = torch.exp(lp - old)
        surr = torch.min(rho * A[i], torch.clamp(rho, 1 - eps, 1 + eps) * A[i])
        d = ref - lp
        k3 = torch.exp(d) - d - 1
        kl = rho * k3 if opts["unbiased_kl"] else k3
        drift = (old - lp).mean().item()                   # decided on values, no gradient
        M = 0 if (delta is not None and A[i].item() < 0 and drift > delta) else 1
        if M:
            J = J + (surr - beta * kl).mean()
        info["logp"].append(lp.detach())
        info["rho"].append(rho.detach())
        info["mask"].append(M)
        info["drift"].append(drift)
        info["routes"].append(stats.get("routes", []))
        info["own_routes"].append(stats.get("own_routes", []))
    J = J / G
    return -J, info


def leaves(W, dtype=F64):
    return {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in W.items()}


def gradients(cfg, W, batch, dtype=F64):
    """Autograd of the loss. Tensors that get no gradient (the noaux bias) get zeros."""
    Wl = leaves(W, dtype)
    loss, info = objective(cfg, Wl, batch, dtype)
    loss.backward()
    grads, no_grad = {}, []
    for k, v in Wl.items():
        if v.grad is None:
            no_grad.append(k)
            grads[k] = torch.zeros_like(v.detach())
        else:
            grads[k] = v.grad.detach()
    return loss.detach(), info, grads, no_grad


def loss_value(cfg, W, batch):
    with torch.no_grad():
        loss, info = objective(cfg, W, batch)
    return loss.item(), info


def clip_pattern(info, eps):
    """Per token: 0 inside [1-eps, 1+eps], +1 above, -1 below; with the sign of A."""
    return [[(1 if r > 1 + eps else -1 if r < 1 - eps else 0) for r in rho.tolist()]
            for rho in info["rho"]]


def clip_counts(info, eps):
    """Counts of ratios outside the clip range by sign of A, and how many of those have
    their gradient cut (A > 0 above 1+eps, A < 0 below 1-eps)."""
    c = {"pos_above": 0, "pos_below": 0, "neg_above": 0, "neg_below": 0, "tokens": 0}
    for a, pat in zip(info["A"].tolist(), clip_pattern(info, eps)):
        for x in pat:
            c["tokens"] += 1
            if x:
                c[("pos_" if a > 0 else "neg_") + ("above" if x > 0 else "below")] += 1
    c["outside"] = c["pos_above"] + c["pos_below"] + c["neg_above"] + c["neg_below"]
    c["cut"] = c["pos_above"] + c["neg_below"]
    return c


# ----------------------------------------------------------------------------
# Building a case

def f32_exact(x):
    """Round float64 values to the nearest float32 so that f32 and f64 readers agree."""
    return x.to(F32).to(F64)


def sample_group(cfg, W, gen, G, keep_mask, k_mask):
    """G sequences of distinct lengths in [8, 16] with prompts of 3..5 random tokens, the
    responses sampled token by token from an "old policy" = softmax(current logits + N(0,
    0.5^2) noise), truncated to its top-k_mask tokens when keep_mask (the allowed set is that
    top-k, so it always holds the sampled token)."""
    V = cfg["vocab_size"]
    lengths = (torch.randperm(9, generator=gen)[:G] + 8).tolist()
    plens = torch.randint(3, 6, (G,), generator=gen).tolist()
    seqs, masks = [], []
    for L, plen in zip(lengths, plens):
        seq = torch.randint(0, V, (plen,), generator=gen).tolist()
        allowed_sets = []
        while len(seq) < L:
            with torch.no_grad():
                logits, _ = seq_forward(cfg, W, seq)
            old = logits[-1] + 0.5 * torch.randn(V, generator=gen, dtype=F64)
            if keep_mask:
                top = torch.topk(old, k_mask).indices
                masked = torch.full_like(old, float("-inf"))
                masked[top] = old[top]
                old = masked
                allowed_sets.append(sorted(top.tolist()))
            probs = torch.softmax(old, -1)
            seq.append(int(torch.multinomial(probs, 1, generator=gen)[0]))
        seqs.append(seq)
        masks.append(allowed_sets)
    return seqs, plens, masks


def draw_rewards(gen, G):
    """Rewards in {0, .25, .5, .75, 1}: not all equal, at least two negative advantages,
    every |A_i| >= 0.05."""
    for _ in range(1000):
        r = (torch.randint(0, 5, (G,), generator=gen).to(F64) / 4).tolist()
        A = advantages(r)
        if len(set(r)) > 1 and int((A < 0).sum()) >= 2 and A.abs().min().item() >= 0.05:
            return r
    raise RuntimeError("rewards")


def make_replay(cfg, W, gen, seqs, share):
    """Per sequence, per MoE layer, [T, K] expert ids. For about `share` of the positions a
    random set of K distinct experts that differs from the router's own choice; otherwise
    the router's own set, in a random order."""
    n, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    out = []
    for seq in seqs:
        with torch.no_grad():
            _, stats = seq_forward(cfg, W, seq)
        per_layer = {}
        for l, own in zip(moe_layers(cfg), stats["routes"]):
            rows = []
            for t in range(len(seq)):
                own_set = set(own[t].tolist())
                if torch.rand((), generator=gen).item() < share:
                    while True:
                        ids = torch.randperm(n, generator=gen)[:K]
                        if set(ids.tolist()) != own_set:
                            break
                else:
                    ids = own[t][torch.randperm(K, generator=gen)]
                rows.append(ids)
            per_layer[l] = torch.stack(rows)
        out.append(per_layer)
    return out


MIN_CLIP_GAP = 1e-3     # |rho - (1 +- eps)| for every token
MIN_DRIFT_GAP = 1e-3    # |drift_i - delta| for every sequence


def draw_logprob_noise(cfg, W, gen, batch, need_offpolicy, tries=500):
    """old = logp + N(0, 0.15^2), ref = logp + N(0, 0.3^2), both rounded to float32. Redrawn
    until every ratio is >= MIN_CLIP_GAP away from the clip edges and all four kinds of
    out-of-range ratio occur (A > 0 and A < 0, above 1+eps and below 1-eps). For the
    off-policy case also: delta = midpoint of the widest gap between the drifts of the
    negative-advantage sequences (rounded to 3 decimals, > 0), so one of them is masked and
    one is not, and a positive-advantage sequence drifts past delta (kept: A > 0)."""
    eps = batch["options"]["clip_eps"]
    A = advantages(batch["rewards"])
    lps = []
    for s in batch_tensors(cfg, dict(batch, old_logprobs=[[]] * len(batch["sequences"]),
                                     ref_logprobs=[[]] * len(batch["sequences"]))):
        with torch.no_grad():
            lps.append(response_logprobs(cfg, W, s["seq"], s["plen"], s["allowed"], s["replay"])[0])
    for _ in range(tries):
        olds = [f32_exact(lp + 0.15 * torch.randn(lp.shape, generator=gen, dtype=F64)) for lp in lps]
        refs = [f32_exact(lp + 0.30 * torch.randn(lp.shape, generator=gen, dtype=F64)) for lp in lps]
        rhos = [torch.exp(lp - o) for lp, o in zip(lps, olds)]
        gap = min(min((r - (1 - eps)).abs().min().item(), (r - (1 + eps)).abs().min().item()) for r in rhos)
        kinds = set()
        for a, r in zip(A.tolist(), rhos):
            for x in r.tolist():
                if x > 1 + eps or x < 1 - eps:
                    kinds.add((a > 0, x > 1 + eps))
        if gap < MIN_CLIP_GAP or len(kinds) < 4:
            continue
        delta = None
        if need_offpolicy:
            drifts = [(o - lp).mean().item() for o, lp in zip(olds, lps)]
            neg = sorted(d for d, a in zip(drifts, A.tolist()) if a < 0)
            best = max(range(len(neg) - 1), key=lambda j: neg[j + 1] - neg[j])
            delta = round((neg[best] + neg[best + 1]) / 2, 3)
            if (neg[best + 1] - neg[best] < 0.02 or delta <= 0
                    or min(abs(d - delta) for d in drifts) < MIN_DRIFT_GAP
                    or not any(d > delta and a > 0 for d, a in zip(drifts, A.tolist()))):
                continue
        return [o.tolist() for o in olds], [r.tolist() for r in refs], delta
    return None


def route_robust(cfg, W, seqs):
    """reference.py's criteria over every sequence of the group: margins >= 1e-3 at the
    expert and group cuts, every chosen biased score > 0, the bias changes at least one
    choice, and a float32 rerun and 8 noisy reruns (1e-3 relative on the router input)
    make the same choices. Returns (ok, merged stats)."""
    merged = {"expert_gap": float("inf"), "group_gap": float("inf"),
              "min_chosen_biased": float("inf"), "bias_changed": 0}
    ok = True
    for seq in seqs:
        with torch.no_grad():
            _, st = seq_forward(cfg, W, seq)
            W32 = {k: v.to(F32) for k, v in W.items()}
            _, st32 = seq_forward(cfg, W32, seq)
            noisy = [seq_forward(cfg, W, seq, perturb=(torch.Generator().manual_seed(k), R.PERTURB_REL))[1]
                     for k in range(R.PERTURB_TRIALS)]
        for key in ("expert_gap", "group_gap", "min_chosen_biased"):
            merged[key] = min(merged[key], st.get(key, float("inf")))
        merged["bias_changed"] += st.get("bias_changed", 0)
        ok = ok and R.decisions_equal(st, st32) and all(R.decisions_equal(st, n) for n in noisy)
    ok = ok and (merged["expert_gap"] >= R.MIN_EXPERT_GAP and merged["group_gap"] >= R.MIN_GROUP_GAP
                 and merged["min_chosen_biased"] > 0 and merged["bias_changed"] > 0)
    return ok, merged


def build_case(name, cfg, seed, std_over, options, G=4, max_tries=100):
    std = dict(R.DEFAULT_STD, **std_over)
    V = cfg["vocab_size"]
    k_mask = round(V / 3)
    for attempt in range(max_tries):
        s = seed + attempt
        gen = torch.Generator().manual_seed(s)
        ck = R.build_weights(cfg, gen, std)
        seqs, plens, masks = sample_group(cfg, ck.w, gen, G, options["keep_sampling_mask"], k_mask)
        rstats = None
        if not options["keep_routing"]:
            ok, rstats = route_robust(cfg, ck.w, seqs)
            if not ok:
                continue
        rewards = draw_rewards(gen, G)
        batch = {"sequences": seqs, "prompt_lengths": plens, "rewards": rewards,
                 "options": dict(options)}
        if options["keep_sampling_mask"]:
            batch["sampling_masks"] = masks
        if options["keep_routing"]:
            replay = make_replay(cfg, ck.w, gen, seqs, 0.6)
            batch["routing"] = [[rp[l].flatten().tolist() for l in moe_layers(cfg)] for rp in replay]
        noise = draw_logprob_noise(cfg, ck.w, gen, batch, options["offpolicy_delta"] is not None)
        if noise is None:
            continue
        batch["old_logprobs"], batch["ref_logprobs"], delta = noise
        if delta is not None:
            batch["options"]["offpolicy_delta"] = delta
        loss, info, grads, no_grad = gradients(cfg, ck.w, batch)
        # float32 rerun: same routing, clip pattern and sequence masks
        l32, info32, g32, _ = gradients(cfg, ck.w, batch, F32)
        same = (clip_pattern(info, options["clip_eps"]) == clip_pattern(info32, options["clip_eps"])
                and info["mask"] == info32["mask"]
                and all(R.decisions_equal({"routes": a}, {"routes": b})
                        for a, b in zip(info["routes"], info32["routes"])))
        if not same:
            continue
        return dict(ck=ck, batch=batch, seed=s, loss=loss, info=info, grads=grads, no_grad=no_grad,
                    l32=l32, g32=g32, rstats=rstats)
    raise RuntimeError("no usable seed for case " + name)


# ----------------------------------------------------------------------------
# Cases

def grpo_config():
    return R.deepseek_config(
        "deepseek_v3", vocab_size=48, hidden_size=32, intermediate_size=48,
        moe_intermediate_size=16, num_attention_heads=2, num_key_value_heads=2,
        q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=4, topk_group=2,
        topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
        routed_scaling_factor=2.5, rope_scaling=dict(R.YARN), num_nextn_predict_layers=0,
        torch_dtype="float32")


def options(**kw):
    o = {"clip_eps": 0.2, "kl_beta": 0.04, "unbiased_kl": False, "offpolicy_delta": None,
         "keep_sampling_mask": False, "keep_routing": False}
    o.update(kw)
    return o


GRPO_CASES = [
    # (name, base seed, options); offpolicy_delta=0.0 means "set, chosen by the search"
    ("grpo_basic", 31000, options()),
    ("grpo_unbiased_kl", 32000, options(kl_beta=0.1, unbiased_kl=True)),
    ("grpo_offpolicy", 33000, options(offpolicy_delta=0.0)),
    ("grpo_sampling_mask", 34000, options(keep_sampling_mask=True)),
    ("grpo_keep_routing", 35000, options(keep_routing=True)),
]
STD_OVER = {"router": 2.0, "embed": 1.0}


# ----------------------------------------------------------------------------
# Writing and reading back

def write_grads(path, names, grads, meta):
    header = {"__metadata__": dict({"format": "pt"}, **meta)}
    entries, offset = [], 0
    for n in names:
        data = R.tensor_bytes("F32", grads[n])
        header[n] = {"dtype": "F32", "shape": list(grads[n].shape), "data_offsets": [offset, offset + len(data)]}
        entries.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for d in entries:
            f.write(d)


def read_metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__", {})


BATCH_KEYS = ["sequences", "prompt_lengths", "rewards", "old_logprobs", "ref_logprobs", "options",
              "sampling_masks", "routing", "expected"]


def write_case(outdir, name, cfg, c):
    d = R.new_case_dir(outdir, name, cfg)
    info = c["info"]
    batch = dict(c["batch"])
    # informative only (for debugging an engine): the reference's intermediate values
    batch["expected"] = {
        "loss": c["loss"].item(),
        "advantages": info["A"].tolist(),
        "logprobs": [lp.tolist() for lp in info["logp"]],
        "sequence_mask": info["mask"],
    }
    with open(os.path.join(d, "batch.json"), "w") as f:
        f.write("{\n" + ",\n".join("  %s: %s" % (json.dumps(k), json.dumps(batch[k]))
                                   for k in BATCH_KEYS if k in batch) + "\n}\n")
    R.write_safetensors(os.path.join(d, "model.safetensors"), c["ck"].entries)
    write_grads(os.path.join(d, "grads.safetensors"), [e[0] for e in c["ck"].entries], c["grads"],
                {"loss": repr(c["loss"].item())})
    return d


def check_readback(d, cfg, c):
    ck, grads = c["ck"], c["grads"]
    model = R.read_safetensors(os.path.join(d, "model.safetensors"))
    gr = R.read_safetensors(os.path.join(d, "grads.safetensors"))
    assert list(model) == list(gr) == [e[0] for e in ck.entries]
    for n, (dt, t) in model.items():
        assert dt == "F32" and torch.equal(t, ck.w[n]), n
        gdt, g = gr[n]
        assert gdt == "F32" and g.shape == t.shape, n
        assert torch.equal(g, grads[n].to(F32).to(F64)), n
    meta = read_metadata(os.path.join(d, "grads.safetensors"))
    assert set(meta) == {"format", "loss"} and meta["format"] == "pt"
    assert float(meta["loss"]) == c["loss"].item()
    with open(os.path.join(d, "batch.json")) as f:
        batch = json.load(f)
    with open(os.path.join(d, "config.json")) as f:
        assert json.load(f) == cfg
    # the loss recomputed from the files alone
    W = {n: t for n, (_, t) in model.items()}
    assert loss_value(cfg, W, batch)[0] == c["loss"].item()
    # shape of the batch
    G = len(batch["sequences"])
    opts = batch["options"]
    assert G == 4 and len(set(map(len, batch["sequences"]))) == G
    for i, seq in enumerate(batch["sequences"]):
        n = len(seq) - batch["prompt_lengths"][i]
        assert 8 <= len(seq) <= 16 and 3 <= batch["prompt_lengths"][i] <= 5
        assert len(batch["old_logprobs"][i]) == len(batch["ref_logprobs"][i]) == n
        assert all(float(torch.tensor(x, dtype=F32)) == x for x in batch["old_logprobs"][i] + batch["ref_logprobs"][i])
        if opts["keep_sampling_mask"]:
            assert len(batch["sampling_masks"][i]) == n
            for t, ids in enumerate(batch["sampling_masks"][i]):
                assert ids == sorted(set(ids)) and seq[batch["prompt_lengths"][i] + t] in ids
        else:
            assert "sampling_masks" not in batch
        if opts["keep_routing"]:
            K = cfg["num_experts_per_tok"]
            assert len(batch["routing"][i]) == len(moe_layers(cfg))
            for flat in batch["routing"][i]:
                assert len(flat) == len(seq) * K
                for t in range(len(seq)):
                    row = flat[t * K:(t + 1) * K]
                    assert len(set(row)) == K and all(0 <= e < cfg["n_routed_experts"] for e in row)
        else:
            assert "routing" not in batch


# ----------------------------------------------------------------------------
# Checks

def fd_pick_list(cfg, grads):
    """(tensor, count) to check by finite differences: every kind the brief names (router,
    experts, q_b_proj, embedding) plus a few others."""
    L = cfg["num_hidden_layers"]
    picks = [("model.embed_tokens.weight", 3), ("lm_head.weight", 2), ("model.norm.weight", 1)]
    for i in range(L):
        p = "model.layers.%d." % i
        picks += [(p + "self_attn.q_b_proj.weight", 2), (p + "self_attn.q_a_layernorm.weight", 1),
                  (p + "self_attn.kv_b_proj.weight", 1), (p + "input_layernorm.weight", 1)]
        if R.is_moe_layer(cfg, i):
            m = p + "mlp."
            used = [e for e in range(cfg["n_routed_experts"])
                    if grads[m + "experts.%d.gate_proj.weight" % e].abs().max().item() > 0]
            picks += [(m + "gate.weight", 4), (m + "gate.e_score_correction_bias", 1),
                      (m + "shared_experts.up_proj.weight", 1),
                      (m + "experts.%d.gate_proj.weight" % used[0], 1),
                      (m + "experts.%d.up_proj.weight" % used[len(used) // 2], 1),
                      (m + "experts.%d.down_proj.weight" % used[-1], 2)]
        else:
            picks += [(p + "mlp.down_proj.weight", 1)]
    return picks


def fd_check(cfg, W, batch, grads, gen, eps=1e-6):
    rows = []
    for name, n in fd_pick_list(cfg, grads):
        g = grads[name].flatten()
        cand = torch.nonzero(g != 0).flatten() if not name.endswith("e_score_correction_bias") \
            else torch.arange(g.numel())
        for j in torch.randperm(cand.numel(), generator=gen)[:n].tolist():
            idx = int(cand[j])
            vals = []
            for sign in (1, -1):
                Wp = dict(W)
                t = W[name].clone()
                t.view(-1)[idx] += sign * eps
                Wp[name] = t
                vals.append(loss_value(cfg, Wp, batch)[0])
            rows.append((name, idx, (vals[0] - vals[1]) / (2 * eps), g[idx].item()))
    return rows


def scalar_loss(batch, logps):
    """The objective again, in plain Python floats from the per-token log-probs (a check of
    objective(), written straight from the spec)."""
    o = batch["options"]
    eps, beta, delta = o["clip_eps"], o["kl_beta"], o["offpolicy_delta"]
    r = batch["rewards"]
    G = len(r)
    mean = sum(r) / G
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / (G - 1))
    J = 0.0
    for i in range(G):
        a = (r[i] - mean) / (std + 1e-4)
        lp, old, ref = logps[i], batch["old_logprobs"][i], batch["ref_logprobs"][i]
        n = len(lp)
        drift = sum(o_ - l for o_, l in zip(old, lp)) / n
        if delta is not None and a < 0 and drift > delta:
            continue
        acc = 0.0
        for t in range(n):
            rho = math.exp(lp[t] - old[t])
            surr = min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
            d = ref[t] - lp[t]
            k3 = math.exp(d) - d - 1
            acc += surr - beta * (rho * k3 if o["unbiased_kl"] else k3)
        J += acc / n
    return -J / G


def independent_checks(cfg, W, batch, info, loss):
    """(1) the loss from plain-Python arithmetic on the log-probs; (2) the log-probs as
    logit[token] - logsumexp over the allowed tokens; (3) replaying the router's own choice
    reproduces the plain forward. Returns the largest deviations."""
    dev = {"loss": abs(scalar_loss(batch, [lp.tolist() for lp in info["logp"]]) - loss)}
    dev["logp"] = dev["replay"] = 0.0
    for i, s in enumerate(batch_tensors(cfg, batch)):
        seq, plen = s["seq"], s["plen"]
        with torch.no_grad():
            logits, _ = seq_forward(cfg, W, seq, replay=s["replay"])
            for t, p in enumerate(range(plen, len(seq))):
                row = logits[p - 1]
                ids = torch.tensor(batch["sampling_masks"][i][t]) if s["allowed"] is not None \
                    else torch.arange(cfg["vocab_size"])
                want = row[seq[p]] - torch.logsumexp(row[ids], 0)
                dev["logp"] = max(dev["logp"], abs(want.item() - info["logp"][i][t].item()))
            plain, st = seq_forward(cfg, W, seq)
            own = {l: r for l, r in zip(moe_layers(cfg), st["routes"])}
            again, _ = seq_forward(cfg, W, seq, replay=own)
            dev["replay"] = max(dev["replay"], (again - plain).abs().max().item())
    return dev


def ablation(cfg, W, batch, name, grads):
    """Loss and relative gradient change when the case's option is switched off."""
    b = json.loads(json.dumps(batch))
    o = b["options"]
    if o["keep_routing"]:
        o["keep_routing"] = False
        what = "keep_routing off"
    elif o["keep_sampling_mask"]:
        o["keep_sampling_mask"] = False
        what = "keep_sampling_mask off"
    elif o["offpolicy_delta"] is not None:
        o["offpolicy_delta"] = None
        what = "offpolicy_delta null"
    elif o["unbiased_kl"]:
        o["unbiased_kl"] = False
        what = "unbiased_kl off"
    else:
        o["kl_beta"] = 0.0
        what = "kl_beta 0"
    loss, _, g, _ = gradients(cfg, W, b)
    num = math.sqrt(sum((g[k] - grads[k]).pow(2).sum().item() for k in grads))
    den = math.sqrt(sum(grads[k].pow(2).sum().item() for k in grads))
    return what, loss.item(), num / den


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/golden/grpo_fixtures")
    ap.add_argument("--case", action="append", help="only these cases")
    ap.add_argument("--fd-verbose", action="store_true", help="print every finite-difference entry")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cfg = grpo_config()
    total = 0
    for name, seed, opts in GRPO_CASES:
        if args.case and name not in args.case:
            continue
        c = build_case(name, cfg, seed, STD_OVER, opts)
        ck, batch, info, grads = c["ck"], c["batch"], c["info"], c["grads"]
        bias = sorted(k for k in ck.w if k.endswith("e_score_correction_bias"))
        assert sorted(c["no_grad"]) == bias, c["no_grad"]
        d = write_case(args.out, name, cfg, c)
        check_readback(d, cfg, c)
        total += sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))

        # float32 rerun
        err32 = max((c["g32"][k].to(F64) - grads[k]).abs().max().item() for k in grads)
        rel32 = max(((c["g32"][k].to(F64) - grads[k]).abs().max() / grads[k].abs().max()).item()
                    for k in grads if grads[k].abs().max().item() > 0)
        # finite differences
        rows = fd_check(cfg, ck.w, batch, grads, torch.Generator().manual_seed(c["seed"]))
        worst_abs = max(abs(fd - ad) for _, _, fd, ad in rows)
        worst_rel = max(abs(fd - ad) / max(abs(fd), abs(ad)) for _, _, fd, ad in rows if abs(ad) > 1e-6)
        assert worst_abs < 1e-8, worst_abs
        if args.fd_verbose:
            for n, idx, fd, ad in rows:
                print("   fd %-50s %5d  fd %+.10e  ad %+.10e  diff %.1e" % (n, idx, fd, ad, abs(fd - ad)))

        dev = independent_checks(cfg, ck.w, batch, info, c["loss"].item())
        assert dev["loss"] < 1e-12 and dev["logp"] < 1e-12 and dev["replay"] < 1e-12, dev
        what, abl_loss, abl_rel = ablation(cfg, ck.w, batch, name, grads)
        assert abl_rel > 1e-2, (what, abl_rel)

        cc = clip_counts(info, opts["clip_eps"])
        zero = [k for k, g in grads.items() if not g.abs().max().item() > 0 and k not in bias]
        print("%-18s seed %d  loss %r  lengths %s  prompts %s  rewards %s" % (
            name, c["seed"], c["loss"].item(), [len(s) for s in batch["sequences"]],
            batch["prompt_lengths"], batch["rewards"]))
        print("    A %s  drift(old-logp) %s  seq mask %s%s" % (
            " ".join("%+.4f" % a for a in info["A"].tolist()),
            " ".join("%+.4f" % x for x in info["drift"]), info["mask"],
            ("  delta %r" % batch["options"]["offpolicy_delta"]) if batch["options"]["offpolicy_delta"] is not None else ""))
        print("    ratios: %d tokens, %d outside [1-eps,1+eps] (A>0: %d above, %d below; A<0: %d above, %d below),"
              " %d with the gradient cut off" % (cc["tokens"], cc["outside"], cc["pos_above"], cc["pos_below"],
                                                 cc["neg_above"], cc["neg_below"], cc["cut"]))
        msg = "    f32-vs-f64 grad max abs %.1e (rel to tensor max %.1e), loss %.1e" % (
            err32, rel32, abs(c["l32"].item() - c["loss"].item()))
        if c["rstats"]:
            msg += "  expert_gap %.2e group_gap %.2e min_chosen_biased %.2e bias_changed %d" % (
                c["rstats"]["expert_gap"], c["rstats"]["group_gap"], c["rstats"]["min_chosen_biased"],
                c["rstats"]["bias_changed"])
        if opts["keep_routing"]:
            diff = tot = 0
            for routes, own in zip(info["routes"], info["own_routes"]):
                for a, b in zip(routes, own):
                    diff += int((a != b.sort(-1).values).any(-1).sum())
                    tot += a.shape[0]
            msg += "  replayed experts differ from the router's at %d/%d positions" % (diff, tot)
        print(msg)
        used = [l for l in moe_layers(cfg)]
        nz = {l: sum(grads["model.layers.%d.mlp.experts.%d.gate_proj.weight" % (l, e)].abs().max().item() > 0
                     for e in range(cfg["n_routed_experts"])) for l in used}
        print("    experts with a gradient: %s  zero-gradient tensors besides the bias: %s" % (
            " ".join("L%d:%d/%d" % (l, nz[l], cfg["n_routed_experts"]) for l in used), zero or "none"))
        print("    finite differences (eps 1e-6, %d entries): max abs err %.1e, max rel err %.1e (|grad|>1e-6)" % (
            len(rows), worst_abs, worst_rel))
        print("    independent recomputation: loss %.1e, logp %.1e, replay of the own routing %.1e;"
              " with %s: loss %r, |grad change|/|grad| %.3f" % (
                  dev["loss"], dev["logp"], dev["replay"], what, abl_loss, abl_rel))
    print("total size %d bytes" % total)
    if not args.case:
        assert total < 1.5e6, total


if __name__ == "__main__":
    main()
