# The start both GPU bench scripts share (sourced from the repository root with the output
# folder as its argument): the folder made and absolute in $out, the CUDA variables burn-cuda
# needs, $python (the PyTorch virtualenv's when present, else python3; PYTHON overrides), $card
# (the GPU's name and driver, or the CPU cores) and $commit.
mkdir -p "$1"
out=$(cd "$1" && pwd)
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-$CUDA_PATH/lib64}
default_python=python3
[ -x /opt/torch/.venv/bin/python ] && default_python=/opt/torch/.venv/bin/python
python=${PYTHON:-$default_python}
card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
card=${card:-"no NVIDIA GPU ($(nproc) CPU cores)"}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
