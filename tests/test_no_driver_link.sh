#!/usr/bin/env bash
# test_no_driver_link.sh — ftc and ftrun must start on a machine with no NVIDIA driver:
# neither may have libcuda among its needed libraries (the CUDA runtime reaches the driver
# at run time), and both must run here, where there is no driver.
set -u
BIN=${FTC_BIN:-build}
pass=0 fail=0
for prog in ftc ftrun ftdata; do
    if readelf -d "$BIN/$prog" | grep -q 'NEEDED.*libcuda\.so'; then
        fail=$((fail + 1)); echo "FAIL: $prog links libcuda" >&2
    else
        pass=$((pass + 1))
    fi
    if "$BIN/$prog" --help >/dev/null 2>&1; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL: $prog --help did not run" >&2
    fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
