#!/bin/sh
# make test_deploy, first step, in the machine's own network (the tests then run without one):
# the system packages (docker.io: dockerd 20.10, containerd, runc; mmdebstrap; nfs-ganesha and
# libnfs-utils, a userspace NFS server and client) and the stand-in
# base image, cached under tmp/deploy/cache by a hash of what it is built from. Prints its path.
set -eu
cd "$(dirname "$0")/../.."
missing=
for cmd in dockerd docker mmdebstrap ip unshare ganesha.nfsd nfs-ls; do command -v "$cmd" >/dev/null || missing=1; done
if [ -n "$missing" ]; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io mmdebstrap iproute2 util-linux \
        nfs-ganesha nfs-ganesha-vfs libnfs-utils >&2
fi
key=$(cat pyproject.toml deploy/standin-base.sh | sha256sum | cut -c1-16)
tar=tmp/deploy/cache/standin-$key.tar
if [ ! -f "$tar" ]; then
    mkdir -p tmp/deploy/cache
    rm -rf tmp/deploy/cache/standin-*
    # mmdebstrap picks the output format from the name: it must end in .tar
    deploy/standin-base.sh "tmp/deploy/cache/partial-$key.tar" >&2
    mv "tmp/deploy/cache/partial-$key.tar" "$tar"
fi
echo "$PWD/$tar"
