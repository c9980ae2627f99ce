#!/usr/bin/env bash
# Build containers/Dockerfile with podman on a machine that reaches Debian's and PyPI's mirrors but no container
# registry, as this project's machines do: a Debian 12 base made with debootstrap stands in for the CUDA image,
# and DeepSpeed's CPU ops are prebuilt instead of the CUDA ones. Root, Debian. Takes 10-20 minutes.
#   bash tools/podman_check.sh        then: podman images deepspeed-workshop-cpu
# --isolation=chroot: crun cannot create containers here ("cgroups in hybrid mode not supported").
# The pip configuration, CA bundle and local wheel folders of this machine are mounted into the build's RUN steps
# (they are not part of the image): the image's pip reaches the package index the way the host's does.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${PODMAN_CHECK_DIR:-/tmp/podman-check}"
mkdir -p "$work"
command -v podman >/dev/null || apt-get install -y -qq podman >/dev/null
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if ! podman image exists localhost/debian-bookworm-minbase; then
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian
    tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
    podman import "$work/rootfs.tar" localhost/debian-bookworm-minbase
fi
mounts=()
for path in /etc/xdg/pip /root/.config/pip /etc/ssl/certs/ca-certificates.crt /opt/wheels /opt/pypi /opt/pypi-more; do
    [ -e "$path" ] && mounts+=(-v "$path:$path:ro")
done
podman build --isolation=chroot -f containers/Dockerfile -t deepspeed-workshop-cpu \
    --build-arg BASE=localhost/debian-bookworm-minbase --build-arg DS_ACCELERATOR=cpu "${mounts[@]}" .
