#!/usr/bin/env bash
# What a CUDA GPU does with this repository: correctness against the CPU and a speed table,
# into OUT/gpu_check.md. The check itself is scripts/gpu_check.py; --help says what it runs.
#
#   bash scripts/gpu_check.sh OUT                     on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh --smoke OUT             every section, tiny, on the CPU (CI)
#   bash scripts/gpu_check.sh --only tiles,speed OUT  some sections again
#
# Exit status: 0 when every check passed, 1 naming the sections that failed, 2 for a mistake
# in the command line or a machine without a CUDA GPU.
exec "${PYTHON:-python}" "$(dirname "$0")/gpu_check.py" "$@"
