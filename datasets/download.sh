#!/usr/bin/env bash
# Download one of the standard CycleGAN datasets and unpack it next to this script, as
# datasets/NAME/{trainA,trainB,testA,testB}.
#
#   bash datasets/download.sh horse2zebra
#
# The zip comes from $CYCLEGAN_DATASETS_URL/NAME.zip (default: the authors' server). An
# interrupted download continues where it stopped when run again; the zip is checked before
# unpacking, and the folder appears only once it is complete.
set -euo pipefail

NAMES="apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo vangogh2photo
maps cityscapes facades iphone2dslr_flower ae_photos"
BASE_URL=${CYCLEGAN_DATASETS_URL:-http://efrosgans.eecs.berkeley.edu/cyclegan/datasets}
PYTHON=${PYTHON:-python}

die() {
    echo "download.sh: error: $1" >&2
    exit "${2:-1}"
}

[ $# -eq 1 ] || die "give one dataset name: $(echo $NAMES)" 2
name=$1
case " $(echo $NAMES) " in
    *" $name "*) ;;
    *) die "unknown dataset '$name'; known: $(echo $NAMES)" 2 ;;
esac
if [ "$name" = cityscapes ]; then
    die "cityscapes is not distributed by the CycleGAN authors: its licence requires each user to
register at https://www.cityscapes-dataset.com and download it there (leftImg8bit and gtFine);
then put the photos in datasets/cityscapes/trainA, testA and the label images in trainB, testB" 2
fi
command -v curl >/dev/null || die "curl not found; install it (e.g. apt-get install curl)"

here=$(cd "$(dirname "$0")" && pwd)
target="$here/$name"
if [ -d "$target/trainA" ] && [ -d "$target/trainB" ]; then
    echo "download.sh: $target is already there"
    exit 0
fi
[ ! -e "$target" ] || die "$target exists but is not a complete dataset; move it away and run again" 2

url="$BASE_URL/$name.zip"
zip="$here/$name.zip.part"
# A quiet first request, so that no network or a missing file is one line, not curl's two;
# it also gives the size, to tell a complete earlier download from a partial one.
if ! headers=$(curl --silent --show-error --fail --location --head "$url" 2>&1); then
    reason=$(printf '%s\n' "$headers" | grep '^curl: ' | tail -n 1)
    die "could not download $url (${reason#curl: }); check the network, or set CYCLEGAN_DATASETS_URL to a mirror"
fi
size=$(printf '%s\n' "$headers" | tr -d '\r' | awk 'tolower($1) == "content-length:" { n = $2 } END { print n }')
echo "download.sh: $url -> $target"
if [ -z "$size" ] || [ ! -f "$zip" ] || [ "$(wc -c < "$zip" | tr -d ' ')" != "$size" ]; then
    # --continue-at - goes on from a partial file; --fail turns HTTP errors into a non-zero exit.
    curl --fail --location --progress-bar --continue-at - --output "$zip" "$url" ||
        die "could not download $url (curl exit $?); run the same command again to continue"
fi

unpacking=$(mktemp -d "$here/.$name.unpacking.XXXXXX")
trap 'rm -rf "$unpacking"' EXIT
# Check every member's CRC before unpacking anything.
"$PYTHON" - "$zip" "$unpacking" <<'EOF' || { rm -f "$zip"; die "$url gave a damaged zip; removed it, run again to download it anew"; }
import sys, zipfile
try:
    with zipfile.ZipFile(sys.argv[1]) as z:
        if z.testzip() is not None:
            sys.exit(1)
        z.extractall(sys.argv[2])
except (zipfile.BadZipFile, OSError):
    sys.exit(1)
EOF
unpacked="$unpacking/$name"
for folder in trainA trainB testA testB; do
    [ -d "$unpacked/$folder" ] || die "$url does not hold $name/$folder; nothing was unpacked"
done
mv "$unpacked" "$target"
rm -f "$zip"
echo "download.sh: $name is in $target; train with: python train.py --dataroot $target"
