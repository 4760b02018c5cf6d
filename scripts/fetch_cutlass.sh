#!/usr/bin/env bash
# Fetches the CUTLASS/CuTe C++ headers from the PyPI package nvidia-cutlass (one pinned
# version) into third_party/cutlass/include, an ignored folder. Nothing is vendored.
# Set CUTLASS_DIR to an existing CUTLASS checkout (with include/cute) to skip the download.
set -euo pipefail
CUTLASS_VERSION="4.2.0.0"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/third_party/cutlass"
stamp="$dest/VERSION"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$CUTLASS_VERSION" && -d "$dest/include/cute" ]]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "nvidia-cutlass==$CUTLASS_VERSION"
rm -rf "$dest"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/nvidia_cutlass-*.whl")[0]
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = sys.argv[2] + "/include/" + name[len(prefix):]
            import os
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(z.read(name))
PY
echo "$CUTLASS_VERSION" > "$stamp"
echo "CUTLASS $CUTLASS_VERSION headers in $dest/include"
