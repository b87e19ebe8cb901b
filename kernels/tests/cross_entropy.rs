//! `kernels::softcap_cross_entropy` against the composed `reference::softcap_cross_entropy`
//! (tanh, log_softmax, gather, masked mean): the loss and the logits' gradient, with ignored
//! targets, logits big enough for the cap to bite, strided logits, and without autodiff.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::{kernel_calls, reference};

const CAP: f32 = 15.0;

/// Random targets in 0..v, with every `ignore_every`-th one set to -1 (0 = none ignored).
fn targets(n: usize, v: usize, ignore_every: usize, seed: u64) -> Vec<i64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| if ignore_every > 0 && i % ignore_every == 0 { -1 } else { rng.below(v) as i64 }).collect()
}

/// (loss, dlogits) from ours or the reference. `make` builds the op's logits from the leaf.
fn run(
    ours: bool,
    logits: &[f32],
    leaf_shape: [usize; 2],
    targets: &[i64],
    device: &Device,
    make: fn(Tensor<2>) -> Tensor<2>,
) -> (Vec<f32>, Vec<f32>) {
    let x = tensor(logits, leaf_shape, device).require_grad();
    let t = int_tensor(targets, device);
    let input = make(x.clone());
    let loss = if ours {
        kernels::softcap_cross_entropy(input, t, CAP)
    } else {
        reference::softcap_cross_entropy(input, t, CAP)
    };
    // An upstream gradient other than 1 checks that the backward scales by it.
    let grads = loss.clone().mul_scalar(0.37).backward();
    (values(&loss), grad_values(&x, &grads))
}

fn check_with(
    name: &str,
    logits: &[f32],
    leaf_shape: [usize; 2],
    targets: &[i64],
    device: &Device,
    make: fn(Tensor<2>) -> Tensor<2>,
) {
    let before = kernel_calls();
    let (loss, grad) = run(true, logits, leaf_shape, targets, device, make);
    let after = kernel_calls();
    assert!(
        after.cross_entropy_forward > before.cross_entropy_forward,
        "{name}: the Flex forward kernel did not run"
    );
    assert!(
        after.cross_entropy_backward > before.cross_entropy_backward,
        "{name}: the backward kernel did not run"
    );
    let (loss_ref, grad_ref) = run(false, logits, leaf_shape, targets, device, make);
    assert_close(&format!("{name}: loss"), &loss, &loss_ref, REL_TOL);
    assert_close(&format!("{name}: dlogits"), &grad, &grad_ref, REL_TOL);
}

fn check(name: &str, n: usize, v: usize, std: f32, ignore_every: usize) {
    let logits = Rng::new(n as u64).normals(n * v, std);
    check_with(name, &logits, [n, v], &targets(n, v, ignore_every, 1), &autodiff_device(), |x| x);
}

#[test]
fn cross_entropy_matches_composed() {
    check("ce [64, 300]", 64, 300, 2.0, 0);
    check("ce [33, 1000], odd sizes", 33, 1000, 3.0, 0);
}

#[test]
fn cross_entropy_ignores_targets_of_minus_one() {
    check("ce, every 3rd target ignored", 60, 257, 2.0, 3);
    // The ignored rows get no gradient and do not count in the mean.
    let (n, v) = (6, 10);
    let logits = Rng::new(8).normals(n * v, 1.0);
    let t = targets(n, v, 2, 3);
    let (loss, grad) = run(true, &logits, [n, v], &t, &autodiff_device(), |x| x);
    for (row, &target) in t.iter().enumerate() {
        if target == -1 {
            assert!(
                grad[row * v..(row + 1) * v].iter().all(|&g| g == 0.0),
                "ignored row {row} has a gradient"
            );
        }
    }
    let kept: Vec<usize> = (0..n).filter(|&r| t[r] != -1).collect();
    let kept_logits: Vec<f32> = kept.iter().flat_map(|&r| logits[r * v..(r + 1) * v].to_vec()).collect();
    let kept_targets: Vec<i64> = kept.iter().map(|&r| t[r]).collect();
    let (loss_kept, _) = run(true, &kept_logits, [kept.len(), v], &kept_targets, &autodiff_device(), |x| x);
    assert_close("mean over counted rows only", &loss, &loss_kept, 1e-6);
}

#[test]
fn cross_entropy_matches_composed_when_the_cap_bites() {
    // std 40 puts most logits deep in tanh's saturation (|x| ≫ cap): the softcap decides the loss.
    check("ce, logits std 40", 32, 500, 40.0, 0);
    // And the cap really changes the result: without it (cap → ∞) the loss is far larger.
    let (n, v) = (8, 50);
    let logits = Rng::new(1).normals(n * v, 40.0);
    let t = int_tensor(&targets(n, v, 0, 2), &Device::flex());
    let x = || tensor(&logits, [n, v], &Device::flex());
    let capped = values(&kernels::softcap_cross_entropy(x(), t.clone(), CAP))[0];
    let uncapped = values(&kernels::softcap_cross_entropy(x(), t, 1e6))[0];
    assert!(uncapped > 2.0 * capped, "cap had no effect: capped {capped}, uncapped {uncapped}");
}

#[test]
fn cross_entropy_accepts_strided_logits() {
    let (n, v) = (24, 130);
    let logits = Rng::new(6).normals(n * v, 2.0);
    let t = targets(n, v, 5, 7);
    // Leaf [V, N] handed over transposed: [N, V] with column stride N.
    check_with("ce, transposed logits", &logits, [v, n], &t, &autodiff_device(), |x| x.transpose());
}

#[test]
fn cross_entropy_reuses_the_logits_buffer_for_their_gradient() {
    // Logits computed inside the graph (as lm_head's output is) are owned by the op alone, so
    // the backward writes the gradient into their buffer; the result must be the same.
    let (n, v) = (16, 200);
    let logits = Rng::new(12).normals(n * v, 2.0);
    check_with(
        "ce, logits from an op (in place)",
        &logits,
        [n, v],
        &targets(n, v, 4, 5),
        &autodiff_device(),
        |x| x.mul_scalar(1.5),
    );
}

#[test]
fn cross_entropy_works_with_gradient_checkpointing() {
    let (n, v) = (10, 64);
    let logits = Rng::new(2).normals(n * v, 2.0);
    let device = autodiff_device().gradient_checkpointing();
    check_with("ce, gradient checkpointing", &logits, [n, v], &targets(n, v, 0, 9), &device, |x| {
        x.mul_scalar(2.0)
    });
}

#[test]
fn cross_entropy_untracked_and_plain_flex_match_composed() {
    let (n, v) = (20, 77);
    let logits = Rng::new(4).normals(n * v, 5.0);
    let t = targets(n, v, 6, 8);
    for device in [autodiff_device(), Device::flex()] {
        let before = kernel_calls().cross_entropy_forward;
        let loss =
            kernels::softcap_cross_entropy(tensor(&logits, [n, v], &device), int_tensor(&t, &device), CAP);
        assert!(kernel_calls().cross_entropy_forward > before, "the Flex forward kernel did not run");
        let loss_ref =
            reference::softcap_cross_entropy(tensor(&logits, [n, v], &device), int_tensor(&t, &device), CAP);
        assert_close(&format!("untracked ce on {device:?}"), &values(&loss), &values(&loss_ref), REL_TOL);
    }
}

#[test]
fn cross_entropy_with_every_target_ignored_is_nan_with_zero_gradient() {
    let (n, v) = (4, 9);
    let logits = Rng::new(3).normals(n * v, 1.0);
    let (loss, grad) = run(true, &logits, [n, v], &[-1; 4], &autodiff_device(), |x| x);
    assert!(loss[0].is_nan(), "loss over no targets should be NaN (as PyTorch), got {}", loss[0]);
    assert!(grad.iter().all(|&g| g == 0.0));
}

#[test]
#[should_panic(expected = "kernels::softcap_cross_entropy: target 10 is outside 0..10")]
fn cross_entropy_rejects_targets_outside_the_vocabulary() {
    let device = Device::flex();
    let _ = kernels::softcap_cross_entropy(
        Tensor::<2>::zeros([2, 10], &device),
        int_tensor(&[3, 10], &device),
        CAP,
    );
}
