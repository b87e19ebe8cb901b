#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run) and as the README tells users to:
#   0. a throwaway one-node Slurm cluster on 127.0.0.1 with two fake GPUs (scripts/slurm-up.sh;
#      installs slurmctld slurmd slurm-client munge from Debian's packages when missing, so
#      root), stopped by PID whatever happens; the Slurm tests of step 1 run against it.
#      AR_SKIP_SLURM=1 skips it (the Slurm tests then say SKIPPED);
#   1. every crate's tests on the CPU (tiny configs and data the tests make themselves);
#   2. the GPU path: the train program and the kernels built with `--features wgpu`, the smoke
#      config trained on wgpu over Mesa's software Vulkan (lavapipe) and compared with the CPU.
# Step 2 installs lavapipe with apt when it is missing and we are root; otherwise it says what
# to install. AR_SKIP_GPU=1 runs steps 0-1 only (for a quick local run; CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${AR_SKIP_SLURM:-0}" == "1" ]]; then
    echo "AR_SKIP_SLURM=1: the Slurm tests will say SKIPPED" >&2
else
    # A fresh state directory each time, so no earlier cluster's jobs come back. Measured:
    # up 14 s with the install from a clean apt cache (1.2 s without), down 1 s.
    SLURM_DIR="$(mktemp -d /tmp/ar-slurm-ci.XXXXXX)"
    trap 'scripts/slurm-down.sh "$SLURM_DIR"' EXIT
    eval "$(scripts/slurm-up.sh "$SLURM_DIR")"
    export AR_SLURM_DIR="$SLURM_DIR" AR_REQUIRE_SLURM=1
fi

cargo test --release --workspace --locked

if [[ "${AR_SKIP_GPU:-0}" == "1" ]]; then
    echo "AR_SKIP_GPU=1: the GPU backend build and the wgpu smoke test were skipped" >&2
    exit 0
fi

LAVAPIPE=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
if [[ ! -f "$LAVAPIPE" ]]; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
        echo "Installing Mesa's software Vulkan (lavapipe) for the wgpu test …"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "error: $LAVAPIPE is missing: install Mesa's software Vulkan" \
             "(sudo apt-get install mesa-vulkan-drivers libvulkan1), or set AR_SKIP_GPU=1" >&2
        exit 1
    fi
fi
# Pin lavapipe: without it wgpu silently falls back to OpenGL (see the wgpu test's header).
export VK_ICD_FILENAMES="$LAVAPIPE"
XDG_RUNTIME_DIR="$(mktemp -d)"
export XDG_RUNTIME_DIR

# The GPU path in one cargo invocation, so burn is built once with the wgpu features (two
# invocations with different package selections unify features differently and rebuilt burn:
# measured +10 min on 2 cores):
# - the smoke config trained on wgpu and compared with the CPU; every fused op on wgpu against
#   the same op on the CPU kernels, values and gradients (wgpu_smoke, wgpu_fallback);
# - the #[cube] kernels against the composed versions and attention memory linear in T
#   (cube_kernels, cube_memory), and the h100 memory accounting checked against the allocator
#   (h100_memory), on lavapipe;
# then the CUDA feature type-checked with its tests and no LLVM: DOCS_RS makes the two LLVM
# build scripts stand down and `check` does not link (~1.5 min after the wgpu build).
# scripts/cuda-build.sh is the real, linked, offline build.
cargo test --release --locked -p train -p kernels --features train/wgpu,kernels/wgpu \
    --test wgpu_smoke --test wgpu_fallback --test cube_kernels --test cube_memory --test h100_memory \
    -- --test-threads=1
DOCS_RS=1 cargo check --release --locked -p train -p kernels --features train/cuda,kernels/cuda --all-targets
