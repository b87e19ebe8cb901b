//! The same fused ops as `flex/`, as `#[cube]` kernels for burn's `CubeBackend`: one source that
//! cubecl compiles to CUDA C++ (NVRTC) on NVIDIA GPUs and to WGSL/SPIR-V on wgpu (Vulkan, Metal,
//! and lavapipe, the software Vulkan CI runs them on).
//!
//! Why: burn 0.22.1 has no trainable fused attention (under autodiff every backend takes the
//! composed `attention_fallback`, which keeps [B, H, T, T] scores: 8.6 GB per layer at the h100
//! profile), and no fused RMSNorm, RoPE or cross-entropy. These kernels keep what the CPU kernels
//! keep (O and the log-sum-exp, y and rstd, the per-row log-sum-exp), so activation memory is
//! linear in T, and run each op in one or two launches each way.
//!
//! Portability rules the kernels follow (each bit one of them on some runtime):
//! - no `-inf` literal or 1/0: WGSL may fold a runtime 1/0 to 0 (burn-cubecl ctc.rs); masked
//!   scores use `NEG_BIG` and are never exponentiated;
//! - no plane (warp) operations and no assumed plane size: lavapipe's differs from CUDA's 32 and
//!   cubecl-cpu's is 1; reductions go through shared memory;
//! - cube counts fold into two dimensions: Vulkan guarantees only 65,535 cubes per dimension;
//! - shared-memory tiles are sized from the device's limit (WebGPU's default is 16 KB);
//! - compute in f32: the router sends only f32 tensors here (as it does to the CPU kernels).
//!
//! Module map: `attention.rs` (FlashAttention-2 style forward, dQ and dK/dV kernels),
//! `cross_entropy.rs`, `norm.rs` (RMSNorm, RoPE + RMSNorm, relu²). Each launch bumps its
//! counter in `crate::counters` and, the first time, prints one line to stderr naming the kernel
//! and the device, which is how a log shows that a run used these kernels.

pub(crate) mod attention;
pub(crate) mod cross_entropy;
pub(crate) mod norm;

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Masked scores and running maxima start here instead of −∞ (see the module header).
pub(crate) const NEG_BIG: f32 = -1.0e30;

/// Threads per cube for the row kernels: WebGPU's guaranteed minimum of invocations per
/// workgroup, and enough to stream a row on a GPU.
const ROW_THREADS: u32 = 256;

/// `t` as a contiguous f32 tensor (strided views are copied once; the router only sends f32).
pub(crate) fn contiguous(t: CubeTensor, op: &str) -> CubeTensor {
    assert_eq!(t.dtype, DType::F32, "kernels::{op}: the cube kernels take f32, got {:?}", t.dtype);
    into_contiguous(t)
}

/// A new uninitialised f32 tensor on `like`'s device.
pub(crate) fn empty(like: &CubeTensor, shape: impl Into<Shape>) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape.into(), DType::F32)
}

/// The dims of a tensor.
pub(crate) fn dims(t: &CubeTensor) -> Vec<usize> {
    t.meta.shape().to_vec()
}

/// A cube count of `n` cubes folded into (x, y), x at most 65,535 (Vulkan's guaranteed limit per
/// dimension); kernels recover the linear index as `CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X` and
/// skip the few past `n`.
pub(crate) fn folded_count(n: usize) -> CubeCount {
    const MAX_X: usize = 65_535;
    let x = n.clamp(1, MAX_X);
    CubeCount::Static(x as u32, n.div_ceil(x).max(1) as u32, 1)
}

/// The largest power of two ≤ `n` (n ≥ 1).
pub(crate) fn floor_pow2(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// How many units a cube may have on this tensor's device, capped at `want`.
pub(crate) fn units(t: &CubeTensor, want: u32) -> u32 {
    let hw = &t.client.properties().hardware;
    floor_pow2(want.min(hw.max_units_per_cube).min(hw.max_cube_dim.0).max(1) as usize) as u32
}

/// Shared memory per cube on this tensor's device, in bytes.
pub(crate) fn shared_bytes(t: &CubeTensor) -> usize {
    t.client.properties().hardware.max_shared_memory_size
}

/// Threads per cube for a one-cube-per-row kernel.
pub(crate) fn row_threads(t: &CubeTensor) -> u32 {
    units(t, ROW_THREADS)
}

/// Whether any tensor needs 64-bit addressing (the h100 profile's logits are 8.6 GB in f32).
pub(crate) fn address_type(tensors: &[&CubeTensor]) -> AddressType {
    tensors.iter().map(|t| t.required_address_type()).max().unwrap_or_default()
}

/// Counts a launch of kernel `name`; the first launch of each prints one line to stderr.
pub(crate) fn launched(counter: &AtomicUsize, name: &str, on: &CubeTensor) {
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        eprintln!("kernels: #[cube] {name} runs on {:?}", on.device);
    }
}
