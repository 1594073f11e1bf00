#!/usr/bin/env bash
# One idempotent setup step: create .venv, install torch==2.13.0 first with pip (the CPU wheel
# on disk; a looser pin would pull a multi-GB CUDA build), then the project with its dev extra.
# uv installs the project (its ~150 dependencies in seconds rather than pip's minutes); it
# keeps the torch already installed, which satisfies the project's range. pip is the fallback.
# A stamp keyed on pyproject.toml makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}

stamp_key=$( { cat pyproject.toml; echo "$TORCH_PIN $EXTRAS"; } | sha256sum | cut -c1-16)
stamp="$VENV/.openmed-ray-installed-$stamp_key"
if [ -f "$stamp" ]; then
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('${TORCH_PIN#torch==}') else 1)" 2>/dev/null \
    || "${pip[@]}" install "$TORCH_PIN"
if "${pip[@]}" install -q uv; then
    "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -e ".[$EXTRAS]"
else
    "${pip[@]}" install -e ".[$EXTRAS]"
fi
rm -f "$VENV"/.openmed-ray-installed-*
touch "$stamp"
echo "openmed-ray installed in $VENV"
