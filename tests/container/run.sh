#!/usr/bin/env bash
# Container test (CI step after the unit suite; not collected by pytest: it is not a .py file).
# Builds the image from ./Dockerfile with buildah (no Docker daemon here) on a locally debootstrapped
# Debian bookworm base (Python 3.11, as the wheels in constraints.txt), runs `shard` and a tiny
# `pretrain@simclr` in it as uid 1000 on a mounted copy of the checkout, runs the same on the host,
# and fails unless the metrics, the shard manifest and encoder.pt are identical. Then runs a tiny
# `shard` as uid 1000 with no volume (the image's own /app must be writable by its user).
#   bash tests/container/run.sh          (root, or sudo for apt; the host .venv from scripts/run.sh setup)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export STORAGE_DRIVER=vfs        # no overlay/fuse needed: works in unprivileged CI containers
T0=$(date +%s)
[ -x .venv/bin/python ] || { echo "no .venv: run 'bash scripts/run.sh setup' first" >&2; exit 2; }

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq buildah debootstrap >/dev/null
fi

WORK=$(mktemp -d /tmp/ssl-container.XXXXXX)
CTR=""; IMG=ssl-pipeline-test:$$; BASE_IMG=ssl-base-bookworm:$$
cleanup() {
  [ -n "$CTR" ] && buildah rm "$CTR" >/dev/null 2>&1 || true
  buildah rmi -f "$IMG" "$BASE_IMG" >/dev/null 2>&1 || true
  $SUDO rm -rf "$WORK"
}
trap cleanup EXIT

# 1. Base image: Debian bookworm's python3 is 3.11, the Python the wheels in constraints.txt are for.
t=$(date +%s)
$SUDO debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
  http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
base=$(buildah from scratch)
buildah copy "$base" "$WORK/rootfs" / >/dev/null
buildah commit -q "$base" "$BASE_IMG" >/dev/null
buildah rm "$base" >/dev/null
$SUDO rm -rf "$WORK/rootfs"
base=$(buildah from -q "$BASE_IMG")
pyver=$(buildah run --isolation chroot "$base" -- python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
buildah rm "$base" >/dev/null
[ "$pyver" = 3.11 ] || { echo "base has Python $pyver; constraints.txt's wheels are for 3.11" >&2; exit 1; }
echo "base image: $(( $(date +%s) - t )) s (debootstrap + commit), Python $pyver"

# 2. Build from the same Dockerfile. Package traffic passes a TLS proxy only the host's CA bundle trusts:
# it is mounted for the build (never copied in). pip gets the host's package sources as build-time
# options; local index folders are mounted read-only. Nothing of this stays in the image.
PIP_OPTS="--cert /etc/ssl/certs/ca-certificates.crt"
VOLS=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
for d in /opt/wheels /opt/pypi /opt/pypi-more; do
  [ -d "$d" ] || continue
  VOLS+=(--volume "$d:$d:ro")
  if [ -d "$d/simple" ]; then PIP_OPTS+=" --extra-index-url file://$d/simple"; else PIP_OPTS+=" --find-links $d"; fi
done
t=$(date +%s)
buildah bud -q --isolation chroot "${VOLS[@]}" --build-arg BASE="$BASE_IMG" --build-arg PIP_OPTS="$PIP_OPTS" \
  -t "$IMG" -f Dockerfile . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
BUILD_S=$(( $(date +%s) - t ))
echo "build: $BUILD_S s"
buildah images "$IMG"

# 3. Two copies of the checkout with tiny params (as tests/e2e), one for the container, one for the host.
make_copy() {  # $1: destination
  mkdir -p "$1"
  git ls-files -co --exclude-standard | grep -v -E '^(metrics|reports|dvclive)/|^dvc\.lock$' \
    | while read -r f; do [ -f "$f" ] && echo "$f"; done | tar -cf - -T - | tar -xf - -C "$1"
  .venv/bin/python - "$1/params.yaml" <<'PY'
import sys, yaml
p = sys.argv[1]; params = yaml.safe_load(open(p))
tiny = {"data": {"pretrain_size": 300, "train_size": 300, "val_size": 200, "test_size": 300, "shard_size": 200},
        "encoder": {"layers": [1, 1], "width": 8},
        "pretrain": {"epochs": 1, "batch_size": 64, "knn_bank_size": 200, "knn_query_size": 100}}
for k, v in tiny.items():
    params[k].update(v)
yaml.safe_dump(params, open(p, "w"), sort_keys=False)
PY
  (cd "$1" && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm tiny)
}
make_copy "$WORK/in-container"; make_copy "$WORK/on-host"
chown -R 1000:1000 "$WORK/in-container"   # the container's uid must be able to write its checkout

STAGES="dvc repro shard && dvc repro pretrain@simclr"
t=$(date +%s)
CTR=$(buildah from -q "$IMG")
buildah run --isolation chroot --user 1000:1000 --volume "$WORK/in-container:/app" "$CTR" -- \
  sh -c "$STAGES" >"$WORK/run.log" 2>&1 || { tail -40 "$WORK/run.log" >&2; exit 1; }
RUN_S=$(( $(date +%s) - t ))
echo "container run (shard + tiny pretrain@simclr): $RUN_S s"

t=$(date +%s)
(cd "$WORK/on-host" && PATH="$REPO/.venv/bin:$PATH" PYTHONPATH="$WORK/on-host" sh -c "$STAGES") >"$WORK/host.log" 2>&1 \
  || { tail -40 "$WORK/host.log" >&2; exit 1; }
echo "host run: $(( $(date +%s) - t )) s"

# 4. The image is the tested stack only if it computes the same bytes (pretraining is deterministic on CPU).
fail=0
for f in metrics/pretrain/simclr.json data/shards/manifest.json models/simclr/encoder.pt; do
  if cmp -s "$WORK/in-container/$f" "$WORK/on-host/$f"; then echo "same: $f"
  else echo "DIFFERENT: $f" >&2; diff <(cat "$WORK/in-container/$f") <(cat "$WORK/on-host/$f") | head -10 >&2 || true; fail=1; fi
done
# 5. No volume: the image's own copy of the checkout, as uid 1000 (docker run without -v). Tiny params
# are written inside the container, so the user must own /app; shard writes data/ and dvc.lock.
t=$(date +%s)
CTR2=$(buildah from -q "$IMG")
if buildah run --isolation chroot --user 1000:1000 "$CTR2" -- sh -c '
    set -e; test -w /app && test "$(stat -c %u /app)" = 1000
    python - <<PY
import yaml
p = yaml.safe_load(open("params.yaml"))
p["data"].update(pretrain_size=300, train_size=300, val_size=200, test_size=300, shard_size=200)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
    dvc repro shard && test -s data/shards/manifest.json' >"$WORK/novolume.log" 2>&1; then
  echo "no-volume run as uid 1000 (tiny shard): $(( $(date +%s) - t )) s"
else
  tail -40 "$WORK/novolume.log" >&2; echo "the image's /app is not usable by uid 1000 without a volume" >&2; fail=1
fi
buildah rm "$CTR2" >/dev/null 2>&1 || true

echo "total: $(( $(date +%s) - T0 )) s"
[ "$fail" = 0 ] || { echo "container and host results differ" >&2; exit 1; }
echo "container test passed"
