//! The CPU kernels are compiled three times (baseline SSE2, AVX2+FMA, AVX-512) and the best one
//! the CPU has runs — so the other tests exercise only that one. This test re-runs itself once per
//! instruction set (the choice is made once per process, from `KERNELS_ISA`) and checks every op
//! against the composed version under each. Also: inputs in other dtypes take the composed path.

mod common;

use std::process::Command;

use burn::tensor::{DType, Device, Tensor};
use common::*;
use kernels::{RMS_NORM_EPS, kernel_calls, reference};

const SELF: &str = "every_op_matches_composed_on_every_instruction_set";

#[test]
fn every_op_matches_composed_on_every_instruction_set() {
    let Ok(isa) = std::env::var("KERNELS_ISA") else {
        // Parent: run this same test in a child process per instruction set.
        for isa in ["baseline", "avx2", "avx512"] {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", SELF, "--nocapture", "--test-threads=1"])
                .env("KERNELS_ISA", isa)
                .output()
                .expect("re-run the test binary");
            let log = String::from_utf8_lossy(&out.stdout);
            println!("--- KERNELS_ISA={isa}\n{log}");
            assert!(
                out.status.success(),
                "KERNELS_ISA={isa} failed:\n{log}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        return;
    };
    let running = kernels::instruction_set();
    println!("asked for {isa}, running {running}");
    let device = autodiff_device();
    let mut rng = Rng::new(77);
    let before = kernel_calls();

    // Attention, GQA, a window that cuts across blocks.
    let (q, k, v) = (
        rng.normals(2 * 70 * 4 * 16, 1.0),
        rng.normals(2 * 70 * 2 * 16, 1.0),
        rng.normals(2 * 70 * 2 * 16, 1.0),
    );
    let attention = |ours: bool| {
        let leaves =
            [(&q, 4), (&k, 2), (&v, 2)].map(|(d, h)| tensor(d, [2, 70, h, 16], &device).require_grad());
        let [q, k, v] = leaves.clone();
        let f = if ours { kernels::attention } else { reference::attention };
        let o = f(q, k, v, 20, 0.25);
        let grads = (o.clone() * o.clone().detach().sin()).sum().backward();
        let mut out = vec![values(&o)];
        out.extend(leaves.iter().map(|x| grad_values(x, &grads)));
        out.concat()
    };
    assert_close(&format!("{isa}: attention"), &attention(true), &attention(false), REL_TOL);

    // The row-wise ops, on [B, T, H, D] = [2, 9, 3, 64].
    let x = rng.normals(2 * 9 * 3 * 64, 2.0);
    let (cos, sin) = (rng.normals(9 * 32, 1.0), rng.normals(9 * 32, 1.0));
    let rowwise = |which: &str, ours: bool| {
        let leaf = tensor(&x, [2, 9, 3, 64], &device).require_grad();
        let (c, s) = (tensor(&cos, [9, 32], &device), tensor(&sin, [9, 32], &device));
        let y = match (which, ours) {
            ("rms_norm", true) => kernels::rms_norm(leaf.clone(), RMS_NORM_EPS),
            ("rms_norm", false) => reference::rms_norm(leaf.clone(), RMS_NORM_EPS),
            ("rope_rms_norm", true) => kernels::rope_rms_norm(leaf.clone(), c, s, RMS_NORM_EPS),
            ("rope_rms_norm", false) => reference::rope_rms_norm(leaf.clone(), c, s, RMS_NORM_EPS),
            ("relu_square", true) => kernels::relu_square(leaf.clone()),
            _ => reference::relu_square(leaf.clone()),
        };
        let grads = (y.clone() * y.clone().detach().cos()).sum().backward();
        [values(&y), grad_values(&leaf, &grads)].concat()
    };
    for op in ["rms_norm", "rope_rms_norm", "relu_square"] {
        assert_close(&format!("{isa}: {op}"), &rowwise(op, true), &rowwise(op, false), REL_TOL);
    }

    // Cross-entropy with the cap biting and an ignored row; V not a multiple of 16.
    let logits = rng.normals(12 * 333, 25.0);
    let targets: Vec<i64> = (0..12).map(|i| if i == 5 { -1 } else { (i * 37 % 333) as i64 }).collect();
    let ce = |ours: bool| {
        let leaf = tensor(&logits, [12, 333], &device).require_grad();
        let f = if ours { kernels::softcap_cross_entropy } else { reference::softcap_cross_entropy };
        let loss = f(leaf.clone(), int_tensor(&targets, &device), 15.0);
        let grads = loss.backward();
        [values(&loss), grad_values(&leaf, &grads)].concat()
    };
    assert_close(&format!("{isa}: softcap_cross_entropy"), &ce(true), &ce(false), REL_TOL);

    let after = kernel_calls();
    assert!(
        after.attention_backward > before.attention_backward
            && after.cross_entropy_backward > before.cross_entropy_backward
    );
    assert!(
        after.rope_rms_norm_backward > before.rope_rms_norm_backward
            && after.relu_square_backward > before.relu_square_backward
    );
}

#[test]
fn inputs_in_other_dtypes_take_the_composed_path() {
    let device = Device::flex();
    let data = Rng::new(4).normals(8 * 64, 1.0);
    let x = tensor(&data, [8, 64], &device);
    let before = kernel_calls();
    let y16 = kernels::rms_norm(x.clone().cast(DType::F16), RMS_NORM_EPS);
    let r16 = kernels::relu_square(x.clone().cast(DType::F16));
    assert_eq!(kernel_calls(), before, "an f16 input reached an f32 kernel");
    assert_eq!(y16.dtype(), DType::F16);
    let as_f32 = |t: Tensor<2>| values(&t.cast(DType::F32));
    assert_close(
        "f16 rms_norm vs f32 kernel",
        &as_f32(y16),
        &values(&kernels::rms_norm(x.clone(), RMS_NORM_EPS)),
        2e-3,
    );
    assert_close("f16 relu_square vs f32 kernel", &as_f32(r16), &values(&kernels::relu_square(x)), 2e-3);
}
