//! Which noise a candidate's pairs carry, read from what its change touches.
//!
//! Pairing works because the candidate and the incumbent, run at the same seed, start
//! from the same weights and see the same batches: a change of a learning rate, a beta or
//! the schedule leaves the two runs nearly in lockstep, and their difference spreads little
//! (0.0001–0.0015 bpb on the demo profile). A change that reshapes the model (DEPTH,
//! ASPECT_RATIO, HEAD_DIM) draws different initial weights, and one of TOTAL_BATCH_SIZE
//! or SEED feeds different batches per step: the pair decorrelates and its difference
//! spreads like two unpaired runs (0.0046–0.0082). One pooled σ_d for both is too large
//! for the first kind and too small for the second — simulated, it kept 14 % of
//! zero-effect structural changes at α = 0.05 (`ar/tests/stats.rs`). So the rule pools σ_d
//! per class: each class starts from the baseline's unpaired prior and learns from its own
//! candidates only. Edits outside the dials (code) are a class of their own, as is every
//! change of a declared command workload, whose files `ar` cannot read this way.

use crate::agent::hyperparams;

/// A change's class for the pooled noise estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseClass {
    /// Only dials that keep the pair in lockstep (rates, betas, schedule, decay).
    Tuning,
    /// A dial that changes the initial weights' shapes or the batches: the pair decorrelates.
    Structural,
    /// Anything else: code, a dial whose value is not a plain literal, another workload.
    Code,
}

impl NoiseClass {
    /// The word the journal's reasons use.
    pub fn name(self) -> &'static str {
        match self {
            NoiseClass::Tuning => "tuning",
            NoiseClass::Structural => "structural",
            NoiseClass::Code => "code",
        }
    }
}

/// The dials whose change decorrelates a pair: shapes of the initial weights, the batches.
pub const STRUCTURAL_DIALS: [&str; 5] = ["DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "SEED"];

/// The class of the change from `before` to `after` (two versions of the train file):
/// line by line, every differing line must be the same dial with a new literal value (a
/// changed comment alone does not count); otherwise it is code.
pub fn classify(before: &str, after: &str) -> NoiseClass {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    if a.len() != b.len() {
        return NoiseClass::Code;
    }
    let mut structural = false;
    let mut changed = false;
    for (x, y) in a.iter().zip(&b) {
        if x == y {
            continue;
        }
        match (hyperparams::parse_line(x), hyperparams::parse_line(y)) {
            (Some((n1, t1, v1, _)), Some((n2, t2, v2, _))) if n1 == n2 && t1 == t2 => {
                if v1 != v2 {
                    changed = true;
                    structural |= STRUCTURAL_DIALS.contains(&n1.as_str());
                }
            }
            _ => return NoiseClass::Code,
        }
    }
    match (changed, structural) {
        (_, true) => NoiseClass::Structural,
        (true, false) => NoiseClass::Tuning,
        // Only comments moved: nothing the runs see changed, so the pair is in lockstep.
        (false, false) => NoiseClass::Tuning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
use std::io;

const DEPTH: usize = 4; // layers
const ASPECT_RATIO: usize = 64; // width per layer
const TOTAL_BATCH_SIZE: usize = 1 << 12; // tokens per step
const MATRIX_LR: f64 = 0.04; // Muon
const ADAM_BETAS: (f64, f64) = (0.8, 0.95); // AdamW
const PRECISION: Precision = Precision::F32; // matmuls

fn main() {
    let x = 1;
}
";

    fn edit(pairs: &[(&str, &str)]) -> String {
        pairs.iter().fold(FILE.to_string(), |s, (from, to)| {
            assert!(s.contains(from), "{from}");
            s.replacen(from, to, 1)
        })
    }

    #[test]
    fn rates_and_betas_are_tuning() {
        let after = edit(&[("0.04;", "0.06;"), ("(0.8, 0.95)", "(0.7, 0.95)")]);
        assert_eq!(classify(FILE, &after), NoiseClass::Tuning);
    }

    #[test]
    fn a_shape_or_batch_dial_makes_it_structural_whatever_else_moved() {
        for after in [
            edit(&[("ASPECT_RATIO: usize = 64", "ASPECT_RATIO: usize = 128")]),
            edit(&[("1 << 12", "1 << 11"), ("0.04;", "0.06;")]),
            edit(&[("DEPTH: usize = 4", "DEPTH: usize = 6")]),
        ] {
            assert_eq!(classify(FILE, &after), NoiseClass::Structural, "{after}");
        }
    }

    #[test]
    fn code_and_non_literal_dials_are_code() {
        for after in [
            edit(&[("let x = 1;", "let x = 2;")]),
            edit(&[("Precision::F32", "Precision::Bf16")]),
            edit(&[("fn main() {", "fn main() {\n    println!();")]),
            // A dial renamed is not the same dial with a new value.
            edit(&[("MATRIX_LR: f64 = 0.04", "MATRIX_RATE: f64 = 0.04")]),
        ] {
            assert_eq!(classify(FILE, &after), NoiseClass::Code, "{after}");
        }
    }

    #[test]
    fn a_comment_alone_changes_no_class_of_noise() {
        let after = edit(&[("// Muon", "// Muon, for the block matrices")]);
        assert_eq!(classify(FILE, &after), NoiseClass::Tuning);
    }
}
