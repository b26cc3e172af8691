#!/usr/bin/env python3
"""make_hf_fixture.py — the HF transformers oracle for tests/test_hf_oracle.c.

Builds two tiny LlamaForCausalLM models in float32 with fixed random weights, runs one fixed
batch through each (full fine-tuning and LoRA via PEFT), and stores the inputs, the summed
loss and every gradient as safetensors, so that the C test checks our Llama graph against
transformers without needing Python in CI.

Regenerate (from the repo root, on a machine with the packages below; CPU only):

    pip install torch transformers safetensors peft      # plain PyPI wheels
    python3 tests/oracle/make_hf_fixture.py              # rewrites tests/fixtures/hf-oracle/

Generated with (also written to tests/fixtures/hf-oracle/VERSIONS.txt):
    python 3.11.7, torch 2.15.0+cu132 (run on CPU), transformers 5.23.0, peft 0.21.2,
    safetensors 0.8.0, numpy 2.4.6

Output, one folder per config under tests/fixtures/hf-oracle/:
    base/    vocab 258, hidden 64, 2 layers, 4 heads, 2 kv heads (GQA), ffn 172, rope_theta 1e4,
             untied LM head
    llama3/  the same sizes with llama3 rope scaling (factor 8, low 1, high 4, original 32,
             rope_theta 5e5) and tied embeddings
each holding
    config.json               HF config. Written in the classic layout (top-level rope_theta and
                              rope_scaling), which is what hub checkpoints carry and what every
                              transformers version reads; the oracle is computed from the model
                              re-loaded from this very file.
    config.v5-native.json     the same config as transformers 5 writes it (rope_parameters), kept
                              for reference only: nothing reads it.
    model.safetensors         the weights, HF names (model.layers.0.self_attn.q_proj.weight, ...)
    adapter/                  PEFT LoRA adapter (r 4, alpha 8, q k v o gate up down, no dropout),
                              adapter_model.safetensors + adapter_config.json, A and B random
    oracle.safetensors
        tokens   I32 [2,16]   token ids
        targets  I32 [2,16]   target of each position (the next token), -100 = ignored
        loss_sum F32 [1]      sum over non-ignored positions of the cross-entropy (float32)
        loss_sum_f64 F64 [1]  the same, from the float32 logits summed in float64
        grad:<hf name> F32    d loss_sum / d weight, every parameter (full fine-tuning)
        lora_loss_sum F32 [1], lora_loss_sum_f64 F64 [1]
        lora_grad:<peft key> F32   d lora_loss_sum / d adapter weight, base frozen
Positions are 0..15 in every row and there is no packing (one document per row).
"""
import copy
import json
import os
import shutil
import sys

import numpy
import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "hf-oracle"))

B, S = 2, 16
IGNORE = -100
LORA_R, LORA_ALPHA = 4, 8
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

COMMON = dict(
    vocab_size=258,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=172,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
)

CONFIGS = {
    "base": dict(rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=False, seed=1234),
    "llama3": dict(
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        tie_word_embeddings=True,
        seed=5678,
    ),
}


def versions():
    return (
        f"python {sys.version.split()[0]}\n"
        f"torch {torch.__version__} (CPU)\n"
        f"transformers {transformers.__version__}\n"
        f"peft {peft.__version__}\n"
        f"safetensors {safetensors.__version__}\n"
        f"numpy {numpy.__version__}\n"
    )


def make_config(spec):
    cfg = LlamaConfig(
        **COMMON,
        rope_theta=spec["rope_theta"],
        rope_scaling=copy.deepcopy(spec["rope_scaling"]),  # transformers edits the dict it is given
        tie_word_embeddings=spec["tie_word_embeddings"],
    )
    cfg._attn_implementation = "eager"
    return cfg


def classic_config_json(native, spec):
    """transformers 5 folds rope_theta and rope_scaling into rope_parameters; write the classic
    keys instead (hub checkpoints use them, and transformers 4 and 5 both read them)."""
    d = dict(native)
    d.pop("rope_parameters", None)
    d["rope_theta"] = spec["rope_theta"]
    d["rope_scaling"] = copy.deepcopy(spec["rope_scaling"])
    d["torch_dtype"] = "float32"
    return d


def reinit(model, seed):
    """Weights large enough that every part of the model matters: normal(0, 0.1), norms
    1 + 0.1 * normal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * r)
            else:
                p.copy_(0.1 * r)


def make_batch(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (B, S), generator=g, dtype=torch.int64)
    targets = torch.full((B, S), IGNORE, dtype=torch.int64)
    targets[:, :-1] = tokens[:, 1:]
    # a few ignored positions besides the last one of each row
    targets[0, 3] = IGNORE
    targets[0, 9] = IGNORE
    targets[1, 0] = IGNORE
    targets[1, 7] = IGNORE
    targets[1, 8] = IGNORE
    return tokens, targets


def loss_of(model, tokens, targets):
    """Float32 forward with explicit positions 0..S-1 and the causal mask only; returns the
    float32 loss sum (to differentiate) and the float64 sum of the same float32 logits."""
    pos = torch.arange(S, dtype=torch.int64).unsqueeze(0).expand(B, S)
    logits = model(input_ids=tokens, position_ids=pos, use_cache=False).logits
    assert logits.dtype == torch.float32
    flat, tgt = logits.reshape(B * S, -1), targets.reshape(B * S)
    loss = torch.nn.functional.cross_entropy(flat, tgt, ignore_index=IGNORE, reduction="sum")
    keep = tgt != IGNORE
    lp = torch.log_softmax(flat.detach().double(), dim=-1)
    loss64 = -lp[keep].gather(1, tgt[keep].unsqueeze(1)).sum()
    return loss, loss64


def check_keys(path, want, tied):
    keys = set(load_file(path).keys())
    assert "model.layers.0.self_attn.q_proj.weight" in keys, sorted(keys)[:5]
    assert "model.embed_tokens.weight" in keys
    assert ("lm_head.weight" in keys) == (not tied), "lm_head.weight presence must follow tying"
    assert keys == set(want), sorted(keys ^ set(want))


def build_one(name, spec):
    folder = os.path.join(OUT, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    tied = spec["tie_word_embeddings"]

    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(make_config(spec)).float()
    reinit(model, spec["seed"])
    model.save_pretrained(folder, safe_serialization=True)

    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        native = json.load(f)
    with open(os.path.join(folder, "config.v5-native.json"), "w") as f:
        json.dump(native, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(cfg_path, "w") as f:
        json.dump(classic_config_json(native, spec), f, indent=2, sort_keys=True)
        f.write("\n")
    for extra in ("generation_config.json",):
        p = os.path.join(folder, extra)
        if os.path.exists(p):
            os.remove(p)

    # the oracle comes from the model as transformers reads it back from these files
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.train()  # dropout is 0 in the config; train() only so that nothing is cached
    rp = model.config.rope_parameters
    assert rp["rope_theta"] == spec["rope_theta"], rp
    if spec["rope_scaling"]:
        for k, v in spec["rope_scaling"].items():
            assert rp[k] == v, (k, rp)
    else:
        assert rp["rope_type"] == "default", rp
    assert model.config.tie_word_embeddings == tied
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    params = dict(model.named_parameters())  # tied: lm_head.weight is not listed
    check_keys(os.path.join(folder, "model.safetensors"), params.keys(), tied)

    tokens, targets = make_batch(spec["seed"] + 1, COMMON["vocab_size"])
    out = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
    }

    # ---- full fine-tuning: every parameter trainable
    model.zero_grad(set_to_none=True)
    loss, loss64 = loss_of(model, tokens, targets)
    loss.backward()
    out["loss_sum"] = loss.detach().reshape(1).float()
    out["loss_sum_f64"] = loss64.reshape(1).double()
    for pname, p in params.items():
        assert p.grad is not None and p.grad.dtype == torch.float32, pname
        out["grad:" + pname] = p.grad.detach().clone().contiguous()
    print(f"{name}: loss_sum {loss.item():.9g} (f64 {loss64.item():.17g}) over "
          f"{int((targets != IGNORE).sum())} targets, {len(params)} grads")

    # ---- LoRA on the same base, via PEFT, A and B random so both get gradients
    base = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    lcfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(base, lcfg)
    g = torch.Generator().manual_seed(spec["seed"] + 2)
    with torch.no_grad():
        for pname, p in sorted(pm.named_parameters()):
            if "lora_" in pname:
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))
    pm.train()
    adir = os.path.join(folder, "adapter")
    pm.save_pretrained(adir, safe_serialization=True)
    for extra in os.listdir(adir):
        if extra not in ("adapter_model.safetensors", "adapter_config.json"):
            p = os.path.join(adir, extra)
            (shutil.rmtree if os.path.isdir(p) else os.remove)(p)
    acfg_path = os.path.join(adir, "adapter_config.json")
    with open(acfg_path) as f:
        acfg = json.load(f)
    acfg["base_model_name_or_path"] = ".."  # the model folder, not this machine's path
    acfg["target_modules"] = sorted(acfg["target_modules"])  # a set: order varies run to run
    with open(acfg_path, "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")
    saved = load_file(os.path.join(adir, "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in saved, sorted(saved)[:4]
    assert len(saved) == 2 * len(LORA_TARGETS) * COMMON["num_hidden_layers"], len(saved)

    pm.zero_grad(set_to_none=True)
    lloss, lloss64 = loss_of(pm, tokens, targets)
    lloss.backward()
    out["lora_loss_sum"] = lloss.detach().reshape(1).float()
    out["lora_loss_sum_f64"] = lloss64.reshape(1).double()
    grads = {}
    for pname, p in pm.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, pname
            continue
        assert ".lora_A.default.weight" in pname or ".lora_B.default.weight" in pname, pname
        key = pname.replace(".default.weight", ".weight")
        grads[key] = p.grad.detach().clone().contiguous()
    # the grads' keys are exactly the adapter file's keys, which are PEFT's own naming
    assert set(grads) == set(saved) == set(get_peft_model_state_dict(pm)), sorted(set(grads) ^ set(saved))
    for key in sorted(grads):
        assert torch.equal(saved[key], dict(pm.named_parameters())[key.replace(".weight", ".default.weight")]
                           .detach()), key
        out["lora_grad:" + key] = grads[key]
    print(f"{name}: lora_loss_sum {lloss.item():.9g}, {len(grads)} adapter grads")

    save_file(out, os.path.join(folder, "oracle.safetensors"),
              # one key: safetensors writes a map's keys in hash order, so several would
              # make the file differ from run to run
              metadata={"generator": f"tests/oracle/make_hf_fixture.py; transformers {transformers.__version__}, "
                                     f"torch {torch.__version__}, peft {peft.__version__}"})


def main():
    torch.set_num_threads(1)  # a fixed summation order on this machine
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    for name, spec in CONFIGS.items():
        build_one(name, spec)
    with open(os.path.join(OUT, "VERSIONS.txt"), "w") as f:
        f.write("Generated by tests/oracle/make_hf_fixture.py with:\n" + versions())
    total = 0
    for root, _, files in os.walk(OUT):
        for x in files:
            os.chmod(os.path.join(root, x), 0o644)
            total += os.path.getsize(os.path.join(root, x))
    print(f"wrote {OUT}: {total} bytes")
    print(versions(), end="")


if __name__ == "__main__":
    main()
