#!/usr/bin/env bash
# Download one of the authors' CycleGAN datasets and unpack it as FOLDER/{trainA,trainB,testA,testB}:
#
#   bash datasets/download.sh horse2zebra              # into datasets/horse2zebra, beside this script
#   bash datasets/download.sh /data/horse2zebra        # a folder named after the dataset
#
# train.py and test.py do the same on first use of --dataroot datasets/NAME (datasets.py's
# fetch_dataset). The zip comes from $CYCLEGAN_DATASETS_URL/NAME.zip (default: the authors'
# server); an interrupted download continues where it stopped when run again.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "download.sh: error: give one dataset name, e.g. horse2zebra" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
case $1 in
    -*|*/*) target=$1 ;;
    *) target=$here/$1 ;;
esac
exec "${PYTHON:-python}" -c 'import sys; sys.path.insert(0, sys.argv[1]); import datasets
datasets.download_main(sys.argv[2:])' "$here/.." "$target"
