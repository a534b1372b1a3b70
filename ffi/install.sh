#!/usr/bin/env bash
# Installs Outpost's C library for C/C++ projects:
#   PREFIX/include/outpost.h
#   PREFIX/lib/liboutpost.so, PREFIX/lib/liboutpost.a
#   PREFIX/lib/pkgconfig/outpost.pc            (pkg-config --cflags --libs outpost)
#   PREFIX/lib/cmake/Outpost/OutpostConfig.cmake (find_package(Outpost))
#
#   ffi/install.sh /usr/local                 # builds the release library first
#   ffi/install.sh --lib-dir target/debug DIR # installs an existing build
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

lib_dir=""
if [ "${1:-}" = "--lib-dir" ]; then
  lib_dir="$2"
  shift 2
fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--lib-dir DIR] PREFIX" >&2
  exit 2
fi
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"

if [ -z "$lib_dir" ]; then
  echo "==> building liboutpost (release)"
  (cd "$root" && cargo build --release -p outpost-ffi)
  lib_dir="$root/target/release"
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"

mkdir -p "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/Outpost"
cp "$here/include/outpost.h" "$prefix/include/"
found=0
for lib in liboutpost.so liboutpost.dylib liboutpost.a; do
  if [ -f "$lib_dir/$lib" ]; then
    cp "$lib_dir/$lib" "$prefix/lib/"
    found=1
  fi
done
if [ "$found" = 0 ]; then
  echo "no liboutpost in $lib_dir: build it with cargo build -p outpost-ffi" >&2
  exit 1
fi

case "$(uname -s)" in
  Darwin) native="-framework Security -framework CoreFoundation -lm" ;;
  # -z noexecstack: tract's assembly kernels carry no .note.GNU-stack section.
  *) native="-lpthread -ldl -lm -lrt -Wl,-z,noexecstack" ;;
esac
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@NATIVE_LIBS@|$native|" \
  "$here/outpost.pc.in" > "$prefix/lib/pkgconfig/outpost.pc"
cp "$here/cmake/OutpostConfig.cmake" "$prefix/lib/cmake/Outpost/"
sed -e "s|@VERSION@|$version|" "$here/cmake/OutpostConfigVersion.cmake.in" \
  > "$prefix/lib/cmake/Outpost/OutpostConfigVersion.cmake"
echo "installed Outpost $version C library into $prefix"
