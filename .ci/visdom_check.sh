#!/usr/bin/env bash
# The offline dashboard on each Python version given (e.g. 3.11 3.12 3.13): a fresh venv with
# requirements.txt's visdom, tornado and tqdm lines (and selenium where Chromium is installed),
# scripts/visdom_assets.sh, then, with no network but loopback, `python -m visdom.server` and
# .ci/visdom_offline.py against it.
# A version with no interpreter on this machine is skipped, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local found
    found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*/bin/python 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] || found=$(command -v "python$1" || true)
    echo "$found"
}

# Without network namespaces (no unshare, or user namespaces disabled), a proxy that refuses
# every connection stands in for the missing network.
offline() {
    if unshare -rn true 2>/dev/null; then
        unshare -rn sh -c 'ip link set lo up && exec "$@"' sh "$@"
    else
        echo "visdom_check: no network namespace here; using a refusing proxy instead"
        http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 no_proxy=localhost,127.0.0.1 "$@"
    fi
}

mapfile -t lines < <(grep -E '^(visdom|tornado|tqdm)\b' requirements.txt)
# With Chromium (installed by .ci/run), the options pane is opened in it too.
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && lines+=(selenium)
for version in "$@"; do
    python=$(find_python "$version")
    if [ -z "$python" ]; then
        echo "visdom_check: no Python $version on this machine; skipped"
        continue
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$python" -m venv "$work/venv"
    # visdom 0.2.4 (Python 3.10, 3.11) builds from source with setuptools below 81
    if ! PIP_CONSTRAINT="$PWD/build-constraints.txt" "$work/venv/bin/python" -m pip install -q \
            --disable-pip-version-check "${lines[@]}" >"$work/pip.log" 2>&1; then
        cat "$work/pip.log" >&2
        echo "visdom_check: installing ${lines[*]} failed on Python $version" >&2
        exit 1
    fi
    PYTHON="$work/venv/bin/python" bash scripts/visdom_assets.sh >/dev/null
    offline "$work/venv/bin/python" .ci/visdom_offline.py
    rm -rf "$work"
done
