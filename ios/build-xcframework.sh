#!/usr/bin/env bash
# Builds ios/build/OutpostFFI.xcframework for Package.swift: liboutpost.a (release)
# for iOS devices (aarch64-apple-ios) and the simulator (aarch64-apple-ios-sim and
# x86_64-apple-ios, joined by lipo), with the uniffi header and module map that are
# checked in under ios/include.
#
# Needs a Mac with Xcode (xcodebuild, lipo) and rustup. Run from anywhere:
#   ios/build-xcframework.sh
# then add the ios/ folder to an Xcode project as a local Swift package.
set -euo pipefail
cd "$(dirname "$0")/.."

device=aarch64-apple-ios
simulators=(aarch64-apple-ios-sim x86_64-apple-ios)
out=ios/build
rm -rf "$out"
mkdir -p "$out/headers" "$out/simulator"

# The same minimum as Package.swift's platforms.
export IPHONEOS_DEPLOYMENT_TARGET=13.0
for target in "$device" "${simulators[@]}"; do
    rustup target add "$target"
    # The static library only: iOS apps link it into their binary.
    cargo rustc --release -p outpost-ffi --lib --crate-type staticlib --target "$target"
done

lipo -create \
    "target/${simulators[0]}/release/liboutpost.a" \
    "target/${simulators[1]}/release/liboutpost.a" \
    -output "$out/simulator/liboutpost.a"
cp ios/include/OutpostFFI.h ios/include/module.modulemap "$out/headers/"

xcodebuild -create-xcframework \
    -library "target/$device/release/liboutpost.a" -headers "$out/headers" \
    -library "$out/simulator/liboutpost.a" -headers "$out/headers" \
    -output "$out/OutpostFFI.xcframework"
echo "wrote $out/OutpostFFI.xcframework"
