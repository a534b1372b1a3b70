#!/usr/bin/env bash
# ARM Linux: cross-builds the runtime for aarch64 and armv7 with Debian's cross gcc
# and runs its tests under qemu-user (targets and runners: .cargo/config.toml).
#
# Idempotent; run as root on Debian from the repository root:
#   bash .ci/arm.sh                      # both targets
#   bash .ci/arm.sh aarch64-unknown-linux-gnu
#
# What runs under qemu: every unit test of the runtime (the kernels against their
# naive definitions: the NEON INT8 products, depthwise rows, the INT8 rewrites
# against tract), the package format and tamper tests, and the end-to-end
# reference tests on real models (EfficientNet-Lite0 logits and top-5 on four
# photos, YOLOv8's raw output against onnxruntime's, with the x86-64 tolerances).
# The ImageNet sample and the 13-image YOLOv8 box test stay on x86-64: emulated,
# they take tens of minutes.
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
    echo "==> $target: clippy (runtime)"
    cargo clippy -p outpost-runtime --target "$target" --all-targets -- -D warnings
    echo "==> $target: runtime tests under qemu"
    cargo test -p outpost-runtime --target "$target" \
        --lib --test reference_classification --test reference_detection --test package_errors \
        -- --skip end_to_end_boxes_match_reference_detections
    # Each target's build is several GB: free it before the next one.
    if [ "${CI:-}" = "true" ]; then rm -rf "target/$target"; fi
done
