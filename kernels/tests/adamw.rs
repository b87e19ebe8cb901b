//! `kernels::adamw_step` (one fused pass) against `reference::adamw_step` (composed burn ops)
//! over several steps, with and without weight decay; and the in-place path never writes a
//! buffer the caller still holds.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::{AdamW, kernel_calls, reference};

fn state(shape: [usize; 2], seed: u64, device: &Device) -> [Tensor<2>; 4] {
    let n = shape[0] * shape[1];
    let mut rng = Rng::new(seed);
    let p = tensor(&rng.normals(n, 1.0), shape, device);
    let g = tensor(&rng.normals(n, 0.1), shape, device);
    let m = tensor(&rng.normals(n, 0.01), shape, device);
    let v = tensor(&rng.normals(n, 0.01).iter().map(|x| x * x).collect::<Vec<_>>(), shape, device);
    [p, g, m, v]
}

#[test]
fn fused_adamw_matches_the_composed_update_over_steps() {
    let device = Device::flex();
    for (shape, wd, betas) in
        [([64, 48], 0.0, (0.8, 0.95)), ([1000, 33], 0.1, (0.96, 0.95)), ([1, 8], 0.0, (0.8, 0.95))]
    {
        let [p0, g, m0, v0] = state(shape, 7, &device);
        let (mut ours, mut theirs) = ((p0.clone(), m0.clone(), v0.clone()), (p0, m0, v0));
        for step in 1..=4 {
            let h = AdamW { lr: 0.02, beta1: betas.0, beta2: betas.1, eps: 1e-10, weight_decay: wd, step };
            let before = kernel_calls().adamw_step;
            ours = kernels::adamw_step(ours.0, g.clone().mul_scalar(step as f32), ours.1, ours.2, &h);
            // `>`, not `== before + 1`: the other test in this file runs in parallel.
            assert!(kernel_calls().adamw_step > before, "the fused kernel ran");
            theirs =
                reference::adamw_step(theirs.0, g.clone().mul_scalar(step as f32), theirs.1, theirs.2, &h);
            let what = format!("{shape:?} wd {wd} step {step}");
            assert_close(&format!("{what}: p"), &values(&ours.0), &values(&theirs.0), 1e-5);
            assert_close(&format!("{what}: m"), &values(&ours.1), &values(&theirs.1), 1e-5);
            assert_close(&format!("{what}: v"), &values(&ours.2), &values(&theirs.2), 1e-5);
        }
    }
}

#[test]
fn tensors_the_caller_still_holds_are_not_overwritten() {
    let device = Device::flex();
    let [p, g, m, v] = state([32, 32], 11, &device);
    let (p_before, m_before, v_before) = (values(&p), values(&m), values(&v));
    let h = AdamW { lr: 0.1, beta1: 0.8, beta2: 0.95, eps: 1e-10, weight_decay: 0.0, step: 1 };
    let (p1, m1, v1) = kernels::adamw_step(p.clone(), g.clone(), m.clone(), v.clone(), &h);
    assert_eq!(values(&p), p_before, "the held parameter is unchanged");
    assert_eq!(values(&m), m_before);
    assert_eq!(values(&v), v_before);
    assert_ne!(values(&p1), p_before, "the update moved the parameter");
    // Handing over the only handles (the in-place path) gives the same numbers.
    let (p2, m2, v2) = kernels::adamw_step(p, g, m, v, &h);
    assert_eq!(values(&p2), values(&p1));
    assert_eq!(values(&m2), values(&m1));
    assert_eq!(values(&v2), values(&v1));
}
