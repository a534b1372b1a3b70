#!/usr/bin/env bash
# ARM Linux: cross-builds the runtime for aarch64 and armv7 with Debian's cross gcc
# and runs its tests under qemu-user (targets and runners: .cargo/config.toml).
#
# Idempotent; run as root on Debian from the repository root:
#   bash .ci/arm.sh                      # both targets, tests under qemu
#   bash .ci/arm.sh aarch64-unknown-linux-gnu
#   OUTPOST_ARM_CHECK_ONLY=armv7-unknown-linux-gnueabihf bash .ci/arm.sh
#                                        # what CI runs (see below)
#
# What runs under qemu: every unit test of the runtime (the kernels against their
# naive definitions: the NEON INT8 products, depthwise rows, the INT8 rewrites
# against tract), the package format and tamper tests, and the end-to-end
# classification reference test on a real model (EfficientNet-Lite0 logits and
# top-5 on four photos, with the x86-64 tolerances). Everything compiles with
# warnings as errors; clippy runs on x86-64 only (a clippy pass per target is a
# second full dependency build).
#
# CI's 90 minutes hold one emulated target: aarch64 (Jetson, RK3588, Raspberry Pi
# 4/5) runs its tests; armv7, named in OUTPOST_ARM_CHECK_ONLY, is compiled (every
# test target, warnings as errors) but not run: its build alone takes 9 minutes
# here, and on this kind of host 5 of its lib tests panic under qemu-arm for a
# reason no armv7 board has. The `gemm` crate (0.19) sizes its cache blocks from
# /sys, which qemu-user shows from the host: 480 MiB of L3 times its ways
# overflows a 32-bit usize (gemm-common's cache.rs, debug builds panic, release
# builds wrap). A Raspberry Pi 3 or RV1126 has no L3 of that size.
# Left to x86-64 everywhere: the YOLOv8 reference tests (four minutes emulated),
# the ImageNet sample and the 13-image box test (tens of minutes).
set -euo pipefail

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
    echo "arm: installing ${need[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

for target in "${targets[@]}"; do
    rustup target add "$target" >/dev/null 2>&1
    if [[ " ${OUTPOST_ARM_CHECK_ONLY:-} " == *" $target "* ]]; then
        echo "==> $target: runtime compiles, every test target (warnings are errors)"
        RUSTFLAGS="-D warnings" cargo check -p outpost-runtime --target "$target" --all-targets
    else
        echo "==> $target: runtime tests under qemu (warnings are errors)"
        # RUSTFLAGS reaches only this target's crates (cross builds keep build
        # scripts apart), and dependencies cap their own lints.
        RUSTFLAGS="-D warnings" cargo test -p outpost-runtime --target "$target" \
            --lib --test reference_classification --test package_errors
    fi
    # Each target's build is several GB: free it before the next one.
    if [ "${CI:-}" = "true" ]; then rm -rf "target/$target"; fi
done
