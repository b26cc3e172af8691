#!/usr/bin/env python3
"""hf_peft.py — the HF transformers + PEFT side of the benchmark: one workload, one process.

Run by bench/bench.py (bench/run.sh), which gives every system its own process, a timeout
and the same workload (bench/common.py). The recipe is the one HF users run:

  - LlamaForCausalLM from a LlamaConfig, random init built directly on the device in bf16
    (no fp32 copy, no CPU init), attn_implementation="sdpa", use_cache False, gradient
    checkpointing on with use_reentrant=False;
  - LoRA: PEFT's LoraConfig (r 8, alpha 16, dropout 0, bias none) over the bf16 base; PEFT
    keeps the adapter weights in fp32 (its default autocast_adapter_dtype) and computes
    the LoRA branch in fp32;
  - full fine-tuning: plain bf16 (bf16 weights, gradients and AdamW moments; no fp32
    master copy, no autocast);
  - loss: the model's own causal-LM loss with labels = input_ids (S-1 targets per row);
  - torch.optim.AdamW(fused=True) over the trainable parameters, constant lr, weight decay
    0, betas 0.9/0.999, eps 1e-8; clip_grad_norm_ to 1.0; zero_grad(set_to_none=True).

Random token ids (seeded), a new batch each step. `--warmup` steps (default 2) run first;
then `--steps` steps are timed one by one between torch.cuda.synchronize() calls. Peak
memory is torch.cuda.max_memory_reserved() over warmup and timed steps (the statistics are
reset after the model is built); max_memory_allocated() is recorded too.

Writes one JSON object to --result (status "ok" or "failed: reason") and exits 0 on
success, 3 on CUDA out of memory, 1 on any other failure.

usage: python3 bench/hf_peft.py --workload NAME --result FILE [--steps 5] [--warmup 2]
           [--device cuda|cpu] [--seed 0]
"""
import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def log(*a):
    print(*a, flush=True)


def llama_config(wl):
    from transformers import LlamaConfig
    m = wl["model"]
    rope = {"rope_type": "default", "rope_theta": m["rope_theta"]}
    if m["rope_scaling"]:
        rope = {"rope_type": "llama3", "rope_theta": m["rope_theta"], **m["rope_scaling"]}
    cfg = LlamaConfig(vocab_size=m["vocab"], hidden_size=m["hidden"], num_hidden_layers=m["layers"],
                      num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"],
                      head_dim=common.head_dim(m), intermediate_size=m["ffn"],
                      max_position_embeddings=m["max_seq"], rms_norm_eps=m["norm_eps"],
                      rope_parameters=rope, tie_word_embeddings=m["tie"], hidden_act="silu",
                      attention_bias=False, mlp_bias=False, use_cache=False)
    got = getattr(cfg, "rope_parameters", None) or {}
    for k, v in rope.items():  # transformers 5 spells RoPE this way; refuse a silent default
        if got.get(k) != v:
            raise RuntimeError(f"LlamaConfig did not take rope parameter {k}={v} (has {got})")
    return cfg


def build_model(wl, dev):
    import torch
    from transformers import LlamaForCausalLM
    cfg = llama_config(wl)
    t0 = time.perf_counter()
    with torch.device(dev):
        try:
            model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:  # an older _from_config: build under the default dtype instead
            cfg._attn_implementation = "sdpa"
            old = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)
            try:
                model = LlamaForCausalLM(cfg)
            finally:
                torch.set_default_dtype(old)
    model.config.use_cache = False
    impl = getattr(model.config, "_attn_implementation", "?")
    if impl != "sdpa":
        raise RuntimeError(f"attention implementation is {impl}, not sdpa")
    bad = {str(p.dtype) for p in model.parameters() if p.dtype != torch.bfloat16}
    if bad:
        raise RuntimeError(f"model parameters in {bad}, expected bf16")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not getattr(model, "is_gradient_checkpointing", False):
        raise RuntimeError("gradient checkpointing did not turn on")
    if wl["tuner"] == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=common.LORA_R, lora_alpha=common.LORA_ALPHA, lora_dropout=0.0,
                                                 target_modules=list(wl["targets"]), bias="none",
                                                 task_type="CAUSAL_LM"))
    model.train()
    return model, time.perf_counter() - t0


def run(args, res):
    import torch
    import transformers
    wl = common.WORKLOADS[args.workload]
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    res.update(torch=torch.__version__, transformers=transformers.__version__)
    try:
        import peft
        res["peft"] = peft.__version__
    except ImportError:
        if wl["tuner"] == "lora":
            raise
    torch.manual_seed(args.seed)
    model, build_s = build_model(wl, dev)
    res["build_s"] = round(build_s, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    res["trainable_params"] = sum(p.numel() for p in params)
    res["total_params"] = sum(p.numel() for p in model.parameters())
    res["trainable_dtype"] = str(params[0].dtype).replace("torch.", "")
    opt = torch.optim.AdamW(params, lr=wl["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            fused=cuda)
    adamw = "fused AdamW" if cuda else "AdamW (not fused: CPU)"
    if wl["tuner"] == "lora":
        res["precision"] = ("bf16 base, PEFT LoRA weights and AdamW state in %s, sdpa, gradient checkpointing, %s"
                            % (res["trainable_dtype"], adamw))
    else:
        res["precision"] = ("pure bf16: bf16 weights, gradients and AdamW state (no fp32 master), sdpa, "
                            "gradient checkpointing, " + adamw)
    log(f"hf-peft {args.workload}: {res['trainable_params']:,} trainable of {res['total_params']:,} parameters, "
        f"{res['precision']}; built in {build_s:.1f} s")

    B, S, V = wl["batch"], wl["seq"], wl["model"]["vocab"]
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    nsteps = args.warmup + args.steps
    batches = [torch.randint(0, V, (B, S), generator=g, device=dev) for _ in range(nsteps)]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times, losses = [], []
    for step in range(nsteps):
        sync()
        t0 = time.perf_counter()
        ids = batches[step]
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, common.GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        lv, gv = float(loss.detach().float()), float(gnorm)
        losses.append(lv)
        if step >= args.warmup:
            times.append(dt)
        mem = f" | reserved {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB" if cuda else ""
        log(f"step {step + 1}/{nsteps}{' (warmup)' if step < args.warmup else ''} | loss {lv:.4f} | "
            f"grad norm {gv:.3f} | {dt:.3f} s | {B * S / dt:.0f} tok/s{mem}")
    sps = sum(times) / len(times)
    res.update(status="ok", sec_per_step=sps, tokens_per_s=B * S / sps, step_times=[round(t, 4) for t in times],
               loss_first=losses[0], loss_last=losses[-1])
    if cuda:
        res["peak_gib"] = torch.cuda.max_memory_reserved() / 2**30
        res["max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", required=True, choices=sorted(common.WORKLOADS))
    ap.add_argument("--result", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be at least 1 and --warmup at least 0")
    res = {"system": "hf-peft", "workload": args.workload, "status": "failed: did not finish"}
    rc = 1
    try:
        rc = run(args, res)
    except Exception as ex:  # noqa: BLE001 — every failure becomes a row of the table
        import torch
        oom = isinstance(ex, torch.cuda.OutOfMemoryError) or "out of memory" in str(ex).lower()
        first = (str(ex).strip().splitlines() or [""])[0][:300]
        res["status"] = ("failed: CUDA out of memory: " if oom else f"failed: {type(ex).__name__}: ") + first
        traceback.print_exc()
        rc = 3 if oom else 1
    with open(args.result, "w") as f:
        json.dump(res, f)
    log(f"hf-peft {args.workload}: {res['status']}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
