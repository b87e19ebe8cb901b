//! The `#[cube]` kernels (src/cube/) on a GPU backend against the composed versions
//! (`reference.rs`) on the same device: outputs and input gradients, over the shapes that exercise
//! their tiling (T not a multiple of a block, windows that start mid-sequence, GQA, strided
//! inputs, ignored targets, saturated softcaps), with and without autodiff and gradient
//! checkpointing. Each check also asserts, through the kernel counters, that the cube kernel
//! ran: otherwise a routing slip would compare the composed version with itself and pass.
//!
//! Runs on wgpu (`--features wgpu`; on a machine without a GPU, Mesa's lavapipe:
//! `VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json cargo test --release -p kernels
//! --features wgpu --test cube_kernels`) and on CUDA (`--features cuda`, `KERNELS_TEST_DEVICE=cuda`,
//! as scripts/gpu-check.sh runs it).

#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::{KernelCalls, RMS_NORM_EPS, kernel_calls, reference};

/// The GPU device under test: wgpu's default adapter, or CUDA device 0 with
/// KERNELS_TEST_DEVICE=cuda.
fn gpu() -> Device {
    match std::env::var("KERNELS_TEST_DEVICE").as_deref() {
        #[cfg(feature = "cuda")]
        Ok("cuda") => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        Ok("wgpu") | Err(_) => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        other => panic!("KERNELS_TEST_DEVICE={other:?}: this build has no such device"),
    }
}

/// Ours vs composed on one device; both f32, so Flex's bound applies.
const TOL: f32 = REL_TOL;

/// Runs `op` (ours or the reference) on leaves built from `inputs`, then the backward of a random
/// projection of its output; returns [output, gradient of each input].
fn run<const D: usize>(
    device: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    op: &dyn Fn(Vec<Tensor<4>>) -> Tensor<D>,
) -> Vec<Vec<f32>> {
    let leaves: Vec<Tensor<4>> = inputs
        .iter()
        .map(|(data, shape)| {
            let mut s = [1usize; 4];
            s[4 - shape.len()..].copy_from_slice(shape);
            tensor(data, s, device).require_grad()
        })
        .collect();
    let y = op(leaves.clone());
    let w = tensor(&Rng::new(3).normals(y.shape().num_elements(), 1.0), y.dims(), device);
    let grads = (y.clone() * w).sum().backward();
    std::iter::once(values(&y)).chain(leaves.iter().map(|x| grad_values(x, &grads))).collect()
}

/// Checks ours against the reference on `device`, and that `ran(before, after)` holds for the
/// kernel counters around our run.
fn check<const D: usize>(
    name: &str,
    device: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    ours: &dyn Fn(Vec<Tensor<4>>) -> Tensor<D>,
    composed: &dyn Fn(Vec<Tensor<4>>) -> Tensor<D>,
    ran: fn(&KernelCalls, &KernelCalls) -> bool,
) {
    let before = kernel_calls();
    let a = run(device, inputs, ours);
    let after = kernel_calls();
    assert!(ran(&before, &after), "{name}: the cube kernels did not run ({before:?} → {after:?})");
    let b = run(device, inputs, composed);
    let labels = ["out", "grad 0", "grad 1", "grad 2"];
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_close(&format!("{name}: {}", labels[i]), x, y, TOL);
    }
}

fn attention_case(b: usize, t: usize, h: usize, hkv: usize, d: usize, window: usize, device: &Device) {
    let mut rng = Rng::new((t * 131 + window) as u64);
    let q = (rng.normals(b * t * h * d, 1.0), vec![b, t, h, d]);
    let k = (rng.normals(b * t * hkv * d, 1.0), vec![b, t, hkv, d]);
    let v = (rng.normals(b * t * hkv * d, 1.0), vec![b, t, hkv, d]);
    let scale = 1.0 / (d as f32).sqrt();
    check(
        &format!("attention b{b} t{t} h{h}/{hkv} d{d} w{window}"),
        device,
        &[q, k, v],
        &|x| kernels::attention(x[0].clone(), x[1].clone(), x[2].clone(), window, scale),
        &|x| reference::attention(x[0].clone(), x[1].clone(), x[2].clone(), window, scale),
        |a, b| {
            b.cube_attention_forward > a.cube_attention_forward
                && b.cube_attention_backward > a.cube_attention_backward
        },
    );
}

#[test]
fn attention_matches_composed_for_every_window() {
    let device = gpu().autodiff();
    // T = 37: not a multiple of the 64-row block; windows from "self only" to "more than T".
    for window in [0, 1, 5, 36, 1000] {
        attention_case(2, 37, 2, 2, 16, window, &device);
    }
}

#[test]
fn attention_matches_composed_across_blocks_and_tiles() {
    let device = gpu().autodiff();
    // T = 150 spans three query blocks and several key tiles; window 70 starts later blocks'
    // keys past 0, so a cube's first tile is partly outside every row's window.
    for window in [3, 70, 149] {
        attention_case(1, 150, 2, 2, 32, window, &device);
    }
}

#[test]
fn attention_matches_composed_with_grouped_query_heads() {
    let device = gpu().autodiff();
    attention_case(2, 40, 4, 2, 16, 9, &device); // two query heads per kv head
    attention_case(1, 70, 4, 1, 8, 30, &device); // one kv head for all
    attention_case(1, 65, 2, 1, 64, 20, &device); // the standard config's head width
}

#[test]
fn attention_works_with_gradient_checkpointing_and_strided_inputs() {
    attention_case(1, 65, 2, 1, 16, 20, &gpu().autodiff().gradient_checkpointing());
    // Leaves in [B, H, T, D] handed over as [B, T, H, D] views: the kernels copy them once.
    let (b, t, h, d, window) = (2, 33, 3, 16, 10);
    let mut rng = Rng::new(9);
    let leaf = |rng: &mut Rng| (rng.normals(b * h * t * d, 1.0), vec![b, h, t, d]);
    let inputs = [leaf(&mut rng), leaf(&mut rng), leaf(&mut rng)];
    let view = |x: &Tensor<4>| x.clone().swap_dims(1, 2);
    check(
        "attention, strided inputs",
        &gpu().autodiff(),
        &inputs,
        &|x| kernels::attention(view(&x[0]), view(&x[1]), view(&x[2]), window, 0.25),
        &|x| reference::attention(view(&x[0]), view(&x[1]), view(&x[2]), window, 0.25),
        |a, b| b.cube_attention_backward > a.cube_attention_backward,
    );
}

#[test]
fn untracked_attention_matches_composed() {
    let device = gpu();
    let (b, t, h, hkv, d, window) = (1, 90, 4, 2, 16, 25);
    let mut rng = Rng::new(5);
    let q = tensor(&rng.normals(b * t * h * d, 1.0), [b, t, h, d], &device);
    let k = tensor(&rng.normals(b * t * hkv * d, 1.0), [b, t, hkv, d], &device);
    let v = tensor(&rng.normals(b * t * hkv * d, 1.0), [b, t, hkv, d], &device);
    let before = kernel_calls().cube_attention_forward;
    let o = kernels::attention(q.clone(), k.clone(), v.clone(), window, 0.3);
    assert!(kernel_calls().cube_attention_forward > before, "the cube forward kernel did not run");
    let o_ref = reference::attention(q, k, v, window, 0.3);
    assert_close("untracked attention", &values(&o), &values(&o_ref), TOL);
}

#[test]
fn attention_on_the_gpu_matches_the_cpu_kernels() {
    // The two hand-written implementations against each other, across backends.
    let (b, t, h, hkv, d, window) = (1, 100, 2, 1, 32, 40);
    let mut rng = Rng::new(21);
    let data = [
        rng.normals(b * t * h * d, 1.0),
        rng.normals(b * t * hkv * d, 1.0),
        rng.normals(b * t * hkv * d, 1.0),
    ];
    let shapes = [[b, t, h, d], [b, t, hkv, d], [b, t, hkv, d]];
    let on = |device: &Device| {
        let x: Vec<Tensor<4>> = data.iter().zip(shapes).map(|(v, s)| tensor(v, s, device)).collect();
        values(&kernels::attention(x[0].clone(), x[1].clone(), x[2].clone(), window, 0.2))
    };
    assert_close("attention gpu vs cpu kernels", &on(&gpu()), &on(&Device::flex()), 1e-5);
}

fn ce_case(name: &str, n: usize, v: usize, std: f32, ignore_every: usize, make: fn(Tensor<2>) -> Tensor<2>) {
    let device = gpu().autodiff();
    let logits = (Rng::new(n as u64).normals(n * v, std), vec![n, v]);
    let mut rng = Rng::new(7);
    let targets: Vec<i64> = (0..n)
        .map(|i| if ignore_every > 0 && i % ignore_every == 0 { -1 } else { rng.below(v) as i64 })
        .collect();
    let op = |ours: bool| {
        let targets = targets.clone();
        move |x: Vec<Tensor<4>>| {
            let logits = make(x[0].clone().reshape([n, v]));
            let t = int_tensor(&targets, &logits.device());
            // An upstream gradient other than 1 checks the backward scales by it.
            let loss = if ours {
                kernels::softcap_cross_entropy(logits, t, 15.0)
            } else {
                reference::softcap_cross_entropy(logits, t, 15.0)
            };
            loss.mul_scalar(0.37)
        }
    };
    check(name, &device, &[logits], &op(true), &op(false), |a, b| {
        b.cube_cross_entropy_forward > a.cube_cross_entropy_forward
            && b.cube_cross_entropy_backward > a.cube_cross_entropy_backward
    });
}

#[test]
fn cross_entropy_matches_composed() {
    ce_case("ce [64, 300]", 64, 300, 2.0, 0, |x| x);
    ce_case("ce [33, 1000], every 3rd target ignored", 33, 1000, 3.0, 3, |x| x);
    ce_case("ce, logits std 40 (the cap bites)", 32, 500, 40.0, 0, |x| x);
    // Logits from an op are owned by the loss alone: the backward overwrites them in place.
    ce_case("ce, logits from an op (in place)", 16, 200, 2.0, 4, |x| x.mul_scalar(1.5));
}

#[test]
fn cross_entropy_with_every_target_ignored_is_nan_with_zero_gradient() {
    let device = gpu().autodiff();
    let (n, v) = (4, 9);
    let x = tensor(&Rng::new(3).normals(n * v, 1.0), [n, v], &device).require_grad();
    let loss = kernels::softcap_cross_entropy(x.clone(), int_tensor(&[-1; 4], &device), 15.0);
    let grads = loss.clone().backward();
    assert!(values(&loss)[0].is_nan(), "loss over no targets should be NaN (as PyTorch)");
    assert!(grad_values(&x, &grads).iter().all(|&g| g == 0.0));
}

#[test]
fn rms_norm_matches_composed() {
    let device = gpu().autodiff();
    // Rows of 256 (wider than the 32 lanes), of 48 (not a power of two) and of 7.
    for (rows, d) in [(50, 256), (33, 48), (300, 7)] {
        let x = (Rng::new(d as u64).normals(rows * d, 2.0), vec![rows, d]);
        check(
            &format!("rms_norm [{rows}, {d}]"),
            &device,
            &[x],
            &|x| kernels::rms_norm(x[0].clone().reshape([rows, d]), RMS_NORM_EPS),
            &|x| reference::rms_norm(x[0].clone().reshape([rows, d]), RMS_NORM_EPS),
            |a, b| {
                b.cube_rms_norm_forward > a.cube_rms_norm_forward
                    && b.cube_rms_norm_backward > a.cube_rms_norm_backward
            },
        );
    }
}

/// cos and sin [T, D/2] of the original's angles.
fn rope_tables(t: usize, d: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = d / 2;
    let angle = |p: usize, i: usize| p as f32 / 10000f32.powf(2.0 * i as f32 / d as f32);
    let cos: Vec<f32> = (0..t * half).map(|j| angle(j / half, j % half).cos()).collect();
    let sin: Vec<f32> = (0..t * half).map(|j| angle(j / half, j % half).sin()).collect();
    (tensor(&cos, [t, half], device), tensor(&sin, [t, half], device))
}

#[test]
fn rope_rms_norm_matches_composed() {
    for (b, t, h, d) in [(2, 19, 3, 64), (1, 70, 2, 128), (3, 5, 1, 6)] {
        let x = (Rng::new(t as u64).normals(b * t * h * d, 1.5), vec![b, t, h, d]);
        let op = |ours: bool| {
            move |x: Vec<Tensor<4>>| {
                let (cos, sin) = rope_tables(t, d, &x[0].device());
                if ours {
                    kernels::rope_rms_norm(x[0].clone(), cos, sin, RMS_NORM_EPS)
                } else {
                    reference::rope_rms_norm(x[0].clone(), cos, sin, RMS_NORM_EPS)
                }
            }
        };
        check(
            &format!("rope_rms_norm [{b}, {t}, {h}, {d}]"),
            &gpu().autodiff(),
            &[x],
            &op(true),
            &op(false),
            |a, b| {
                b.cube_rope_rms_norm_forward > a.cube_rope_rms_norm_forward
                    && b.cube_rope_rms_norm_backward > a.cube_rope_rms_norm_backward
            },
        );
    }
}

#[test]
fn relu_square_matches_composed() {
    let x = (Rng::new(2).normals(3 * 1000, 1.0), vec![3, 1000]);
    check(
        "relu_square [3, 1000]",
        &gpu().autodiff(),
        &[x],
        &|x| kernels::relu_square(x[0].clone()),
        &|x| reference::relu_square(x[0].clone()),
        |a, b| {
            b.cube_relu_square_forward > a.cube_relu_square_forward
                && b.cube_relu_square_backward > a.cube_relu_square_backward
        },
    );
}
