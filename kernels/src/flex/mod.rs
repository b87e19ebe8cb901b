//! Hand-written CPU kernels for burn's Flex backend: each op is a forward/backward pair over
//! contiguous f32 buffers, parallelised with rayon (the pool burn-flex itself uses, so our work
//! and burn's never oversubscribe the cores).
//!
//! This module owns the boundary with `FlexTensor`: inputs are made contiguous f32 here (strided
//! views are copied once, other dtypes are refused — the router in lib.rs sends those to the
//! composed fallback), outputs are built from `Vec<f32>` without copying.

pub(crate) mod adamw;
pub(crate) mod attention;
pub(crate) mod bf16;
pub(crate) mod cross_entropy;
pub(crate) mod math;
pub(crate) mod relu_square;
pub(crate) mod rms_norm;
pub(crate) mod rope;
pub(crate) mod softcap;

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};

/// `t` as a contiguous f32 tensor: returned as is when its elements are already one dense run,
/// copied otherwise (a transposed or sliced view).
pub(crate) fn contiguous(t: FlexTensor, op: &str) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "kernels::{op}: the Flex kernels take f32, got {:?}", t.dtype());
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

/// The elements of a contiguous f32 tensor (see [`contiguous`]).
pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("kernels: tensor was made contiguous f32 first")
}

/// `t` as a contiguous f32 tensor whose buffer this caller may overwrite: `t` itself when nothing
/// else holds its buffer (the usual case for an upstream gradient: no allocation, no page
/// faults), a copy otherwise.
pub(crate) fn into_unique(t: FlexTensor, op: &str) -> FlexTensor {
    let t = contiguous(t, op);
    let exact = t.layout().start_offset() == 0 && t.bytes().len() == 4 * t.layout().num_elements();
    if t.is_unique() && exact { t } else { tensor(f32s(&t).to_vec(), dims(&t)) }
}

/// The elements of a tensor from [`into_unique`], writable.
pub(crate) fn f32s_mut(t: &mut FlexTensor) -> &mut [f32] {
    t.try_storage_mut::<f32>().expect("kernels: tensor was made unique first")
}

/// The dims of a tensor.
pub(crate) fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

/// A contiguous f32 tensor owning `data`, no copy.
pub(crate) fn tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// A `*mut f32` that rayon tasks may share. Each task writes only the rows it owns (disjoint by
/// construction at every use site), which is what makes this sound; the borrow checker cannot see
/// it because the rows of different tasks interleave in memory ([B, T, H, D] layout).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(*mut f32);

// SAFETY: see the type's doc; every use writes disjoint elements from different threads.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(data: &mut [f32]) -> Self {
        Self(data.as_mut_ptr())
    }

    /// The pointer (a method, not field access, so closures capture the Send wrapper).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

// The counters live in lib.rs (the cube kernels bump theirs there too).
pub(crate) use crate::counters;
