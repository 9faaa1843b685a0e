#!/usr/bin/env bash
# Builds the Posthorn container image without Docker, with Debian's buildah (vfs storage,
# FROM scratch, no RUN step, so no runtime is needed), exports it as an OCI image layout
# and checks it: unpacked with umoci, the image's own binary runs with the image's own
# loader and libraries (amd64 in a chroot as uid 65532, arm64 under qemu-user).
#
# Usage: image/build.sh [--arch ARCHES] [--binary PATH]... [--tag REPO:TAG] [--out DIR]
#   --arch    amd64 (default), arm64, or amd64,arm64. With two, the layout's tag is a
#             multi-arch image index (buildah manifest) with one image per architecture.
#             arm64 is cross-compiled offline (Debian's gcc-aarch64-linux-gnu and
#             libc6-dev-arm64-cross, rustup's aarch64 std) and checked with qemu-user.
#   --binary  a posthorn binary to ship, once per architecture (read from its ELF
#             header); an architecture without one is built with
#             cargo build --release --locked [--target TRIPLE]
#   --tag     image name (default <Cargo.toml's image repository>:<Cargo.toml version>)
#   --out     OCI image layout directory (default target/image/oci); the image is in
#             it under the tag's TAG part. Push it with skopeo, e.g.
#             skopeo copy --all oci:target/image/oci:0.1.0 docker://ghcr.io/posthorn/posthorn:0.1.0
#
# The image: /usr/local/bin/posthorn (the path the operator's pods run), the glibc
# libraries it links (Debian 12's: this machine's for amd64, libc6-arm64-cross's for
# arm64, found by walking the ELF NEEDED entries: the binary is dynamically linked),
# Mozilla's CA bundle at /etc/ssl/certs/ca-certificates.crt (relay and MX TLS
# verification), /etc/passwd and /etc/group naming uid/gid 65532 "nonroot", USER
# 65532:65532 and ENTRYPOINT ["/usr/local/bin/posthorn"]. No shell, no package manager.
# tests/image.rs builds the amd64 image from the test build's binary and checks it.
#
# Needs root (buildah's storage) and installs what it lacks with apt (buildah, umoci,
# skopeo, binutils, ca-certificates; for arm64 the cross toolchain and qemu-user).
# buildah's storage: ${POSTHORN_IMAGE_STORE:-/var/cache/posthorn/buildah}.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "image/build.sh: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# Cargo.toml's [package.metadata.image] names the image.
repository=$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arches=amd64
binaries=()
tag="$repository:$version"
out="target/image/oci"
while (($#)); do
    case "$1" in
        --arch) arches=$2; shift 2 ;;
        --binary) binaries+=("$2"); shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) die "unknown argument $1 (see the usage at the top of this script)" ;;
    esac
done
ref=${tag##*:}
[[ $ref != "$tag" && $ref != */* ]] || die "--tag needs REPO:TAG, got $tag"
IFS=, read -r -a arch_list <<<"$arches"

# Per architecture: Rust target, where Debian keeps its libraries on this machine, where
# the image keeps them (Debian's multiarch directory, on the loader's default path), the
# ELF machine name, and the Debian packages the build and the check need.
declare -A triple sysroot libdir machine packages
triple=([amd64]=x86_64-unknown-linux-gnu [arm64]=aarch64-unknown-linux-gnu)
sysroot=([amd64]=/lib/x86_64-linux-gnu [arm64]=/usr/aarch64-linux-gnu/lib)
libdir=([amd64]=/lib/x86_64-linux-gnu [arm64]=/lib/aarch64-linux-gnu)
machine=([amd64]="Advanced Micro Devices X86-64" [arm64]=AArch64)
packages=([amd64]="" [arm64]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user")
for arch in "${arch_list[@]}"; do
    [[ -v "triple[$arch]" ]] || die "--arch: unsupported '$arch' (amd64, arm64)"
done

# --- tools ----------------------------------------------------------------------
missing=()
for tool in buildah:buildah umoci:umoci skopeo:skopeo jq:jq readelf:binutils \
    /etc/ssl/certs/ca-certificates.crt:ca-certificates; do
    what=${tool%%:*}
    if [[ $what == /* ]]; then [[ -f $what ]] || missing+=("${tool#*:}")
    else command -v "$what" >/dev/null || missing+=("${tool#*:}"); fi
done
for arch in "${arch_list[@]}"; do
    for p in ${packages[$arch]}; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
done
if ((${#missing[@]})); then
    echo "image/build.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
fi

# --- the binaries -----------------------------------------------------------------
declare -A binary
for path in "${binaries[@]}"; do
    [[ -x $path ]] || die "$path is not an executable"
    elf=$(readelf -h "$path" | sed -n 's/^ *Machine: *//p')
    for arch in "${!machine[@]}"; do
        [[ $elf == "${machine[$arch]}" ]] && binary[$arch]=$path
    done
done
for arch in "${arch_list[@]}"; do
    [[ -v "binary[$arch]" ]] && continue
    if [[ $arch == amd64 ]]; then
        cargo build --release --locked --bin posthorn >&2
        binary[$arch]=${CARGO_TARGET_DIR:-target}/release/posthorn
    else
        t=${triple[$arch]}
        rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
        gcc=${t%%-*}-linux-gnu-gcc
        upper=$(tr a-z- A-Z_ <<<"$t")
        env "CARGO_TARGET_${upper}_LINKER=$gcc" "CC_${t//-/_}=$gcc" \
            cargo build --release --locked --bin posthorn --target "$t" >&2
        binary[$arch]=${CARGO_TARGET_DIR:-target}/$t/release/posthorn
    fi
done
for arch in "${arch_list[@]}"; do
    [[ $(readelf -h "${binary[$arch]}" | sed -n 's/^ *Machine: *//p') == "${machine[$arch]}" ]] ||
        die "${binary[$arch]} is not an $arch binary"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the root filesystems --------------------------------------------------------
# Prints "SOURCE IMAGE_PATH" for the binary's program interpreter and, transitively, every
# shared object it needs, taken from the architecture's Debian library directory.
shared_objects() {
    local arch=$1 elf=$2 interp lib queue=() seen=" "
    interp=$(readelf -l "$elf" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
    [[ -n $interp ]] || die "$elf has no program interpreter (not dynamically linked?)"
    echo "${sysroot[$arch]}/${interp##*/} $interp"
    queue=("$elf")
    while ((${#queue[@]})); do
        for lib in $(readelf -d "${queue[0]}" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
            [[ $seen == *" $lib "* || $lib == "${interp##*/}" ]] && continue
            seen+="$lib "
            [[ -f ${sysroot[$arch]}/$lib ]] || die "$lib (needed by ${queue[0]}) is not in ${sysroot[$arch]}"
            echo "${sysroot[$arch]}/$lib ${libdir[$arch]}/$lib"
            queue+=("${sysroot[$arch]}/$lib")
        done
        queue=("${queue[@]:1}")
    done
}

rootfs() {
    local arch=$1 root=$work/rootfs-$1 src dst package
    install -D -m 0755 "${binary[$arch]}" "$root/usr/local/bin/posthorn"
    # Debug info stays out of the image (release keeps line tables for backtraces).
    if [[ $arch == amd64 ]]; then strip --strip-debug "$root/usr/local/bin/posthorn"
    else "${triple[$arch]%%-*}-linux-gnu-strip" --strip-debug "$root/usr/local/bin/posthorn"; fi
    # Each shared object as a regular file where the loader looks for it, plus its
    # package's copyright file (LGPL, GPL).
    while read -r src dst; do
        install -D -m 0755 "$(readlink -f "$src")" "$root$dst"
        package=$( (dpkg -S "$src" || dpkg -S "$(readlink -f "$src")") 2>/dev/null | head -n 1 | cut -d: -f1) || true
        [[ -n $package && -f /usr/share/doc/$package/copyright ]] &&
            install -D -m 0644 "/usr/share/doc/$package/copyright" "$root/usr/share/doc/$package/copyright"
    done < <(shared_objects "$arch" "${binary[$arch]}")
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    install -D -m 0644 /usr/share/doc/ca-certificates/copyright "$root/usr/share/doc/ca-certificates/copyright"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
    # Host names from /etc/hosts, then DNS (glibc 2.36 has both built in).
    echo "hosts: files dns" >"$root/etc/nsswitch.conf"
    chmod 0644 "$root"/etc/{passwd,group,nsswitch.conf}
    install -d -m 1777 "$root/tmp"
    install -d -m 0755 -o 65532 -g 65532 "$root/home/nonroot" "$root/var/lib/posthorn"
    tar --sort=name --numeric-owner --mtime=@0 -C "$root" -cf "$work/rootfs-$arch.tar" .
}

# --- the image ----------------------------------------------------------------------
store=${POSTHORN_IMAGE_STORE:-/var/cache/posthorn/buildah}
buildah=(buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs)
container=""
trap '[[ -z $container ]] || "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# Commits ARCH's root filesystem as an image tagged NAME.
image() {
    local arch=$1 name=$2
    container=$("${buildah[@]}" from scratch)
    "${buildah[@]}" add "$container" "$work/rootfs-$arch.tar" / >/dev/null
    "${buildah[@]}" config \
        --os linux --arch "$arch" \
        --user 65532:65532 \
        --workingdir /home/nonroot \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --env TERM- \
        --entrypoint '["/usr/local/bin/posthorn"]' \
        --cmd '[]' \
        --label org.opencontainers.image.title=posthorn \
        --label org.opencontainers.image.description="Kubernetes operator and mail submission server" \
        --label org.opencontainers.image.version="$version" \
        --label org.opencontainers.image.licenses=Apache-2.0 \
        "$container"
    "${buildah[@]}" commit --quiet --format oci "$container" "$name" >/dev/null
    "${buildah[@]}" rm "$container" >/dev/null
    container=""
}

rm -rf "$out"
mkdir -p "$(dirname "$out")"
# The tag names a fresh image or list: `manifest add` to an old list would keep its images.
"${buildah[@]}" manifest rm "$tag" >/dev/null 2>&1 || "${buildah[@]}" rmi "$tag" >/dev/null 2>&1 || true
if ((${#arch_list[@]} == 1)); then
    rootfs "${arch_list[0]}"
    image "${arch_list[0]}" "$tag"
    "${buildah[@]}" push --quiet "$tag" "oci:$out:$ref"
else
    "${buildah[@]}" manifest create "$tag" >/dev/null
    for arch in "${arch_list[@]}"; do
        rootfs "$arch"
        image "$arch" "$tag-$arch"
        "${buildah[@]}" manifest add --arch "$arch" --os linux "$tag" "$tag-$arch" >/dev/null
    done
    "${buildah[@]}" manifest push --quiet --all --format oci "$tag" "oci:$out:$ref"
fi
# Earlier builds of the same tag are left untagged; vfs keeps each as a full copy.
"${buildah[@]}" rmi --prune >/dev/null 2>&1 || true

# --- the check: each exported image, unpacked, runs its own binary -----------------
# How to run the image's binary from its unpacked root with the image's own loader and
# libraries: amd64 in a chroot as uid 65532, exactly as a container finds its files
# (where chroot is not allowed, with the image's loader and library directory); arm64
# under qemu-user with the root as its prefix, where it looks up the loader, the
# libraries and every absolute path first.
runner() {
    local arch=$1 rootfs=$2
    if [[ $arch != amd64 ]]; then echo qemu
    elif chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/posthorn --version >/dev/null 2>&1; then
        echo chroot
    else echo ld.so; fi
}
# Runs the binary of the image unpacked at ROOTFS; paths in ARGS are the image's.
in_image() {
    local arch=$1 rootfs=$2 how=$3
    shift 3
    case $how in
        qemu) "qemu-${triple[$arch]%%-*}" -L "$rootfs" "$rootfs/usr/local/bin/posthorn" "$@" ;;
        chroot) chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/posthorn "$@" ;;
        ld.so) "$rootfs/lib64/ld-linux-x86-64.so.2" --inhibit-cache \
            --library-path "$rootfs${libdir[$arch]}" "$rootfs/usr/local/bin/posthorn" "${@/#\//$rootfs/}" ;;
    esac
}
for arch in "${arch_list[@]}"; do
    layout=$out
    if ((${#arch_list[@]} > 1)); then
        # The index's image for this architecture, as a runtime on it would pull it.
        layout=$work/check-$arch
        skopeo copy --quiet --override-arch "$arch" --override-os linux \
            "oci:$out:$ref" "oci:$layout:$ref"
    fi
    umoci unpack --rootless --image "$layout:$ref" "$work/bundle-$arch" >/dev/null
    rootfs=$work/bundle-$arch/rootfs
    how=$(runner "$arch" "$rootfs")
    got=$(in_image "$arch" "$rootfs" "$how" --version)
    [[ $got == "posthorn $version" ]] || die "$arch: the image's binary says '$got', not 'posthorn $version'"
    # A real command: the example MailServer rendered; every architecture's output is
    # compared with the first one's below.
    install -m 0644 examples/mailserver.yaml "$rootfs/tmp/mailserver.yaml"
    in_image "$arch" "$rootfs" "$how" render -f /tmp/mailserver.yaml >"$work/render-$arch.yaml" ||
        die "$arch: render failed in the image"
    grep -q '^kind: StatefulSet$' "$work/render-$arch.yaml" || die "$arch: render printed no StatefulSet"
    cmp -s "$work/render-${arch_list[0]}.yaml" "$work/render-$arch.yaml" ||
        die "$arch: render differs from ${arch_list[0]}'s: $(diff "$work/render-${arch_list[0]}.yaml" "$work/render-$arch.yaml" | head -n 5)"
    # The image config as the runtime sees it.
    manifest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "'"$ref"'") | .digest' "$layout/index.json")
    config_digest=$(jq -r .config.digest "$layout/blobs/${manifest/://}")
    image_config=$layout/blobs/${config_digest/://}
    [[ $(jq -r .architecture "$image_config") == "$arch" ]] || die "$arch: architecture $(jq -r .architecture "$image_config")"
    [[ $(jq -c .config.Entrypoint "$image_config") == '["/usr/local/bin/posthorn"]' ]] || die "$arch: entrypoint: $(jq -c .config.Entrypoint "$image_config")"
    [[ $(jq -r .config.User "$image_config") == 65532:65532 ]] || die "$arch: user: $(jq -r .config.User "$image_config")"
    [[ -s $rootfs/etc/ssl/certs/ca-certificates.crt ]] || die "$arch: no CA bundle in the image"
    echo "image/build.sh: $arch image ran '$got' and rendered the example via $how" >&2
done
size=$(du -sh "$out" | cut -f1)
echo "image/build.sh: $tag (${arches}; $size) in buildah storage $store and OCI layout $out:$ref" >&2
echo "$out:$ref"
