#!/usr/bin/env bash
# test_bad_input.sh — every kind of bad input gives a clear message naming the problem and
# a non-zero exit, never a crash (exit code >= 128) and never a partial output file.
set -u
BIN=${FTC_BIN:-build}
W=$BIN/scratch/bad
rm -rf "$W" && mkdir -p "$W"
pass=0 fail=0

# expect_fail NAME PHRASE CMD...: CMD must exit 1 or 2 and print PHRASE.
expect_fail() {
    local name=$1 phrase=$2
    shift 2
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qF -- "$phrase" <<<"$out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL [$name]: exit $rc, wanted '$phrase', got: $out" >&2
    fi
}

# no_file NAME PATH: the failed command left nothing at PATH
no_file() {
    if ls $2 >/dev/null 2>&1; then
        fail=$((fail + 1)); echo "FAIL [$1]: $2 exists after a failure" >&2
    else
        pass=$((pass + 1))
    fi
}

u64le() { local n=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf %03o $(((n >> (8 * i)) & 255)))"; done; }
# forge_st FILE HEADER_JSON DATA_BYTES: a safetensors file with that header and zeroed data
forge_st() { { u64le ${#2}; printf '%s' "$2"; head -c "$3" /dev/zero; } >"$1"; }

FTC="$BIN/ftc" FTRUN="$BIN/ftrun" FTDATA="$BIN/ftdata"
LORA=models/tiny-llama-lora.fbs FULL=models/tiny-llama-full.fbs

# ---- a good plan, a good base model and a good adapter to derive bad ones from ----
$FTC compile $FULL -o $W/full.bin -s train.steps=1 2>/dev/null || { echo "setup failed"; exit 1; }
$FTRUN $W/full.bin --quiet --out $W/base >/dev/null 2>&1 || { echo "setup failed"; exit 1; }
$FTC compile $LORA -o $W/lora.bin -s train.steps=2 2>/dev/null || { echo "setup failed"; exit 1; }
$FTRUN $W/lora.bin --quiet --out $W/adapter >/dev/null 2>&1 || { echo "setup failed"; exit 1; }

spec() { # spec NAME BODY: write a spec file next to the bundled ones' data path
    printf '%s\n' "$2" >"$W/$1.fbs"
}
GOOD_MODEL='model llama { vocab 258 hidden 64 layers 2 heads 4 kv_heads 2 ffn 172 init random }'
GOOD_DATA="data { train \"$(pwd)/data/tiny.tok\" }"

# ---- specs ----
spec unknown_key "$GOOD_MODEL
train { seq_len 64 foo 1 }
$GOOD_DATA"
expect_fail "spec: unknown key" "unknown key 'foo'" $FTC compile $W/unknown_key.fbs -o $W/out1.bin
no_file "spec: unknown key" $W/out1.bin
spec wrong_type "$GOOD_MODEL
train { lr fast }
$GOOD_DATA"
expect_fail "spec: wrong type" "wrong_type.fbs:2:" $FTC compile $W/wrong_type.fbs -o $W/out1.bin
spec missing_block "$GOOD_MODEL
train { seq_len 64 }"
expect_fail "spec: missing block" "missing block 'data'" $FTC compile $W/missing_block.fbs -o $W/out1.bin
spec unterminated "$GOOD_MODEL
train { seq_len 64 }
data { train \"oops }"
expect_fail "spec: unterminated string" "unterminated" $FTC compile $W/unterminated.fbs -o $W/out1.bin
expect_fail "spec: missing file" "cannot open" $FTC compile $W/nope.fbs -o $W/out1.bin
printf '\x7fELF\x01\x02\x00garbage\xff\xfe' >$W/garbage.fbs
expect_fail "spec: binary garbage" "garbage.fbs:1:" $FTC compile $W/garbage.fbs -o $W/out1.bin
spec kv "model llama { vocab 258 hidden 64 layers 2 heads 4 kv_heads 3 ffn 172 init random }
train { seq_len 64 }
$GOOD_DATA"
expect_fail "spec: kv_heads" "must divide" $FTC compile $W/kv.fbs -o $W/out1.bin
expect_fail "override: unknown key" "unknown key" $FTC compile $LORA -o $W/out1.bin -s train.nope=1
expect_fail "override: bad value" "train.steps" $FTC compile $LORA -o $W/out1.bin -s train.steps=many
expect_fail "override: no equals" "train.steps" $FTC compile $LORA -o $W/out1.bin -s train.steps
expect_fail "quantize not yet supported" "nf4" $FTC compile $LORA -o $W/out1.bin -s quantize.base=nf4
expect_fail "compile: bad target" "target 'gfx90a'" $FTC compile $LORA -o $W/out1.bin --target gfx90a
expect_fail "compile: GPU too old" "target 'sm_75'" $FTC compile $LORA -o $W/out1.bin --target sm_75
expect_fail "compile: bad GPU target" "target 'sm_9x'" $FTC compile $LORA -o $W/out1.bin --target sm_9x
expect_fail "compile: output folder missing" "cannot create" $FTC compile $LORA -o $W/no/such/dir/p.bin
no_file "compile: output folder missing" $W/no/such/dir/p.bin
no_file "compile: nothing written by failures" $W/out1.bin

# ---- HF model folders and safetensors ----
mkdir -p $W/noconfig
expect_fail "model.from: no config.json" "config.json" $FTC compile $LORA -o $W/out2.bin -s model.from=$W/noconfig -s model.init=file
mkdir -p $W/nost && cp $W/base/config.json $W/nost/
$FTC compile $LORA -o $W/nost.bin -s model.from=$W/nost -s model.init=file 2>/dev/null
expect_fail "safetensors: missing" "safetensors" $FTRUN $W/nost.bin --out $W/o_nost
no_file "safetensors: missing" "$W/o_nost/*.safetensors"
mkdir -p $W/trunc && cp $W/base/config.json $W/trunc/
head -c $(($(stat -c %s $W/base/model.safetensors) - 100)) $W/base/model.safetensors >$W/trunc/model.safetensors
$FTC compile $LORA -o $W/trunc.bin -s model.from=$W/trunc -s model.init=file 2>/dev/null
expect_fail "safetensors: truncated" "truncated" $FTRUN $W/trunc.bin --out $W/o_trunc
no_file "safetensors: truncated" "$W/o_trunc/*.safetensors"
mkdir -p $W/overlap && cp $W/base/config.json $W/overlap/
forge_st $W/overlap/model.safetensors '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}' 24
$FTC compile $LORA -o $W/overlap.bin -s model.from=$W/overlap -s model.init=file 2>/dev/null
expect_fail "safetensors: overlapping" "overlap" $FTRUN $W/overlap.bin --out $W/o_overlap
mkdir -p $W/badjson && cp $W/base/config.json $W/badjson/
forge_st $W/badjson/model.safetensors '{"a":{"dtype":"F32","shape":[4],' 16
$FTC compile $LORA -o $W/badjson.bin -s model.from=$W/badjson -s model.init=file 2>/dev/null
expect_fail "safetensors: bad header JSON" "model.safetensors" $FTRUN $W/badjson.bin --out $W/o_badjson
mkdir -p $W/shape && cp $W/base/model.safetensors $W/shape/
sed 's/"intermediate_size": 172/"intermediate_size": 160/' $W/base/config.json >$W/shape/config.json
$FTC compile $LORA -o $W/shape.bin -s model.from=$W/shape -s model.init=file 2>/dev/null
expect_fail "safetensors: shape mismatch" "has shape [172,64] but the config needs [160,64]" $FTRUN $W/shape.bin --out $W/o_shape
no_file "safetensors: shape mismatch" "$W/o_shape/*.safetensors"
mkdir -p $W/dtype && cp $W/base/config.json $W/dtype/
forge_st $W/dtype/model.safetensors '{"model.embed_tokens.weight":{"dtype":"I32","shape":[258,64],"data_offsets":[0,66048]}}' 66048
$FTC compile $LORA -o $W/dtype.bin -s model.from=$W/dtype -s model.init=file 2>/dev/null
expect_fail "safetensors: dtype mismatch" "has dtype I32" $FTRUN $W/dtype.bin --out $W/o_dtype
mkdir -p $W/missing && cp $W/base/config.json $W/missing/
forge_st $W/missing/model.safetensors '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' 4
$FTC compile $LORA -o $W/missing.bin -s model.from=$W/missing -s model.init=file 2>/dev/null
expect_fail "safetensors: tensor missing" "no tensor 'model.embed_tokens.weight'" $FTRUN $W/missing.bin --out $W/o_missing

# ---- adapters ----
$FTC compile $LORA -o $W/noadapter.bin -s tuner.init=$W/nowhere 2>/dev/null
expect_fail "adapter: folder missing" "adapter_model.safetensors" $FTRUN $W/noadapter.bin --out $W/o_noad
$FTC compile $LORA -o $W/rank4.bin -s tuner.rank=4 -s tuner.init=$W/adapter 2>/dev/null
expect_fail "adapter: rank mismatch" "but the config needs [4,64]" $FTRUN $W/rank4.bin --out $W/o_rank4

# ---- plan.bin ----
cp $W/lora.bin $W/badmagic.bin && printf 'XXXX' | dd of=$W/badmagic.bin conv=notrunc 2>/dev/null
expect_fail "plan: bad magic" "bad magic" $FTRUN $W/badmagic.bin --out $W/o_p1
head -c 1000 $W/lora.bin >$W/trunc_plan.bin
expect_fail "plan: truncated" "truncated" $FTRUN $W/trunc_plan.bin --out $W/o_p2
cp $W/lora.bin $W/flip.bin && printf '\x55' | dd of=$W/flip.bin bs=1 seek=5000 conv=notrunc 2>/dev/null
expect_fail "plan: corrupt byte" "checksum" $FTRUN $W/flip.bin --out $W/o_p3
expect_fail "plan: missing" "cannot open" $FTRUN $W/nope.bin --out $W/o_p4
expect_fail "plan: a spec given as plan" "bad magic" $FTC inspect $LORA
: >$W/empty.bin
expect_fail "plan: empty" "too short for the header" $FTRUN $W/empty.bin --out $W/o_p5
no_file "plan: nothing trained" "$W/o_p*/*"

# ---- token data ----
: >$W/empty.tok
expect_fail "data: empty file" "empty" $FTRUN $W/lora.bin --data $W/empty.tok --out $W/o_d1
cp data/tiny.tok $W/corrupt.tok && printf '\x01' | dd of=$W/corrupt.tok bs=1 seek=4000 conv=notrunc 2>/dev/null
expect_fail "data: corrupt" "checksum" $FTRUN $W/lora.bin --data $W/corrupt.tok --out $W/o_d2
head -c 3000 data/tiny.tok >$W/short.tok
expect_fail "data: truncated" "truncated" $FTRUN $W/lora.bin --data $W/short.tok --out $W/o_d3
expect_fail "data: missing" "cannot open" $FTRUN $W/lora.bin --data $W/none.tok --out $W/o_d4
$FTC compile $LORA -o $W/v200.bin -s model.vocab=200 2>/dev/null
expect_fail "data: vocabulary too large" "vocabulary has 200" $FTRUN $W/v200.bin --out $W/o_d5
printf 'hi\n' >$W/tiny.txt && $FTDATA $W/tiny.txt -o $W/tiny.tok >/dev/null
expect_fail "data: shorter than a row" "fewer than" $FTRUN $W/lora.bin --data $W/tiny.tok --out $W/o_d6
no_file "data: nothing trained" "$W/o_d*/*.safetensors"
printf '{"text": "fine"}\n{"text": broken\n' >$W/bad.jsonl
expect_fail "ftdata: bad JSON line" "bad.jsonl:2" $FTDATA $W/bad.jsonl -o $W/bad.tok
no_file "ftdata: bad JSON line" $W/bad.tok
printf '{"prompt": "only a prompt"}\n' >$W/noc.jsonl
expect_fail "ftdata: missing fields" "noc.jsonl:1" $FTDATA $W/noc.jsonl -o $W/noc.tok
: >$W/empty.txt
expect_fail "ftdata: empty input" "empty" $FTDATA $W/empty.txt -o $W/empty2.tok

# ---- resume and flags ----
mkdir -p $W/nockpt
expect_fail "resume: no checkpoint" "checkpoint.safetensors" $FTRUN $W/lora.bin --resume $W/nockpt --out $W/o_r1
$FTC compile $LORA -o $W/rank16.bin -s tuner.rank=16 2>/dev/null
expect_fail "resume: another plan's checkpoint" "different" $FTRUN $W/rank16.bin --resume $W/adapter --out $W/o_r2
expect_fail "resume: already finished" "not before the last step" $FTRUN $W/lora.bin --resume $W/adapter --out $W/o_r3
expect_fail "ftrun: unknown flag" "unexpected argument '--fast'" $FTRUN $W/lora.bin --fast
expect_fail "ftrun: bad step count" "--steps needs a positive" $FTRUN $W/lora.bin --steps -3
expect_fail "ftrun: bad device" "--device must be" $FTRUN $W/lora.bin --device tpu
expect_fail "ftrun: cuda without a GPU" "--device cuda" $FTRUN $W/lora.bin --device cuda
expect_fail "ftc: unknown command" "unknown command" $FTC build $LORA

# ---- the NaN/Inf guard names the step and the op ----
$FTC compile $FULL -o $W/diverge.bin -s train.lr=1e30 -s train.grad_clip=0 -s train.warmup=0 2>/dev/null
expect_fail "training diverges" "step 2: the loss is not finite; the first NaN/Inf comes from 'model.layers.0.self_attn.q_proj' (matmul)" \
    $FTRUN $W/diverge.bin --out $W/o_div
no_file "training diverges" "$W/o_div/*.safetensors"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
