//! Times each fused op forward+backward on a GPU backend, ours (`#[cube]` kernels) against the
//! composed version, at a model's per-layer shapes; for finding which kernel a slow GPU run
//! spends its time in (lavapipe included).
//!
//! `cargo run --release -p kernels --features wgpu --example cube_profile [-- B T H D V RUNS]`
//! (defaults: the smoke profile's shapes, 16 × 64 tokens, 4 heads of 64, vocab 512).

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use kernels::{RMS_NORM_EPS, reference};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("numbers")).collect();
    let arg = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (b, t, h, d, v, runs) = (arg(0, 16), arg(1, 64), arg(2, 4), arg(3, 64), arg(4, 512), arg(5, 5));
    #[cfg(feature = "wgpu")]
    let dev = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    #[cfg(not(feature = "wgpu"))]
    let dev = Device::flex().autodiff();
    let c = h * d;
    let n = b * t;
    println!("B {b} T {t} H {h} D {d} V {v}, median of {runs} runs, fwd+bwd ms (incl. a sync)");
    let q = || rand::<4>(&[b, t, h, d], 1, &dev);
    time(
        "attention w=T/2",
        runs,
        || {
            let o = kernels::attention(q(), q(), q(), t / 2, 0.125);
            sync(o.sum().backward(), &dev)
        },
        || {
            let o = reference::attention(q(), q(), q(), t / 2, 0.125);
            sync(o.sum().backward(), &dev)
        },
    );
    let x = || rand::<2>(&[n, c], 2, &dev);
    time(
        "rms_norm",
        runs,
        || sync(kernels::rms_norm(x(), RMS_NORM_EPS).sum().backward(), &dev),
        || sync(reference::rms_norm(x(), RMS_NORM_EPS).sum().backward(), &dev),
    );
    let tables = || {
        let half = d / 2;
        let cos: Tensor<2> = Tensor::from_data(TensorData::new(vec![0.5f32; t * half], [t, half]), &dev);
        (cos.clone(), cos)
    };
    time(
        "rope_rms_norm",
        runs,
        || {
            let (cs, sn) = tables();
            sync(kernels::rope_rms_norm(q(), cs, sn, RMS_NORM_EPS).sum().backward(), &dev)
        },
        || {
            let (cs, sn) = tables();
            sync(reference::rope_rms_norm(q(), cs, sn, RMS_NORM_EPS).sum().backward(), &dev)
        },
    );
    let h4 = || rand::<2>(&[n, 4 * c], 3, &dev);
    time(
        "relu_square",
        runs,
        || sync(kernels::relu_square(h4()).sum().backward(), &dev),
        || sync(reference::relu_square(h4()).sum().backward(), &dev),
    );
    let logits = || rand::<2>(&[n, v], 4, &dev);
    let targets = || {
        Tensor::<1, Int>::from_data(
            TensorData::new((0..n as i64).map(|i| i % v as i64).collect::<Vec<_>>(), [n]),
            &dev,
        )
    };
    time(
        "softcap_cross_entropy",
        runs,
        || sync(kernels::softcap_cross_entropy(logits(), targets(), 15.0).backward(), &dev),
        || sync(reference::softcap_cross_entropy(logits(), targets(), 15.0).backward(), &dev),
    );
}

fn rand<const D: usize>(shape: &[usize], seed: u64, dev: &Device) -> Tensor<D> {
    let len: usize = shape.iter().product();
    let mut s = seed;
    let data: Vec<f32> = (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let mut dims = [0usize; D];
    dims.copy_from_slice(&shape[..D]);
    Tensor::<D>::from_data(TensorData::new(data, dims), dev).require_grad()
}

fn sync(_grads: burn::tensor::Gradients, dev: &Device) {
    // A read waits for everything queued before it.
    let _ = Tensor::<1>::zeros([1], dev).into_data();
}

fn time(name: &str, runs: usize, mut ours: impl FnMut(), mut composed: impl FnMut()) {
    let med = |f: &mut dyn FnMut()| {
        f();
        let mut v: Vec<f64> = (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[runs / 2]
    };
    let (o, c) = (med(&mut ours), med(&mut composed));
    println!("{name:<24} ours {o:>9.1}  composed {c:>9.1}");
}
