#!/usr/bin/env bash
# Builds the Outpost AAR. Needs the Android NDK (ANDROID_NDK_HOME), the SDK for
# Gradle (ANDROID_HOME), and cargo-ndk:
#   rustup target add aarch64-linux-android armv7-linux-androideabi
#   cargo install cargo-ndk
#   android/build-aar.sh
# -> android/build/outputs/aar/outpost-release.aar
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to the Android NDK (r26 or newer)}"
cargo ndk --platform 21 -t arm64-v8a -t armeabi-v7a -o "$here/src/main/jniLibs" \
  build --release -p outpost-ffi
cd "$here"
if [ -x ./gradlew ]; then ./gradlew assembleRelease; else gradle assembleRelease; fi
ls -l build/outputs/aar/
