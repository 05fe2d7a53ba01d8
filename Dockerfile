# The dfs container image: the static dfs binary and nothing else (no
# shell, no libc, no package manager), running as the unprivileged user
# dfs (uid/gid 65532), with /data as its volume.
#
# No base image is pulled, so the binary is built on the host first.
# `make image` (IMAGE=dfs:dev by default) builds bin/dfs with CGO off and
# stages a small build context in bin/image/ holding only what this file
# copies, then runs `docker build -f Dockerfile bin/image`:
#
#   dfs          the binary
#   rootfs/      deploy/image/rootfs (etc/passwd and etc/group naming the
#                dfs user, etc/nsswitch.conf), plus an empty tmp/ (1777)
#   owned/data/  an empty directory (0750): /data, owned by dfs
#
# Where a registry is reachable, deploy/image/Dockerfile.multistage builds
# the same image from the sources in one `docker build` (see README.md).
#
# The role is the command; every server role listens on port 7000 of its
# container and keeps its state in /data (DFS_LISTEN, DFS_DATA_DIR):
#
#   docker run -v coord:/data IMAGE coordinator --advertise coord:7000
#   docker run -v dn1:/data IMAGE datanode --coordinator coord:7000 --advertise dn1:7000
#   docker run --rm -i IMAGE put --coordinator coord:7000 - /notes.txt
FROM scratch

ARG VERSION=dev
LABEL org.opencontainers.image.title="dfs" \
      org.opencontainers.image.description="dfs, a distributed file system in one binary: coordinator, datanode and client" \
      org.opencontainers.image.version="${VERSION}"

COPY rootfs/ /
# A scratch image has no chown: the data directory is copied in already
# owned by the dfs user, so a named volume mounted on /data starts out
# writable by it (Docker copies the ownership into a new volume).
COPY --chown=65532:65532 owned/ /
COPY dfs /dfs

ENV DFS_LISTEN=0.0.0.0:7000 \
    DFS_DATA_DIR=/data
USER 65532:65532
VOLUME ["/data"]
EXPOSE 7000

# `dfs health --live` checks that the server on DFS_LISTEN serves (exec
# form: there is no shell); --live, because a coordinator whose datanodes
# have not joined yet is alive, only not ready for writes. A client container (put, get, ...) has nothing to check; run it
# with --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/dfs", "health", "--live"]

ENTRYPOINT ["/dfs"]
CMD ["--help"]
