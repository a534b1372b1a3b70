#!/usr/bin/env bash
# Builds Outpost, makes a signing key, packages the small example model into a
# signed .opk, verifies it and classifies an image. Run from anywhere.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="examples/out"
mkdir -p "$out"

if [ -n "${OUTPOST_BIN_DIR:-}" ]; then
  # Binaries built already (CI: the ones `cargo test --workspace` just built).
  bin="$OUTPOST_BIN_DIR"
  echo "==> using outpost and outpost-trainer from $bin"
else
  echo "==> building outpost and outpost-trainer (release)"
  cargo build --release --quiet -p outpost-runtime -p outpost-trainer
  bin="target/release"
fi

if [ ! -f "$out/keys/private.key" ]; then
  echo "==> generating a signing key in $out/keys"
  "$bin/outpost-trainer" keygen --out "$out/keys"
fi

echo "==> packaging examples/models/ppocr_cls into $out/ppocr_cls.opk"
"$bin/outpost-trainer" package \
  --model examples/models/ppocr_cls/cls.onnx \
  --labels examples/models/ppocr_cls/labels.txt \
  --task classification \
  --preprocess examples/models/ppocr_cls/preprocess.json \
  --decoder examples/models/ppocr_cls/decoder.json \
  --name ppocr_cls \
  --key "$out/keys" \
  --out "$out/ppocr_cls.opk"

echo "==> verifying the package"
"$bin/outpost" info "$out/ppocr_cls.opk" --trusted-key "$out/keys/public.key"

echo "==> classifying examples/images/text_upside_down.png"
"$bin/outpost" infer "$out/ppocr_cls.opk" examples/images/text_upside_down.png \
  --trusted-key "$out/keys/public.key" --json
