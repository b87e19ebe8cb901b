//! The metric on a case computed by hand, with multi-byte tokens and a special token.

use burn::tensor::{Device, Tensor, TensorData};
use prepare::eval::BpbAccumulator;

/// Vocabulary of 4: token 0 is 1 byte, token 1 is 2 bytes (say "é"), token 2 is 3 bytes
/// (say "你"), token 3 is a special token (0 bytes, masked out).
const TOKEN_BYTES: [u32; 4] = [1, 2, 3, 0];

#[test]
fn test_bpb_of_a_hand_computed_case() {
    // Position 0: logits ln[1,2,3,4] → p = [.1,.2,.3,.4]; target 1 → -ln 0.2 nats, 2 bytes.
    // Position 1: logits 0 → p = .25 each; target 2 → -ln 0.25 nats, 3 bytes.
    // Position 2: target 3 is special → masked, whatever the logits.
    // bpb = (ln 5 + ln 4) / (ln 2 · 5) = log2(20) / 5 = 0.864385618977…
    let device = Device::flex();
    let l = |x: f32| x.ln();
    let logits = vec![l(1.0), l(2.0), l(3.0), l(4.0), 0.0, 0.0, 0.0, 0.0, 9.0, -3.0, 0.5, 7.0];
    let logits = Tensor::<3>::from_data(TensorData::new(logits, [1, 3, 4]), &device);
    let mut acc = BpbAccumulator::new(&TOKEN_BYTES);
    acc.add(logits, &[1, 2, 3]).unwrap();
    let bpb = acc.bpb().unwrap();
    assert!((bpb - 0.864_385_618_977).abs() < 1e-6, "bpb = {bpb}");
    assert_eq!(acc.tokens(), 2, "the special-token target is not scored");
}

#[test]
fn test_bpb_sums_across_batches_and_accepts_padded_vocab() {
    // Two batches of one position each, logits padded to 6 (a model may round its vocab up):
    // uniform over 6 → each scored target costs ln 6 nats.
    let device = Device::flex();
    let mut acc = BpbAccumulator::new(&TOKEN_BYTES);
    for target in [0u32, 2] {
        let logits = Tensor::<3>::from_data(TensorData::new(vec![0.0f32; 6], [1, 1, 6]), &device);
        acc.add(logits, &[target]).unwrap();
    }
    let expected = 2.0 * 6f64.ln() / (std::f64::consts::LN_2 * 4.0);
    assert!((acc.bpb().unwrap() - expected).abs() < 1e-6);
}

#[test]
fn test_nan_logits_are_an_error_not_a_number() {
    let device = Device::flex();
    let logits = Tensor::<3>::from_data(TensorData::new(vec![f32::NAN; 4], [1, 1, 4]), &device);
    let mut acc = BpbAccumulator::new(&TOKEN_BYTES);
    let err = acc.add(logits, &[0]).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
}

#[test]
fn test_wrong_logit_shape_is_refused() {
    let device = Device::flex();
    let logits = Tensor::<3>::from_data(TensorData::new(vec![0.0f32; 8], [1, 2, 4]), &device);
    let mut acc = BpbAccumulator::new(&TOKEN_BYTES);
    assert!(acc.add(logits, &[0, 1, 2]).is_err());
    let small = Tensor::<3>::from_data(TensorData::new(vec![0.0f32; 3], [1, 1, 3]), &device);
    assert!(acc.add(small, &[0]).is_err(), "fewer logits than the vocabulary");
}

#[test]
fn test_the_scored_rows_are_eval_tokens_over_the_context_whatever_the_batch() {
    for p in prepare::profile::ALL {
        assert_eq!(p.eval_rows() * p.max_seq_len, p.eval_tokens, "{}", p.name);
    }
    assert_eq!(prepare::profile::CPU.eval_rows(), 512);
}
