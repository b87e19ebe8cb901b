//! The keep rule, pinned on simulated sessions.
//!
//! The simulation follows the measurements on the 2-core CPU profile: unpaired runs of one
//! commit at different seeds spread by σ_x = 0.005; a candidate paired with the incumbent
//! at the same seed differs by d ~ N(Δ, σ_d²) with σ_d = 0.0034 < √2·σ_x = 0.0071. A
//! session's pool starts from K = 2 baseline runs (1 dof) and grows as 30 earlier
//! candidates are decided by the same rule; their true improvements are σ_d·(z − 1),
//! z ~ N(0, 1), so five in six are worse, as in a real session. Each case then decides
//! 10 candidates against each of 2,000 such pools: 20,000 candidates, fixed seeds, so
//! every number below is reproducible. Improvements are positive = better throughout;
//! the rule sees raw differences candidate − incumbent of a metric to minimise.
//!
//! `cargo test --release -p ar --test stats -- --nocapture` prints the measured table.

use ar::stats::{Direction, Pool, Rule, Verdict, decide, inc_beta, interval, ln_gamma, t_cdf, t_quantile};

// ---------------------------------------------------------------------------------------
// Simulation

const SIGMA_X: f64 = 0.005; // unpaired run-to-run noise of one commit
const SIGMA_D: f64 = 0.0034; // noise of a paired difference
const EARLIER: usize = 30; // candidates decided before the measured ones
const SESSIONS: usize = 2_000;
const PER_SESSION: usize = 10; // SESSIONS × PER_SESSION = 20,000 candidates per case

/// SplitMix64 for the bits, Box–Muller for normals: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on (0, 1), never 0, so the logarithm below is finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// K = 2 baseline runs: the prior alone, 1 dof.
fn baseline_pool(rng: &mut Rng) -> Pool {
    Pool::from_baseline(&[SIGMA_X * rng.normal(), SIGMA_X * rng.normal()])
}

/// A candidate measured pair by pair until the rule stops: the final verdict and its pairs.
fn candidate(rule: &Rule, pool: &Pool, improvement: f64, rng: &mut Rng) -> (Verdict, Vec<f64>) {
    candidate_with_noise(rule, pool, improvement, SIGMA_D, rng)
}

/// The same, for pairs whose differences spread by `sigma_d`.
fn candidate_with_noise(
    rule: &Rule,
    pool: &Pool,
    improvement: f64,
    sigma_d: f64,
    rng: &mut Rng,
) -> (Verdict, Vec<f64>) {
    let mut diffs = Vec::new();
    loop {
        diffs.push(-improvement + sigma_d * rng.normal());
        match decide(rule, &diffs, pool) {
            Verdict::Continue(_) => continue,
            v => return (v, diffs),
        }
    }
}

/// A session's pool after the baseline and `EARLIER` candidates decided by `rule`.
fn grown_pool(rule: &Rule, rng: &mut Rng) -> Pool {
    let mut pool = baseline_pool(rng);
    for _ in 0..EARLIER {
        let improvement = SIGMA_D * (rng.normal() - 1.0);
        let (_, diffs) = candidate(rule, &pool, improvement, rng);
        pool.add_candidate(&diffs);
    }
    pool
}

fn grown_pools(rule: &Rule, seed: u64) -> Vec<Pool> {
    let mut rng = Rng(seed);
    (0..SESSIONS).map(|_| grown_pool(rule, &mut rng)).collect()
}

fn baseline_pools(seed: u64) -> Vec<Pool> {
    let mut rng = Rng(seed);
    (0..SESSIONS).map(|_| baseline_pool(&mut rng)).collect()
}

/// Outcomes of PER_SESSION candidates of one true improvement against each pool.
#[derive(Debug, Default)]
struct Tally {
    candidates: usize,
    keeps: usize,
    kept_after_one: usize,
    discarded_after_one: usize,
    pairs: usize,
}

impl Tally {
    fn keep_rate(&self) -> f64 {
        self.keeps as f64 / self.candidates as f64
    }

    /// The keep rate's Monte Carlo standard error.
    fn keep_se(&self) -> f64 {
        let p = self.keep_rate();
        (p * (1.0 - p) / self.candidates as f64).sqrt()
    }

    fn mean_pairs(&self) -> f64 {
        self.pairs as f64 / self.candidates as f64
    }

    fn discarded_after_one(&self) -> f64 {
        self.discarded_after_one as f64 / self.candidates as f64
    }
}

fn simulate(rule: &Rule, pools: &[Pool], improvement: f64, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    for pool in pools {
        for _ in 0..PER_SESSION {
            let (v, diffs) = candidate(rule, pool, improvement, &mut rng);
            let kept = matches!(v, Verdict::Keep(_));
            t.candidates += 1;
            t.keeps += kept as usize;
            t.pairs += diffs.len();
            t.kept_after_one += (kept && diffs.len() == 1) as usize;
            t.discarded_after_one += (!kept && diffs.len() == 1) as usize;
        }
    }
    t
}

// ---------------------------------------------------------------------------------------
// Student's t against the tables

#[test]
fn t_quantiles_match_the_table() {
    // (p, dof, t_p) from any t table.
    let table = [
        (0.95, 1.0, 6.314),
        (0.95, 5.0, 2.015),
        (0.975, 10.0, 2.228),
        (0.99, 2.0, 6.965),
        (0.975, 30.0, 2.042),
        (0.995, 120.0, 2.617),
        (0.90, 3.0, 1.638),
        (0.975, 1e6, 1.960),
    ];
    for (p, dof, want) in table {
        let got = t_quantile(p, dof);
        assert!((got - want).abs() < 1e-3, "t_{{{p},{dof}}} = {got}, table {want}");
        assert!((t_cdf(want, dof) - p).abs() < 1e-3, "cdf({want}; {dof}) = {}", t_cdf(want, dof));
        assert!((t_quantile(1.0 - p, dof) + got).abs() < 1e-12, "symmetric");
    }
}

#[test]
fn t_cdf_matches_the_closed_forms_for_one_and_two_dof() {
    for t in [-30.0, -2.5, -0.3, 0.0, 0.7, 4.0, 100.0] {
        let cauchy = 0.5 + f64::atan(t) / std::f64::consts::PI;
        let two = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
        assert!((t_cdf(t, 1.0) - cauchy).abs() < 1e-12, "dof 1 at {t}");
        assert!((t_cdf(t, 2.0) - two).abs() < 1e-12, "dof 2 at {t}");
    }
    // Far tails keep their digits: P(T > 1000; 1) = atan(1/1000)/π.
    let tail = 1.0 - t_cdf(1000.0, 1.0);
    assert!((tail / (f64::atan(1e-3) / std::f64::consts::PI) - 1.0).abs() < 1e-6, "{tail}");
}

#[test]
fn incomplete_beta_and_log_gamma_hit_known_values() {
    assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
    assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    assert!((ln_gamma(100.5) - 361.435_540_467_777_6).abs() < 1e-9);
    assert!((inc_beta(1.0, 1.0, 0.3) - 0.3).abs() < 1e-14, "I_x(1,1) = x");
    assert!((inc_beta(7.5, 7.5, 0.5) - 0.5).abs() < 1e-14, "symmetric at ½");
    // I_x(2, 3) = 6x²(½ − 2x/3 + x²/4)·2 = x²(6 − 8x + 3x²)
    let x: f64 = 0.4;
    assert!((inc_beta(2.0, 3.0, x) - x * x * (6.0 - 8.0 * x + 3.0 * x * x)).abs() < 1e-14);
}

// ---------------------------------------------------------------------------------------
// The rule on simulated sessions

#[test]
fn false_keep_rate_at_zero_effect_is_below_alpha() {
    let rule = Rule::default();
    for (name, pools, pinned) in [
        ("baseline prior only (1 dof)", baseline_pools(11), 0.022),
        ("after 30 earlier candidates", grown_pools(&rule, 12), 0.021),
    ] {
        let t = simulate(&rule, &pools, 0.0, 13);
        println!(
            "false keeps, {name}: {:.4} ± {:.4} (se), {:.2} pairs",
            t.keep_rate(),
            t.keep_se(),
            t.mean_pairs()
        );
        // The 3-se upper bound of the measured rate is below α, not just the rate itself.
        assert!(t.keep_rate() + 3.0 * t.keep_se() <= rule.alpha, "{name}: {t:?}");
        assert!(t.keep_rate() <= pinned, "{name}: {t:?}");
    }
}

#[test]
fn false_keep_rate_holds_at_the_minimum_effect_and_other_max_pairs() {
    let pools = grown_pools(&Rule::default(), 21);
    let rules = [
        (Rule { min_effect: SIGMA_D, ..Rule::default() }, SIGMA_D),
        (Rule { max_pairs: 1, ..Rule::default() }, 0.0),
        (Rule { max_pairs: 2, ..Rule::default() }, 0.0),
        (Rule { max_pairs: 8, ..Rule::default() }, 0.0),
        (Rule { alpha: 0.01, ..Rule::default() }, 0.0),
    ];
    for (rule, edge) in rules {
        let t = simulate(&rule, &pools, edge, 22);
        println!(
            "false keeps at Δ = {edge}, max_pairs {}, α {}: {:.4}, {:.2} pairs",
            rule.max_pairs,
            rule.alpha,
            t.keep_rate(),
            t.mean_pairs()
        );
        assert!(t.keep_rate() + 3.0 * t.keep_se() <= rule.alpha, "{rule:?}: {t:?}");
    }
}

#[test]
fn power_grows_with_the_true_improvement() {
    let rule = Rule::default();
    // (pools, improvement in σ_d, least keep rate, most mean pairs): pinned just beyond
    // the measured values.
    let grown = grown_pools(&rule, 31);
    let early = baseline_pools(33);
    let cases = [
        ("after 30 earlier", &grown, 1.0, 0.34, 3.2),
        ("after 30 earlier", &grown, 2.0, 0.89, 2.7),
        ("after 30 earlier", &grown, 3.0, 0.99, 1.95),
        ("baseline only", &early, 1.0, 0.20, 3.4),
        ("baseline only", &early, 2.0, 0.61, 3.6),
        ("baseline only", &early, 3.0, 0.88, 3.3),
    ];
    for (name, pools, k, power, pairs) in cases {
        let t = simulate(&rule, pools, k * SIGMA_D, 32);
        println!(
            "{name}, Δ = {k}σ_d better: kept {:.3}, {:.2} pairs on average, {:.3} kept after one pair",
            t.keep_rate(),
            t.mean_pairs(),
            t.kept_after_one as f64 / t.candidates as f64
        );
        assert!(t.keep_rate() >= power, "{name}, {k}σ_d: {t:?}");
        assert!(t.mean_pairs() <= pairs, "{name}, {k}σ_d: {t:?}");
    }
}

#[test]
fn clearly_worse_candidate_is_discarded_after_one_pair() {
    let rule = Rule::default();
    let pools = grown_pools(&rule, 41);
    let t = simulate(&rule, &pools, -SIGMA_D, 42);
    println!(
        "Δ = 1σ_d worse: discarded after one pair {:.3}, {:.2} pairs on average, kept {:.4}",
        t.discarded_after_one(),
        t.mean_pairs(),
        t.keep_rate()
    );
    // One pair looks no better with probability Φ(1) = 0.841.
    assert!(t.discarded_after_one() >= 0.83, "{t:?}");
    assert!(t.mean_pairs() <= 1.25, "{t:?}");
    assert!(t.keep_rate() <= 0.002, "{t:?}");
}

#[test]
fn one_dof_prior_keeps_nothing_after_one_pair_unless_the_effect_is_huge() {
    let rule = Rule::default();
    let pools = baseline_pools(51);
    let mut rng = Rng(52);
    // First pairs of candidates 3σ_d better, judged by the rule's t quantile at 1 dof and,
    // for contrast, by the same level as if the 1-dof σ were known (a normal quantile).
    let (mut by_t, mut as_if_known) = (0, 0);
    for pool in &pools {
        for _ in 0..PER_SESSION {
            let d = -3.0 * SIGMA_D + SIGMA_D * rng.normal();
            let v = decide(&rule, &[d], pool);
            by_t += matches!(v, Verdict::Keep(_)) as usize;
            let z = -d / pool.sigma().unwrap();
            as_if_known += (t_cdf(z, 1e9) >= rule.needed(1)) as usize;
        }
    }
    let n = (SESSIONS * PER_SESSION) as f64;
    println!(
        "1-dof prior, Δ = 3σ_d, kept after one pair: {:.4} by t(1), {:.4} if σ were known",
        by_t as f64 / n,
        as_if_known as f64 / n
    );
    // Only where the two baseline runs happened to agree to a few 1e-5 is σ so small that
    // one pair is "huge"; taking that σ at its word would keep a third of them at once.
    assert!((by_t as f64 / n) <= 0.015 && as_if_known >= 20 * by_t, "{by_t} vs {as_if_known}");

    // The measured K = 2 baseline: σ_d prior = √2·σ_x ≈ 0.0072 on 1 dof. Keeping after one
    // pair needs t ≥ t_{1−α/16, 1} ≈ 102, an improvement of ≈ 0.73 — larger than the
    // metric itself. One pair of a tenth of that is only worth another look.
    let pool = Pool::from_baseline(&[0.1585, 0.1513]);
    let need = t_quantile(rule.needed(1), 1.0) * pool.sigma().unwrap();
    assert!((0.70..0.76).contains(&need), "{need}");
    assert!(matches!(decide(&rule, &[-need / 10.0], &pool), Verdict::Continue(_)));
    assert!(matches!(decide(&rule, &[-need * 1.01], &pool), Verdict::Keep(_)));
}

#[test]
fn strict_rule_keeps_any_improvement_on_one_run() {
    let rule = Rule::strict(Direction::Minimize);
    let pool = Pool::default();
    assert!(matches!(decide(&rule, &[-1e-9], &pool), Verdict::Keep(_)));
    assert!(matches!(decide(&rule, &[0.0], &pool), Verdict::Discard(..)), "equal is not better");
    // Which is why it exists only for comparison: half of all neutral changes are kept.
    let t = simulate(&rule, &grown_pools(&Rule::default(), 61), 0.0, 62);
    println!("strict rule at Δ = 0: kept {:.3}, {:.2} pairs", t.keep_rate(), t.mean_pairs());
    assert!((t.keep_rate() - 0.5).abs() < 0.02 && t.mean_pairs() == 1.0, "{t:?}");
}

#[test]
fn interval_covers_the_true_mean_at_its_level() {
    let mut rng = Rng(71);
    for (n, level) in [(2, 0.95), (4, 0.95), (8, 0.90)] {
        let runs = 20_000;
        let truth = -0.004;
        let covered = (0..runs)
            .filter(|_| {
                let diffs: Vec<f64> = (0..n).map(|_| truth + SIGMA_D * rng.normal()).collect();
                let (_, lo, hi) = interval(&diffs, level).unwrap();
                lo <= truth && truth <= hi
            })
            .count() as f64
            / runs as f64;
        println!("interval at {level}, {n} pairs: covers {covered:.4}");
        let se = (level * (1.0 - level) / runs as f64).sqrt();
        assert!((covered - level).abs() < 4.0 * se, "{n} pairs at {level}: {covered}");
    }
    assert_eq!(interval(&[0.1], 0.95), None, "one pair has no spread");
}

#[test]
fn measured_baseline_worked_example() {
    // One candidate, true gain ≈ 0.006 (≈ 1.8σ_d), judged twice: first against the four
    // measured baseline runs alone (σ_x ≈ 0.005 on 3 dof, so a conservative σ_d prior
    // of ≈ 0.0071), then later in a session whose pool holds 15 dof at σ_d = 0.0034.
    let rule = Rule::default();
    let diffs = [-0.0081, -0.0032, -0.0069, -0.0058];
    let early = Pool::from_baseline(&[0.1585, 0.1513, 0.1613, 0.1506]);
    let mut later = early;
    for _ in 0..15 {
        later.add_candidate(&[0.0, SIGMA_D * 2f64.sqrt()]); // each: σ_d², 1 dof
    }
    let mut words = Vec::new();
    for (name, pool) in [("baseline only", early), ("later", later)] {
        for n in 1..=diffs.len() {
            let v = decide(&rule, &diffs[..n], &pool);
            println!("{name}, {n}: {:8} {}", v.word(), v.evidence().line());
            if let Verdict::Discard(_, why) = &v {
                assert_eq!(why, "not confident after 4 pairs: 96.4 % < 97.8 % needed");
            }
            words.push(v.word());
            if !matches!(v, Verdict::Continue(_)) {
                break;
            }
        }
    }
    assert_eq!(words, ["continue", "continue", "continue", "discard", "continue", "continue", "keep"]);
}

// ---------------------------------------------------------------------------------------
// Heterogeneous sessions: tuning changes and structural changes carry different noise

/// A demo-like session measured on two benches: 3 baselines spread by σ_x = 0.006; a change
/// of learning rates, betas or schedule leaves the pair correlated (own σ_d 0.0001–0.0015),
/// one that reshapes the model or the batches decorrelates it (σ_d up to √2·σ_x).
const HET_SIGMA_X: f64 = 0.006;
const TUNING_SIGMA_D: f64 = 0.0008;
const STRUCTURAL_SIGMA_D: f64 = 0.0085;
const HET_EARLIER: usize = 21; // every third earlier candidate is structural

/// One session's pools after its baseline and HET_EARLIER candidates: (everything pooled,
/// tuning changes only, structural changes only); each starts from the baseline prior.
fn het_pools(rule: &Rule, per_class: bool, rng: &mut Rng) -> (Pool, Pool, Pool) {
    let prior = Pool::from_baseline(&[
        HET_SIGMA_X * rng.normal(),
        HET_SIGMA_X * rng.normal(),
        HET_SIGMA_X * rng.normal(),
    ]);
    let (mut all, mut tuning, mut structural) = (prior, prior, prior);
    for i in 0..HET_EARLIER {
        let is_structural = i % 3 == 2;
        let sigma_d = if is_structural { STRUCTURAL_SIGMA_D } else { TUNING_SIGMA_D };
        let improvement = sigma_d * (rng.normal() - 1.0);
        let decided_on = match (per_class, is_structural) {
            (false, _) => all,
            (true, false) => tuning,
            (true, true) => structural,
        };
        let (_, diffs) = candidate_with_noise(rule, &decided_on, improvement, sigma_d, rng);
        all.add_candidate(&diffs);
        if is_structural { structural.add_candidate(&diffs) } else { tuning.add_candidate(&diffs) }
    }
    (all, tuning, structural)
}

/// Keep rate and mean pairs of candidates of one class and true `improvement`, decided on
/// one pool for everything or on their class's pool, over SESSIONS simulated sessions.
fn het_keep_rate(per_class: bool, structural: bool, improvement: f64, seed: u64) -> (f64, f64) {
    let rule = Rule::default();
    let mut rng = Rng(seed);
    let (mut keeps, mut n, mut pairs) = (0usize, 0usize, 0usize);
    for _ in 0..SESSIONS {
        let (all, tuning, structural_pool) = het_pools(&rule, per_class, &mut rng);
        let pool = match (per_class, structural) {
            (false, _) => all,
            (true, false) => tuning,
            (true, true) => structural_pool,
        };
        let sigma_d = if structural { STRUCTURAL_SIGMA_D } else { TUNING_SIGMA_D };
        for _ in 0..PER_SESSION {
            let (v, diffs) = candidate_with_noise(&rule, &pool, improvement, sigma_d, &mut rng);
            keeps += matches!(v, Verdict::Keep(_)) as usize;
            pairs += diffs.len();
            n += 1;
        }
    }
    (keeps as f64 / n as f64, pairs as f64 / n as f64)
}

/// One σ_d pooled over both kinds keeps zero-effect structural changes far above α: the
/// tuning changes pull σ_d below their noise. Pooled per class (what `ar` does: see
/// `ar/src/session/noise_class.rs`), each keeps below α, and tuning changes gain power
/// because the structural changes no longer inflate their σ_d.
#[test]
fn per_class_noise_holds_alpha_where_one_pool_does_not() {
    let alpha = Rule::default().alpha;
    let mut table = Vec::new();
    for per_class in [false, true] {
        for (structural, sigma_d) in [(true, STRUCTURAL_SIGMA_D), (false, TUNING_SIGMA_D)] {
            let rates: Vec<(f64, f64)> = [0.0, 2.0, 3.0]
                .iter()
                .enumerate()
                .map(|(k, z)| het_keep_rate(per_class, structural, z * sigma_d, 100 + k as u64))
                .collect();
            println!(
                "{:<9} {:<10} keeps at Δ = 0, 2σ_d, 3σ_d: {:.4}, {:.4}, {:.4} ({:.2} pairs at 0)",
                if per_class { "per class" } else { "one pool" },
                if structural { "structural" } else { "tuning" },
                rates[0].0,
                rates[1].0,
                rates[2].0,
                rates[0].1
            );
            table.push(rates);
        }
    }
    let (one_structural, one_tuning, class_structural, class_tuning) =
        (&table[0], &table[1], &table[2], &table[3]);
    let se = |p: f64| (p * (1.0 - p) / (SESSIONS * PER_SESSION) as f64).sqrt();
    assert!(
        one_structural[0].0 > 2.0 * alpha,
        "one pool is not conservative for structural changes: {one_structural:?}"
    );
    for rates in [class_structural, class_tuning, one_tuning] {
        assert!(rates[0].0 + 3.0 * se(rates[0].0) <= alpha, "{rates:?}");
    }
    assert!(
        class_tuning[1].0 > 1.5 * one_tuning[1].0,
        "tuning power at 2σ_d: {class_tuning:?} vs {one_tuning:?}"
    );
    assert!(
        class_tuning[2].0 > 1.5 * one_tuning[2].0,
        "tuning power at 3σ_d: {class_tuning:?} vs {one_tuning:?}"
    );
}
