#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and a matching kubectl (1.20.2) from Debian's
# `kubernetes` source package with Debian's Go 1.19, for the e2e test bed.
#
# Idempotent and non-interactive (runs in CI as root). The binaries are cached
# outside the repo in ${POSTHORN_KUBE_CACHE:-/var/cache/posthorn}/kube-<source
# version>/; when they are there, nothing is installed or built.
#
# Progress goes to stderr; the last line on stdout is the cache directory
# holding kube-apiserver, kube-controller-manager and kubectl.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
CACHE_ROOT=${POSTHORN_KUBE_CACHE:-/var/cache/posthorn}
SRC_LIST=/etc/apt/sources.list.d/posthorn-deb-src
BINARIES=(kube-apiserver kube-controller-manager kubectl)
# Host tools the test bed needs besides the build (etcd, jq, openssl).
RUNTIME_PACKAGES=(etcd-server jq openssl curl)
BUILD_PACKAGES=(golang-1.19-go golang-github-modern-go-reflect2-dev rsync dpkg-dev make)

log() { echo "build.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Debian source version of `kubernetes`, or nothing while no deb-src is known.
source_version() {
    { apt-cache showsrc kubernetes 2>/dev/null || true; } | awk '/^Version:/ { print $2; exit }'
}

cached_dir() {
    local version=$1 dir="$CACHE_ROOT/kube-$1" b
    for b in "${BINARIES[@]}"; do [[ -x $dir/$b ]] || return 1; done
    echo "$dir"
}

runtime_tools_present() {
    command -v etcd >/dev/null && command -v jq >/dev/null && command -v openssl >/dev/null \
        && command -v curl >/dev/null
}

# Writes deb-src stanzas mirroring the machine's Debian `deb` sources (deb822
# *.sources and one-line *.list), unless a Debian deb-src is already configured.
# Our own files are regenerated, never appended to, so re-runs add nothing.
add_deb_src() {
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f && $f != "$SRC_LIST".* ]] && files+=("$f")
    done
    if ((${#files[@]})) && grep -hEq '^[[:space:]]*(deb-src[[:space:]].*debian|Types:.*deb-src)' "${files[@]}"; then
        log "a deb-src source is already configured"
        return
    fi
    local oneline=() deb822=()
    for f in "${files[@]}"; do
        case $f in *.sources) deb822+=("$f") ;; *) oneline+=("$f") ;; esac
    done
    rm -f "$SRC_LIST.list" "$SRC_LIST.sources"
    if ((${#oneline[@]})); then
        # "deb [opts] URI suite comps" -> "deb-src ..." for Debian archives.
        sed -nE 's/^[[:space:]]*deb[[:space:]]+(.*debian.*)$/deb-src \1/p' "${oneline[@]}" >"$SRC_LIST.list"
        [[ -s $SRC_LIST.list ]] || rm -f "$SRC_LIST.list"
    fi
    if ((${#deb822[@]})); then
        # Copy every enabled stanza whose Types include "deb" and whose URIs
        # point at a Debian archive, with Types set to deb-src.
        awk '
            function flush() {
                if (n && isdeb && isdebian && enabled) {
                    for (i = 1; i <= n; i++) print (lines[i] ~ /^Types:/ ? "Types: deb-src" : lines[i])
                    print ""
                }
                n = 0; isdeb = 0; isdebian = 0; enabled = 1
            }
            BEGIN { enabled = 1 }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            { lines[++n] = $0 }
            /^Types:/ && / deb( |$)/ { isdeb = 1 }
            /^URIs:/ && /debian/ { isdebian = 1 }
            /^Enabled:[[:space:]]*no/ { enabled = 0 }
            END { flush() }
        ' "${deb822[@]}" >"$SRC_LIST.sources"
        [[ -s $SRC_LIST.sources ]] || rm -f "$SRC_LIST.sources"
    fi
    [[ -e $SRC_LIST.list || -e $SRC_LIST.sources ]] || die "no Debian apt source found to mirror as deb-src"
    log "added $(ls "$SRC_LIST".* | tr '\n' ' ')"
}

version=$(source_version)
if [[ -n $version ]] && dir=$(cached_dir "$version") && runtime_tools_present; then
    log "cached: $dir"
    echo "$dir"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get) the first time"
# One build at a time (tests may start several test beds at once); whoever
# waited finds the cache filled below.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/build.lock"
flock 9
add_deb_src
log "apt-get update"
apt-get update -qq >&2 || die "apt-get update failed"
version=$(source_version)
[[ -n $version ]] || die "apt-cache showsrc kubernetes found no source package"
log "installing ${RUNTIME_PACKAGES[*]}"
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${RUNTIME_PACKAGES[@]}" >&2
if dir=$(cached_dir "$version"); then
    log "cached: $dir"
    echo "$dir"
    exit 0
fi

log "installing ${BUILD_PACKAGES[*]}"
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${BUILD_PACKAGES[@]}" >&2

work=$(mktemp -d /tmp/posthorn-kube-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # lets apt's _apt user download into it
cd "$work"
log "downloading the kubernetes $version source into $work"
apt-get source --download-only -qq kubernetes >&2
dsc=$(ls kubernetes_*.dsc | head -n1)
dpkg-source --no-check -x "$dsc" src >&2
cd src

# The vendored reflect2 1.0.1 crashes the apiserver under Go >= 1.18 as soon as
# a custom resource is created; Debian ships 1.0.2, which is fixed and has the
# same API (vendor/modules.txt keeps saying 1.0.1, which -mod=vendor accepts).
reflect2=$(dpkg -L golang-github-modern-go-reflect2-dev | grep -m1 '/src/github.com/modern-go/reflect2$') \
    || die "reflect2 sources not found in golang-github-modern-go-reflect2-dev"
log "replacing vendor/github.com/modern-go/reflect2 with $reflect2"
rm -rf vendor/github.com/modern-go/reflect2
rsync -a --exclude '*_test.go' --exclude 'test*/' "$reflect2/" vendor/github.com/modern-go/reflect2/

# There is no git tree, so stamp the version explicitly (hack/lib/version.sh).
upstream=${version#*really}; upstream=${upstream%%-*}
cat >"$work/version.env" <<VERSION
KUBE_GIT_COMMIT='debian-$version'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$upstream'
KUBE_GIT_MAJOR='${upstream%%.*}'
KUBE_GIT_MINOR='$(echo "$upstream" | cut -d. -f2)'
VERSION

log "building ${BINARIES[*]} v$upstream (takes 11-17 minutes, ~1.4 GB memory)"
start=$(date +%s)
PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off GOFLAGS=-mod=vendor CGO_ENABLED=0 \
    KUBE_GIT_VERSION_FILE="$work/version.env" GOCACHE="$work/gocache" \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl" >&2 \
    || die "make failed"
log "built in $(($(date +%s) - start)) s"

dir="$CACHE_ROOT/kube-$version"
mkdir -p "$dir.tmp"
for b in "${BINARIES[@]}"; do
    install -m 0755 "_output/local/go/bin/$b" "$dir.tmp/$b" 2>/dev/null \
        || install -m 0755 "$(find _output -type f -name "$b" | head -n1)" "$dir.tmp/$b"
done
rm -rf "$dir"
mv "$dir.tmp" "$dir"
"$dir/kube-apiserver" --version >&2
log "cached: $dir"
echo "$dir"
