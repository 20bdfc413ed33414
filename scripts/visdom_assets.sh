#!/usr/bin/env bash
# Install visdom's web assets (the JavaScript, CSS and fonts its dashboard loads) from the npm
# registry into the installed visdom package, and mark them as built, so that
# `python -m visdom.server` starts without downloading anything from CDNs.
#
#   bash scripts/visdom_assets.sh
#
# Needs npm (Node.js) and the Python that has visdom installed ($PYTHON, default: python).
# The only network access is `npm pack`, so an npm mirror set in npm's config works too.
# The file lists are those of the visdom releases requirements.txt allows (0.2.4 where pip
# picks it, on Python 3.10 and 3.11; 0.3.0 on 3.12 and newer); any other release is refused,
# because visdom fetches at start-up whichever of its files is missing, and a server that
# fetches on a machine without internet stops before it serves a page.
set -euo pipefail

PYTHON=${PYTHON:-python}

die() {
    echo "visdom_assets.sh: error: $*" >&2
    exit "${2:-2}"
}

command -v npm >/dev/null || die "npm not found; install Node.js (e.g. apt-get install npm) or use visdom online"
visdom_dir=$("$PYTHON" -c 'import os, visdom; print(os.path.dirname(visdom.__file__))' 2>/dev/null) ||
    die "visdom is not installed for $PYTHON; run the README's setup command first"
version=$("$PYTHON" -c 'import visdom; print(visdom.__version__)')
static="$visdom_dir/static"
[ -w "$static" ] || die "cannot write to $static"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package@version, file inside the package, destination under visdom's static/ folder:
# first what both releases load, then each release's own files.
COMMON_ASSETS="
jquery@3.1.1 dist/jquery.min.js js/jquery.min.js
bootstrap@3.3.7 dist/js/bootstrap.min.js js/bootstrap.min.js
bootstrap@3.3.7 dist/css/bootstrap.min.css css/bootstrap.min.css
bootstrap@3.3.7 dist/fonts/glyphicons-halflings-regular.eot fonts/glyphicons-halflings-regular.eot
bootstrap@3.3.7 dist/fonts/glyphicons-halflings-regular.woff2 fonts/glyphicons-halflings-regular.woff2
bootstrap@3.3.7 dist/fonts/glyphicons-halflings-regular.woff fonts/glyphicons-halflings-regular.woff
bootstrap@3.3.7 dist/fonts/glyphicons-halflings-regular.ttf fonts/glyphicons-halflings-regular.ttf
bootstrap@3.3.7 dist/fonts/glyphicons-halflings-regular.svg fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular
react@16.2.0 umd/react.production.min.js js/react-react.min.js
react-dom@16.2.0 umd/react-dom.production.min.js js/react-dom.min.js
react-modal@3.1.10 dist/react-modal.min.js js/react-modal.min.js
plotly.js-dist-min@2.11.1 plotly.min.js js/plotly-plotly.min.js
sjcl@1.0.7 sjcl.js js/sjcl.js
layout-bin-packer@1.4.0 dist/layout-bin-packer.js js/layout_bin_packer.js
layout-bin-packer@1.4.0 dist/layout-bin-packer.js.map js/layout-bin-packer.js.map
d3@3.5.17 d3.min.js js/d3.v3.min.js
d3-selection-multi@1.0.1 build/d3-selection-multi.js js/d3-selection-multi.v1.js
save-svg-as-png@1.4.17 lib/saveSvgAsPng.js js/saveSvgAsPng.js
classnames@2.2.5 index.js fonts/classnames
"
VISDOM_0_2_4_ASSETS="
react-resizable@1.4.6 css/styles.css css/react-resizable-styles.css
react-grid-layout@0.16.3 css/styles.css css/react-grid-layout-styles.css
mathjax@2.7.5 MathJax.js js/mathjax/2.7.5/MathJax.js
mathjax@2.7.5 config/Safe.js js/mathjax/2.7.5/config/Safe.js
mathjax@2.7.5 config/TeX-AMS-MML_HTMLorMML.js js/mathjax/2.7.5/config/TeX-AMS-MML_HTMLorMML.js
mathjax@2.7.5 extensions/Safe.js js/mathjax/2.7.5/extensions/Safe.js
mathjax@2.7.5 jax/output/SVG/fonts/TeX/fontdata.js js/mathjax/2.7.5/jax/output/SVG/fonts/TeX/fontdata.js
mathjax@2.7.5 jax/output/SVG/jax.js js/mathjax/2.7.5/jax/output/SVG/jax.js
mathjax@2.7.5 jax/output/SVG/fonts/TeX/Size1/Regular/Main.js js/mathjax/2.7.5/jax/output/SVG/fonts/TeX/Size1/Regular/Main.js
mathjax@2.7.5 jax/output/SVG/config.js js/mathjax/2.7.5/jax/output/SVG/config.js
"
VISDOM_0_3_0_ASSETS="
react-resizable@3.1.3 css/styles.css css/react-resizable-styles.css
react-grid-layout@2.2.3 css/styles.css css/react-grid-layout-styles.css
mathjax@3.2.2 es5/tex-mml-svg.js js/mathjax/3.2.2/es5/tex-mml-svg.js
"
case "$version" in
0.2.4) ASSETS="$COMMON_ASSETS$VISDOM_0_2_4_ASSETS" ;;
0.3.0) ASSETS="$COMMON_ASSETS$VISDOM_0_3_0_ASSETS" ;;
*) die "visdom $version is installed, and this script knows the files of visdom 0.2.4 and 0.3.0 only; install the README's requirements (pip install -r requirements.txt), which keep visdom to those" ;;
esac

# Fetch every package's tarball with one npm call (npm downloads them in parallel).
specs=$(printf '%s\n' "$ASSETS" | awk 'NF { print $1 }' | sort -u)
# shellcheck disable=SC2086
(cd "$work" && npm pack --silent $specs >/dev/null 2>npm.log) ||
    die "npm pack failed: $(grep -m1 -i 'err' "$work/npm.log" || tail -n 1 "$work/npm.log")" 1

# A marker left from an earlier, interrupted install must not say "built" before every file is in place.
rm -f "$static/version.built"
# Unpack the needed files of each package with one tar call per package.
for spec in $specs; do
    members=$(printf '%s\n' "$ASSETS" | awk -v spec="$spec" '$1 == spec { print "package/" $2 }')
    mkdir -p "$work/$spec"
    # shellcheck disable=SC2086
    tar --warning=no-unknown-keyword -xzf "$work/${spec%@*}-${spec##*@}.tgz" -C "$work/$spec" $members 2>/dev/null ||
        die "$spec lacks one of: $(echo $members)" 1
done
count=0
while read -r spec source destination; do
    [ -n "$spec" ] || continue
    mkdir -p "$(dirname "$static/$destination")"
    cp "$work/$spec/package/$source" "$static/$destination.tmp"
    mv "$static/$destination.tmp" "$static/$destination"
    count=$((count + 1))
done <<< "$ASSETS"
# visdom's page links ../user/style.css; an empty one saves an error line per page load.
mkdir -p "$visdom_dir/user"
[ -f "$visdom_dir/user/style.css" ] || : > "$visdom_dir/user/style.css"
# visdom skips its download when this file holds its own version.
printf '%s' "$version" > "$static/version.built"
echo "visdom_assets.sh: installed $count files into $static for visdom $version; start it with: python -m visdom.server"
