//! One trained model, scored two ways: by the trusted path (the binary serves its checkpoint
//! over pipes, `prepare::scorer` computes bits per byte in the test process, as `ar` does)
//! and by the in-process reference (`prepare::evaluate_bpb` on the same checkpoint loaded
//! through the train file's own code). They must agree to 1e-6 on the CPU: moving the
//! metric out of the train program changed who computes it, not what it is.

#[allow(dead_code)]
#[path = "../src/main.rs"]
mod train_file;

mod support;

use std::sync::Arc;

use burn::tensor::Device;
use prepare::{Checkpoint, Split, Tokenizer, evaluate_bpb};
use support::{open_cache, serve_and_score, train};
use train_file::Gpt;

#[test]
fn test_the_served_score_equals_the_in_process_score() {
    let run = train("parity");
    let trusted = serve_and_score(&run.checkpoint, "cpu");
    let cache = open_cache();
    let tokenizer = Arc::new(Tokenizer::load(&cache).unwrap());
    let bytes = std::fs::read(&run.checkpoint).unwrap();
    let checkpoint = Checkpoint::read_from(&bytes[..], bytes.len() as u64).unwrap();
    let device = Device::flex();
    let model = Gpt::from_checkpoint(&checkpoint, &device).unwrap();
    for (split, batch) in [(Split::Val, 16), (Split::Test, 5)] {
        // A batch of 5 does not divide the 64 rows: the rows scored must not change.
        let reference =
            evaluate_bpb(&cache, &tokenizer, batch, split, &device, |x| model.eval_logits(x)).unwrap();
        let served = trusted.bpb(split).unwrap();
        let diff = (reference - served).abs();
        println!("{split}: in-process {reference:.9} | served {served:.9} | max diff {diff:.2e}");
        assert!(diff < 1e-6, "{split}: in-process {reference} vs served {served} (diff {diff:.2e})");
    }
}
