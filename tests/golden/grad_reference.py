#!/usr/bin/env python3
"""Gradient fixtures for whale's training path (the `whale grad` command).

    /usr/bin/python3 tests/golden/grad_reference.py --out tests/golden/grad_fixtures

For each case this writes a tiny F32 checkpoint in the Hugging Face layout, a token
sequence, the loss weights, and the gradient of

    loss = CE_main + mtp_weight * CE_mtp + balance_alpha * BAL

with respect to every stored tensor, computed in float64 by autograd on the forward of
reference.py (the same functions that produce the logits fixtures). See the section
"Gradient fixtures" of tests/golden/README.md for the exact objective.

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
import torch.nn.functional as F

sys.dont_write_bytecode = True     # leave no __pycache__ next to the fixtures
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

torch.set_num_threads(1)

F64 = torch.float64


# ----------------------------------------------------------------------------
# Recording the router inputs. reference.moe() calls reference.route(); this wrapper
# (installed once, below) keeps the router input u and the chosen expert ids of every
# MoE layer in `stats`, so that the balance loss can be built on the same tensors.
# It changes nothing else: the ids and gates are those of reference.route.

_reference_route = R.route


def _recording_route(cfg, W, p, u, stats):
    ids, gates = _reference_route(cfg, W, p, u, stats)
    stats.setdefault("router_inputs", []).append((p, u, ids))
    return ids, gates


R.route = _recording_route


# ----------------------------------------------------------------------------
# Objective

def layer_index(prefix):
    # "model.layers.<i>.mlp."
    return int(prefix.split(".")[2])


def balance_term(cfg, W, p, u, ids):
    """Sum_e f_e * P_e for one MoE layer. u: router input [T, hidden], ids: chosen [T, K].
    f_e = N/(K*T) * #{t : e chosen at t} (constant); P_e = mean_t s_{e,t} / sum_j s_{j,t}
    over the unbiased scores s (sigmoid or softmax of gate.weight . u)."""
    T = u.shape[0]
    N, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    logits = R.linear(u, W[p + "gate.weight"])
    s = torch.softmax(logits, -1) if cfg["scoring_func"] == "softmax" else torch.sigmoid(logits)
    P = (s / s.sum(-1, keepdim=True)).mean(0)
    counts = torch.zeros(N, dtype=u.dtype).index_add_(
        0, ids.flatten(), torch.ones(ids.numel(), dtype=u.dtype))
    f = (N / (K * T)) * counts
    return (f.detach() * P).sum()


def objective(cfg, W, tokens, lam, alpha):
    """Returns (loss, {"ce_main", "ce_mtp", "bal"} as tensors, stats)."""
    stats = {}
    T = len(tokens)
    tok = torch.tensor(tokens)
    logits, h = R.forward(cfg, W, tokens, stats)
    ce_main = F.cross_entropy(logits[:T - 1], tok[1:])
    L = cfg["num_hidden_layers"]
    bal = torch.zeros((), dtype=logits.dtype)
    for p, u, ids in stats.get("router_inputs", []):
        if layer_index(p) < L:              # main model only, not the MTP layer
            bal = bal + balance_term(cfg, W, p, u, ids)
    ce_mtp = torch.zeros((), dtype=logits.dtype)
    if cfg.get("num_nextn_predict_layers", 0) and lam != 0:
        mtp = R.mtp_forward(cfg, W, tokens, h, stats)        # rows 0..T-2
        ce_mtp = F.cross_entropy(mtp[:T - 2], tok[2:])       # row T-2 has no target
    loss = ce_main + lam * ce_mtp + alpha * bal
    return loss, {"ce_main": ce_main, "ce_mtp": ce_mtp, "bal": bal}, stats


def leaves(W, dtype=F64):
    return {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in W.items()}


def gradients(cfg, W, tokens, lam, alpha, dtype=F64):
    """Autograd of the objective. Tensors that get no gradient (the noaux bias) get zeros."""
    Wl = leaves(W, dtype)
    loss, parts, stats = objective(cfg, Wl, tokens, lam, alpha)
    loss.backward()
    grads, no_grad = {}, []
    for k, v in Wl.items():
        if v.grad is None:
            no_grad.append(k)
            grads[k] = torch.zeros_like(v.detach())
        else:
            grads[k] = v.grad.detach()
    return loss.detach(), {k: v.detach() for k, v in parts.items()}, grads, no_grad, stats


def component_gradients(cfg, W, tokens, lam, alpha):
    """d(ce_main), d(ce_mtp), d(bal) separately (for the finite-difference report)."""
    Wl = leaves(W)
    _, parts, _ = objective(cfg, Wl, tokens, lam, alpha)
    names = list(Wl)
    out = {}
    for key, val in parts.items():
        if not val.requires_grad:
            out[key] = {k: torch.zeros_like(Wl[k].detach()) for k in names}
            continue
        gs = torch.autograd.grad(val, [Wl[k] for k in names], retain_graph=True, allow_unused=True)
        out[key] = {k: (torch.zeros_like(Wl[k].detach()) if g is None else g) for k, g in zip(names, gs)}
    return out


def values(cfg, W, tokens, lam, alpha):
    with torch.no_grad():
        loss, parts, stats = objective(cfg, W, tokens, lam, alpha)
    return loss.item(), {k: v.item() for k, v in parts.items()}, stats


# ----------------------------------------------------------------------------
# Cases. All weights F32 (training keeps f32 master weights).

GRAD_CASES = [
    # (name, config, T, seed, std overrides, mtp_weight, balance_alpha)
    ("grad_v3", R.deepseek_config(
        "deepseek_v3", vocab_size=64, hidden_size=32, intermediate_size=48,
        moe_intermediate_size=16, num_attention_heads=2, num_key_value_heads=2,
        q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=4, topk_group=2,
        topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
        routed_scaling_factor=2.5, rope_scaling=dict(R.YARN), num_nextn_predict_layers=1,
        torch_dtype="float32"),
     10, 11000, {"router": 2.0, "embed": 1.0}, 0.3, 0.01),
    ("grad_v2", R.deepseek_config(
        "deepseek_v2", vocab_size=80, hidden_size=32, intermediate_size=48,
        moe_intermediate_size=16, num_attention_heads=2, num_key_value_heads=2,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2,
        torch_dtype="float32"),
     9, 12000, {"router": 2.0, "embed": 1.0}, 0.0, 0.01),
    ("grad_qwen2", R.dense_config(
        "qwen2", vocab_size=72, hidden_size=32, intermediate_size=48, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
        use_sliding_window=False, sliding_window=None, torch_dtype="float32"),
     9, 13000, {"embed": 0.15}, 0.0, 0.0),
]


def find_case(name, cfg, T, seed, std_over, lam, alpha, max_tries=200):
    """First seed that passes reference.py's robustness criteria (router margins >= 1e-3 at
    the expert and group cuts, bias changes a choice, float32 rerun and 8 noisy reruns make
    the same choices) and whose gradients are nonzero for every tensor except the noaux
    bias (so every routed expert, including the MTP layer's, is used by a position that
    reaches the loss)."""
    for attempt in range(max_tries):
        s = seed + attempt
        try:
            ck, tokens, _, _, stats, used, err32 = R.make_case(name, cfg, T, s, std_over, 1, max_tries=1)
        except RuntimeError:
            continue
        loss, parts, grads, no_grad, _ = gradients(cfg, ck.w, tokens, lam, alpha)
        zero = [k for k, g in grads.items() if not g.abs().max().item() > 0]
        if all(k.endswith("e_score_correction_bias") for k in zero):
            return ck, tokens, stats, s, loss, parts, grads, no_grad
    raise RuntimeError("no usable seed for case " + name)


# ----------------------------------------------------------------------------
# Writing

def write_grads(path, names, grads, meta):
    """safetensors with F32 gradients in the order of `names`, metadata strings in __metadata__."""
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


def write_case(outdir, name, cfg, ck, tokens, lam, alpha, loss, parts, grads):
    d = R.new_case_dir(outdir, name, cfg, tokens)
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump({"mtp_weight": lam, "balance_alpha": alpha}, f)
        f.write("\n")
    R.write_safetensors(os.path.join(d, "model.safetensors"), ck.entries)
    meta = {"loss": repr(float(loss))}
    meta.update({k: repr(float(v)) for k, v in parts.items()})
    write_grads(os.path.join(d, "grads.safetensors"), [e[0] for e in ck.entries], grads, meta)
    return d


def check_readback(d, ck, grads, loss, parts):
    model = R.read_safetensors(os.path.join(d, "model.safetensors"))
    gr = R.read_safetensors(os.path.join(d, "grads.safetensors"))
    assert list(model) == list(gr) == [e[0] for e in ck.entries]
    for n, (dt, t) in model.items():
        assert dt == "F32" and torch.equal(t, ck.w[n]), n
        gdt, g = gr[n]
        assert gdt == "F32" and g.shape == t.shape, n
        assert torch.equal(g, grads[n].to(torch.float32).to(F64)), n
    meta = read_metadata(os.path.join(d, "grads.safetensors"))
    assert float(meta["loss"]) == float(loss)
    for k, v in parts.items():
        assert float(meta[k]) == float(v), k


# ----------------------------------------------------------------------------
# Checks

def fd_entries(cfg, W, grads, gen, per_tensor_picks):
    """(name, flat index) pairs: for each chosen tensor, random entries with a nonzero
    gradient (or any entry for the bias, whose gradient is zero by definition)."""
    picks = []
    for name, n in per_tensor_picks:
        if name not in W:
            continue
        g = grads[name].flatten()
        cand = torch.nonzero(g != 0).flatten() if not name.endswith("e_score_correction_bias") \
            else torch.arange(g.numel())
        for j in torch.randperm(cand.numel(), generator=gen)[:n].tolist():
            picks.append((name, int(cand[j])))
    return picks


def fd_check(cfg, W, tokens, lam, alpha, grads, comp, picks, eps=1e-6):
    """Central differences in float64 of the loss and of its three parts."""
    rows = []
    for name, idx in picks:
        fd = {}
        for sign in (1, -1):
            Wp = dict(W)
            t = W[name].clone()
            t.view(-1)[idx] += sign * eps
            Wp[name] = t
            l, parts, _ = values(cfg, Wp, tokens, lam, alpha)
            fd[sign] = dict(parts, loss=l)
        row = {"name": name, "idx": idx}
        for key in ("loss", "ce_main", "ce_mtp", "bal"):
            num = (fd[1][key] - fd[-1][key]) / (2 * eps)
            ana = (grads if key == "loss" else comp[key])[name].flatten()[idx].item()
            row[key] = (num, ana)
        rows.append(row)
    return rows


def fd_pick_list(cfg):
    L = cfg["num_hidden_layers"]
    picks = [("model.embed_tokens.weight", 2), ("model.norm.weight", 1), ("lm_head.weight", 2)]
    for i in range(L + (1 if cfg.get("num_nextn_predict_layers", 0) else 0)):
        p = "model.layers.%d." % i
        picks += [(p + "input_layernorm.weight", 1), (p + "post_attention_layernorm.weight", 1)]
        for n in ("q_proj.weight", "q_proj.bias", "k_proj.bias", "v_proj.weight", "q_a_proj.weight",
                  "q_a_layernorm.weight", "q_b_proj.weight", "kv_a_proj_with_mqa.weight",
                  "kv_a_layernorm.weight", "kv_b_proj.weight", "o_proj.weight"):
            picks.append((p + "self_attn." + n, 1))
        if R.is_deepseek(cfg) and R.is_moe_layer(cfg, i):
            picks += [(p + "mlp.gate.weight", 4), (p + "mlp.gate.e_score_correction_bias", 2),
                      (p + "mlp.shared_experts.up_proj.weight", 1),
                      (p + "mlp.experts.%d.gate_proj.weight" % (i % cfg["n_routed_experts"]), 1),
                      (p + "mlp.experts.%d.down_proj.weight" % ((i + 3) % cfg["n_routed_experts"]), 1)]
        else:
            picks += [(p + "mlp.down_proj.weight", 1)]
        if i == L:
            picks += [(p + n, 2) for n in ("enorm.weight", "hnorm.weight", "eh_proj.weight",
                                           "embed_tokens.weight", "shared_head.norm.weight",
                                           "shared_head.head.weight")]
    return picks


def rel_err(num, ana):
    return abs(num - ana) / max(abs(num), abs(ana), 1e-12)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/golden/grad_fixtures")
    ap.add_argument("--case", action="append", help="only these cases")
    ap.add_argument("--fd-verbose", action="store_true", help="print every finite-difference entry")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, cfg, T, seed, std_over, lam, alpha in GRAD_CASES:
        if args.case and name not in args.case:
            continue
        ck, tokens, stats, used, loss, parts, grads, no_grad = find_case(name, cfg, T, seed, std_over, lam, alpha)
        # what gets no gradient: exactly the noaux biases
        assert all(k.endswith("e_score_correction_bias") for k in no_grad), no_grad
        assert sorted(no_grad) == sorted(k for k in ck.w if k.endswith("e_score_correction_bias"))
        # the float64 loss equals its parts, and is deterministic
        l2, p2, _ = values(cfg, ck.w, tokens, lam, alpha)
        assert l2 == loss.item() and all(p2[k] == parts[k].item() for k in parts)
        d = write_case(args.out, name, cfg, ck, tokens, lam, alpha, loss.item(),
                       {k: v.item() for k, v in parts.items()}, grads)
        check_readback(d, ck, grads, loss.item(), {k: v.item() for k, v in parts.items()})

        # float32 rerun of the whole objective (what a float32 engine should reach)
        l32, pa32, g32, _, st32 = gradients(cfg, ck.w, tokens, lam, alpha, torch.float32)
        assert R.decisions_equal(stats, st32)
        gnorm = math.sqrt(sum(g.pow(2).sum().item() for g in grads.values()))
        err32 = max((g32[k].to(F64) - grads[k]).abs().max().item() for k in grads)
        rel32 = max(((g32[k].to(F64) - grads[k]).abs().max() / grads[k].abs().max().clamp(min=1e-30)).item()
                    for k in grads if grads[k].abs().max().item() > 0)

        # finite differences
        comp = component_gradients(cfg, ck.w, tokens, lam, alpha)
        for k in grads:
            recombined = comp["ce_main"][k] + lam * comp["ce_mtp"][k] + alpha * comp["bal"][k]
            assert torch.allclose(recombined, grads[k], rtol=1e-12, atol=1e-15), k
        gen = torch.Generator().manual_seed(used)
        picks = fd_entries(cfg, ck.w, grads, gen, fd_pick_list(cfg))
        rows = fd_check(cfg, ck.w, tokens, lam, alpha, grads, comp, picks)
        worst_abs = max(abs(r["loss"][0] - r["loss"][1]) for r in rows)
        worst_rel = max(rel_err(*r["loss"]) for r in rows if abs(r["loss"][1]) > 1e-6)
        worst_comp = max(abs(r[k][0] - r[k][1]) for r in rows for k in ("ce_main", "ce_mtp", "bal"))
        assert worst_abs < 1e-8 and worst_comp < 1e-8, (worst_abs, worst_comp)
        if args.fd_verbose:
            for r in rows:
                print("   fd %-55s %5d  loss fd %+.10e ad %+.10e  bal fd %+.3e ad %+.3e" % (
                    r["name"], r["idx"], r["loss"][0], r["loss"][1], r["bal"][0], r["bal"][1]))

        # how much the balance loss contributes to the router gradients
        bal_share = []
        for k in grads:
            if k.endswith("mlp.gate.weight") and layer_index(k) < cfg["num_hidden_layers"]:
                bal_share.append((alpha * comp["bal"][k]).norm().item() / grads[k].norm().item())
        used_experts = []
        for p, u, ids in stats.get("router_inputs", []):
            used_experts.append("L%d:%d" % (layer_index(p), ids.unique().numel()))

        print("%-11s seed %d  loss %r  ce_main %r  ce_mtp %r  bal %r" % (
            name, used, loss.item(), parts["ce_main"].item(), parts["ce_mtp"].item(), parts["bal"].item()))
        msg = "            |grad| %.3e  f32-vs-f64 grad max abs %.1e (rel to tensor max %.1e), loss %.1e" % (
            gnorm, err32, rel32, abs(l32.item() - loss.item()))
        for key in ("expert_gap", "group_gap", "min_chosen_biased", "bias_changed"):
            if key in stats:
                msg += "  %s %s" % (key, ("%.2e" % stats[key]) if isinstance(stats[key], float) else stats[key])
        if used_experts:
            msg += "  experts_used " + " ".join(used_experts)
        print(msg)
        msg = "            finite differences (eps 1e-6, %d entries): loss max abs err %.1e, max rel err %.1e" \
              " (|grad|>1e-6); parts max abs err %.1e" % (len(rows), worst_abs, worst_rel, worst_comp)
        if bal_share:
            bal_max = max((alpha * comp["bal"][k]).abs().max().item() for k in grads)
            msg += "; alpha*BAL: share of router grad norm %s, max |alpha*dBAL| %.1e" % (
                " ".join("%.3f" % s for s in bal_share), bal_max)
        print(msg)


if __name__ == "__main__":
    main()
