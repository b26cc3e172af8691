#!/usr/bin/env bash
# test_dump_grads.sh — `ftrun --dump-grads FILE`: after the first step's micro-batches the
# file holds exactly one grad:<weight> F32 tensor per trainable weight (the LoRA adapter's
# weights for a LoRA plan, every model weight for full fine-tuning), plus loss_sum (F64)
# and target_tokens (I64) that agree with the step-1 loss of metrics.jsonl; the training
# itself is unchanged (same losses, bit for bit, as a run without the dump); a file that
# cannot be written stops the run with a message.
set -u
BIN=${FTC_BIN:-build}
W=$BIN/scratch/dump_grads
rm -rf "$W" && mkdir -p "$W"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# st_value FILE NAME TYPE: the first element of tensor NAME, read as od type TYPE (f8, d8)
st_value() {
    local n hdr b
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    hdr=$(tail -c +9 "$1" | head -c "$n")
    b=$(sed -n "s/.*\"$2\":{\"data_offsets\":\[\([0-9]*\),.*/\1/p" <<<"$hdr")
    [ -n "$b" ] || return 1
    od -An -t "$3" -j $((8 + n + b)) -N 8 "$1" | tr -d ' '
}

# grads FILE: the tensor names starting grad:, with the prefix cut, sorted
grads() { "$BIN/ftc" inspect "$1" | awk '$1 ~ /^grad:/ { print substr($1, 6) }' | sort; }
# names FILE: every tensor name, sorted
names() { "$BIN/ftc" inspect "$1" | awk '{ print $1 }' | sort; }

for kind in lora full; do
    spec=models/tiny-llama-$kind.fbs
    plan=$W/$kind.bin
    if ! "$BIN/ftc" compile "$spec" -o "$plan" >"$W/compile-$kind.log" 2>&1; then
        bad "$kind: compile: $(tail -1 "$W/compile-$kind.log")"
        continue
    fi
    dump=$W/$kind-grads.safetensors
    if ! "$BIN/ftrun" "$plan" --device cpu --steps 2 --quiet --out "$W/$kind-dump" --dump-grads "$dump" \
        >"$W/run-$kind.log" 2>&1; then
        bad "$kind: ftrun --dump-grads: $(tail -1 "$W/run-$kind.log")"
        continue
    fi
    grep -q "gradients of step 1 written to $dump" "$W/run-$kind.log" && ok || bad "$kind: no notice of the dump"
    # the trainable weights, named by what the run exports: the adapter (LoRA) or the model (full)
    if [ $kind = lora ]; then export_file=$W/$kind-dump/adapter_model.safetensors; else export_file=$W/$kind-dump/model.safetensors; fi
    want=$(names "$export_file")
    got=$(grads "$dump")
    if [ -n "$want" ] && [ "$want" = "$got" ]; then ok; else
        bad "$kind: grad:* tensors differ from the trained weights: $(diff <(echo "$want") <(echo "$got") | head -5)"
    fi
    nw=$(wc -l <<<"$want")
    [ $kind = lora ] && { [ "$nw" = 28 ] && ok || bad "lora: $nw adapter weights, want 28 (2 layers x 7 modules x A, B)"; }
    # every tensor is F32 except the two scalars, and nothing else is in the file
    others=$("$BIN/ftc" inspect "$dump" | awk '$1 !~ /^grad:/ { print $1, $2, $3 }' | sort | tr '\n' ';')
    [ "$others" = "loss_sum F64 [1];target_tokens I64 [1];" ] && ok || bad "$kind: other tensors: '$others'"
    nonf32=$("$BIN/ftc" inspect "$dump" | awk '$1 ~ /^grad:/ && $2 != "F32"' | wc -l)
    [ "$nonf32" = 0 ] && ok || bad "$kind: $nonf32 grad tensors are not F32"
    # each grad has its weight's shape
    shapes_w=$("$BIN/ftc" inspect "$export_file" | awk '{ print $1, $3 }' | sort)
    shapes_g=$("$BIN/ftc" inspect "$dump" | awk '$1 ~ /^grad:/ { print substr($1, 6), $3 }' | sort)
    [ "$shapes_w" = "$shapes_g" ] && ok || bad "$kind: gradient shapes differ from the weights'"
    # loss_sum / target_tokens is the step-1 loss of metrics.jsonl
    ls=$(st_value "$dump" loss_sum f8) nt=$(st_value "$dump" target_tokens d8)
    l1=$(head -1 "$W/$kind-dump/metrics.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
    t1=$(head -1 "$W/$kind-dump/metrics.jsonl" | sed 's/.*"target_tokens": \([^,]*\),.*/\1/')
    if awk -v s="$ls" -v n="$nt" -v l="$l1" -v t="$t1" \
        'BEGIN { d = s / n - l; if (d < 0) d = -d; exit !(n == t && n > 0 && d <= 1e-12 * (l < 0 ? -l : l)) }'; then
        ok
    else
        bad "$kind: loss_sum $ls / target_tokens $nt is not the step-1 loss $l1 over $t1 tokens"
    fi
    # the same run without the dump: the same losses, bit for bit
    if "$BIN/ftrun" "$plan" --device cpu --steps 2 --quiet --out "$W/$kind-plain" >"$W/plain-$kind.log" 2>&1 &&
        cmp -s <(grep -o '"loss": [^,]*' "$W/$kind-dump/metrics.jsonl") <(grep -o '"loss": [^,]*' "$W/$kind-plain/metrics.jsonl") &&
        cmp -s "$W/$kind-dump/checkpoint.safetensors" "$W/$kind-plain/checkpoint.safetensors"; then
        ok
    else
        bad "$kind: a run with --dump-grads trains differently from one without"
    fi
done

# a LoRA dump from a fresh adapter (B = 0): the A gradients are zero, the B gradients not;
# checked on one pair through the file's bytes
dump=$W/lora-grads.safetensors
if [ -f "$dump" ]; then
    n=$(od -An -t u8 -N 8 "$dump" | tr -d ' ')
    hdr=$(tail -c +9 "$dump" | head -c "$n")
    range() { sed -n "s/.*\"grad:base_model.model.model.layers.0.self_attn.q_proj.$1.weight\":{\"data_offsets\":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p" <<<"$hdr"; }
    nz() { # count of non-zero 32-bit words in [b, e) of the data
        od -An -t x4 -v -j $((8 + n + $1)) -N $(($2 - $1)) "$dump" | tr -s ' ' '\n' | grep -cv '^\(00000000\|80000000\|\)$'
    }
    read -r ab ae <<<"$(range lora_A)"
    read -r bb be <<<"$(range lora_B)"
    if [ -n "$ab" ] && [ -n "$bb" ] && [ "$(nz "$ab" "$ae")" = 0 ] && [ "$(nz "$bb" "$be")" -gt 0 ]; then ok; else
        bad "lora: fresh adapter: want zero lora_A and non-zero lora_B gradients (A [$ab,$ae) B [$bb,$be))"
    fi
fi

# an unwritable path stops the run with a message naming it
if [ -f "$W/lora.bin" ]; then
    out=$("$BIN/ftrun" "$W/lora.bin" --device cpu --steps 1 --quiet --out "$W/nodir" --dump-grads "$W/no/such/dir/g.safetensors" 2>&1)
    rc=$?
    if [ $rc = 1 ] && grep -q "no/such/dir" <<<"$out"; then ok; else bad "unwritable dump path: exit $rc: $out"; fi
fi
out=$("$BIN/ftrun" "$W/lora.bin" --dump-grads 2>&1)
rc=$?
[ $rc = 2 ] && ok || bad "--dump-grads without a file: exit $rc, want 2"

echo "test_dump_grads: $pass passed, $fail failed"
[ $fail = 0 ]
