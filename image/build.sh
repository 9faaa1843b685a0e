#!/usr/bin/env bash
# Builds the Posthorn container image without Docker, with Debian's buildah (vfs storage,
# FROM scratch), exports it as an OCI image layout and checks it: unpacked with umoci, the
# image's own binary runs with the image's own loader and libraries.
#
# Usage: image/build.sh [--binary PATH] [--tag REPO:TAG] [--out DIR]
#   --binary  the posthorn binary to ship (default: cargo build --release --locked,
#             then target/release/posthorn)
#   --tag     image name (default <Cargo.toml's image repository>:<Cargo.toml version>)
#   --out     OCI image layout directory (default target/image/oci); the image is in
#             it under the tag's TAG part. Push it with skopeo, e.g.
#             skopeo copy oci:target/image/oci:0.1.0 docker://ghcr.io/posthorn/posthorn:0.1.0
#
# The image: /usr/local/bin/posthorn (the path the operator's pods run), the glibc
# libraries it links (copied from this machine, found by ldd: the binary is dynamically
# linked), Mozilla's CA bundle at /etc/ssl/certs/ca-certificates.crt (relay and MX TLS
# verification), /etc/passwd and /etc/group naming uid/gid 65532 "nonroot", USER
# 65532:65532 and ENTRYPOINT ["/usr/local/bin/posthorn"]. No shell, no package manager.
#
# Needs root (buildah's storage) and installs buildah, umoci and ca-certificates with
# apt when missing. buildah's storage: ${POSTHORN_IMAGE_STORE:-/var/cache/posthorn/buildah}.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "image/build.sh: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# Cargo.toml's [package.metadata.image] names the image.
repository=$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
binary=""
tag="$repository:$version"
out="target/image/oci"
while (($#)); do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) die "unknown argument $1 (see the usage at the top of this script)" ;;
    esac
done
ref=${tag##*:}
[[ $ref != "$tag" && $ref != */* ]] || die "--tag needs REPO:TAG, got $tag"

missing=()
for tool in buildah:buildah umoci:umoci jq:jq strip:binutils /etc/ssl/certs/ca-certificates.crt:ca-certificates; do
    what=${tool%%:*}
    if [[ $what == /* ]]; then [[ -f $what ]] || missing+=("${tool#*:}")
    else command -v "$what" >/dev/null || missing+=("${tool#*:}"); fi
done
if ((${#missing[@]})); then
    echo "image/build.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
fi

if [[ -z $binary ]]; then
    cargo build --release --locked >&2
    binary=${CARGO_TARGET_DIR:-target}/release/posthorn
fi
[[ -x $binary ]] || die "$binary is not an executable"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

# --- the root filesystem ----------------------------------------------------
install -D -m 0755 "$binary" "$root/usr/local/bin/posthorn"
# Debug info stays out of the image (release keeps line tables for backtraces).
strip --strip-debug "$root/usr/local/bin/posthorn"
# Every shared object the binary loads, at the path ldd resolves it to (the loader
# looks there), as a regular file; plus the packages' copyright files (LGPL, GPL).
while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done < <(ldd "$binary" | grep -o '/[^ ]*' | sort -u)
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    # dpkg knows a file by the path its package ships (/lib or /usr/lib: merged /usr).
    package=$( (dpkg -S "$lib" || dpkg -S "$(readlink -f "$lib")") 2>/dev/null | head -n 1 | cut -d: -f1) || true
    [[ -n $package && -f /usr/share/doc/$package/copyright ]] &&
        install -D -m 0644 "/usr/share/doc/$package/copyright" "$root/usr/share/doc/$package/copyright"
done
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
tar --sort=name --numeric-owner --mtime=@0 -C "$root" -cf "$work/rootfs.tar" .

# --- the image ----------------------------------------------------------------
store=${POSTHORN_IMAGE_STORE:-/var/cache/posthorn/buildah}
buildah=(buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs)
container=$("${buildah[@]}" from scratch)
trap '"${buildah[@]}" rm "$container" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"${buildah[@]}" add "$container" "$work/rootfs.tar" / >/dev/null
"${buildah[@]}" config \
    --os linux --arch amd64 \
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
"${buildah[@]}" commit --quiet --format oci "$container" "$tag" >/dev/null
rm -rf "$out"
mkdir -p "$(dirname "$out")"
"${buildah[@]}" push --quiet "$tag" "oci:$out:$ref"
# Earlier builds of the same tag are left untagged; vfs keeps each as a full copy.
"${buildah[@]}" rmi --prune >/dev/null 2>&1 || true

# --- the check: the exported image, unpacked, runs its own binary --------------
umoci unpack --rootless --image "$out:$ref" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
# chroot runs it exactly as a container would find its files (as uid 65532); where
# chroot is not allowed, the image's own loader with the image's library directory.
if got=$(chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/posthorn --version 2>/dev/null); then
    how="chroot as 65532"
else
    how="the image's ld.so"
    got=$("$rootfs/lib64/ld-linux-x86-64.so.2" --inhibit-cache \
        --library-path "$rootfs/lib/x86_64-linux-gnu" "$rootfs/usr/local/bin/posthorn" --version)
fi
[[ $got == "posthorn $version" ]] || die "the image's binary says '$got', not 'posthorn $version'"
# The image config as the runtime sees it.
manifest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "'"$ref"'") | .digest' "$out/index.json")
config_digest=$(jq -r .config.digest "$out/blobs/${manifest/://}")
image_config=$out/blobs/${config_digest/://}
[[ $(jq -c .config.Entrypoint "$image_config") == '["/usr/local/bin/posthorn"]' ]] || die "entrypoint: $(jq -c .config.Entrypoint "$image_config")"
[[ $(jq -r .config.User "$image_config") == 65532:65532 ]] || die "user: $(jq -r .config.User "$image_config")"
[[ -s $rootfs/etc/ssl/certs/ca-certificates.crt ]] || die "no CA bundle in the image"
size=$(du -sh "$out" | cut -f1)
echo "image/build.sh: $tag ($size; ran '$got' via $how) in buildah storage $store and OCI layout $out:$ref" >&2
echo "$out:$ref"
