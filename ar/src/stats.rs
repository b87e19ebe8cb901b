//! Keep or discard, and how sure: a sequential paired t-test with a stated false-keep rate.
//!
//! One run of the metric is noisy (σ 3–8 % of the value on 2-core CPUs), and much of that
//! noise belongs to the seed, not the code: two commits trained at the same seed offset
//! differ far less than two runs at different seeds. So the unit of evidence is a *pair*:
//! d_j = candidate_j − incumbent_j at seed index j. Measured: four baseline runs at seed
//! offsets 0–3 spread by σ_x ≈ 0.005; pairing candidate and incumbent by offset gave
//! σ_d ≈ 0.0034, against √2·σ_x ≈ 0.0071 for unpaired runs.
//!
//! **Assumed.** Within a session the d_j of a candidate are independent N(Δ, σ_d²) with one
//! σ_d for all candidates. Δ is the true effect; `Direction` says which sign is better, and
//! every confidence here is about the improvement (positive = better). Reusing the
//! incumbent's run at seed j for several candidates keeps each candidate's guarantee but
//! correlates their errors. A change that makes training itself noisier breaks the common
//! σ_d; its own pairs enter the estimate, which helps only a little.
//!
//! **σ_d, and how much to believe it.** One pooled variance: the spread of every earlier
//! candidate's differences around its own mean (n_i − 1 dof each), the current candidate's
//! own (n − 1 dof), and a weak prior from the K unpaired baseline runs, 2·Σ(x − x̄)² on K − 1
//! dof. The prior over-states σ_d (pairing only removes variance) and with K = 2 rests on
//! 1 dof; it fades as the session adds dof. Every decision reads Student's t at the pooled
//! dof ν, so a σ on 1 dof needs t ≈ 102 to keep after one pair, where a known σ would need 2.7.
//!
//! **The sequence.** After pair n (of at most L = `max_pairs`), with m = `min_effect`:
//!   T = (mean improvement − m) / (σ_d/√n),  confidence = F_ν(T)  (one-sided 1 − p);
//!   Keep      if confidence ≥ 1 − α_n,  α_n = α·(2n − 1)/L²   (4 looks: α·1,3,5,7/16);
//!   Discard   if the mean improvement is ≤ m (futility: it does not even look better),
//!             or n = L without Keep;
//!   Continue  otherwise.
//!
//! **Guaranteed.** If Δ ≤ m, P(Keep at any look) ≤ Σ_n P(T_n ≥ t_{1−α_n, ν_n}) ≤ Σ_n α_n = α.
//! Each term is exact because T_n is t-distributed when σ_d's estimate is independent of
//! the mean (normal data), and only smaller when the prior over-states σ_d; the sum
//! (Bonferroni across looks) needs no assumption about how the looks correlate, how many
//! dof there are, or L, and futility only removes keeps, so it holds with or without it.
//! One caveat the simulation covers: earlier candidates enter the pool through the rule's
//! own stopping, which selects their spreads slightly.
//!
//! **Why this boundary.** Simulated as in `ar/tests/stats.rs` (σ_x = 0.005, σ_d = 0.0034,
//! pool after K = 2 baseline runs and 30 earlier candidates, 20,000 candidates per cell;
//! a prototype run, so within ±0.01 of the pinned table below):
//!
//!   α split over 4 looks            false keep   kept at 1σ/2σ/3σ      mean pairs
//!   equal (α/4 each)                 0.021       0.30 / 0.87 / 0.995   3.05 / 2.42 / 1.58
//!   ∝ 2n − 1, cumulative ∝ n²        0.018       0.36 / 0.91 / 0.997   3.13 / 2.63 / 1.86   ← this rule
//!   cumulative ∝ n³ (OBF-like)       0.019       0.39 / 0.93 / 0.997   3.20 / 2.80 / 2.09
//!   Pocock, 1.94 % each look         0.032       0.38 / 0.91 / 0.998   2.90 / 2.21 / 1.44
//!   all at the last look             0.028       0.47 / 0.95 / 0.998   3.45 / 3.93 / 3.99
//!
//! Equal shares waste α on the first looks, whose σ rests on the fewest dof. Pocock's
//! level (calibrated for known σ: P(max_n Z_n ≥ 2.066) = 5 % over 4 looks) is as strong
//! and cheaper in pairs, but its α is only measured, not proven, at the 1–3 dof a session
//! starts with; the Bonferroni split is proven there. Spending all α at the end buys power
//! with four pairs for every good candidate. Futility at 50 % is the plainest line ("not
//! even better") and about the cheapest: discarding below 60 % saved 0.1–0.4 pairs per
//! neutral or worse candidate but lost 10–17 % of the power at 1–2σ; below 30 % gained
//! 5–23 % of power for 26–31 % more pairs on neutral and worse candidates, which are
//! most of a session, so fewer candidates per night.
//!
//! **Measured** (pinned in `ar/tests/stats.rs`, α = 0.05, L = 4; "after 30" = the pool of a
//! session 30 candidates in, ≈ 16 dof; "baseline" = the K = 2 prior alone, 1 dof):
//!
//!   true Δ                    kept after 30   mean pairs   kept baseline   mean pairs
//!   0 (false keep)             0.020 ± 0.001     2.18       0.019 ± 0.001     2.18
//!   1σ_d better                0.353             3.14       0.207             3.34
//!   2σ_d better                0.906             2.62       0.623             3.53
//!   3σ_d better                0.997             1.87       0.898             3.25
//!   1σ_d worse                 0.0004            1.24  (84 % discarded after one pair)
//!
//! Also measured: false keep 0.018 at Δ = m = σ_d; 0.032, 0.027, 0.013 with L = 1, 2, 8;
//! 0.004 at α = 0.01. The original rule (`strict`: one pair, keep if better by any amount)
//! keeps 50 % of changes that do nothing. [`interval`] is the end-of-session check: a plain
//! two-sided t interval on fresh paired seeds, which covered the true mean 95.1 % of the
//! time at 95 % with 4 pairs.
//!
//! Everything here is pure: no I/O, no clock, no randomness. The t distribution is computed
//! here (the regularized incomplete beta by continued fraction, as in Numerical Recipes)
//! rather than pulled in as a dependency.

// ---------------------------------------------------------------------------------------
// The rule

/// Which way the metric improves. val_bpb is minimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    /// A raw difference (candidate − incumbent) turned improvement-positive.
    pub fn improvement(self, diff: f64) -> f64 {
        match self {
            Direction::Minimize => -diff,
            Direction::Maximize => diff,
        }
    }
}

/// The keep rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The false-keep rate: the chance, over all looks together, of keeping a candidate
    /// whose true improvement is `min_effect` (or less).
    pub alpha: f64,
    /// The most pairs one candidate may spend; at this look it is Keep or Discard.
    pub max_pairs: usize,
    /// The smallest improvement worth keeping, in the metric's units (≥ 0).
    pub min_effect: f64,
    /// The original rule: one pair, keep if better by any amount. For comparison only.
    pub strict: bool,
    pub direction: Direction,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule { alpha: 0.05, max_pairs: 4, min_effect: 0.0, strict: false, direction: Direction::Minimize }
    }
}

impl Rule {
    /// The original's rule for a metric that moves in `direction`.
    pub fn strict(direction: Direction) -> Rule {
        Rule { strict: true, direction, ..Rule::default() }
    }

    /// The share of α spent at look `pairs` (1-based): α·(2n − 1)/L², i.e. a cumulative
    /// α·(n/L)² — little where the mean rests on one pair, most where it rests on L.
    /// Looks past `max_pairs` are the last look again.
    pub fn alpha_at(&self, pairs: usize) -> f64 {
        let l = self.max_pairs.max(1);
        let n = pairs.clamp(1, l);
        self.alpha * (2 * n - 1) as f64 / (l * l) as f64
    }

    /// The confidence a candidate needs to be kept after `pairs` pairs.
    pub fn needed(&self, pairs: usize) -> f64 {
        1.0 - self.alpha_at(pairs)
    }
}

// ---------------------------------------------------------------------------------------
// The pooled noise estimate

/// The paired-difference variance, pooled: a sum of squares and its degrees of freedom.
/// Start it with [`Pool::from_baseline`]; after each candidate's final verdict, add its
/// differences with [`Pool::add_candidate`]. [`decide`] adds the current candidate's own
/// pairs itself, so do not add them before deciding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pool {
    ss: f64,
    dof: f64,
}

impl Pool {
    /// The weak prior from K unpaired baseline runs at different seeds: a difference of two
    /// independent runs has variance 2σ_x², so they give 2·Σ(x − x̄)² with K − 1 dof.
    /// Pairing only removes variance, so this over-states σ_d: conservative.
    pub fn from_baseline(runs: &[f64]) -> Pool {
        let (ss, dof) = sum_of_squares(runs);
        Pool { ss: 2.0 * ss, dof }
    }

    /// A decided candidate's paired differences: their spread around their own mean, with
    /// n − 1 dof (a candidate of one pair adds nothing). The mean is the candidate's effect,
    /// not noise, so it is taken out.
    pub fn add_candidate(&mut self, diffs: &[f64]) {
        let (ss, dof) = sum_of_squares(diffs);
        self.ss += ss;
        self.dof += dof;
    }

    pub fn dof(&self) -> f64 {
        self.dof
    }

    /// σ_d, once there is at least one degree of freedom.
    pub fn sigma(&self) -> Option<f64> {
        (self.dof > 0.0).then(|| (self.ss / self.dof).sqrt())
    }

    /// This pool with a candidate's own pairs added.
    fn with(mut self, diffs: &[f64]) -> Pool {
        self.add_candidate(diffs);
        self
    }
}

/// Σ(x − x̄)² and n − 1; groups of one (or none) give (0, 0).
fn sum_of_squares(xs: &[f64]) -> (f64, f64) {
    if xs.len() < 2 {
        return (0.0, 0.0);
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum(), (xs.len() - 1) as f64)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

// ---------------------------------------------------------------------------------------
// Evidence and verdicts

/// What the pairs say, whatever the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub direction: Direction,
    /// The minimum effect the confidence is measured against.
    pub min_effect: f64,
    pub pairs: usize,
    /// Mean of candidate − incumbent, in the metric's units and sign: for val_bpb,
    /// negative is better. [`Evidence::improvement`] gives it improvement-positive.
    pub delta: f64,
    /// Standard error of `delta`: σ_d/√pairs. None while σ_d rests on no dof.
    pub se: Option<f64>,
    /// The pooled σ_d the decision used (earlier candidates, baseline prior, these pairs).
    pub sigma_d: Option<f64>,
    /// Degrees of freedom behind σ_d.
    pub dof: f64,
    /// One-sided confidence that the candidate is better by more than `min_effect`:
    /// 1 − p of the t-test, which is also the posterior probability under flat priors.
    /// It is for this look alone; the rule asks for [`Rule::needed`] to keep.
    pub confidence: Option<f64>,
}

impl Evidence {
    /// The mean improvement, positive = better, whatever the direction.
    pub fn improvement(&self) -> f64 {
        self.direction.improvement(self.delta)
    }

    /// One line for the journal and the agent's digest, e.g.
    /// `Δ −0.0042 ± 0.0015 (se), 3 pairs, 94 % confident better`.
    pub fn line(&self) -> String {
        if self.pairs == 0 {
            return "no pairs yet".to_string();
        }
        let places = decimals(self.se.unwrap_or(self.delta.abs()));
        let pairs = if self.pairs == 1 { "1 pair".to_string() } else { format!("{} pairs", self.pairs) };
        let (Some(se), Some(c)) = (self.se, self.confidence) else {
            return format!("Δ {}, {pairs}, σ not yet known", signed(self.delta, places));
        };
        let by = if self.min_effect > 0.0 {
            format!(" by > {:.*}", places, self.min_effect)
        } else {
            String::new()
        };
        format!(
            "Δ {} ± {se:.places$} (se), {pairs}, {} confident better{by}",
            signed(self.delta, places),
            percent(c)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Keep(Evidence),
    /// With the reason, one short clause.
    Discard(Evidence, String),
    /// Measure one more pair.
    Continue(Evidence),
}

impl Verdict {
    /// "keep", "discard" or "continue".
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Keep(_) => "keep",
            Verdict::Discard(..) => "discard",
            Verdict::Continue(_) => "continue",
        }
    }

    pub fn evidence(&self) -> &Evidence {
        match self {
            Verdict::Keep(e) | Verdict::Discard(e, _) | Verdict::Continue(e) => e,
        }
    }
}

/// The verdict after the pairs measured so far. `diffs[j]` = candidate − incumbent at
/// seed index j; `pool` holds everything measured before this candidate.
pub fn decide(rule: &Rule, diffs: &[f64], pool: &Pool) -> Verdict {
    let ev = evidence(rule, diffs, pool);
    if diffs.is_empty() {
        return Verdict::Continue(ev);
    }
    if diffs.iter().any(|d| !d.is_finite()) {
        return Verdict::Discard(ev, "a measurement is not a finite number".to_string());
    }
    if rule.strict {
        return strict(ev);
    }
    let n = diffs.len();
    let needed = rule.needed(n);
    if ev.confidence.is_some_and(|c| c >= needed) {
        return Verdict::Keep(ev);
    }
    // Futility: a candidate that does not even look better is not worth another run. The
    // α bound above does not rely on this (it would hold without it), so it only lowers
    // the false-keep rate.
    if ev.improvement() <= rule.min_effect {
        let why = if rule.min_effect > 0.0 {
            let places = decimals(rule.min_effect / 10.0);
            format!(
                "improvement {} is not beyond the minimum effect {:.places$}",
                signed(ev.improvement(), places),
                rule.min_effect
            )
        } else {
            "not better".to_string()
        };
        return Verdict::Discard(ev, why);
    }
    if n >= rule.max_pairs {
        let why = match ev.confidence {
            Some(c) => format!("not confident after {n} pairs: {} < {} needed", percent(c), percent(needed)),
            None => format!("σ still unknown after {n} pairs"),
        };
        return Verdict::Discard(ev, why);
    }
    Verdict::Continue(ev)
}

/// The original: keep if better by any amount (on the one pair it is given in practice).
fn strict(ev: Evidence) -> Verdict {
    if ev.improvement() > 0.0 { Verdict::Keep(ev) } else { Verdict::Discard(ev, "not better".to_string()) }
}

fn evidence(rule: &Rule, diffs: &[f64], pool: &Pool) -> Evidence {
    let n = diffs.len();
    let delta = if n == 0 { 0.0 } else { mean(diffs) };
    let pooled = pool.with(diffs);
    let sigma_d = pooled.sigma().filter(|_| n > 0);
    let se = sigma_d.map(|s| s / (n as f64).sqrt());
    let confidence = se.map(|se| {
        let excess = rule.direction.improvement(delta) - rule.min_effect;
        confidence(excess, se, pooled.dof)
    });
    Evidence {
        direction: rule.direction,
        min_effect: rule.min_effect,
        pairs: n,
        delta,
        se,
        sigma_d,
        dof: pooled.dof,
        confidence,
    }
}

/// P(T < excess/se) for T ~ t(dof). A zero se (identical measurements) is certainty
/// either way, or a coin when the excess is zero too.
fn confidence(excess: f64, se: f64, dof: f64) -> f64 {
    if se == 0.0 {
        return if excess > 0.0 {
            1.0
        } else if excess < 0.0 {
            0.0
        } else {
            0.5
        };
    }
    t_cdf(excess / se, dof)
}

// ---------------------------------------------------------------------------------------
// The end-of-session interval

/// Mean of paired differences and its two-sided t interval at `level` (e.g. 0.95), in the
/// differences' own units and sign, with σ from these differences alone (n − 1 dof): for
/// the final check of best against baseline on fresh seeds. None below two pairs.
pub fn interval(diffs: &[f64], level: f64) -> Option<(f64, f64, f64)> {
    let n = diffs.len();
    if n < 2 || !(level > 0.0 && level < 1.0) || diffs.iter().any(|d| !d.is_finite()) {
        return None;
    }
    let (ss, dof) = sum_of_squares(diffs);
    let m = mean(diffs);
    let half = t_quantile(0.5 + level / 2.0, dof) * (ss / dof).sqrt() / (n as f64).sqrt();
    Some((m, m - half, m + half))
}

// ---------------------------------------------------------------------------------------
// Student's t

/// P(T ≤ t) for Student's t with `dof` > 0 degrees of freedom (not necessarily whole).
pub fn t_cdf(t: f64, dof: f64) -> f64 {
    1.0 - t_sf(t, dof)
}

/// P(T > t), computed directly so that tails near 1 − 10⁻⁶ keep their digits.
fn t_sf(t: f64, dof: f64) -> f64 {
    // P(|T| > |t|) = I_x(dof/2, 1/2) with x = dof/(dof + t²).
    let two_tailed = inc_beta(dof / 2.0, 0.5, dof / (dof + t * t));
    if t >= 0.0 { two_tailed / 2.0 } else { 1.0 - two_tailed / 2.0 }
}

/// The t value below which a fraction `p` lies. Bisection: slower than Newton but it
/// cannot diverge, and nothing here calls it in a loop.
pub fn t_quantile(p: f64, dof: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, dof);
    }
    let tail = 1.0 - p;
    let mut hi = 1.0;
    while t_sf(hi, dof) > tail {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if t_sf(mid, dof) > tail {
            lo = mid
        } else {
            hi = mid
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    (lo + hi) / 2.0
}

/// The regularized incomplete beta function I_x(a, b) (Numerical Recipes §6.4): the
/// continued fraction converges fast for x < (a + 1)/(a + b + 2); above it, use the
/// symmetry I_x(a, b) = 1 − I_{1−x}(b, a).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction for I_x(a, b), by the modified Lentz method.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300; // keeps a denominator off zero
    let nudge = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / nudge(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        // The even step, then the odd step, of the fraction's terms.
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / nudge(1.0 + even * d);
        c = nudge(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / nudge(1.0 + odd * d);
        c = nudge(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0: Lanczos' approximation (g = 7, 9 terms), good to about 1e-15.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = C[1..].iter().enumerate().fold(C[0], |s, (i, c)| s + c / (x + 1.0 + i as f64));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

// ---------------------------------------------------------------------------------------
// Rendering

/// Enough decimals to show `scale` to two significant figures.
fn decimals(scale: f64) -> usize {
    if !(scale.is_finite() && scale > 0.0) {
        return 4;
    }
    (1.0 - scale.log10().floor()).clamp(0.0, 12.0) as usize
}

/// A signed number with a real minus sign, as the journal writes Δ.
fn signed(x: f64, places: usize) -> String {
    format!("{x:+.places$}").replace('-', "−")
}

/// A confidence as a percentage: whole percents, tenths where the keep levels lie (95 % and
/// up, so "97.8 % needed" reads right), never "100 %".
fn percent(c: f64) -> String {
    if c > 0.999 {
        ">99.9 %".to_string()
    } else if c >= 0.95 {
        format!("{:.1} %", 100.0 * c)
    } else {
        format!("{:.0} %", 100.0 * c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_is_split_one_three_five_seven_over_four_looks() {
        let r = Rule::default();
        for (n, odd) in [(1, 1.0), (2, 3.0), (3, 5.0), (4, 7.0)] {
            assert!((r.alpha_at(n) - r.alpha * odd / 16.0).abs() < 1e-15, "look {n}");
        }
        assert_eq!(r.alpha_at(9), r.alpha_at(4), "looks past max_pairs are the last look");
    }

    #[test]
    fn baseline_prior_is_twice_the_run_variance_with_k_minus_one_dof() {
        let p = Pool::from_baseline(&[1.0, 1.02]);
        assert_eq!(p.dof(), 1.0);
        // σ_x = 0.02/√2, so σ_d = √2·σ_x = 0.02.
        assert!((p.sigma().unwrap() - 0.02).abs() < 1e-12);
        assert_eq!(Pool::from_baseline(&[1.0]).sigma(), None);
    }

    #[test]
    fn a_candidate_adds_its_spread_not_its_effect() {
        let mut p = Pool::default();
        p.add_candidate(&[-0.5, -0.5]);
        p.add_candidate(&[0.3]);
        assert_eq!((p.dof(), p.sigma()), (1.0, Some(0.0)));
    }

    #[test]
    fn line_reads_like_the_journal() {
        let ev = Evidence {
            direction: Direction::Minimize,
            min_effect: 0.0,
            pairs: 3,
            delta: -0.0042,
            se: Some(0.0015),
            sigma_d: Some(0.0026),
            dof: 12.0,
            confidence: Some(0.9412),
        };
        assert_eq!(ev.line(), "Δ −0.0042 ± 0.0015 (se), 3 pairs, 94 % confident better");
        let unsure = Evidence { pairs: 1, se: None, sigma_d: None, confidence: None, dof: 0.0, ..ev.clone() };
        assert_eq!(unsure.line(), "Δ −0.0042, 1 pair, σ not yet known");
        let sure = Evidence { min_effect: 0.001, confidence: Some(0.9931), ..ev };
        assert_eq!(sure.line(), "Δ −0.0042 ± 0.0015 (se), 3 pairs, 99.3 % confident better by > 0.0010");
    }

    #[test]
    fn maximize_mirrors_minimize() {
        let pool = Pool::from_baseline(&[0.1585, 0.1513, 0.1613, 0.1506]);
        let min = Rule::default();
        let max = Rule { direction: Direction::Maximize, ..Rule::default() };
        let d = [-0.004, -0.006];
        let neg: Vec<f64> = d.iter().map(|x| -x).collect();
        let (a, b) = (decide(&min, &d, &pool), decide(&max, &neg, &pool));
        assert_eq!(a.evidence().confidence, b.evidence().confidence);
        assert_eq!(a.evidence().improvement(), b.evidence().improvement());
        assert!(a.evidence().improvement() > 0.0);
    }

    #[test]
    fn a_crashed_measurement_is_discarded() {
        let v = decide(&Rule::default(), &[f64::NAN], &Pool::from_baseline(&[1.0, 1.1]));
        assert!(matches!(v, Verdict::Discard(..)), "{v:?}");
    }
}
