#!/usr/bin/env python3
"""Weight bytes one decode step reads from a deepseek2 GGUF, counted as `whale bench` counts
them for a whale model: the embedding row, every matrix of attention, dense FFNs, router gates
and shared experts, the chosen routed experts (expert_used_count of expert_count of each stacked
*_exps tensor: top-k choices are distinct), and the head; vectors (norms, routing bias) and the
MTP block (nextn, not loaded) are left out. Reads the GGUF header only (no numpy needed).

usage: gguf_bytes.py F.gguf   -> one JSON line: bytes_per_token, tensor types, head type, ...
"""
import json
import struct
import sys

# ggml type -> (block size in elements, bytes per block)
TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 3: ("q4_1", 32, 20), 8: ("q8_0", 32, 34),
         30: ("bf16", 1, 2)}


def read_header(path):
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def rd_str():
            return f.read(rd("Q")).decode("utf-8", "replace")

        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                  11: "q", 12: "d"}

        def rd_value(t):
            if t == 8:
                return rd_str()
            if t == 9:
                et, n = rd("I"), rd("Q")
                return [rd_value(et) for _ in range(n)]
            return rd(scalar[t])

        if f.read(4) != b"GGUF":
            sys.exit(f"{path}: not a GGUF file")
        rd("I")  # version
        n_tensors, n_kv = rd("Q"), rd("Q")
        kv = {}
        for _ in range(n_kv):
            key = rd_str()
            kv[key] = rd_value(rd("I"))
        tensors = []
        for _ in range(n_tensors):
            name = rd_str()
            ne = [rd("Q") for _ in range(rd("I"))]
            ttype = rd("I")
            rd("Q")  # offset
            tensors.append((name, ne, ttype))
    return kv, tensors


def main():
    kv, tensors = read_header(sys.argv[1])
    arch = kv["general.architecture"]
    n_layer = kv[f"{arch}.block_count"]
    used, n_expert = kv[f"{arch}.expert_used_count"], kv[f"{arch}.expert_count"]
    total = 0.0
    types = {}
    head = None
    for name, ne, t in tensors:
        if t not in TYPES:
            sys.exit(f"{name}: ggml type {t} not handled")
        tname, block, bpb = TYPES[t]
        n = 1
        for d in ne:
            n *= d
        nbytes = n // block * bpb
        if name.startswith("blk."):
            layer = int(name.split(".")[1])
            if layer >= n_layer or ".nextn." in name:
                continue  # the MTP block: not loaded, not read by decode
        if len(ne) < 2:
            continue  # vectors: norms, routing bias (whale's count leaves them out too)
        kind = name.rsplit(".", 2)[-2] if name.startswith("blk.") else name.split(".")[0]
        types.setdefault(kind, tname)
        if name == "output.weight":
            head = tname
        if name == "token_embd.weight":
            total += ne[0] // block * bpb  # one row
        elif name.endswith("_exps.weight"):
            total += nbytes * used / n_expert
        else:
            total += nbytes
    print(json.dumps({"gguf": sys.argv[1], "bytes_per_token": total, "head_type": head,
                      "types": types}))


if __name__ == "__main__":
    main()
