#!/usr/bin/env python3
"""test_vs_torch.py — ftrun on the GPU against PyTorch (HF transformers + PEFT), in bf16.

Acceptance 1 of the GPU work: the loss of the first step equals PyTorch's to 1e-2 relative,
every LoRA and full-fine-tuning gradient matches PyTorch's with a normwise relative error
below 2e-2 per tensor, and the 50-step loss curves agree within bf16 noise.

For each model and tuner (cases below) this script
  1. builds a LlamaForCausalLM with seeded random weights (normal, std 0.02; norms 1 + 0.02·N)
     in bf16 and saves it (safetensors) in the work folder; for LoRA, a PEFT adapter with
     random A (std 1/sqrt(in)) and NON-ZERO B (std 0.02), so that both get real gradients;
  2. writes the token data as a .tok file (docs/formats.md): exactly micro_batch documents of
     seq_len + 1 random tokens, packing off, a few targets masked off. Every step's micro-batch
     is therefore the whole file in some seeded row order, and since the loss and the
     gradients are sums over rows, the order does not matter: PyTorch sees the same batch;
  3. writes a spec (model from that folder, tuner, dtype bf16, constant lr, no warmup, no
     weight decay, grad_clip 1, recompute none), compiles it with ftc for the GPU and runs
     `ftrun --device cuda --steps 50 --dump-grads FILE` (the dump holds the gradients of the
     SUMMED token loss after step 1's micro-batch, before the optimizer);
  4. in PyTorch on the same GPU: the bf16 model read back from the same files (sdpa
     attention, logits cast to fp32 for the cross-entropy, reduction 'sum'), its summed loss
     and the gradients of the trainable parameters; also the same in float32 (the weights
     upcast), as a yardstick of bf16 noise: the table shows how far each bf16 result lies
     from it;
  5. trains 50 steps in PyTorch as ftrun does: torch.optim.AdamW on fp32 trainable weights
     (for full fine-tuning fp32 master copies of a bf16 model, copied back to bf16 after each
     step; for LoRA PEFT's fp32 adapter weights over the frozen bf16 base), gradients of the
     summed loss divided by the step's target tokens (= the mean loss's), clipped to global
     norm 1 by clip_grad_norm_, and compares the loss curves.

Pass: loss rel err < 1e-2, each gradient's rel err < 2e-2, loss curves max |diff| <= 0.1
(above 0.05 is reported as a warning). A gradient over 2e-2 against torch's bf16 one still
passes, reported as "ok (bf16 noise)" and listed, when against the fp32 yardstick ftc's error
is at most 1.25x torch bf16's own (and below 5e-2): then ftc's bf16 result is as close to the
exact answer as PyTorch's, and their difference is rounding, not a bug. This is needed at
Llama-3-8B widths: there torch bf16's own gradients lie up to 3.7e-2 from fp32 (H200,
2026-11-22), so no bf16 implementation can meet 2e-2 against them; ftc's lay within 3.2e-2. Prints a table; exits 1 on a failure; writes
vs_torch.json (and the per-step curves) to $OUT when set, else to the work folder.

Numerics that differ by design (all within bf16 rounding): PEFT computes the LoRA branch in
fp32 with fp32 adapter weights (autocast_adapter_dtype), ftc casts A and B to bf16 and runs
the branch in bf16; HF rounds RoPE's cos/sin and RMSNorm's normalised value to bf16 before
multiplying, ftc rounds once at the end of each op.

usage: python3 tests/gpu/test_vs_torch.py [--build DIR] [--work DIR] [--device cuda|cpu]
           [--models tiny,l3-8b-2l] [--cases NAME,...] [--steps N] [--target sm_XY] [--no-fp32]
  --build defaults to $FTC_GPU_BUILD or build-gpu; --work to $FTC_GPU_WORK/vs-torch or
  <build>/vs-torch. --device cpu runs ftrun's CPU reference executor and torch on the CPU
  (a check of this script on a machine without a GPU; use the tiny model).
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
IGNORE = -100

MODELS = {
    # a tiny Llama: GQA, default RoPE
    "tiny": dict(
        config=dict(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=352, max_position_embeddings=256,
                    rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        batch=4, seq=64, seed=11),
    # Llama-3-8B's layer shapes and RoPE, 2 layers
    "l3-8b-2l": dict(
        config=dict(vocab_size=128256, hidden_size=4096, num_hidden_layers=2, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                    max_position_embeddings=131072, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}),
        batch=2, seq=256, seed=12),
    # not run by default: the 8B model's RoPE and head_dim at a size the CPU executor can run,
    # to check this script without a GPU (--device cpu --models mini-l3)
    "mini-l3": dict(
        config=dict(vocab_size=1000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=128, intermediate_size=512,
                    max_position_embeddings=131072, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}),
        batch=2, seq=48, seed=13),
}

QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL7 = QKVO + ["gate_proj", "up_proj", "down_proj"]
# name, model, tuner, LoRA targets, learning rate
CASES = [
    ("tiny/full", "tiny", "full", None, 1e-3),
    ("tiny/lora-qkvo", "tiny", "lora", QKVO, 2e-3),
    ("tiny/lora-all", "tiny", "lora", ALL7, 2e-3),
    ("mini-l3/full", "mini-l3", "full", None, 1e-4),
    ("mini-l3/lora-qkvo", "mini-l3", "lora", QKVO, 1e-3),
    # at 1e-3 (LoRA) and 3e-5 (full) these learned the 512-token batch by heart within a few
    # steps (loss ~0 from step 5 on, H200 2026-11-22); at 5e-6 full fine-tuning still reaches
    # loss ~0 by step 20, so the curve's tail compares little there
    ("l3-8b-2l/lora-qkvo", "l3-8b-2l", "lora", QKVO, 2e-4),
    ("l3-8b-2l/full", "l3-8b-2l", "full", None, 5e-6),
]
LORA_R, LORA_ALPHA = 8, 16
CLIP = 1.0
LOSS_TOL, GRAD_TOL, CURVE_WARN, CURVE_TOL = 1e-2, 2e-2, 0.05, 0.1
NOISE_RATIO, NOISE_CAP = 1.25, 5e-2


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- files for ftc

def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_tok(path, docs, masks):
    """docs: list of int lists, masks: list of 0/1 lists (docs/formats.md, token data)."""
    toks = [t for d in docs for t in d]
    mask = [m for ms in masks for m in ms]
    n = len(toks)
    body = struct.pack(f"<{n}i", *toks) + bytes(mask)
    pad = (-(40 + 5 * n)) % 8
    body += b"\0" * pad
    starts = [0]
    for d in docs:
        starts.append(starts[-1] + len(d))
    body += struct.pack(f"<{len(starts)}Q", *starts)
    head = b"FTCTOKD\0" + struct.pack("<IIQQQ", 1, max(toks) + 1, n, len(docs), fnv1a64(body))
    with open(path, "wb") as f:
        f.write(head + body)


def make_data(mcfg, vocab):
    """micro_batch documents of seq+1 random tokens; a few targets (mask 0) dropped per row."""
    B, S = mcfg["batch"], mcfg["seq"]
    g = torch.Generator().manual_seed(mcfg["seed"] + 100)
    docs = torch.randint(0, vocab, (B, S + 1), generator=g)
    masks = torch.ones(B, S + 1, dtype=torch.int64)
    for b in range(B):
        for i in torch.randperm(S, generator=g)[: 1 + b % 3]:  # 1..3 masked targets per row
            masks[b, int(i) + 1] = 0
    tokens = docs[:, :S].clone()
    targets = torch.where(masks[:, 1:] == 1, docs[:, 1:], torch.full_like(docs[:, 1:], IGNORE))
    return docs.tolist(), masks.tolist(), tokens, targets


def make_model(folder, mcfg, dev):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**mcfg["config"], hidden_act="silu", attention_bias=False, mlp_bias=False,
                      tie_word_embeddings=False)
    rp = cfg.rope_parameters
    for k, v in mcfg["config"]["rope_parameters"].items():
        assert rp.get(k) == v, (k, rp)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    g = torch.Generator(device=dev).manual_seed(mcfg["seed"])
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, device=dev, dtype=torch.float32)
            p.copy_(1.0 + 0.02 * r if name.endswith("norm.weight") else 0.02 * r)
    model.save_pretrained(folder)
    del model


def make_adapter(folder, adir, targets, seed, dev):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM
    base = LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(dev)
    pm = get_peft_model(base, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                         target_modules=list(targets), bias="none", task_type="CAUSAL_LM"))
    g = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g, device=dev) / math.sqrt(p.shape[1]))
            elif "lora_B" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g, device=dev))
    pm.save_pretrained(adir)
    del pm, base


def write_spec(path, folder, tuner, targets, adir, mcfg, lr, steps, tok):
    if tuner == "lora":
        tun = (f'tuner lora {{\n  rank {LORA_R} alpha {LORA_ALPHA} dropout 0\n  targets {" ".join(targets)}\n'
               f'  init "{adir}"\n}}\n')
    else:
        tun = "tuner full {}\n"
    text = (f'# written by tests/gpu/test_vs_torch.py\nmodel llama {{ from "{folder}" }}\n{tun}'
            f"train {{\n  seq_len {mcfg['seq']} micro_batch {mcfg['batch']} grad_accum 1 steps {steps}\n"
            f"  optimizer adamw lr {lr!r} betas 0.9 0.999 eps 1e-8 weight_decay 0 grad_clip {CLIP}\n"
            f"  schedule constant warmup 0 recompute none dtype bf16 seed 3\n}}\n"
            f'data {{ train "{tok}" packing off }}\n')
    with open(path, "w") as f:
        f.write(text)


def run(cmd, logpath, env=None):
    t0 = time.time()
    with open(logpath, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        with open(logpath) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}):\n{tail}")
    return time.time() - t0


# ---------------------------------------------------------------- PyTorch side

def load_torch(folder, tuner, adir, dtype, dev):
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(dev)
    if tuner == "lora":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adir, is_trainable=True).to(dev)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()  # dropout is 0 everywhere; nothing is cached
    return model


def loss_sum(model, tokens, targets):
    B, S = tokens.shape
    pos = torch.arange(S, device=tokens.device).unsqueeze(0).expand(B, S)
    logits = model(input_ids=tokens, position_ids=pos, use_cache=False).logits
    return F.cross_entropy(logits.float().reshape(B * S, -1), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def grad_key(name):
    """torch parameter name -> ftc's gradient name"""
    return "grad:" + name.replace(".default.weight", ".weight")


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def step_grads(model, tokens, targets):
    model.zero_grad(set_to_none=True)
    loss = loss_sum(model, tokens, targets)
    loss.backward()
    grads = {grad_key(n): p.grad.detach() for n, p in trainable(model)}
    return float(loss.detach()), grads


def rel(a, b):
    """normwise relative error ||a - b|| / ||b||, summed in float64 in chunks (b's device)"""
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.reshape(-1), b.reshape(-1)
    dd = bb = 0.0
    step = 1 << 26
    for i in range(0, b.numel(), step):
        x = a[i:i + step].to(b.device, torch.float64)
        y = b[i:i + step].to(torch.float64)
        dd += float(torch.sum((x - y) ** 2))
        bb += float(torch.sum(y * y))
    return math.sqrt(dd / bb) if bb > 0 else (0.0 if dd == 0 else math.inf)


def train_torch(model, tuner, tokens, targets, lr, steps):
    """50 steps as ftrun trains: fp32 trainable weights, mean-loss gradients, clip, AdamW."""
    ntok = int((targets != IGNORE).sum())
    params = [p for _, p in trainable(model)]
    if tuner == "full":  # bf16 model, fp32 master copies
        master = [p.detach().float().clone() for p in params]
    else:  # PEFT's adapter weights are fp32 already
        assert all(p.dtype == torch.float32 for p in params), {p.dtype for p in params}
        master = params
    opt = torch.optim.AdamW(master, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses, norms = [], []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        loss = loss_sum(model, tokens, targets)
        loss.backward()
        with torch.no_grad():
            for m, p in zip(master, params):
                m.grad = p.grad.float() / ntok if m is not p else p.grad.div_(ntok)
        losses.append(float(loss.detach()) / ntok)
        norms.append(float(torch.nn.utils.clip_grad_norm_(master, CLIP)))
        opt.step()
        if tuner == "full":
            with torch.no_grad():
                for m, p in zip(master, params):
                    p.copy_(m)
                    m.grad = None
    del opt, master
    return losses, norms


# ---------------------------------------------------------------- one case

def read_metrics(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["loss"] for r in rows], [r["grad_norm"] for r in rows]


def run_case(name, mname, tuner, targets, lr, a, dev, made):
    from safetensors.torch import load_file
    mcfg = MODELS[mname]
    W = os.path.join(a.work, mname)
    folder = os.path.join(W, "model")
    tok = os.path.join(W, "data.tok")
    V = mcfg["config"]["vocab_size"]
    res = {"case": name, "ok": False}
    t = {}
    t0 = time.time()
    if mname not in made:  # one base model and one data file per model
        shutil.rmtree(W, ignore_errors=True)
        os.makedirs(W)
        make_model(folder, mcfg, dev)
        docs, masks, tokens, tgts = make_data(mcfg, V)
        write_tok(tok, docs, masks)
        made[mname] = (tokens, tgts)
    tokens, tgts = made[mname]
    tokens, tgts = tokens.to(dev), tgts.to(dev)
    ntok = int((tgts != IGNORE).sum())
    cw = os.path.join(W, name.split("/")[1])
    shutil.rmtree(cw, ignore_errors=True)
    os.makedirs(cw)
    adir = os.path.join(cw, "adapter")
    if tuner == "lora":
        make_adapter(folder, adir, targets, mcfg["seed"] + 7, dev)
    if dev == "cuda":
        torch.cuda.empty_cache()
    t["make"] = time.time() - t0

    spec, plan = os.path.join(cw, "spec.fbs"), os.path.join(cw, "plan.bin")
    write_spec(spec, folder, tuner, targets, adir, mcfg, lr, a.steps, tok)
    env = dict(os.environ)
    env.setdefault("FTC_CACHE_DIR", os.path.join(a.work, "kernel-cache"))
    t["compile"] = run([os.path.join(a.build, "ftc"), "compile", spec, "-o", plan, "--target", a.target],
                       os.path.join(cw, "compile.log"), env)
    dump = os.path.join(cw, "grads.safetensors")
    t["ftrun"] = run([os.path.join(a.build, "ftrun"), plan, "--device", a.device, "--steps", str(a.steps),
                      "--out", os.path.join(cw, "run"), "--dump-grads", dump, "--quiet"],
                     os.path.join(cw, "ftrun.log"), env)
    ft_losses, ft_norms = read_metrics(os.path.join(cw, "run", "metrics.jsonl"))
    with open(os.path.join(cw, "run", "metrics.jsonl")) as f:
        step_s = sorted(json.loads(line)["step_s"] for line in f if line.strip())
    res["ftc_step_s_median"] = step_s[len(step_s) // 2] if step_s else None

    # ---- PyTorch, bf16: the comparison
    t0 = time.time()
    model = load_torch(folder, tuner, adir, torch.bfloat16, dev)
    th_loss, th_grads = step_grads(model, tokens, tgts)
    t["torch_grads"] = time.time() - t0
    ours = load_file(dump, device=dev)
    ft_loss = float(ours.pop("loss_sum").double().item())
    ft_ntok = int(ours.pop("target_tokens").item())
    res.update(target_tokens=ntok, ft_target_tokens=ft_ntok, loss_sum_ftc=ft_loss, loss_sum_torch=th_loss,
               loss_rel=abs(ft_loss - th_loss) / abs(th_loss))
    missing = sorted(set(th_grads) ^ set(ours))
    res["name_mismatch"] = missing[:10]
    errs = {k: rel(ours[k], g) for k, g in th_grads.items() if k in ours}

    # ---- PyTorch, fp32 (weights upcast from the same bf16 files): the yardstick
    ref = {}
    if not a.no_fp32:
        t0 = time.time()
        del model
        if dev == "cuda":
            torch.cuda.empty_cache()
        m32 = load_torch(folder, tuner, adir, torch.float32, dev)
        f_loss, f_grads = step_grads(m32, tokens, tgts)
        del m32
        for k, g in f_grads.items():
            if k in ours and k in th_grads:
                ref[k] = (rel(ours[k], g), rel(th_grads[k], g))
        res["loss_sum_fp32"] = f_loss
        res["loss_rel_ftc_vs_fp32"] = abs(ft_loss - f_loss) / abs(f_loss)
        res["loss_rel_torch_vs_fp32"] = abs(th_loss - f_loss) / abs(f_loss)
        del f_grads
        t["torch_fp32"] = time.time() - t0
        model = None
    del ours, th_grads
    if dev == "cuda":
        torch.cuda.empty_cache()

    worst = sorted(errs.items(), key=lambda kv: (not math.isnan(kv[1]), 0 if math.isnan(kv[1]) else -kv[1]))
    res["grads"] = len(errs)
    res["grad_rel"] = dict(errs)
    res["grad_rel_worst"] = worst[:5]
    res["grad_rel_max"] = worst[0][1] if errs else math.inf  # NaN first
    res["grad_rel_median"] = sorted(errs.values())[len(errs) // 2] if errs else math.inf
    if ref:
        res["grad_rel_fp32"] = {k: {"ftc": v[0], "torch_bf16": v[1]} for k, v in ref.items()}
        res["grad_rel_fp32_max_ftc"] = max(v[0] for v in ref.values())
        res["grad_rel_fp32_max_torch"] = max(v[1] for v in ref.values())
    res["grad_rel_nan"] = [k for k, v in errs.items() if not v == v]

    # ---- PyTorch, 50 steps
    t0 = time.time()
    if model is None:
        model = load_torch(folder, tuner, adir, torch.bfloat16, dev)
    th_losses, th_norms = train_torch(model, tuner, tokens, tgts, lr, a.steps)
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
    t["torch_train"] = time.time() - t0
    diffs = [abs(x - y) for x, y in zip(ft_losses, th_losses)]
    at = max(range(len(diffs)), key=lambda i: diffs[i]) if diffs else 0
    res.update(curve_ftc=ft_losses, curve_torch=th_losses, gnorm_ftc=ft_norms, gnorm_torch=th_norms,
               curve_max_abs=max(diffs) if diffs and len(ft_losses) == len(th_losses) else math.inf,
               curve_max_at=at + 1, step1_loss_rel=abs(ft_losses[0] - th_losses[0]) / abs(th_losses[0]),
               gnorm1_rel=abs(ft_norms[0] - th_norms[0]) / abs(th_norms[0]), times=t)
    fails = []
    if ft_ntok != ntok:
        fails.append(f"target tokens {ft_ntok} != {ntok}")
    if missing:
        fails.append(f"gradient names differ: {missing[:4]}")
    if not res["loss_rel"] < LOSS_TOL:
        fails.append(f"loss rel {res['loss_rel']:.3g}")
    # A gradient over the tolerance is put down to bf16 noise (and reported so) only when the
    # fp32 yardstick shows ftc no further from it than torch's own bf16 gradient is (x1.25),
    # and within NOISE_CAP of it.
    over = [k for k, v in errs.items() if not v < GRAD_TOL]
    noise = [k for k in over if k in ref and ref[k][0] < NOISE_CAP and ref[k][0] <= NOISE_RATIO * ref[k][1]]
    res["grad_over_tol"] = over
    res["grad_over_tol_bf16_noise"] = noise
    res["strict_ok"] = not over
    if len(noise) < len(over):
        k = [k for k in over if k not in noise][0]
        fails.append(f"grad rel {errs[k]:.3g} ({short(k)})" + (
            f", vs fp32 ftc {ref[k][0]:.3g} torch-bf16 {ref[k][1]:.3g}" if k in ref else ""))
    if not res["curve_max_abs"] <= CURVE_TOL:
        fails.append(f"curve max |diff| {res['curve_max_abs']:.3g} at step {at + 1}")
    res["fails"] = fails
    res["ok"] = not fails
    res["warn"] = []
    if res["curve_max_abs"] > CURVE_WARN:
        res["warn"].append(f"curve max |diff| > {CURVE_WARN}")
    if noise:
        res["warn"].append(f"{len(noise)} grad(s) over {GRAD_TOL} vs torch bf16, put down to bf16 noise "
                           f"(fp32 yardstick): {', '.join(short(k) for k in noise[:4])}")
    return res


def short(k):
    return k.replace("grad:base_model.model.model.layers.", "L").replace("grad:model.layers.", "L") \
        .replace("grad:model.", "").replace("grad:", "").replace(".weight", "").replace("self_attn.", "") \
        .replace("mlp.", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("FTC_GPU_BUILD", os.path.join(ROOT, "build-gpu")))
    ap.add_argument("--work", default=None)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--models", default="tiny,l3-8b-2l")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all of --models)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--target", default=None, help="ftc --target (default: the GPU's sm_XY; cpu with --device cpu)")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 PyTorch yardstick")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    if a.work is None:
        w = os.environ.get("FTC_GPU_WORK")
        a.work = os.path.join(w, "vs-torch") if w else os.path.join(a.build, "vs-torch")
    a.work = os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        log("FAIL  test_vs_torch: --device cuda but torch sees no GPU")
        return 1
    if a.target is None:
        a.target = "sm_%d%d" % torch.cuda.get_device_capability() if dev == "cuda" else "cpu"
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import warnings

    import peft
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "target": a.target,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": a.steps}
    log("test_vs_torch: " + ", ".join(f"{k} {v}" for k, v in env.items()))

    models = a.models.split(",")
    want = set(a.cases.split(",")) if a.cases else None
    cases = [c for c in CASES if c[1] in models and (want is None or c[0] in want)]
    results, made = [], {}
    for c in cases:
        log(f"--- {c[0]}")
        t0 = time.time()
        try:
            r = run_case(*c, a, dev, made)
        except Exception as ex:  # a case that breaks is a failure, the others still run
            import traceback
            traceback.print_exc()
            r = {"case": c[0], "ok": False, "fails": [f"error: {str(ex).splitlines()[0] if str(ex) else type(ex).__name__}"]}
        r["seconds"] = time.time() - t0
        results.append(r)
        if "loss_rel" in r:
            log(f"    loss sum ftc {r['loss_sum_ftc']:.6f} torch {r['loss_sum_torch']:.6f} rel {r['loss_rel']:.2e}"
                + (f" (fp32 {r['loss_sum_fp32']:.6f})" if "loss_sum_fp32" in r else ""))
            for k, v in r["grad_rel_worst"][:3]:
                f32 = r.get("grad_rel_fp32", {}).get(k)
                log(f"    grad {short(k):28s} rel {v:.2e}" +
                    (f"   vs fp32: ftc {f32['ftc']:.2e} torch-bf16 {f32['torch_bf16']:.2e}" if f32 else ""))
            log(f"    curve max |diff| {r['curve_max_abs']:.4f} at step {r['curve_max_at']}; "
                f"final loss ftc {r['curve_ftc'][-1]:.4f} torch {r['curve_torch'][-1]:.4f}; "
                f"grad norm step 1 rel {r['gnorm1_rel']:.2e}; ftrun step {r['ftc_step_s_median']:.3f} s; times " +
                " ".join(f"{k} {v:.1f}s" for k, v in r["times"].items()))
        for w in r.get("warn", []):
            log(f"    warning: {w}")
        log(f"    {'ok' if r['ok'] else 'FAIL: ' + '; '.join(r['fails'])}  ({r['seconds']:.0f} s)")

    log("")
    log(f"{'case':20s} {'loss rel':>9s} {'grad max':>9s} {'grad med':>9s} {'#':>3s} {'max vs fp32':>17s} "
        f"{'curve max':>9s} {'loss first→last ftc':>21s} {'torch':>6s}  result")
    for r in results:
        if "loss_rel" not in r:
            log(f"{r['case']:20s} {'':>9s} {'':>9s} {'':>9s} {'':>3s} {'':>17s} {'':>9s} {'':>15s} {'':>6s}  FAIL")
            continue
        f32 = (f"{r['grad_rel_fp32_max_ftc']:.1e}/{r['grad_rel_fp32_max_torch']:.1e}"
               if "grad_rel_fp32_max_ftc" in r else "-")
        log(f"{r['case']:20s} {r['loss_rel']:9.2e} {r['grad_rel_max']:9.2e} {r['grad_rel_median']:9.2e} "
            f"{r['grads']:3d} {f32:>17s} {r['curve_max_abs']:9.4f} "
            f"{r['curve_ftc'][0]:13.3f}→{r['curve_ftc'][-1]:6.3f} {r['curve_torch'][-1]:6.3f}  "
            f"{'FAIL' if not r['ok'] else 'ok' if r['strict_ok'] else 'ok (bf16 noise)'}"
            f"{' (curve > ' + str(CURVE_WARN) + ')' if r['curve_max_abs'] > CURVE_WARN else ''}")
    log("(loss rel: |ftc - torch| / torch of the summed loss of step 1; grad max/med: normwise rel err per "
        "tensor, ftc vs torch bf16; max vs fp32: the largest normwise rel err of ftc / of torch bf16 against "
        "torch fp32; curve max: max |loss diff| over the steps)")
    nfail = sum(not r["ok"] for r in results)
    log(f"test_vs_torch: {len(results) - nfail} of {len(results)} cases ok")
    out = os.environ.get("OUT") or a.work
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vs_torch.json"), "w") as f:
        json.dump({"env": env, "tolerances": {"loss_rel": LOSS_TOL, "grad_rel": GRAD_TOL, "curve_warn": CURVE_WARN,
                                              "curve_fail": CURVE_TOL}, "results": results}, f, indent=1)
    return 1 if nfail or not results else 0


if __name__ == "__main__":
    sys.exit(main())
