//! What the LLM agents are told, and how their answers are read back.
//!
//! One layout for both `cmd:` (an agent CLI that edits the file itself) and `openai:` (our
//! own minimal agent that replies with the file or a diff), so the two see the same task:
//!
//! ```text
//! <program.md, verbatim>                       the human's instructions
//! ---
//! # Session so far
//! <digest>                                     built by ar from the journal
//! ---
//! # The file: train/src/main.rs                (openai only: a CLI agent reads it itself)
//! ```rust … ```
//! ---
//! # Your turn: experiment N
//! <retry note, if a previous attempt failed>
//! <instructions: one change, only the train file, reply format, DESCRIPTION / HYPOTHESIS>
//! ```
//!
//! The instructions come last because they override program.md where the two differ:
//! program.md describes the whole loop, but here `ar` owns the loop (git, build, run,
//! decide) and the agent only makes one change per call.

use super::{TRAIN_FILE, Turn};

/// How the agent delivers its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An agent CLI running in the repository edits the file on disk (`cmd:`).
    EditInPlace,
    /// The model replies with the complete file or a unified diff (`openai:`).
    Reply,
}

/// Longest description or hypothesis kept (they end up in results.tsv and reports).
pub const MAX_LINE: usize = 200;

/// The user prompt for one turn. `retry_note` says why the previous attempt failed.
pub fn build(turn: &Turn, mode: Mode, retry_note: Option<&str>) -> String {
    let mut p = String::with_capacity(turn.program.len() + turn.digest.len() + turn.train_file.len() + 2048);
    p.push_str(turn.program.trim_end());
    p.push_str("\n\n---\n\n# Session so far\n\n");
    if turn.digest.trim().is_empty() {
        p.push_str("(no experiments yet: this is the first)\n");
    } else {
        p.push_str(turn.digest.trim_end());
        p.push('\n');
    }
    if mode == Mode::Reply {
        p.push_str(&format!("\n---\n\n# The file: {TRAIN_FILE}\n\n```rust\n"));
        p.push_str(turn.train_file);
        if !turn.train_file.ends_with('\n') {
            p.push('\n');
        }
        p.push_str("```\n");
    }
    p.push_str(&format!("\n---\n\n# Your turn: experiment {}\n\n", turn.number));
    if let Some(note) = retry_note {
        p.push_str(&format!("Your previous attempt failed: {}\n\n", note.trim()));
    }
    p.push_str(match mode {
        Mode::EditInPlace => INSTRUCTIONS_EDIT,
        Mode::Reply => INSTRUCTIONS_REPLY,
    });
    p
}

/// The user prompt of a `cmd:` agent on a declared command workload: the same layout, with
/// instructions naming the editable patterns, the metric and which way is better.
pub fn build_for_workload(
    turn: &Turn,
    spec: &crate::workload::CommandSpec,
    retry_note: Option<&str>,
) -> String {
    let mut p = build(turn, Mode::EditInPlace, retry_note);
    let cut = p.rfind(INSTRUCTIONS_EDIT).unwrap_or(p.len());
    p.truncate(cut);
    p.push_str(&workload_instructions(spec));
    p
}

fn workload_instructions(spec: &crate::workload::CommandSpec) -> String {
    let better = match spec.metric.direction {
        crate::stats::Direction::Minimize => "lower is better",
        crate::stats::Direction::Maximize => "higher is better",
    };
    let checks = match &spec.checks {
        Some(c) => format!(", and keeps a change only if `{}` passes", c.command),
        None => String::new(),
    };
    let metric = &spec.metric.name;
    format!(
        "`ar` runs the experiment loop for you (git, build, measurement, keep or discard); this call is ONE step \
         of it. Make one experimental change:\n\n\
         - Edit only files matching these patterns, in place, in the current directory: {}. Every other file is \
         fixed: a change anywhere else gets the experiment rejected.\n\
         - Do not commit, do not build, do not run the measurement: ar does that after you finish, and decides \
         on `{metric}` ({better}) measured several times at different seeds{checks}.\n\
         - Prefer an idea the session has not tried yet (see above); small, clean changes are easier to judge.\n\n\
         Finish your answer with these lines (one line each; the last occurrence counts):\n\
         DESCRIPTION: <what you changed>\n\
         HYPOTHESIS: <why it should improve {metric}>\n",
        spec.editable.join(", ")
    )
}

/// What a command workload's agent reads when the repository has no program.md.
pub fn default_program(spec: &crate::workload::CommandSpec) -> String {
    let name = spec.name.clone().unwrap_or_else(|| "this repository".to_string());
    format!(
        "# autoresearch: {name}\n\nYou are a researcher improving {name}. Each turn you make one change to the \
         files you may edit ({}); `ar` measures `{}` and keeps the change only when it is reliably better.\n",
        spec.editable.join(", "),
        spec.metric.name
    )
}

const INSTRUCTIONS_EDIT: &str = "\
`ar` runs the experiment loop for you (git, build, training run, keep or discard); this call \
is ONE step of it. Make one experimental change:

- Edit only train/src/main.rs, in place, in the current directory. Every other file is fixed: \
a change anywhere else gets the experiment rejected.
- Do not commit, do not build, do not run training: ar does that after you finish, with a \
fixed time budget, and decides on val_bpb (lower is better).
- Prefer an idea the session has not tried yet (see above); small, clean changes are easier \
to judge.

Finish your answer with these lines (one line each; the last occurrence counts):
DESCRIPTION: <what you changed, e.g. \"raise MATRIX_LR 0.04 -> 0.05\">
HYPOTHESIS: <why it should lower val_bpb>
";

const INSTRUCTIONS_REPLY: &str = "\
`ar` runs the experiment loop for you (git, build, training run, keep or discard); this reply \
is ONE step of it. Propose one experimental change to train/src/main.rs (no other file may \
change) and reply with EITHER:

- the complete new file in ONE ```rust fenced block, OR
- a unified diff against the file above in ONE ```diff fenced block: `--- a/train/src/main.rs`, \
`+++ b/train/src/main.rs`, then `@@ -l,n +l,n @@` hunks whose context and `-` lines copy the \
file exactly (prefer a diff for small changes: it is shorter and cannot be truncated).

The file must compile; ar checks that before spending a training run. Prefer an idea the \
session has not tried yet.

Then finish with these lines (one line each):
DESCRIPTION: <what you changed, e.g. \"raise MATRIX_LR 0.04 -> 0.05\">
HYPOTHESIS: <why it should lower val_bpb>
";

/// The system message of the built-in agent.
pub const SYSTEM: &str = "You are an ML research engineer improving a small GPT pretraining \
program written in Rust on the burn framework. You make one careful, well-motivated change \
per turn, and your code compiles. Answer in the exact format you are asked for.";

/// The last `DESCRIPTION:` and `HYPOTHESIS:` lines of an agent's output. Tolerates the
/// decorations models add (`**DESCRIPTION:**`, `- Description:`, backticks); empty values
/// are ignored.
pub fn parse_tags(output: &str) -> (Option<String>, Option<String>) {
    let mut description = None;
    let mut hypothesis = None;
    for line in output.lines() {
        if let Some(v) = tag_value(line, "DESCRIPTION") {
            description = Some(v);
        } else if let Some(v) = tag_value(line, "HYPOTHESIS") {
            hypothesis = Some(v);
        }
    }
    (description, hypothesis)
}

fn tag_value(line: &str, tag: &str) -> Option<String> {
    let decor = |c: char| c.is_whitespace() || "*-#>_`".contains(c);
    let t = line.trim_start_matches(decor);
    if t.len() < tag.len() || !t.is_char_boundary(tag.len()) || !t[..tag.len()].eq_ignore_ascii_case(tag) {
        return None;
    }
    let rest = t[tag.len()..].trim_start_matches(['*', '_']);
    let value = rest.strip_prefix(':')?.trim_start_matches(['*', '_']);
    let value = clean_line(value.trim_matches(|c: char| c.is_whitespace() || "*`_".contains(c)));
    (!value.is_empty()).then_some(value)
}

/// One line, control characters removed, at most [`MAX_LINE`] characters.
pub fn clean_line(s: &str) -> String {
    let one: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let one = one.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= MAX_LINE {
        one
    } else {
        one.chars().take(MAX_LINE - 1).chain(['…']).collect()
    }
}

/// A description of a change when the agent gave none: the consts that changed
/// (`MATRIX_LR 0.04→0.05`), else the edited line range and its first changed line.
pub fn describe_change(old: &str, new: &str) -> String {
    use super::hyperparams::parse;
    let mut parts = Vec::new();
    if let (Ok(a), Ok(b)) = (parse(old), parse(new)) {
        for c in &b {
            if let Some(prev) = a.iter().find(|p| p.name == c.name)
                && prev.value != c.value
            {
                parts.push(format!("{} {}→{}", c.name, prev.value, c.value));
            }
        }
    }
    let (old_lines, new_lines): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let prefix = old_lines.iter().zip(&new_lines).take_while(|(a, b)| a == b).count();
    let suffix = old_lines[prefix..]
        .iter()
        .rev()
        .zip(new_lines[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let removed = old_lines.len() - prefix - suffix;
    let added = new_lines.len() - prefix - suffix;
    // A const-only edit touches exactly the const lines; anything wider is also code.
    let code_edit = removed.max(added) > parts.len();
    if !parts.is_empty() {
        let mut d = parts.join(", ");
        if code_edit {
            d.push_str(" (and code edits)");
        }
        return clean_line(&d);
    }
    if removed == 0 && added == 0 {
        return "no change".to_string();
    }
    let first = new_lines.get(prefix).or(old_lines.get(prefix)).map_or("", |l| l.trim());
    clean_line(&format!("edit {TRAIN_FILE} at line {} (+{added} −{removed}): {first}", prefix + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_last_tag_wins_and_decorations_are_stripped() {
        let out = "thinking…\nDESCRIPTION: first idea\nmore\n**DESCRIPTION:** raise LR to 0.05\n\
                   - Hypothesis: `faster convergence`\nDESCRIPTION:   \n";
        let (d, h) = parse_tags(out);
        assert_eq!(d.as_deref(), Some("raise LR to 0.05"));
        assert_eq!(h.as_deref(), Some("faster convergence"));
        assert_eq!(parse_tags("nothing here"), (None, None));
        assert_eq!(parse_tags("DESCRIPTIONS: x").0, None);
    }

    #[test]
    fn test_clean_line_caps_length_and_removes_controls() {
        assert_eq!(clean_line("a\tb\u{1b}[31m  c"), "a b [31m c");
        assert_eq!(clean_line(&"x".repeat(500)).chars().count(), MAX_LINE);
    }

    #[test]
    fn test_describe_change_names_consts_or_lines() {
        let train = include_str!("../../../train/src/main.rs");
        let lr = train.replace("const MATRIX_LR: f64 = 0.04;", "const MATRIX_LR: f64 = 0.05;");
        assert_eq!(describe_change(train, &lr), "MATRIX_LR 0.04→0.05");
        let code = train.replacen("let lr = MATRIX_LR", "let lr = 1.1 * MATRIX_LR", 1);
        let d = describe_change(train, &code);
        assert!(d.starts_with("edit train/src/main.rs at line ") && d.contains("1.1 * MATRIX_LR"), "{d}");
        assert_eq!(describe_change(train, train), "no change");
    }
}
