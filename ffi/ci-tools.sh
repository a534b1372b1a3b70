#!/usr/bin/env bash
# What the binding tests (ffi/tests) need beyond the Rust toolchain, from Debian's
# packages: cmake, pkg-config and a C compiler for the C API; a JDK and JUnit 5's
# console launcher for the Java API. Idempotent; run as root.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v cc >/dev/null || missing+=(gcc)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || missing+=(junit5)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci-tools: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cmake --version | head -n 1
javac -version
