#!/usr/bin/env bash
# Builds the CUDA backend (`--features cuda`) with no network beyond the package registries.
#
# Why a script: burn 0.22.1's CUDA backend depends on cubecl-llvm, whose build dependency
# tracel-llvm-bundler downloads an LLVM 23.1 bundle from github.com in its build script (and
# panics when it cannot). The bundler has no "use this LLVM" setting, but it skips the download
# when its install directory already holds a sentinel file; cubecl-llvm then runs
# `<that directory>/bin/llvm-config`. So we put an LLVM 23.1 there ourselves: the static SDK
# published on PyPI as `mlc-llvm-static` (+ its NVPTX extra), unpacked from the two wheels, hash
# checked, and symlinked to where the bundler looks. Details and sources:
# shared/notes/gpu-cuda-and-cubecl.md §1.
#
# Usage:
#   scripts/cuda-build.sh                 # prepare the SDK (once), then cargo build --release
#                                         #   -p train --features cuda (train + bench binaries)
#   scripts/cuda-build.sh --sdk-only      # only prepare the SDK; print where it is
#   scripts/cuda-build.sh -- <cargo args> # prepare, then run `cargo <cargo args>` instead
#                                         #   (e.g. -- test --release -p kernels --features cuda)
# Network: `pip download` from PyPI (two wheels, 92 MB, once) and `cargo fetch` from crates.io;
# the cargo build itself then runs with `--offline`, which proves nothing else is fetched.
# Needs: python3 >= 3.10 (the SDK's llvm-config is a Python script), a C++ compiler (g++),
# cargo. At run time the binary needs the NVIDIA driver and libnvrtc (see docs/gpu.md).
# Environment: AR_LLVM_SDK_DIR (where to unpack; default ~/.local/share/autoresearch-rs/...),
# PYTHON (default python3), CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

# The SDK: pinned wheels and their sha256 (from PyPI's JSON API, re-checked on every unpack).
LLVM_SDK_VERSION=23.1.1.post0
WHEELS=(
    "mlc_llvm_static-${LLVM_SDK_VERSION}-py3-none-manylinux_2_28_x86_64.whl dcfec888abfaa418be77d41af585805f31463584cf9c90582992c00f392c1ac5"
    "mlc_llvm_static_extra_targets-${LLVM_SDK_VERSION}-py3-none-manylinux_2_28_x86_64.whl c36e834d9a4e9cf9759f27fece65711ece7a2fc2b5a96dbb15d66f5e9e787929"
)
PYTHON=${PYTHON:-python3}
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share} # what the bundler's dirs::data_local_dir() returns
SDK_DIR=${AR_LLVM_SDK_DIR:-$DATA_HOME/autoresearch-rs/mlc-llvm-static-$LLVM_SDK_VERSION}

die() { echo "cuda-build: error: $*" >&2; exit 1; }
say() { echo "cuda-build: $*" >&2; }

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] ||
    die "the PyPI LLVM SDK is for Linux x86_64 only; elsewhere let the bundler download its own (needs github.com)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
    die "$PYTHON must be Python >= 3.10 (the SDK's llvm-config is a Python script); set PYTHON=..."

# The bundler's install directory is named after its LLVM release, which Cargo.lock pins through
# the bundler's version (23.1.0-4 → tracel-llvm-23.1.0-4). A bump changes the directory, and may
# change the LLVM major version, which must then match the SDK's: both are checked below.
BUNDLER_VERSION=$(awk '/^name = "tracel-llvm-bundler"$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock)
[[ -n "$BUNDLER_VERSION" ]] || die "Cargo.lock pins no tracel-llvm-bundler (did burn drop cubecl-llvm?)"
BUNDLE_DIR="$DATA_HOME/tracel/tracel-llvm-$BUNDLER_VERSION"
SENTINEL="$BUNDLE_DIR/.tracel-llvm-installed"

prepare_sdk() {
    local cfg="$SDK_DIR/mlc_llvm_static/static/bin/llvm-config"
    if [[ ! -x "$cfg" ]]; then
        say "unpacking the LLVM $LLVM_SDK_VERSION SDK from PyPI into $SDK_DIR"
        local tmp
        tmp=$(mktemp -d)
        local names=() entry
        for entry in "${WHEELS[@]}"; do names+=("${entry%% *}"); done
        local pkgs=("mlc-llvm-static==$LLVM_SDK_VERSION" "mlc-llvm-static-extra-targets==$LLVM_SDK_VERSION")
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
            -d "$tmp" "${pkgs[@]}" ||
            die "pip could not download ${pkgs[*]} from PyPI"
        for entry in "${WHEELS[@]}"; do
            local name=${entry%% *} want=${entry##* } got
            [[ -f "$tmp/$name" ]] || die "pip did not fetch $name (got: $(ls "$tmp"))"
            got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
            [[ "$got" == "$want" ]] || die "$name: sha256 $got, expected $want"
        done
        rm -rf "$SDK_DIR.partial"
        mkdir -p "$SDK_DIR.partial"
        for name in "${names[@]}"; do "$PYTHON" -m zipfile -e "$tmp/$name" "$SDK_DIR.partial"; done
        chmod +x "$SDK_DIR.partial/mlc_llvm_static/static/bin/llvm-config" # zip extraction drops the x bit
        rm -rf "$SDK_DIR"
        mv "$SDK_DIR.partial" "$SDK_DIR"
        rm -rf "$tmp"
    fi
    # The checks cubecl-llvm relies on: LLVM 23.1 (the C API llvm-sys 231 binds), the NVPTX
    # backend, static libraries.
    local version targets
    version=$("$cfg" --version) || die "$cfg does not run (python3 on PATH?)"
    [[ "$version" == 23.1.* ]] || die "the SDK is LLVM $version; cubecl-llvm (llvm-sys 231) needs 23.1"
    [[ "$BUNDLER_VERSION" == 23.1.* ]] ||
        die "Cargo.lock's tracel-llvm-bundler is $BUNDLER_VERSION (not LLVM 23.1): update LLVM_SDK_VERSION in this script"
    targets=$("$cfg" --targets-built)
    [[ " $targets " == *" NVPTX "* ]] || die "the SDK lacks the NVPTX target (targets: $targets)"
    "$cfg" --link-static --libs >/dev/null || die "the SDK's static libraries are incomplete"

    # Point the bundler at it. An existing real install (the official bundle, with its sentinel)
    # is left alone; a half-finished one (no sentinel) would make the bundler download again.
    local sdk_prefix="$SDK_DIR/mlc_llvm_static/static"
    mkdir -p "$DATA_HOME/tracel"
    if [[ -L "$BUNDLE_DIR" || ! -e "$BUNDLE_DIR" ]]; then
        ln -sfn "$sdk_prefix" "$BUNDLE_DIR"
    elif [[ ! -f "$SENTINEL" ]]; then
        die "$BUNDLE_DIR exists without the bundler's sentinel (an interrupted download?): remove it and re-run"
    else
        say "$BUNDLE_DIR is an installed bundle (not ours); using it as is"
    fi
    touch "$SENTINEL"
    say "LLVM $version with NVPTX at $(readlink -f "$BUNDLE_DIR") (the bundler's $BUNDLE_DIR)"
}

prepare_sdk
if [[ "${1:-}" == "--sdk-only" ]]; then
    echo "$BUNDLE_DIR"
    exit 0
fi

if [[ "${1:-}" == "--" ]]; then
    shift
    cargo_args=("$@")
else
    cargo_args=(build --release --locked -p train --features cuda --bins)
fi
say "fetching crates (crates.io only)"
cargo fetch --locked
say "cargo ${cargo_args[*]} --offline"
exec cargo "${cargo_args[@]}" --offline
