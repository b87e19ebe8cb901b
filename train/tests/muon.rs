//! Muon's orthogonalisation: after Polar Express, every singular value of the update is
//! close to 1, whatever the scale and shape of the gradient.

#[allow(dead_code)]
#[path = "../src/main.rs"]
mod train_file;

use burn::tensor::{Device, Tensor, TensorData};

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (small n, f64).
fn symmetric_eigenvalues(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
}

fn singular_values(x: &Tensor<2>) -> Vec<f64> {
    let [r, c] = x.dims();
    let v: Vec<f32> = x.clone().into_data().try_to_vec().unwrap();
    let small = r.min(c);
    let gram: Vec<Vec<f64>> = (0..small)
        .map(|i| {
            (0..small)
                .map(|j| {
                    if r >= c {
                        (0..r).map(|k| v[k * c + i] as f64 * v[k * c + j] as f64).sum()
                    } else {
                        (0..c).map(|k| v[i * c + k] as f64 * v[j * c + k] as f64).sum()
                    }
                })
                .collect()
        })
        .collect();
    symmetric_eigenvalues(gram).into_iter().map(|e| e.max(0.0).sqrt()).collect()
}

#[test]
fn test_polar_express_pushes_singular_values_to_one() {
    polar_express_pushes_singular_values_to_one(train_file::Precision::F32);
}

#[test]
fn test_polar_express_in_bf16_pushes_singular_values_to_one() {
    // bf16 products (the original iterates in bf16): the same bounds hold.
    polar_express_pushes_singular_values_to_one(train_file::Precision::Bf16);
}

fn polar_express_pushes_singular_values_to_one(precision: train_file::Precision) {
    let device = Device::flex();
    let mut state = 7u64;
    for (r, c, scale) in [(64usize, 32usize, 1.0f32), (32, 96, 1e-3), (48, 48, 50.0)] {
        let data: Vec<f32> = (0..r * c)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5) * scale
            })
            .collect();
        let g = Tensor::<2>::from_data(TensorData::new(data, [r, c]), &device);
        let before = singular_values(&g);
        let spread =
            before.iter().cloned().fold(0.0, f64::max) / before.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 3.0, "the random matrix is far from orthogonal ({spread})");
        let x = train_file::polar_express(g, precision);
        // Polar Express maps each singular value through the same odd polynomial, so the
        // order is kept: pair them up sorted. Its coefficients are tuned for σ/σ_max ≥ 1e-3
        // (the original's assumption); 5 steps bring everything above 1e-2 into [0.6, 1.25]
        // and nothing beyond 1.25. (A random square matrix has a σ_min near 0.)
        let (mut before, mut after) = (before, singular_values(&x));
        before.sort_by(f64::total_cmp);
        after.sort_by(f64::total_cmp);
        let top = *before.last().unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert!(*a <= 1.25, "{precision:?} [{r}x{c}] singular value {a} after Polar Express (from {b})");
            if b / top >= 1e-2 {
                assert!(
                    *a >= 0.6,
                    "{precision:?} [{r}x{c}] singular value {a} after Polar Express (from {})",
                    b / top
                );
            }
        }
    }
}
