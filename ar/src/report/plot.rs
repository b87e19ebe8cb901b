//! The progress plot: val_bpb against experiment number, like the original's analysis
//! notebook, without its traps.
//!
//! The notebook drops crashes before numbering (so its x-axis is not the experiment count)
//! and silently drops every point worse than the baseline. Here the x-axis is the
//! experiment id, every experiment gets a mark (crashes a red × on the top edge, points
//! beyond the axis a triangle on the edge they fell off), the noise band best ± k·σ is
//! shaded, and the held-out test_bpb of each kept result is a second series on a right axis
//! with the same scale, aligned at the baseline, so val spoilage (val improving while test
//! does not) shows as the two lines parting.
//!
//! Text goes through plotters' ab_glyph path with a subset of DejaVu Sans bundled in the
//! binary (ar/assets/fonts, licence beside it), so the PNG looks the same on a CI box with
//! no fonts and no fontconfig. SVG text stays plain `<text>` elements (family sans-serif).

use std::ops::Range;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef};
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::model::{BestStep, Model, Outcome, Row, duration, kind_name, plural, short, truncate};
use crate::journal::{CrashClass, RunKind};

/// DejaVu Sans 2.37, subset (see ar/assets/fonts/LICENSE-DejaVu.txt for how and the licence).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

const W: u32 = 1800;
const H: u32 = 1000;
const TITLE_H: u32 = 96;
const LEGEND_H: u32 = 78;

const KEEP: RGBColor = RGBColor(46, 204, 113);
const KEEP_EDGE: RGBColor = RGBColor(30, 132, 73);
const LABEL: RGBColor = RGBColor(26, 122, 58);
const DISCARD: RGBColor = RGBColor(189, 189, 189);
const CLIPPED: RGBColor = RGBColor(110, 110, 110);
const CRASH: RGBColor = RGBColor(231, 76, 60);
const INTERRUPTED: RGBColor = RGBColor(230, 126, 34);
const RUNNING: RGBColor = RGBColor(52, 152, 219);
const TEST: RGBColor = RGBColor(31, 78, 156);
const BEST: RGBColor = RGBColor(39, 174, 96);
const INK: RGBColor = RGBColor(40, 40, 40);
const MUTED: RGBColor = RGBColor(110, 110, 110);

/// Pixels from the plot's top edge to the row of crash marks, and to clipped marks.
const CRASH_ROW: i32 = 12;
const CLIP_ROW: i32 = 9;

/// The plot as SVG text.
pub fn svg(model: &Model) -> Result<String> {
    register_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        draw(&root, model)?;
        root.present().map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    }
    Ok(out)
}

/// The plot as PNG bytes.
pub fn png(model: &Model) -> Result<Vec<u8>> {
    register_font();
    let mut rgb = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        draw(&root, model)?;
        root.present().map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    }
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, W, H);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(bytes)
}

fn register_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // "sans-serif" is the family plotters asks for by default and the one the SVG names.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the bundled font does not parse");
        }
    });
}

/// Replaces characters the bundled font lacks (it is a subset) with `?`, so a description
/// in another script shows as `?` rather than as empty boxes or nothing.
fn printable(text: &str) -> String {
    static F: OnceLock<FontRef<'static>> = OnceLock::new();
    let font = F.get_or_init(|| FontRef::try_from_slice(FONT).expect("the bundled font parses"));
    text.chars().map(|c| if c == ' ' || font.glyph_id(c).0 != 0 { c } else { '?' }).collect()
}

type Area<DB> = DrawingArea<DB, Shift>;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e}")
}

fn font(size: f64) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&INK)
}

fn draw<DB: DrawingBackend>(root: &Area<DB>, m: &Model) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let c = m.counts();
    let tag = m.tag();
    // Decisions as they were decided (the markdown report's counts): candidates only;
    // baseline, pair, re-measure and verification runs are re-runs, not keeps.
    let cand_crashed = m.rows.iter().filter(|r| r.kind == RunKind::Candidate && r.outcome.is_crash()).count();
    let mut title = format!(
        "autoresearch {tag}: {}, {} kept, {} discarded, {} crashed",
        plural(c.candidates, "experiment"),
        c.kept_candidates,
        c.discarded_candidates,
        cand_crashed
    );
    if c.running + c.pending > 0 {
        title.push_str(&format!(", {} running", c.running + c.pending));
    }
    if m.is_empty() {
        title = format!("autoresearch {tag}: no experiments yet");
    }
    let center = Pos::new(HPos::Center, VPos::Top);
    root.draw_text(&printable(&title), &font(32.0).pos(center), (W as i32 / 2, 16)).map_err(err)?;
    root.draw_text(&printable(&subtitle(m)), &font(19.0).color(&MUTED).pos(center), (W as i32 / 2, 58))
        .map_err(err)?;
    if m.is_empty() {
        let msg = "No experiments recorded in this session yet: `ar loop` starts them.";
        let mid = Pos::new(HPos::Center, VPos::Center);
        root.draw_text(msg, &font(26.0).color(&MUTED).pos(mid), (W as i32 / 2, H as i32 / 2)).map_err(err)?;
        return Ok(());
    }
    let body = root.margin(TITLE_H, 0, 0, 0);
    let (chart_area, legend_area) = body.split_vertically(H - TITLE_H - LEGEND_H);
    let axes = Axes::new(m);
    let placed = chart(&chart_area, root, m, &axes)?;
    legend(&legend_area, m, &axes, placed)?;
    Ok(())
}

/// The second title line: what was run, where, and the headline numbers.
fn subtitle(m: &Model) -> String {
    let mut parts = Vec::new();
    match m.setup.as_ref().and_then(|s| s.settings.as_ref()).and_then(|st| st.workload.as_ref()) {
        Some(w) => parts.push(format!("workload {} ({}, {})", w.name, w.metric, w.direction)),
        None => {
            if let Some(s) = &m.setup {
                parts.push(format!("profile {}", s.profile));
            }
        }
    }
    match (m.baseline(), m.best()) {
        (Some(base), Some(best)) => parts.push(format!(
            "baseline {base:.6} → best {:.6} ({:+.2}%) at {}",
            best.val_bpb,
            (best.val_bpb - base) / base * 100.0,
            short(&best.commit)
        )),
        (Some(base), None) => parts.push(format!("baseline {base:.6}")),
        _ => {}
    }
    if let (Some(sigma), Some(k)) = (m.sigma(), m.k()) {
        parts.push(format!("noise σ {sigma:.4}, band ±{k}σ"));
    }
    if let Some(s) = &m.setup {
        parts.push(format!("agent {}", truncate(&s.agent, 28)));
        let workload = s.settings.as_ref().is_some_and(|st| st.workload.is_some());
        if !workload {
            parts.push(format!("{} per run", duration(s.budget_secs)));
        }
    }
    parts.join("  ·  ")
}

/// Axis ranges and where every experiment's mark goes.
struct Axes {
    x: Range<f64>,
    x_ticks: Vec<f64>,
    y: Range<f64>,
    y_ticks: Vec<f64>,
    /// Right axis for test_bpb: same span, shifted so the baseline's test sits at its val.
    y2: Option<(Range<f64>, Vec<f64>)>,
    test_offset: f64,
    last_id: f64,
}

impl Axes {
    fn new(m: &Model) -> Axes {
        let last_id = m.rows.iter().map(|r| r.id).max().unwrap_or(1) as f64;
        let x_step = nice_int_step(last_id + 1.0, 12);
        let x_hi = ((last_id + 1.0) / x_step).ceil() * x_step;
        let x_ticks = ticks(0.0, x_hi, x_step);

        // The interesting region, as in the notebook: from the best (and its noise band) to
        // the baseline, plus every kept result; discards may extend it downwards (noise
        // around the best is worth seeing) but not upwards (worse than baseline is clipped).
        let k = m.k().unwrap_or(0.0);
        let mut core: Vec<f64> = m.baseline().into_iter().collect();
        core.extend(m.rows.iter().filter(|r| r.outcome == Outcome::Keep).filter_map(|r| r.val_bpb));
        for s in &m.best_steps {
            let band = s.sigma.map_or(0.0, |sg| k * sg);
            core.extend([s.best - band, s.best + band]);
        }
        if core.is_empty() {
            core.extend(m.rows.iter().filter_map(|r| r.val_bpb));
        }
        let (mut lo, mut hi) = min_max(&core).unwrap_or((0.9, 1.1));
        let mut span = hi - lo;
        if span <= 0.0 {
            span = (hi.abs() * 0.01).max(1e-3);
        }
        let floor = lo - 0.5 * span;
        for v in m.rows.iter().filter(|r| !r.outcome.is_crash()).filter_map(|r| r.val_bpb) {
            if v >= floor && v < lo {
                lo = v;
            }
        }
        lo -= 0.08 * span;
        hi += 0.08 * span;
        let y_step = nice_step(hi - lo, 10);
        let (lo, hi) = ((lo / y_step).floor() * y_step, (hi / y_step).ceil() * y_step);
        let y_ticks = ticks(lo, hi, y_step);

        let test_offset = test_alignment(m);
        let has_test = m.rows.iter().any(|r| r.outcome == Outcome::Keep && r.test_bpb.is_some());
        let y2 = (has_test && test_offset.is_some()).then(|| {
            let off = test_offset.unwrap_or(0.0);
            let (lo2, hi2) = (lo + off, hi + off);
            let first = (lo2 / y_step).ceil() * y_step;
            (lo2..hi2, ticks(first, hi2, y_step).into_iter().filter(|t| *t <= hi2 + 1e-12).collect())
        });
        Axes {
            x: 0.0..x_hi,
            x_ticks,
            y: lo..hi,
            y_ticks,
            y2,
            test_offset: test_offset.unwrap_or(0.0),
            last_id,
        }
    }

    /// Where a value lands: inside, or clipped off the top or bottom.
    fn clip(&self, v: f64) -> Clip {
        if v > self.y.end {
            Clip::Above
        } else if v < self.y.start {
            Clip::Below
        } else {
            Clip::Inside
        }
    }
}

/// A stretch of experiments over which the incumbent (and σ) stayed the same.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    x0: f64,
    x1: f64,
    best: f64,
    sigma: Option<f64>,
}

/// Merges the decisions into stretches of constant best and σ, in experiment order. One
/// rectangle and one line run per stretch: overlapping translucent rectangles would show
/// seams, and thick polylines through collinear points wobble.
fn best_segments(steps: &[BestStep], end_x: f64) -> Vec<Segment> {
    let mut sorted: Vec<&BestStep> = steps.iter().collect();
    sorted.sort_by_key(|s| s.id);
    let mut out: Vec<Segment> = Vec::new();
    for s in sorted {
        let x = s.id as f64;
        match out.last_mut() {
            Some(last) if last.best == s.best && last.sigma == s.sigma => {}
            Some(last) if last.x0 == x => {
                last.best = s.best;
                last.sigma = s.sigma;
            }
            _ => out.push(Segment { x0: x, x1: x, best: s.best, sigma: s.sigma }),
        }
    }
    let starts: Vec<f64> = out.iter().skip(1).map(|s| s.x0).chain([end_x]).collect();
    for (seg, x1) in out.iter_mut().zip(starts) {
        seg.x1 = x1;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Clip {
    Inside,
    Above,
    Below,
}

/// test − val at the baseline (or the first kept result that has both).
fn test_alignment(m: &Model) -> Option<f64> {
    if let (Some(v), Some(t)) = (m.baseline(), m.baseline_test()) {
        return Some(t - v);
    }
    m.rows.iter().filter(|r| r.outcome == Outcome::Keep).find_map(|r| Some(r.test_bpb? - r.val_bpb?))
}

fn min_max(xs: &[f64]) -> Option<(f64, f64)> {
    let lo = xs.iter().copied().filter(|x| x.is_finite()).reduce(f64::min)?;
    let hi = xs.iter().copied().filter(|x| x.is_finite()).reduce(f64::max)?;
    Some((lo, hi))
}

/// A 1-2-5 step giving at most about `target` intervals over `span`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = (span / target as f64).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|f| f * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

/// A 1-2-5 step of at least 1, for experiment numbers (2.5 would label 7.5 as "8").
fn nice_int_step(span: f64, target: usize) -> f64 {
    let raw = (span / target as f64).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|f| f * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round() as i64;
    (0..=n).map(|i| lo + i as f64 * step).collect()
}

/// Decimals that tell adjacent ticks apart (0.0025 steps need 4, 0.002 steps need 3).
fn tick_decimals(step: f64) -> usize {
    let exp = step.log10().floor();
    let mantissa = step / 10f64.powf(exp);
    let extra = usize::from((mantissa - 2.5).abs() < 1e-6);
    ((-exp).max(0.0) as usize + extra).min(8)
}

/// A linear axis whose ticks are exactly the given ones: plotters' own choice would not end
/// on the range's ends, and the range is snapped to ticks so the labels span the data.
struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

fn with_ticks(range: Range<f64>, ticks: &[f64]) -> Ticked {
    Ticked { range, ticks: ticks.to_vec() }
}

impl Ranged for Ticked {
    type ValueType = f64;
    // Labels always come from our formatters; this only satisfies the mesh's bounds.
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// A mark placed on the chart, counted for the legend.
#[derive(Default)]
struct Placed {
    above: usize,
    below: usize,
}

fn chart<DB: DrawingBackend>(area: &Area<DB>, root: &Area<DB>, m: &Model, ax: &Axes) -> Result<Placed> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_left(24)
        .margin_right(if ax.y2.is_some() { 8 } else { 40 })
        .margin_top(8)
        .x_label_area_size(70)
        .y_label_area_size(120);
    if ax.y2.is_some() {
        builder.right_y_label_area_size(120);
    }
    let y_dec = tick_decimals(ax.y_ticks.get(1).map_or(1.0, |t| t - ax.y_ticks[0]));
    let y2 = ax.y2.clone().unwrap_or((ax.y.clone(), ax.y_ticks.clone()));
    let mut chart = builder
        .build_cartesian_2d(with_ticks(ax.x.clone(), &ax.x_ticks), with_ticks(ax.y.clone(), &ax.y_ticks))
        .map_err(err)?
        .set_secondary_coord(with_ticks(ax.x.clone(), &ax.x_ticks), with_ticks(y2.0, &y2.1));
    chart
        .configure_mesh()
        .x_desc("experiment #  (every run: crashes, confirms and re-measures included)")
        .y_desc(format!("{}  ({})", m.metric(), m.better()))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.y_dec$}"))
        .label_style(font(17.0))
        .axis_desc_style(font(19.0))
        .bold_line_style(RGBColor(0, 0, 0).mix(0.08))
        .light_line_style(TRANSPARENT)
        .axis_style(INK.mix(0.6))
        .draw()
        .map_err(err)?;
    if ax.y2.is_some() {
        chart
            .configure_secondary_axes()
            .y_desc("held-out test_bpb  (same scale, aligned at the baseline)")
            .y_label_formatter(&|y| format!("{y:.y_dec$}"))
            .label_style(font(17.0).color(&TEST))
            .axis_desc_style(font(19.0).color(&TEST))
            .axis_style(TEST.mix(0.6))
            .draw()
            .map_err(err)?;
    }

    let (px, py) = chart.plotting_area().get_pixel_range();
    let top = ax.y.end;
    let bottom = ax.y.start;
    let end_x = ax.last_id + 0.5;
    let k = m.k().unwrap_or(0.0);

    // Noise band: the incumbent ± k·σ for as long as it stood.
    let segments = best_segments(&m.best_steps, end_x);
    for seg in &segments {
        let Some(sigma) = seg.sigma else { continue };
        let (y0, y1) = ((seg.best - k * sigma).max(bottom), (seg.best + k * sigma).min(top));
        if k > 0.0 && y1 > y0 && seg.x1 > seg.x0 {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(seg.x0, y0), (seg.x1, y1)],
                    KEEP.mix(0.14).filled(),
                )))
                .map_err(err)?;
        }
    }

    // Running best: a step line through the decisions' best_after.
    if !segments.is_empty() {
        let mut path = Vec::new();
        for seg in &segments {
            path.push((seg.x0, seg.best.clamp(bottom, top)));
            path.push((seg.x1, seg.best.clamp(bottom, top)));
        }
        chart.draw_series(LineSeries::new(path, BEST.mix(0.85).stroke_width(3))).map_err(err)?;
    }

    // Every mark's pixel position, so labels can stay off them.
    let mut marks: Vec<(i32, i32)> = Vec::new();

    // Held-out test_bpb of the kept results: a step line of the incumbent's test score.
    if ax.y2.is_some() {
        let kept: Vec<(f64, f64)> = m
            .rows
            .iter()
            .filter(|r| r.outcome == Outcome::Keep)
            .filter_map(|r| Some((r.id as f64, r.test_bpb?)))
            .collect();
        let (lo2, hi2) = (bottom + ax.test_offset, top + ax.test_offset);
        let mut path = Vec::new();
        for (i, (x, t)) in kept.iter().enumerate() {
            if i > 0 {
                path.push((*x, kept[i - 1].1));
            }
            path.push((*x, *t));
        }
        if let Some((_, t)) = kept.last() {
            path.push((end_x, *t));
        }
        let path: Vec<(f64, f64)> = path.into_iter().map(|(x, y)| (x, y.clamp(lo2, hi2))).collect();
        chart
            .draw_secondary_series(DashedLineSeries::new(path, 9, 6, TEST.mix(0.8).stroke_width(2)))
            .map_err(err)?;
        for (x, t) in &kept {
            let at = chart.borrow_secondary().backend_coord(&(*x, t.clamp(lo2, hi2)));
            root.draw(&diamond(at, 6, TEST.filled())).map_err(err)?;
            marks.push(at);
        }
    }

    // One mark per experiment.
    let mut placed = Placed::default();
    let edge_top = py.start;
    let edge_bottom = py.end - 1;
    for r in &m.rows {
        let x = r.id as f64;
        let col = chart.backend_coord(&(x, top)).0;
        match r.outcome {
            Outcome::Crash(class) => {
                let color = if class == CrashClass::Interrupted { INTERRUPTED } else { CRASH };
                root.draw(&Cross::new((col, edge_top + CRASH_ROW), 7, color.stroke_width(3))).map_err(err)?;
            }
            Outcome::Running => {
                root.draw(&Circle::new((col, edge_top + CRASH_ROW), 7, RUNNING.stroke_width(3)))
                    .map_err(err)?;
            }
            Outcome::Keep | Outcome::Discard | Outcome::Pending => {
                let Some(v) = r.val_bpb else { continue };
                let kept = r.outcome == Outcome::Keep;
                match ax.clip(v) {
                    Clip::Inside => {
                        let at = chart.backend_coord(&(x, v));
                        point(root, at, r, kept)?;
                        marks.push(at);
                    }
                    Clip::Above => {
                        placed.above += 1;
                        let color = if kept { KEEP_EDGE } else { CLIPPED };
                        root.draw(&triangle((col, edge_top + CLIP_ROW), 8, true, color.filled()))
                            .map_err(err)?;
                    }
                    Clip::Below => {
                        placed.below += 1;
                        let color = if kept { KEEP_EDGE } else { CLIPPED };
                        root.draw(&triangle((col, edge_bottom - CLIP_ROW), 8, false, color.filled()))
                            .map_err(err)?;
                    }
                }
            }
        }
    }

    let first_baseline = m.rows.iter().find(|r| r.kind == RunKind::Baseline && r.outcome == Outcome::Keep);
    let targets: Vec<((i32, i32), String)> = m
        .rows
        .iter()
        .filter(|r| r.outcome == Outcome::Keep)
        .filter_map(|r| {
            let v = r.val_bpb.filter(|v| ax.clip(*v) == Clip::Inside)?;
            let text = match r.kind {
                RunKind::Candidate => r.description.clone(),
                RunKind::Baseline if first_baseline.is_some_and(|b| b.id == r.id) => {
                    kind_name(r.kind).to_string()
                }
                _ => return None,
            };
            Some((chart.backend_coord(&(r.id as f64, v)), text))
        })
        .collect();
    labels(root, &targets, &marks, (px, py))?;
    Ok(placed)
}

/// A result's mark: circles for candidates, squares for re-runs (baseline, confirm,
/// remeasure); green and outlined when kept, grey when discarded, hollow when undecided.
fn point<DB: DrawingBackend>(root: &Area<DB>, at: (i32, i32), r: &Row, kept: bool) -> Result<()> {
    let (x, y) = at;
    match (kept, r.outcome == Outcome::Pending, r.is_rerun()) {
        (true, _, false) => {
            root.draw(&Circle::new(at, 7, KEEP.filled())).map_err(err)?;
            root.draw(&Circle::new(at, 7, KEEP_EDGE.stroke_width(1))).map_err(err)?;
        }
        (true, _, true) => {
            root.draw(&Rectangle::new([(x - 6, y - 6), (x + 6, y + 6)], KEEP.filled())).map_err(err)?;
            root.draw(&Rectangle::new([(x - 6, y - 6), (x + 6, y + 6)], KEEP_EDGE.stroke_width(1)))
                .map_err(err)?;
        }
        (false, true, _) => root.draw(&Circle::new(at, 6, RUNNING.stroke_width(2))).map_err(err)?,
        (false, false, false) => root.draw(&Circle::new(at, 5, DISCARD.filled())).map_err(err)?,
        (false, false, true) => {
            root.draw(&Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], DISCARD.filled())).map_err(err)?
        }
    }
    Ok(())
}

fn triangle(at: (i32, i32), size: i32, up: bool, style: ShapeStyle) -> Polygon<(i32, i32)> {
    let (x, y) = at;
    let s = if up { -1 } else { 1 };
    Polygon::new(vec![(x, y + s * size), (x - size, y - s * size / 2), (x + size, y - s * size / 2)], style)
}

fn diamond(at: (i32, i32), size: i32, style: ShapeStyle) -> Polygon<(i32, i32)> {
    let (x, y) = at;
    Polygon::new(vec![(x, y - size), (x + size, y), (x, y + size), (x - size, y)], style)
}

/// Pixel rectangle, for keeping labels off each other and off the marks.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl Rect {
    fn hits(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// Labels the kept candidates (and the first baseline run) with their descriptions,
/// horizontally: plotters rotates text only by right angles, and slanted text was the
/// notebook's way of not solving overlap. Each label takes the first free slot around its
/// point (right, then above and below at growing distances, then left), with a leader line
/// when it had to move away.
fn labels<DB: DrawingBackend>(
    root: &Area<DB>,
    targets: &[((i32, i32), String)],
    marks: &[(i32, i32)],
    (px, py): (Range<i32>, Range<i32>),
) -> Result<()> {
    let max_chars = if targets.len() > 20 { 30 } else { 44 };
    let style = font(16.0).color(&LABEL);
    // Marks and the crash/clip strip are taken before any label is placed.
    let mut taken: Vec<Rect> =
        marks.iter().map(|&(x, y)| Rect { x0: x - 8, y0: y - 8, x1: x + 8, y1: y + 8 }).collect();
    taken.push(Rect { x0: px.start, y0: py.start, x1: px.end, y1: py.start + 2 * CRASH_ROW + 4 });
    for ((x, y), text) in targets.iter().map(|((x, y), t)| ((*x, *y), t)) {
        let text = printable(&truncate(text, max_chars));
        let (w, h) = root.estimate_text_size(&text, &style).map_err(err)?;
        let (w, h) = (w as i32, h as i32);
        let mut slots: Vec<(i32, i32)> = vec![(x + 10, y - h - 6), (x + 10, y + 6)];
        for level in 1..=6 {
            let d = level * (h + 6);
            slots.extend([(x + 10, y - h - 6 - d), (x + 10, y + 6 + d)]);
        }
        slots.extend([(x - 10 - w, y - h - 6), (x - 10 - w, y + 6)]);
        let fits = |&(sx, sy): &(i32, i32)| {
            let r = Rect { x0: sx - 2, y0: sy - 2, x1: sx + w + 2, y1: sy + h + 2 };
            sx >= px.start
                && sx + w <= px.end
                && sy >= py.start
                && sy + h <= py.end
                && !taken.iter().any(|t| t.hits(&r))
        };
        // Nowhere free: overlap beats dropping the label.
        let fallback = ((x + 10).min(px.end - w).max(px.start), (y - h - 6).min(py.end - h).max(py.start));
        let (sx, sy) = slots.iter().copied().find(fits).unwrap_or(fallback);
        if (sy - y).abs() > 2 * h + 12 {
            let ty = if sy < y { sy + h } else { sy };
            root.draw(&PathElement::new(vec![(x, y), (sx, ty)], LABEL.mix(0.5).stroke_width(1)))
                .map_err(err)?;
        }
        taken.push(Rect { x0: sx - 2, y0: sy - 2, x1: sx + w + 2, y1: sy + h + 2 });
        // A translucent halo keeps the text legible where it crosses a line.
        root.draw(&Rectangle::new([(sx - 3, sy - 2), (sx + w + 3, sy + h + 3)], WHITE.mix(0.8).filled()))
            .map_err(err)?;
        root.draw_text(&text, &style.pos(Pos::new(HPos::Left, VPos::Top)), (sx, sy)).map_err(err)?;
    }
    Ok(())
}

/// One legend entry: its mark and its words.
enum Mark {
    Dot(RGBColor, i32),
    KeptDot,
    Square,
    Up,
    Down,
    Cross(RGBColor),
    Ring,
    Line,
    Band,
    Test,
}

fn legend<DB: DrawingBackend>(area: &Area<DB>, m: &Model, ax: &Axes, placed: Placed) -> Result<()> {
    let c = m.counts();
    let mut items: Vec<(Mark, String)> = vec![
        (Mark::KeptDot, format!("kept ({})", c.kept_candidates)),
        (Mark::Dot(DISCARD, 5), format!("discarded ({})", c.discarded_candidates)),
    ];
    let reruns = c.baseline_runs + c.confirm_runs + c.remeasure_runs + c.verify_runs;
    if reruns > 0 {
        let mut what = Vec::new();
        for (n, name) in [
            (c.baseline_runs, "baseline"),
            (c.confirm_runs, "pair"),
            (c.remeasure_runs, "incumbent"),
            (c.verify_runs, "verify"),
        ] {
            if n > 0 {
                what.push(format!("{n} {name}"));
            }
        }
        items.push((Mark::Square, format!("re-run ({})", what.join(", "))));
    }
    if placed.above > 0 {
        items.push((Mark::Up, format!("above the axis, clipped ({})", placed.above)));
    }
    if placed.below > 0 {
        items.push((Mark::Down, format!("below the axis, clipped ({})", placed.below)));
    }
    let interrupted = c.crashes.get("interrupted").copied().unwrap_or(0);
    if c.crashed > interrupted {
        let classes: Vec<String> =
            c.crashes.iter().filter(|(k, _)| **k != "interrupted").map(|(k, n)| format!("{n} {k}")).collect();
        items.push((Mark::Cross(CRASH), format!("crashed ({})", classes.join(", "))));
    }
    if interrupted > 0 {
        items.push((Mark::Cross(INTERRUPTED), format!("interrupted ({interrupted})")));
    }
    if c.running + c.pending > 0 {
        items.push((Mark::Ring, format!("running ({})", c.running + c.pending)));
    }
    if !m.best_steps.is_empty() {
        items.push((Mark::Line, "running best".to_string()));
    }
    if let (Some(k), true) = (m.k(), m.best_steps.iter().any(|s| s.sigma.is_some())) {
        items.push((Mark::Band, format!("noise band: best ± {k}σ")));
    }
    if ax.y2.is_some() {
        items.push((Mark::Test, "held-out test_bpb of kept results (right axis)".to_string()));
    }

    let style = font(17.0);
    let (x_start, x_end) = (40, W as i32 - 40);
    let (mut x, mut y) = (x_start, 14);
    for (mark, text) in items {
        let text = printable(&text);
        let (w, _) = area.estimate_text_size(&text, &style).map_err(err)?;
        let item_w = 30 + w as i32 + 28;
        if x + item_w > x_end && x > x_start {
            x = x_start;
            y += 30;
        }
        let at = (x + 10, y + 10);
        match mark {
            Mark::Dot(color, r) => area.draw(&Circle::new(at, r, color.filled())).map_err(err)?,
            Mark::KeptDot => {
                area.draw(&Circle::new(at, 7, KEEP.filled())).map_err(err)?;
                area.draw(&Circle::new(at, 7, KEEP_EDGE.stroke_width(1))).map_err(err)?;
            }
            Mark::Square => area
                .draw(&Rectangle::new([(at.0 - 6, at.1 - 6), (at.0 + 6, at.1 + 6)], MUTED.stroke_width(2)))
                .map_err(err)?,
            Mark::Up => area.draw(&triangle(at, 8, true, CLIPPED.filled())).map_err(err)?,
            Mark::Down => area.draw(&triangle(at, 8, false, CLIPPED.filled())).map_err(err)?,
            Mark::Cross(color) => area.draw(&Cross::new(at, 7, color.stroke_width(3))).map_err(err)?,
            Mark::Ring => area.draw(&Circle::new(at, 7, RUNNING.stroke_width(3))).map_err(err)?,
            Mark::Line => area
                .draw(&PathElement::new(vec![(at.0 - 12, at.1), (at.0 + 12, at.1)], BEST.stroke_width(3)))
                .map_err(err)?,
            Mark::Band => area
                .draw(&Rectangle::new(
                    [(at.0 - 12, at.1 - 8), (at.0 + 12, at.1 + 8)],
                    KEEP.mix(0.25).filled(),
                ))
                .map_err(err)?,
            Mark::Test => {
                area.draw(&PathElement::new(
                    vec![(at.0 - 14, at.1), (at.0 + 14, at.1)],
                    TEST.stroke_width(2),
                ))
                .map_err(err)?;
                area.draw(&diamond(at, 6, TEST.filled())).map_err(err)?;
            }
        }
        area.draw_text(&text, &style.pos(Pos::new(HPos::Left, VPos::Center)), (x + 30, y + 10))
            .map_err(err)?;
        x += item_w;
    }
    Ok(())
}
