//! The HYPERPARAMETERS section of the train file, read and rewritten in place.
//!
//! The train file keeps its dials as ALL_CAPS consts under a banner, one per line with an
//! aligned comment (`const MATRIX_LR: f64 = 0.04; // block matrices (Muon)   0.04`). The
//! `evolve` agent needs to read those values from any commit and to change a few of them
//! without touching anything else: no reformatting, no reordering, comments kept and their
//! right-hand column still aligned. So this is a line-level parser for exactly that shape,
//! not a Rust parser: a const whose value is not a plain literal (`2 * 1024`,
//! `f64::EPSILON`) is simply not tunable and is left alone.
//!
//! Values: integers (`16`, `1_000`, `1 << 12`), floats (`0.6`, `2e-3`), the `(f64, f64)`
//! pair `ADAM_BETAS`, and strings (`WINDOW_PATTERN`), which evolve treats as categorical.

use anyhow::{Context, Result, bail};

/// A parsed value of one const.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Pair(f64, f64),
    Str(String),
}

impl std::fmt::Display for Value {
    /// The value as it is written in the file (and in descriptions): `0.04`, `1 << 12`
    /// is shown as `4096`, `(0.8, 0.95)`, `"SSSL"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{}", format_float(*v, false)),
            Value::Pair(a, b) => write!(f, "({}, {})", format_float(*a, false), format_float(*b, false)),
            Value::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// One const of the section.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub name: String,
    /// The declared type, as written: `usize`, `f64`, `(f64, f64)`, `&str`.
    pub ty: String,
    pub value: Value,
    /// 0-based line of the file.
    pub line: usize,
    /// Byte range of the value expression within that line.
    span: (usize, usize),
}

/// The line range `[start, end)` of the HYPERPARAMETERS section: from the banner whose
/// title mentions "hyperparameters" to the next banner rule.
pub fn section(source: &str) -> Result<(usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let is_rule = |l: &str| l.trim_start().starts_with("// ---") || l.trim_start().starts_with("// ===");
    // The title must sit right under a rule: the file's header prose mentions
    // "hyperparameters" too, and that is not the section.
    let title = (1..lines.len())
        .find(|&i| {
            let t = lines[i].trim_start();
            is_rule(lines[i - 1])
                && t.starts_with("//")
                && !is_rule(lines[i])
                && t.to_ascii_lowercase().contains("hyperparameters")
        })
        .context(
            "train/src/main.rs has no HYPERPARAMETERS banner (a `// Hyperparameters …` comment between \
             `// ----` rules); restore it so evolve can find the dials",
        )?;
    let mut start = title + 1;
    while start < lines.len() && is_rule(lines[start]) {
        start += 1;
    }
    let end = (start..lines.len()).find(|&i| is_rule(lines[i])).unwrap_or(lines.len());
    Ok((start, end))
}

/// Every const of the HYPERPARAMETERS section whose value is a plain literal.
pub fn parse(source: &str) -> Result<Vec<Const>> {
    let (start, end) = section(source)?;
    Ok(source
        .lines()
        .enumerate()
        .take(end)
        .skip(start)
        .filter_map(|(i, line)| {
            parse_line(line).map(|(name, ty, value, span)| Const { name, ty, value, line: i, span })
        })
        .collect())
}

/// `[pub[(crate)]] const NAME: TYPE = EXPR; …` → (name, type, value, span of EXPR).
pub(crate) fn parse_line(line: &str) -> Option<(String, String, Value, (usize, usize))> {
    let indent = line.len() - line.trim_start().len();
    let mut rest = &line[indent..];
    for vis in ["pub(crate) ", "pub "] {
        rest = rest.strip_prefix(vis).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("const ")?;
    let colon = rest.find(':')?;
    let name = rest[..colon].trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return None;
    }
    let eq = rest.find('=')?;
    let ty = rest[colon + 1..eq].trim().to_string();
    let after_eq = &rest[eq + 1..];
    let expr_len = expr_end(after_eq)?;
    let raw = &after_eq[..expr_len];
    let expr = raw.trim();
    let value = parse_expr(expr, &ty)?;
    // Byte offset of the trimmed expression within the whole line.
    let offset = line.len() - after_eq.len() + (raw.len() - raw.trim_start().len());
    Some((name.to_string(), ty, value, (offset, offset + expr.len())))
}

/// Length of the expression up to the terminating `;`, skipping `;` inside a string.
fn expr_end(s: &str) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            ';' if !in_str => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_expr(expr: &str, ty: &str) -> Option<Value> {
    if let Some(s) = expr.strip_prefix('"') {
        let s = s.strip_suffix('"')?;
        return (!s.contains('"') && !s.contains('\\')).then(|| Value::Str(s.to_string()));
    }
    if let Some(inner) = expr.strip_prefix('(').and_then(|e| e.strip_suffix(')')) {
        let parts: Vec<&str> = inner.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        if parts.len() != 2 {
            return None;
        }
        return Some(Value::Pair(parse_float(parts[0])?, parse_float(parts[1])?));
    }
    if let Some((a, b)) = expr.split_once("<<") {
        let (a, b) = (parse_int(a.trim())?, parse_int(b.trim())?);
        return (0..62).contains(&b).then(|| a.checked_shl(b as u32)).flatten().map(Value::Int);
    }
    let float_type = ty.starts_with('f');
    let looks_float = expr.contains('.') || (expr.contains(['e', 'E']) && !expr.starts_with("0x"));
    if float_type || looks_float {
        parse_float(expr).map(Value::Float)
    } else {
        parse_int(expr).map(Value::Int)
    }
}

/// A float literal, `_` separators and an `f64`/`f32` suffix allowed.
fn parse_float(s: &str) -> Option<f64> {
    let s: String = s.chars().filter(|&c| c != '_').collect();
    let s = s.strip_suffix("f64").or_else(|| s.strip_suffix("f32")).unwrap_or(&s);
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// An integer literal, `_` separators and an integer suffix allowed.
fn parse_int(s: &str) -> Option<i64> {
    let s: String = s.chars().filter(|&c| c != '_').collect();
    let digits = ["usize", "isize", "u64", "i64", "u32", "i32", "u16", "i16", "u8", "i8"]
        .iter()
        .find_map(|suf| s.strip_suffix(suf))
        .unwrap_or(&s);
    digits.parse::<i64>().ok()
}

/// The literal for a new value, in the style of the old expression: `1 << k` stays a
/// shift when the new value is a power of two, exponent notation stays exponent.
pub fn format_value(old_expr: &str, ty: &str, value: &Value) -> Result<String> {
    let exp_style = old_expr.contains(['e', 'E']) && !old_expr.starts_with('"');
    Ok(match value {
        Value::Int(v) => {
            if ty.starts_with('f') {
                bail!("an integer value for a const of type {ty}");
            }
            if old_expr.contains("<<") && *v > 0 && (*v as u64).is_power_of_two() {
                format!("1 << {}", v.trailing_zeros())
            } else {
                v.to_string()
            }
        }
        Value::Float(v) => format_float(*v, exp_style),
        Value::Pair(a, b) => format!("({}, {})", format_float(*a, exp_style), format_float(*b, exp_style)),
        Value::Str(s) => {
            if s.contains(['"', '\\']) {
                bail!("string value {s:?} would need escaping");
            }
            format!("\"{s}\"")
        }
    })
}

/// Shortest literal that reads back as `v` and is a valid Rust float literal (`1.0`, not
/// `1`). Exponent notation when the old literal used it or the value is tiny or huge.
pub fn format_float(v: f64, exp_style: bool) -> String {
    let a = v.abs();
    let s =
        if exp_style || (a != 0.0 && !(1e-4..1e7).contains(&a)) { format!("{v:e}") } else { format!("{v}") };
    if s.contains(['.', 'e', 'E']) || s.contains("inf") || s.contains("NaN") { s } else { format!("{s}.0") }
}

/// Rewrites the named consts to new values, changing only their value expressions. When a
/// value's width changes, the widest run of spaces inside that line's trailing comment is
/// widened or narrowed by the same amount (never below two spaces), so the comment's
/// right-hand column stays aligned with its neighbours.
pub fn rewrite(source: &str, changes: &[(String, Value)]) -> Result<String> {
    let consts = parse(source)?;
    let mut lines: Vec<String> = source.split_inclusive('\n').map(str::to_string).collect();
    for (name, value) in changes {
        let c = consts.iter().find(|c| &c.name == name).with_context(|| {
            format!("train/src/main.rs has no tunable const {name} in its HYPERPARAMETERS section")
        })?;
        let line = &lines[c.line];
        let (a, b) = c.span;
        let old_expr = &line[a..b];
        if std::mem::discriminant(&c.value) != std::mem::discriminant(value) {
            bail!("{name} is {} but the new value is {value}", c.value);
        }
        let new_expr = format_value(old_expr, &c.ty, value)?;
        let delta = new_expr.len() as isize - old_expr.len() as isize;
        let tail = realign(&line[b..], delta);
        lines[c.line] = format!("{}{new_expr}{tail}", &line[..a]);
    }
    Ok(lines.concat())
}

/// Shifts the text after the last interior run of ≥2 spaces in a `// comment` by −delta.
fn realign(tail: &str, delta: isize) -> String {
    if delta == 0 {
        return tail.to_string();
    }
    let Some(comment) = tail.find("//") else { return tail.to_string() };
    let body = tail[comment..].trim_end_matches(['\n', '\r']);
    let bytes = body.as_bytes();
    // Find the last run of ≥2 spaces that is followed by more text.
    let mut best: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' {
            let s = i;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i - s >= 2 && i < bytes.len() {
                best = Some((s, i));
            }
        } else {
            i += 1;
        }
    }
    let Some((s, e)) = best else { return tail.to_string() };
    let width = ((e - s) as isize - delta).max(2) as usize;
    let (s, e) = (comment + s, comment + e);
    format!("{}{}{}", &tail[..s], " ".repeat(width), &tail[e..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAIN: &str = include_str!("../../../train/src/main.rs");

    fn get<'a>(consts: &'a [Const], name: &str) -> &'a Value {
        &consts.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name} parsed")).value
    }

    #[test]
    fn test_parses_every_dial_of_the_real_train_file() {
        let consts = parse(TRAIN).unwrap();
        assert_eq!(get(&consts, "DEPTH"), &Value::Int(4));
        assert_eq!(get(&consts, "TOTAL_BATCH_SIZE"), &Value::Int(1 << 12));
        assert_eq!(get(&consts, "MATRIX_LR"), &Value::Float(0.04));
        assert_eq!(get(&consts, "ADAM_BETAS"), &Value::Pair(0.8, 0.95));
        assert_eq!(get(&consts, "WINDOW_PATTERN"), &Value::Str("SSSL".into()));
        assert_eq!(get(&consts, "WARMUP_RATIO"), &Value::Float(0.0));
        // Consts outside the section (RMS_EPS, SOFTCAP, …) are not dials.
        assert!(consts.iter().all(|c| c.name != "SOFTCAP" && c.name != "VE_GATE_CHANNELS"));
    }

    #[test]
    fn test_rewrite_with_the_same_values_is_byte_identical() {
        let consts = parse(TRAIN).unwrap();
        let same: Vec<(String, Value)> = consts.iter().map(|c| (c.name.clone(), c.value.clone())).collect();
        assert_eq!(rewrite(TRAIN, &same).unwrap(), TRAIN);
    }

    #[test]
    fn test_rewrite_round_trips_and_keeps_the_comment_column() {
        let changes = vec![
            ("MATRIX_LR".to_string(), Value::Float(0.055)),
            ("TOTAL_BATCH_SIZE".to_string(), Value::Int(1 << 14)),
            ("DEPTH".to_string(), Value::Int(12)),
            ("ADAM_BETAS".to_string(), Value::Pair(0.85, 0.995)),
            ("WINDOW_PATTERN".to_string(), Value::Str("SL".into())),
            ("UNEMBEDDING_LR".to_string(), Value::Float(2.5e-3)),
        ];
        let out = rewrite(TRAIN, &changes).unwrap();
        let consts = parse(&out).unwrap();
        for (name, v) in &changes {
            assert_eq!(get(&consts, name), v, "{name}");
        }
        assert!(out.contains("const TOTAL_BATCH_SIZE: usize = 1 << 14; // tokens per optimizer step"));
        assert!(out.contains("const MATRIX_LR: f64 = 0.055; // block matrices (Muon)"));
        // Only the six lines changed, and the right-hand column is where it was.
        let before: Vec<&str> = TRAIN.lines().collect();
        let after: Vec<&str> = out.lines().collect();
        assert_eq!(before.len(), after.len());
        let changed: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
        assert_eq!(changed.len(), changes.len());
        for i in changed {
            assert_eq!(
                before[i].chars().count(),
                after[i].chars().count(),
                "column moved:\n{}\n{}",
                before[i],
                after[i]
            );
        }
        // And back again: byte-identical to the original.
        let original: Vec<(String, Value)> =
            changes.iter().map(|(n, _)| (n.clone(), get(&parse(TRAIN).unwrap(), n).clone())).collect();
        assert_eq!(rewrite(&out, &original).unwrap(), TRAIN);
    }

    #[test]
    fn test_literal_forms() {
        let src = "// ---\n// Hyperparameters\n// ---\nconst A: usize = 1_024; // a\npub const B: f64 = 2e-3; // b\n\
                   const C: f64 = 3.; // c\nconst D: usize = 2 * 8; // not a literal\nconst E: i64 = -3; // e\n\
                   const F: f64 = 1f64; // f\nconst G: u64 = 1 << 3usize; // g\nconst H: &str = \"a;b\"; // h\n// ---\n\
                   const OUT: usize = 5;\n";
        let consts = parse(src).unwrap();
        let names: Vec<&str> = consts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C", "E", "F", "G", "H"]);
        assert_eq!(get(&consts, "A"), &Value::Int(1024));
        assert_eq!(get(&consts, "B"), &Value::Float(0.002));
        assert_eq!(get(&consts, "C"), &Value::Float(3.0));
        assert_eq!(get(&consts, "E"), &Value::Int(-3));
        assert_eq!(get(&consts, "F"), &Value::Float(1.0));
        assert_eq!(get(&consts, "G"), &Value::Int(8));
        assert_eq!(get(&consts, "H"), &Value::Str("a;b".into()));
        let out =
            rewrite(src, &[("B".into(), Value::Float(0.0025)), ("C".into(), Value::Float(4.0))]).unwrap();
        assert!(
            out.contains("const B: f64 = 2.5e-3; // b") && out.contains("const C: f64 = 4.0; // c"),
            "{out}"
        );
        assert!(rewrite(src, &[("D".into(), Value::Int(3))]).is_err(), "non-literals are not rewritten");
        assert!(rewrite(src, &[("OUT".into(), Value::Int(3))]).is_err(), "outside the section");
        assert!(rewrite(src, &[("A".into(), Value::Float(3.0))]).is_err(), "kind mismatch");
    }

    #[test]
    fn test_float_literals_are_valid_rust() {
        for (v, s) in [(1.0, "1.0"), (0.04, "0.04"), (1e-5, "1e-5"), (0.0, "0.0"), (12.5, "12.5")] {
            assert_eq!(format_float(v, false), s);
        }
        assert_eq!(format_float(0.002, true), "2e-3");
    }

    #[test]
    fn test_missing_banner_is_an_error_naming_the_fix() {
        let e = parse("const A: usize = 1;\n").unwrap_err().to_string();
        assert!(e.contains("HYPERPARAMETERS"), "{e}");
    }
}
