#!/usr/bin/env bash
# `make test-lts`: the same test suite on a second real stack, Debian 13 (trixie):
# QGIS 3.40 LTR, numpy 2, GDAL 3.10 and Debian's own python3-torch.
#
# Builds a debootstrap chroot from Debian's packages once and keeps it OUTSIDE the clone
# ($CTSTFM_LTS_CACHE, default /var/cache/ctstfm-lts); later runs reuse it (a stamp names
# the package list, so changing the list rebuilds it). Then copies the working tree into the
# chroot and runs `scripts/setup.sh` and the suite there, as `make test` does: every package is
# Debian's (setup's venv sees Debian's python3-torch, pytest and scikit-image; pip pulls nothing). Needs root (chroot, mounts) and debootstrap (installed with apt-get
# when missing). `--check` only says whether this machine can run it; `--build` only builds;
# `--run 'COMMAND'` runs a command in the chroot's copy of the tree instead of the suite.
# Other arguments go to pytest (e.g. `scripts/test_lts.sh -x -k fuse`). Exit status 75: the chroot could
# not be built (no mirror, no space); any other non-zero status: the suite failed.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CTSTFM_LTS_CACHE:-/var/cache/ctstfm-lts}
SUITE=trixie
MIRROR=${CTSTFM_LTS_MIRROR:-http://deb.debian.org/debian}
ROOT="$CACHE/$SUITE"
PACKAGES="qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-numpy python3-torch python3-pytest
python3-skimage python3-venv make ca-certificates locales-all"
STAMP="$ROOT/.ctstfm-ready-$(echo "$PACKAGES" | md5sum | cut -c1-8)"

can_run() {
    [ "$(id -u)" = 0 ] || { echo "test-lts: needs root (chroot and mounts)"; return 1; }
    command -v debootstrap >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || { echo "test-lts: needs debootstrap (no apt-get to install it)"; return 1; }
}

case "${1:-}" in
    --check) can_run; exit $? ;;
    --build) can_run || exit 1; BUILD_ONLY=1; shift ;;
    --run) shift; RUN_COMMAND="$*"; set -- ;;
esac
can_run || exit 1

unmount_under() {  # unmount_under DIR: every mount at or below DIR, deepest first
    local dir
    dir=$(realpath -m "$1")
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}
remove_tree() {  # remove_tree DIR, never through a mount (a bound /dev must not be emptied)
    unmount_under "$1"
    if awk -v d="$(realpath -m "$1")" '$2 == d || index($2, d "/") == 1 {found = 1} END {exit !found}' /proc/mounts; then
        echo "test-lts: $1 still has mounts; not removing it" >&2
        exit 1
    fi
    rm -rf "$1"
}
cleanup() {
    unmount_under "$ROOT.partial"
    unmount_under "$ROOT"
}
trap cleanup EXIT

mount_into() {  # mount_into ROOT: the kernel file systems a test run needs
    mount -t proc proc "$1/proc"
    mount --rbind /dev "$1/dev"
    mount --make-rslave "$1/dev"
    mount -t tmpfs tmpfs "$1/dev/shm"
    mount -t tmpfs -o size=8g tmpfs "$1/tmp"
}

build() {
    local started=$SECONDS tmp="$ROOT.partial"
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "test-lts: installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    remove_tree "$tmp"
    mkdir -p "$CACHE"
    echo "test-lts: building a Debian $SUITE chroot in $tmp (once; kept in $CACHE)"
    debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log"; echo "test-lts: could not build the chroot" >&2; exit 75; }
    cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
    mount_into "$tmp"
    # shellcheck disable=SC2086
    chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends $(echo $PACKAGES) >/dev/null && apt-get clean" \
        || { echo "test-lts: could not install the packages into the chroot" >&2; exit 75; }
    unmount_under "$tmp"
    touch "$tmp/$(basename "$STAMP")"
    remove_tree "$ROOT"
    mv "$tmp" "$ROOT"
    echo "test-lts: chroot built in $((SECONDS - started)) s"
}

[ -f "$STAMP" ] || build
[ -z "${BUILD_ONLY:-}" ] || exit 0

started=$SECONDS
unmount_under "$ROOT"
mount_into "$ROOT"
remove_tree "$ROOT/src"
mkdir -p "$ROOT/src"
# The working tree as git sees it (tracked and untracked files, not ignored ones such as .venv).
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$ROOT/src"
in_chroot() {  # in_chroot SCRIPT [ARG...]: a bash script in /src of the chroot, with a clean environment
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
        bash -c "cd /src && $1" -- "${@:2}"
}
in_chroot 'python3 -c "import qgis.core, numpy, torch, osgeo.gdal as g; print(\"test-lts: QGIS\", \
qgis.core.Qgis.QGIS_VERSION, \"numpy\", numpy.__version__, \"GDAL\", g.__version__, \"torch\", torch.__version__)"'
if [ -n "${RUN_COMMAND:-}" ]; then
    in_chroot "$RUN_COMMAND" && status=0 || status=$?
else
    # What `make test` does: setup (here it finds Debian's python3-torch and pulls nothing), then the suite.
    in_chroot 'bash scripts/setup.sh && .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"' "$@" \
        && status=0 || status=$?
fi
echo "test-lts: ran in $((SECONDS - started)) s"
exit $status
