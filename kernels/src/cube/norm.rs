//! The row-wise ops as `#[cube]` kernels: RMSNorm (no weight), RoPE then RMSNorm over each head,
//! and relu². Same math and saved state as their `flex/` counterparts: the norms save y and the
//! per-row rstd, and backward is dx = rstd · (dy − y · mean(dy ⊙ y)), rotated back by the
//! opposite angle for RoPE; relu² saves y and its backward is dx = 2·√y·dy.
//!
//! Layout of the norm kernels: a cube of LANES × (threads / LANES) units; each row is handled by
//! LANES units striding over it (consecutive units read consecutive elements, so loads coalesce),
//! their partial sums reduced in shared memory. Rows are short here (D = 64–128 per head for
//! RoPE, n_embd for RMSNorm), so one cube per row would leave most units idle.

use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::cross_entropy::cube_index;
use super::{address_type, contiguous, dims, empty, folded_count, launched, units};
use crate::counters;

/// Units that share one row.
const LANES: usize = 32;

/// How a row kernel is launched: the grid, the cube shape and rows per cube.
struct RowLaunch {
    count: CubeCount,
    dim: CubeDim,
    rows_per_cube: usize,
}

fn row_launch(t: &CubeTensor, rows: usize) -> RowLaunch {
    let threads = units(t, 256) as usize;
    let lanes = LANES.min(threads);
    let rows_per_cube = threads / lanes;
    RowLaunch {
        count: folded_count(rows.div_ceil(rows_per_cube)),
        dim: CubeDim::new_2d(lanes as u32, rows_per_cube as u32),
        rows_per_cube,
    }
}

/// x [..., d] → (y [..., d], rstd [rows]).
pub(crate) fn rms_norm_forward(x: CubeTensor, eps: f32) -> (CubeTensor, CubeTensor) {
    let x = contiguous(x, "rms_norm");
    let shape = dims(&x);
    let d = *shape.last().expect("kernels::rms_norm: input must have at least one dim");
    assert!(d > 0, "kernels::rms_norm: last dim is 0 (shape {shape:?})");
    let rows = shape.iter().product::<usize>() / d;
    let y = empty(&x, shape);
    let rstd = empty(&x, [rows]);
    launched(&counters::CUBE_RMS_NORM_FORWARD, "rms_norm forward", &x);
    if rows > 0 {
        let l = row_launch(&x, rows);
        rms_norm_forward_kernel::launch(
            &x.client,
            l.count,
            l.dim,
            address_type(&[&x]),
            x.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            rstd.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            eps,
            l.dim.x as usize,
            l.rows_per_cube,
        );
    }
    (y, rstd)
}

/// (y [..., d], rstd [rows], dy [..., d]) → dx [..., d].
pub(crate) fn rms_norm_backward(y: &CubeTensor, rstd: &CubeTensor, dy: CubeTensor) -> CubeTensor {
    let dy = contiguous(dy, "rms_norm backward");
    let shape = dims(y);
    assert_eq!(dims(&dy), shape, "kernels::rms_norm backward: gradient shape differs from the output");
    let d = shape[shape.len() - 1];
    let rows = shape.iter().product::<usize>() / d;
    let dx = empty(y, shape);
    launched(&counters::CUBE_RMS_NORM_BACKWARD, "rms_norm backward", y);
    if rows > 0 {
        let l = row_launch(y, rows);
        rms_norm_backward_kernel::launch(
            &y.client,
            l.count,
            l.dim,
            address_type(&[y]),
            y.clone().into_tensor_arg(),
            rstd.clone().into_tensor_arg(),
            dy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            rows as u32,
            d as u32,
            l.dim.x as usize,
            l.rows_per_cube,
        );
    }
    dx
}

fn check_rope(x: &[usize], cos: &[usize], sin: &[usize]) {
    let ok = x.len() == 4 && x[3].is_multiple_of(2) && cos == [x[1], x[3] / 2] && sin == cos;
    assert!(
        ok,
        "kernels::rope_rms_norm: want x [B,T,H,D] (D even), cos and sin [T, D/2]; got x {x:?} cos {cos:?} sin {sin:?}"
    );
}

/// (x [B,T,H,D], cos, sin [T, D/2]) → (y [B,T,H,D], rstd [B·T·H]).
pub(crate) fn rope_rms_norm_forward(
    x: CubeTensor,
    cos: &CubeTensor,
    sin: &CubeTensor,
    eps: f32,
) -> (CubeTensor, CubeTensor) {
    let x = contiguous(x, "rope_rms_norm");
    let shape = dims(&x);
    check_rope(&shape, &dims(cos), &dims(sin));
    let rows = shape[0] * shape[1] * shape[2];
    let y = empty(&x, shape.clone());
    let rstd = empty(&x, [rows]);
    launched(&counters::CUBE_ROPE_RMS_NORM_FORWARD, "rope_rms_norm forward", &x);
    if rows > 0 && shape[3] > 0 {
        let l = row_launch(&x, rows);
        rope_rms_norm_forward_kernel::launch(
            &x.client,
            l.count,
            l.dim,
            address_type(&[&x]),
            x.clone().into_tensor_arg(),
            cos.clone().into_tensor_arg(),
            sin.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            rstd.clone().into_tensor_arg(),
            rows as u32,
            shape[1] as u32,
            shape[2] as u32,
            shape[3] as u32,
            eps,
            l.dim.x as usize,
            l.rows_per_cube,
        );
    }
    (y, rstd)
}

/// (y, rstd as saved, cos, sin, dy [B,T,H,D]) → dx [B,T,H,D].
pub(crate) fn rope_rms_norm_backward(
    y: &CubeTensor,
    rstd: &CubeTensor,
    cos: &CubeTensor,
    sin: &CubeTensor,
    dy: CubeTensor,
) -> CubeTensor {
    let dy = contiguous(dy, "rope_rms_norm backward");
    let shape = dims(y);
    assert_eq!(dims(&dy), shape, "kernels::rope_rms_norm backward: gradient shape differs from the output");
    let rows = shape[0] * shape[1] * shape[2];
    let dx = empty(y, shape.clone());
    launched(&counters::CUBE_ROPE_RMS_NORM_BACKWARD, "rope_rms_norm backward", y);
    if rows > 0 && shape[3] > 0 {
        let l = row_launch(y, rows);
        rope_rms_norm_backward_kernel::launch(
            &y.client,
            l.count,
            l.dim,
            address_type(&[y]),
            y.clone().into_tensor_arg(),
            rstd.clone().into_tensor_arg(),
            cos.clone().into_tensor_arg(),
            sin.clone().into_tensor_arg(),
            dy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            rows as u32,
            shape[1] as u32,
            shape[2] as u32,
            shape[3] as u32,
            l.dim.x as usize,
            l.rows_per_cube,
        );
    }
    dx
}

/// Elements per unit of the element-wise kernels' grid: one.
fn elementwise(t: &CubeTensor, n: usize) -> (CubeCount, CubeDim) {
    let threads = units(t, 256) as usize;
    (folded_count(n.div_ceil(threads)), CubeDim::new_1d(threads as u32))
}

/// x [...] → y = max(x, 0)² [...].
pub(crate) fn relu_square_forward(x: CubeTensor) -> CubeTensor {
    let x = contiguous(x, "relu_square");
    let n = dims(&x).iter().product::<usize>();
    assert!(n <= u32::MAX as usize, "kernels::relu_square: {n} elements exceed the kernel's u32 index");
    let y = empty(&x, dims(&x));
    launched(&counters::CUBE_RELU_SQUARE_FORWARD, "relu_square forward", &x);
    if n > 0 {
        let (count, dim) = elementwise(&x, n);
        relu_square_forward_kernel::launch(
            &x.client,
            count,
            dim,
            address_type(&[&x]),
            x.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            n as u32,
        );
    }
    y
}

/// (y [...], dy [...]) → dx = 2·√y·dy [...].
pub(crate) fn relu_square_backward(y: &CubeTensor, dy: CubeTensor) -> CubeTensor {
    let dy = contiguous(dy, "relu_square backward");
    assert_eq!(dims(&dy), dims(y), "kernels::relu_square backward: gradient shape differs from the output");
    let n = dims(y).iter().product::<usize>();
    let dx = empty(y, dims(y));
    launched(&counters::CUBE_RELU_SQUARE_BACKWARD, "relu_square backward", y);
    if n > 0 {
        let (count, dim) = elementwise(y, n);
        relu_square_backward_kernel::launch(
            &y.client,
            count,
            dim,
            address_type(&[y]),
            y.clone().into_tensor_arg(),
            dy.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            n as u32,
        );
    }
    dx
}

/// Sum over the `lanes` units of one row (unit x of row y of the cube), via `red`, returned to
/// every lane. Every unit of the cube must call it.
#[cube]
fn row_sum(partial: f32, red: &mut Shared<[f32]>, #[comptime] lanes: usize) -> f32 {
    let lane = UNIT_POS_X as usize;
    let base = UNIT_POS_Y as usize * lanes;
    red[base + lane] = partial;
    sync_cube();
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if lane < stride {
            red[base + lane] += red[base + lane + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = red[base];
    // Nobody may overwrite red before every lane has read its total.
    sync_cube();
    total
}

/// The row this unit works on (the last cube may run past the end: see `clamp_row`).
#[cube]
fn this_row(#[comptime] rows_per_cube: usize) -> usize {
    cube_index() * rows_per_cube + UNIT_POS_Y as usize
}

/// A row past the end reads the last row instead (its results are not written), so that every
/// unit still takes part in the cube's synchronisations.
#[cube]
fn clamp_row(row: usize, rows: u32) -> usize {
    if row < rows as usize { row } else { rows as usize - 1 }
}

#[cube(launch, address_type = "dynamic")]
fn rms_norm_forward_kernel(
    x: &Tensor<f32>,
    y: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    rows: u32,
    dim: u32,
    eps: f32,
    #[comptime] lanes: usize,
    #[comptime] rows_per_cube: usize,
) {
    let valid = this_row(rows_per_cube) < rows as usize;
    let row = clamp_row(this_row(rows_per_cube), rows);
    let d = dim as usize;
    let base = row * d;
    let lane = UNIT_POS_X as usize;
    let mut red = Shared::<[f32]>::new_slice(lanes * rows_per_cube);
    let mut partial = 0.0f32;
    let mut c = lane;
    while c < d {
        let v = x[base + c];
        partial += v * v;
        c += lanes;
    }
    let inv = 1.0f32 / (row_sum(partial, &mut red, lanes) / f32::cast_from(dim) + eps).sqrt();
    if valid {
        let mut c = lane;
        while c < d {
            y[base + c] = x[base + c] * inv;
            c += lanes;
        }
        if lane == 0 {
            rstd[row] = inv;
        }
    }
}

#[cube(launch, address_type = "dynamic")]
fn rms_norm_backward_kernel(
    y: &Tensor<f32>,
    rstd: &Tensor<f32>,
    dy: &Tensor<f32>,
    dx: &mut Tensor<f32>,
    rows: u32,
    dim: u32,
    #[comptime] lanes: usize,
    #[comptime] rows_per_cube: usize,
) {
    let valid = this_row(rows_per_cube) < rows as usize;
    let row = clamp_row(this_row(rows_per_cube), rows);
    let d = dim as usize;
    let base = row * d;
    let lane = UNIT_POS_X as usize;
    let mut red = Shared::<[f32]>::new_slice(lanes * rows_per_cube);
    let mut partial = 0.0f32;
    let mut c = lane;
    while c < d {
        partial += dy[base + c] * y[base + c];
        c += lanes;
    }
    let mean = row_sum(partial, &mut red, lanes) / f32::cast_from(dim);
    if valid {
        let r = rstd[row];
        let mut c = lane;
        while c < d {
            dx[base + c] = r * (dy[base + c] - y[base + c] * mean);
            c += lanes;
        }
    }
}

/// Row (b, t, h) of x: its halves turned by position t's angles, then normalised.
#[cube(launch, address_type = "dynamic")]
fn rope_rms_norm_forward_kernel(
    x: &Tensor<f32>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    y: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    rows: u32,
    seq: u32,
    heads: u32,
    dim: u32,
    eps: f32,
    #[comptime] lanes: usize,
    #[comptime] rows_per_cube: usize,
) {
    let valid = this_row(rows_per_cube) < rows as usize;
    let row = clamp_row(this_row(rows_per_cube), rows);
    let d = dim as usize;
    let half = d / 2;
    let base = row * d;
    let pos = (row / heads as usize) % seq as usize * half;
    let lane = UNIT_POS_X as usize;
    let mut red = Shared::<[f32]>::new_slice(lanes * rows_per_cube);
    let mut partial = 0.0f32;
    let mut i = lane;
    while i < half {
        let x1 = x[base + i];
        let x2 = x[base + half + i];
        let c = cos[pos + i];
        let s = sin[pos + i];
        let y1 = x1 * c + x2 * s;
        let y2 = x2 * c - x1 * s;
        partial += y1 * y1 + y2 * y2;
        i += lanes;
    }
    let inv = 1.0f32 / (row_sum(partial, &mut red, lanes) / f32::cast_from(dim) + eps).sqrt();
    if valid {
        let mut i = lane;
        while i < half {
            let x1 = x[base + i];
            let x2 = x[base + half + i];
            let c = cos[pos + i];
            let s = sin[pos + i];
            y[base + i] = (x1 * c + x2 * s) * inv;
            y[base + half + i] = (x2 * c - x1 * s) * inv;
            i += lanes;
        }
        if lane == 0 {
            rstd[row] = inv;
        }
    }
}

#[cube(launch, address_type = "dynamic")]
fn rope_rms_norm_backward_kernel(
    y: &Tensor<f32>,
    rstd: &Tensor<f32>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    dy: &Tensor<f32>,
    dx: &mut Tensor<f32>,
    rows: u32,
    seq: u32,
    heads: u32,
    dim: u32,
    #[comptime] lanes: usize,
    #[comptime] rows_per_cube: usize,
) {
    let valid = this_row(rows_per_cube) < rows as usize;
    let row = clamp_row(this_row(rows_per_cube), rows);
    let d = dim as usize;
    let half = d / 2;
    let base = row * d;
    let pos = (row / heads as usize) % seq as usize * half;
    let lane = UNIT_POS_X as usize;
    let mut red = Shared::<[f32]>::new_slice(lanes * rows_per_cube);
    let mut partial = 0.0f32;
    let mut c = lane;
    while c < d {
        partial += dy[base + c] * y[base + c];
        c += lanes;
    }
    let mean = row_sum(partial, &mut red, lanes) / f32::cast_from(dim);
    if valid {
        let r = rstd[row];
        let mut i = lane;
        while i < half {
            let d1 = r * (dy[base + i] - y[base + i] * mean);
            let d2 = r * (dy[base + half + i] - y[base + half + i] * mean);
            let c = cos[pos + i];
            let s = sin[pos + i];
            dx[base + i] = d1 * c - d2 * s;
            dx[base + half + i] = d1 * s + d2 * c;
            i += lanes;
        }
    }
}

#[cube(launch, address_type = "dynamic")]
fn relu_square_forward_kernel(x: &Tensor<f32>, y: &mut Tensor<f32>, len: u32) {
    let i = cube_index() * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    if i < len as usize {
        let r = max(x[i], 0.0f32);
        y[i] = r * r;
    }
}

#[cube(launch, address_type = "dynamic")]
fn relu_square_backward_kernel(y: &Tensor<f32>, dy: &Tensor<f32>, dx: &mut Tensor<f32>, len: u32) {
    let i = cube_index() * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    if i < len as usize {
        dx[i] = 2.0f32 * y[i].sqrt() * dy[i];
    }
}
