//! `kernels::attention` against the composed `reference::attention` (explicit [T, T] window
//! mask): outputs and the gradients of q, k, v for a random projection of the output, on the
//! autodiff Flex device, over the windows, head groupings and lengths that exercise the blocking.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::{kernel_calls, reference};

/// One attention problem: shapes in flash-attn layout and the window.
#[derive(Clone, Copy, Debug)]
struct Case {
    b: usize,
    t: usize,
    h: usize,
    hkv: usize,
    d: usize,
    window: usize,
}

impl Case {
    fn new(b: usize, t: usize, h: usize, hkv: usize, d: usize, window: usize) -> Self {
        Self { b, t, h, hkv, d, window }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }
}

/// (o, dq, dk, dv) from ours or the reference. `layout` builds each input from its leaf, so a
/// test can feed strided views.
type Layout = fn(Tensor<4>) -> Tensor<4>;

fn run(
    c: Case,
    ours: bool,
    device: &Device,
    leaf_shape: fn(Case, usize) -> [usize; 4],
    layout: Layout,
) -> [Vec<f32>; 4] {
    let mut rng = Rng::new(42);
    let (qn, kn) = (c.b * c.t * c.h * c.d, c.b * c.t * c.hkv * c.d);
    let q = tensor(&rng.normals(qn, 1.0), leaf_shape(c, c.h), device).require_grad();
    let k = tensor(&rng.normals(kn, 1.0), leaf_shape(c, c.hkv), device).require_grad();
    let v = tensor(&rng.normals(kn, 1.0), leaf_shape(c, c.hkv), device).require_grad();
    let w = tensor(&rng.normals(qn, 1.0), [c.b, c.t, c.h, c.d], device);
    let (qi, ki, vi) = (layout(q.clone()), layout(k.clone()), layout(v.clone()));
    let o = if ours {
        kernels::attention(qi, ki, vi, c.window, c.scale())
    } else {
        reference::attention(qi, ki, vi, c.window, c.scale())
    };
    let grads = (o.clone() * w).sum().backward();
    [values(&o), grad_values(&q, &grads), grad_values(&k, &grads), grad_values(&v, &grads)]
}

fn flash_layout(c: Case, heads: usize) -> [usize; 4] {
    [c.b, c.t, heads, c.d]
}

fn check_with(c: Case, device: &Device, leaf_shape: fn(Case, usize) -> [usize; 4], layout: Layout) {
    let before = kernel_calls();
    let ours = run(c, true, device, leaf_shape, layout);
    let after = kernel_calls();
    assert!(after.attention_forward > before.attention_forward, "{c:?}: the Flex forward kernel did not run");
    assert!(after.attention_backward > before.attention_backward, "{c:?}: the backward kernel did not run");
    let reference = run(c, false, device, leaf_shape, layout);
    for (name, (a, b)) in ["o", "dq", "dk", "dv"].iter().zip(ours.iter().zip(&reference)) {
        assert_close(&format!("{c:?} {name}"), a, b, REL_TOL);
    }
}

fn check(c: Case) {
    check_with(c, &autodiff_device(), flash_layout, |x| x);
}

#[test]
fn attention_matches_composed_for_every_window() {
    // T = 37 is not a multiple of the kernel's query block; windows from "self only" to
    // "more than the sequence".
    for window in [0, 1, 5, 18, 36, 37, 1000] {
        check(Case::new(2, 37, 2, 2, 16, window));
    }
}

#[test]
fn attention_matches_composed_across_several_query_blocks() {
    // T = 150 spans three 64-row blocks with a ragged last block; the window of 70 makes the
    // key range of later blocks start after 0.
    for window in [3, 70, 149] {
        check(Case::new(1, 150, 2, 2, 32, window));
    }
}

#[test]
fn attention_matches_composed_with_grouped_query_heads() {
    check(Case::new(2, 40, 4, 2, 16, 9)); // two query heads per kv head
    check(Case::new(1, 70, 4, 1, 8, 30)); // multi-query: one kv head for all
}

#[test]
fn attention_matches_composed_at_the_model_shape() {
    // The standard config's per-layer shape: [16, 256, 4, 64], short and long windows.
    for window in [128, 256] {
        check(Case::new(16, 256, 4, 4, 64, window));
    }
}

#[test]
fn attention_accepts_strided_inputs() {
    // Leaves in [B, H, T, D], handed over as [B, T, H, D] views (swap_dims does not copy).
    let c = Case::new(2, 33, 3, 3, 16, 10);
    check_with(c, &autodiff_device(), |c, h| [c.b, h, c.t, c.d], |x| x.swap_dims(1, 2));
}

#[test]
fn attention_works_with_gradient_checkpointing() {
    check_with(
        Case::new(1, 65, 2, 1, 16, 20),
        &autodiff_device().gradient_checkpointing(),
        flash_layout,
        |x| x,
    );
}

#[test]
fn attention_untracked_and_plain_flex_match_composed() {
    let c = Case::new(2, 45, 2, 1, 16, 12);
    let mut rng = Rng::new(1);
    let q = rng.normals(c.b * c.t * c.h * c.d, 1.0);
    let kv = rng.normals(c.b * c.t * c.hkv * c.d, 1.0);
    for device in [autodiff_device(), Device::flex()] {
        let make = |data: &[f32], heads| tensor(data, [c.b, c.t, heads, c.d], &device);
        let before = kernel_calls().attention_forward;
        let o = kernels::attention(make(&q, c.h), make(&kv, c.hkv), make(&kv, c.hkv), c.window, c.scale());
        assert!(kernel_calls().attention_forward > before, "the Flex forward kernel did not run");
        let o_ref =
            reference::attention(make(&q, c.h), make(&kv, c.hkv), make(&kv, c.hkv), c.window, c.scale());
        assert_close(&format!("untracked attention on {device:?}"), &values(&o), &values(&o_ref), REL_TOL);
    }
}

#[test]
fn attention_window_zero_returns_each_tokens_own_value() {
    // Seeing only itself, every query's softmax is [1], so o = v exactly.
    let (b, t, h, d) = (1, 9, 2, 4);
    let v: Vec<f32> = (0..b * t * h * d).map(|i| i as f32).collect();
    let device = Device::flex();
    let qk = tensor(&Rng::new(2).normals(v.len(), 1.0), [b, t, h, d], &device);
    let o = kernels::attention(qk.clone(), qk, tensor(&v, [b, t, h, d], &device), 0, 0.5);
    assert_eq!(values(&o), v);
}

#[test]
fn attention_window_limits_what_a_query_sees() {
    // Perturb a value just outside query t's window: o[t] must not move; just inside: it must.
    let (t, d, window) = (20, 4, 5);
    let device = Device::flex();
    let mut rng = Rng::new(4);
    let q = tensor(&rng.normals(t * d, 1.0), [1, t, 1, d], &device);
    let k = tensor(&rng.normals(t * d, 1.0), [1, t, 1, d], &device);
    let v0 = rng.normals(t * d, 1.0);
    let o_at = |v: &[f32], row: usize| {
        let o = kernels::attention(q.clone(), k.clone(), tensor(v, [1, t, 1, d], &device), window, 0.5);
        values(&o)[row * d..(row + 1) * d].to_vec()
    };
    let query = 15;
    let base = o_at(&v0, query);
    let bumped = |key: usize| {
        let mut v = v0.clone();
        v[key * d] += 10.0;
        o_at(&v, query)
    };
    assert_eq!(bumped(query - window - 1), base, "key t-w-1 leaked into query t");
    assert_eq!(bumped(query + 1), base, "a future key leaked into query t");
    assert_ne!(bumped(query - window), base, "key t-w must be seen");
    assert_ne!(bumped(query), base, "key t must be seen");
    // The reference agrees on the same semantics.
    let o_ref = reference::attention(q.clone(), k.clone(), tensor(&v0, [1, t, 1, d], &device), window, 0.5);
    assert_close(
        "window semantics vs reference",
        &base,
        &values(&o_ref)[query * d..(query + 1) * d],
        REL_TOL,
    );
}

#[test]
#[should_panic(expected = "kernels::attention")]
fn attention_rejects_heads_that_do_not_group() {
    let device = Device::flex();
    let q = Tensor::<4>::zeros([1, 4, 3, 8], &device);
    let kv = Tensor::<4>::zeros([1, 4, 2, 8], &device);
    let _ = kernels::attention(q, kv.clone(), kv, 2, 1.0);
}
