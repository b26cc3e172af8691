"""common.py — what bench/bench.py (the driver) and bench/hf_peft.py (the HF + PEFT side)
share: the workloads, the model-FLOPs formula behind MFU, the table of GPU peaks, and the
token-data writer for ftrun.

Every workload is defined here once; its ftc spec (bench/specs/<name>.fbs) must agree, and
the driver checks the model sizes of the spec against this table before it runs anything.
"""
import random
import re
import struct

# ---------------------------------------------------------------- workloads

LLAMA3_8B = dict(vocab=128256, hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336,
                 rope_theta=500000.0, max_seq=8192, norm_eps=1e-5, tie=False, rope_scaling=None)
LLAMA32_1B = dict(vocab=128256, hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192,
                  rope_theta=500000.0, max_seq=8192, norm_eps=1e-5, tie=True,
                  rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192))
# Not a benchmark: a model small enough for the CPU, to check the scripts without a GPU
# (bench/run.sh --device cpu --workloads tiny-lora-qkvo,tiny-full --peak-tflops 1).
TINY = dict(vocab=512, hidden=128, layers=2, heads=4, kv_heads=2, ffn=352,
            rope_theta=10000.0, max_seq=256, norm_eps=1e-5, tie=False, rope_scaling=None)

QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL7 = QKVO + ["gate_proj", "up_proj", "down_proj"]

# tuner: "lora" (rank 8, alpha 16, dropout 0 on `targets`) or "full"; lr: AdamW's, constant
WORKLOADS = {
    "llama3-8b-lora-qkvo": dict(model=LLAMA3_8B, tuner="lora", targets=QKVO, lr=1e-4, batch=2, seq=8192),
    "llama3-8b-lora-all": dict(model=LLAMA3_8B, tuner="lora", targets=ALL7, lr=1e-4, batch=2, seq=8192),
    "llama3.2-1b-full": dict(model=LLAMA32_1B, tuner="full", targets=None, lr=1e-5, batch=2, seq=8192),
    "tiny-lora-qkvo": dict(model=TINY, tuner="lora", targets=QKVO, lr=1e-4, batch=2, seq=128, check_only=True),
    "tiny-full": dict(model=TINY, tuner="full", targets=None, lr=1e-5, batch=2, seq=128, check_only=True),
}
DEFAULT_WORKLOADS = [k for k, v in WORKLOADS.items() if not v.get("check_only")]
LORA_R, LORA_ALPHA, GRAD_CLIP = 8, 16, 1.0


def head_dim(m):
    return m["hidden"] // m["heads"]


# ---------------------------------------------------------------- model FLOPs and MFU

def flops_per_token(wl):
    """Model FLOPs per trained token, the same for every system (see bench/README.md).

    forward = 2 * (matmul parameters, lm_head included even when tied to the embedding)
            + 2 * 2 * S * Dh * Hq * layers / 2   (Q.K^T and P.V, half of S x S: causal)
    step    = 3 * forward for full fine-tuning (backward: input and weight gradients),
              2 * forward for LoRA on a frozen base (backward: input gradients only).
    Recomputation (gradient checkpointing) is not counted, and neither are LoRA's own
    rank-r matmuls (0.1% of the total for q,k,v,o, 0.4% for all seven) nor norms, RoPE,
    softmax and the loss.
    """
    m = wl["model"]
    h, dh, hq, hkv, f, L = m["hidden"], head_dim(m), m["heads"], m["kv_heads"], m["ffn"], m["layers"]
    per_layer = h * hq * dh + 2 * h * hkv * dh + hq * dh * h + 3 * h * f
    matmul_params = L * per_layer + m["vocab"] * h
    s = wl["seq"]
    forward = 2 * matmul_params + 2 * 2 * s * dh * hq * L / 2
    return (3 if wl["tuner"] == "full" else 2) * forward


# Dense (not 2:4 sparse) bf16 tensor-core peaks in FLOP/s, from NVIDIA's data sheets, by a
# part of the nvidia-smi name; the first match wins (SXM boards carry no marker in their
# names, so the PCIe and NVL variants come first). runtime/device.c keeps the same table for
# ftrun's own MFU.
GPU_PEAKS = [
    ("H100 PCIe", 756.5e12),
    ("H100 NVL", 835.5e12),
    ("H200 NVL", 835.5e12),
    ("H100", 989.4e12),   # H100 SXM5: "NVIDIA H100 80GB HBM3"
    ("H200", 989.4e12),   # H200 SXM: "NVIDIA H200"; GH200 too
    ("A100", 312.0e12),
]


def peak_flops(device_name):
    """The device's dense bf16 peak, or None for a device the table does not know."""
    for part, flops in GPU_PEAKS:
        if part in device_name:
            return flops
    return None


# ---------------------------------------------------------------- token data for ftrun

def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_tok(path, docs):
    """Token data (docs/formats.md): one document per list of ids, every token mask 1."""
    toks = [t for d in docs for t in d]
    n = len(toks)
    body = struct.pack(f"<{n}i", *toks) + b"\1" * n
    body += b"\0" * ((-(40 + 5 * n)) % 8)
    starts = [0]
    for d in docs:
        starts.append(starts[-1] + len(d))
    body += struct.pack(f"<{len(starts)}Q", *starts)
    head = b"FTCTOKD\0" + struct.pack("<IIQQQ", 1, max(toks) + 1, n, len(docs), fnv1a64(body))
    with open(path, "wb") as f:
        f.write(head + body)


def random_docs(nrows, seq, vocab, seed):
    """nrows documents of seq + 1 random ids: with packing off each is one training row of
    seq inputs at positions 0..seq-1 and seq targets, as HF's labels = input_ids gives."""
    r = random.Random(seed)
    return [[r.randrange(vocab) for _ in range(seq + 1)] for _ in range(nrows)]


# ---------------------------------------------------------------- spec check

SPEC_KEYS = {"vocab": "vocab", "hidden": "hidden", "layers": "layers", "heads": "heads",
             "kv_heads": "kv_heads", "ffn": "ffn"}


def check_spec(path, wl):
    """Problems where the spec's model sizes, tuner or batch disagree with the workload."""
    text = re.sub(r"#[^\n]*", "", open(path).read())
    want = {k: wl["model"][v] for k, v in SPEC_KEYS.items()}
    want.update(seq_len=wl["seq"], micro_batch=wl["batch"], grad_accum=1, lr=wl["lr"], grad_clip=GRAD_CLIP,
                weight_decay=0, warmup=0, schedule="constant", packing="off",
                tie_embeddings="true" if wl["model"]["tie"] else "false")
    if wl["tuner"] == "lora":
        want.update(rank=LORA_R, alpha=LORA_ALPHA)
    bad = []
    for key, v in want.items():
        m = re.search(r"\b%s\s+(\S+)" % re.escape(key), text)
        got = m.group(1) if m else None
        if got is None or (str(v) != got and not (isinstance(v, (int, float)) and _num(got) == v)):
            bad.append(f"{key} is {got}, the workload has {v}")
    tuner = re.search(r"\btuner\s+(\w+)", text)
    if not tuner or tuner.group(1) != wl["tuner"]:
        bad.append(f"tuner is {tuner.group(1) if tuner else None}, the workload has {wl['tuner']}")
    if wl["tuner"] == "lora":
        m = re.search(r"\btargets\s+([^\n}]*)", text)
        got = m.group(1).split() if m else []
        if sorted(got) != sorted(wl["targets"]):
            bad.append(f"targets are {got}, the workload has {wl['targets']}")
    return bad


def _num(s):
    try:
        return float(s)
    except ValueError:
        return None
