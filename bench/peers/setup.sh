#!/usr/bin/env bash
# The peer trainers of the step benchmark, each in its own virtual environment under .venv-peers/.
#
# ms-swift and LLaMA-Factory pin transformers, TRL, peft, datasets and accelerate below chip's
# (chip: transformers 5.24, TRL 1.16), so they cannot share chip's environment. Each venv sees the
# interpreter's site-packages (--system-site-packages) so that it uses the torch 2.14.1 already
# installed for chip (the same build, and no second multi-GB download); everything the peer pins
# is installed into the venv and shadows chip's versions there only.
#
#   bash bench/peers/setup.sh          # then: python bench/bench_step.py --preset varlen --with-peers
set -euo pipefail
cd "$(dirname "$0")/../.."
python -c "import torch; assert torch.__version__.startswith('2.14.1'), torch.__version__" \
    || { echo "install chip's environment first (torch 2.14.1)" >&2; exit 1; }

make_venv() { [ -x ".venv-peers/$1/bin/python" ] || python -m venv --system-site-packages ".venv-peers/$1"; }

# ms-swift 4.6.0 resolves to transformers 5.19, trl 0.29, peft 0.20; qwen_vl_utils is what its
# Qwen2-VL template imports to read images.
make_venv swift
.venv-peers/swift/bin/pip install "ms-swift==4.6.0" qwen_vl_utils

# LLaMA-Factory 0.9.5 allows transformers 4.55-5.6 with trl <= 0.24, but trl 0.24 does not import
# under transformers 5 (it reads transformers' package check, a tuple since 5.0, as a bool and then
# imports mergekit), so its venv gets the 4.57 line it was released against.
make_venv llamafactory
.venv-peers/llamafactory/bin/pip install "llamafactory==0.9.5" "transformers>=4.57.1,<4.58"

for name in swift llamafactory; do
    ".venv-peers/$name/bin/python" -c "import transformers, trl; print('$name:', 'transformers', transformers.__version__, 'trl', trl.__version__)"
done
