#!/usr/bin/env bash
# Android and iOS: compiles liboutpost.a (the C ABI, the JNI entry points and the
# Swift bindings) for aarch64-linux-android, armv7-linux-androideabi and
# aarch64-apple-ios, and prints each archive's size.
#
# There is no Android NDK and no Xcode here, so nothing is linked: a static
# library needs no linker. Debian's clang compiles ring's C and assembly (the one
# C dependency left) for each target without a target sysroot (-nostdlibinc, as
# ring itself does for musl targets). libjpeg-turbo needs the target's libc
# headers, which only the NDK and Xcode have, so these builds leave out the
# default libjpeg-turbo feature and read JPEG with the `image` crate.
# android/build-aar.sh and ios/build-xcframework.sh build the real thing, with it.
#
# CI builds the iOS library and only checks the Android ones (`cargo check`: the
# Rust compiles for the target and ring's C is compiled, with no code generation
# for the Rust), to stay inside its 90 minutes; a full build takes about 3
# minutes per target.
#
# Idempotent; run as root on Debian from the repository root:
#   bash .ci/mobile.sh                       # all three targets, built
#   bash .ci/mobile.sh aarch64-apple-ios
#   OUTPOST_MOBILE_CHECK_ONLY="aarch64-linux-android armv7-linux-androideabi" \
#       bash .ci/mobile.sh                   # what CI runs
set -euo pipefail

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-linux-android armv7-linux-androideabi aarch64-apple-ios)

if ! command -v clang >/dev/null || ! command -v llvm-ar >/dev/null; then
    echo "mobile: installing clang and llvm" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm >/dev/null
fi

# cc runs `xcrun` for the iOS SDK unless SDKROOT names a directory, so it gets a
# stand-in. With -nostdlibinc, ring includes one SDK header only,
# TargetConditionals.h, for its platform macros: the stand-in defines them for an
# iOS device, as the SDK's does.
no_sdk="$(mktemp -d)"
trap 'rm -rf "$no_sdk"' EXIT
mkdir -p "$no_sdk/include"
cat >"$no_sdk/include/TargetConditionals.h" <<'EOF_H'
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 0
#define TARGET_OS_IPHONE 1
#define TARGET_OS_IOS 1
#define TARGET_OS_SIMULATOR 0
EOF_H

for target in "${targets[@]}"; do
    rustup target add "$target" >/dev/null 2>&1
    var="${target//-/_}"
    export "CC_$var=clang" "AR_$var=llvm-ar"
    export "CFLAGS_$var=-nostdlibinc -DRING_CORE_NOSTDLIBINC=1"
    case "$target" in
        armv7-linux-androideabi)
            # The NDK's defaults for armeabi-v7a, which tract's NEON assembly needs.
            export "CFLAGS_$var=-nostdlibinc -DRING_CORE_NOSTDLIBINC=1 -march=armv7-a -mfloat-abi=softfp -mfpu=neon"
            ;;
        *-apple-ios*)
            export SDKROOT="$no_sdk" IPHONEOS_DEPLOYMENT_TARGET=13.0
            export "CFLAGS_$var=-nostdlibinc -DRING_CORE_NOSTDLIBINC=1 -I$no_sdk/include"
            ;;
    esac
    if [[ " ${OUTPOST_MOBILE_CHECK_ONLY:-} " == *" $target "* ]]; then
        echo "==> $target: outpost-ffi compiles (cargo check)"
        cargo check -p outpost-ffi --lib --no-default-features --profile mobile --target "$target"
    else
        echo "==> $target: liboutpost.a"
        # The quick `mobile` profile (Cargo.toml): this checks that everything
        # compiles for the target; speed is the release build's business.
        cargo rustc -p outpost-ffi --lib --crate-type staticlib --no-default-features \
            --profile mobile --target "$target"
        ls -l "target/$target/mobile/liboutpost.a"
    fi
    # Each target's build is hundreds of MB: free it before the next one.
    if [ "${CI:-}" = "true" ]; then rm -rf "target/$target"; fi
done
