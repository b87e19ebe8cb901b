//! `ar report`: the session's progress plot, Markdown report and agent summary, from the
//! journal alone.
//!
//! - no `--format`: everything, into the session directory (or the `--out` directory):
//!   `report.md` (embedding `progress.png`), `progress.png`, `progress.svg`, `summary.json`;
//! - `--format md|json|digest`: one text artifact, to stdout or `--out FILE`; Markdown also
//!   renders its plot next to where it points;
//! - `--format png|svg`: one plot, to `--out FILE` or the session directory.
//!
//! An empty session (no journal, or only its `session` event) is not an error: every format
//! says so plainly (the plot becomes a titled placeholder, the JSON carries a note).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use prepare::manifest::write_atomic;

use crate::journal::Event;
use crate::journal::read_events;
use crate::report::model::Model;
use crate::report::{SESSIONS_DIR, SessionDir, digest_text, markdown, pick, plot, summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The progress plot as PNG.
    Png,
    /// The progress plot as SVG.
    Svg,
    /// The session report in Markdown.
    Md,
    /// The compact summary for agents (≤ 2 KB).
    Json,
    /// The summary as plain text, as agents see it in their prompt.
    Digest,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Session tag (default: the most recently modified session in .autoresearch/).
    #[arg(long)]
    pub tag: Option<String>,
    /// Write one artifact; without it, write all of them into the session directory.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Output file (`-` = stdout) for one format, or a directory for all of them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The repository holding .autoresearch/ (default: found from the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// First measure the best and the base commit on fresh seeds (the session's real gain,
    /// with its interval), then report. Runs training: minutes.
    #[arg(long)]
    pub verify: bool,
    /// Fresh-seed pairs for --verify.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let root = session_root(args.repo.as_deref())?;
    let session = pick(&root, args.tag.as_deref())?;
    if args.verify {
        let Some(s) = &session else { anyhow::bail!("no session to verify in {}", root.display()) };
        verify(&root, &s.tag, args.pairs)?;
    }
    let events = match &session {
        Some(s) => read_events(&s.journal)?,
        None => Vec::new(),
    };
    let model = Model::from_events(&events);
    match &session {
        None => eprintln!(
            "No session journal in {} yet: `ar loop` starts one. Reporting an empty session.",
            root.join(SESSIONS_DIR).display()
        ),
        Some(s) if model.is_empty() => {
            eprintln!("Session `{}` has no experiments yet ({}).", s.tag, s.journal.display())
        }
        Some(_) => {}
    }
    match args.format {
        None => write_all(&model, session.as_ref(), args.out.as_deref()),
        Some(format) => write_one(&events, &model, session.as_ref(), format, args.out.as_deref()),
    }
}

/// Opens the session (on its branch) and measures best against base on fresh seeds.
fn verify(repo: &Path, tag: &str, pairs: usize) -> Result<()> {
    use crate::session::{Open, Options, Session};
    let events = read_events(&crate::journal::Journal::dir(repo, tag).join("runs.jsonl"))?;
    let profile = events
        .iter()
        .find_map(|e| match e {
            Event::Session { profile, .. } => Some(profile.clone()),
            _ => None,
        })
        .context("the journal has no session event")?;
    let opts = Options {
        profile: prepare::profile::Profile::by_name(&profile)?,
        rule: crate::session::Rule::default(),
        timeout: None,
        features: Vec::new(),
        agent: "ar report --verify".into(),
        budget: None,
        scoring: None,
        allow_unconfined: false,
    };
    let mut session = Session::open(repo, Some(tag), Open::Resume, &opts)?;
    crate::interrupt::install(session.stop.clone());
    match session.verify(pairs, 0.95)? {
        Some(v) => print_verification(&v),
        None => println!("Nothing to verify: the session kept no change (the best is the baseline)."),
    }
    Ok(())
}

/// The verification in a few lines for the terminal.
pub fn print_verification(v: &crate::journal::Verification) {
    if let Some(b) = v.believed {
        println!("Believed improvement (decision seeds): {:.6}", b);
    }
    for sp in &v.splits {
        let sigma =
            v.sigma_x.filter(|s| *s > 0.0).map_or(String::new(), |s| format!(" ({:.1} σ)", sp.gain / s));
        println!(
            "Verified on {} fresh seeds ({}): {:+.6}{sigma}, {:.0} % interval [{:.6}, {:.6}]",
            sp.pairs,
            sp.split,
            sp.gain,
            100.0 * v.level,
            sp.low,
            sp.high
        );
    }
}

/// Every artifact into one directory; prints what was written.
fn write_all(model: &Model, session: Option<&SessionDir>, out: Option<&Path>) -> Result<()> {
    let dir = match (out, session) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(s)) => s.dir.clone(),
        (None, None) => return Ok(()),
    };
    for p in write_model(model, &dir)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Every artifact of a journal into `dir` (report.md, progress.png/.svg, summary.json);
/// returns the paths written. `ar demo` ends with this.
pub fn write_session(events: &[Event], dir: &Path) -> Result<Vec<PathBuf>> {
    write_model(&Model::from_events(events), dir)
}

fn write_model(model: &Model, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        write_atomic(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    put("progress.png", &plot::png(model)?)?;
    put("progress.svg", plot::svg(model)?.as_bytes())?;
    put("report.md", markdown::render(model, Some("progress.png")).as_bytes())?;
    put("summary.json", summary::to_json(&summary::summarize(model)).as_bytes())?;
    Ok(written)
}

fn write_one(
    events: &[Event],
    model: &Model,
    session: Option<&SessionDir>,
    format: Format,
    out: Option<&Path>,
) -> Result<()> {
    let to_stdout = out.is_none_or(|p| p == Path::new("-"));
    match format {
        Format::Png | Format::Svg => {
            let ext = if format == Format::Png { "png" } else { "svg" };
            let path = match (out, session) {
                (Some(p), _) if p != Path::new("-") => p.to_path_buf(),
                (_, Some(s)) => s.dir.join(format!("progress.{ext}")),
                (_, None) => return Ok(()),
            };
            let bytes =
                if format == Format::Png { plot::png(model)? } else { plot::svg(model)?.into_bytes() };
            write_file(&path, &bytes)?;
            println!("wrote {}", path.display());
        }
        Format::Md => {
            // The report embeds its plot: render it where the link points.
            let (plot_path, link) = match out.filter(|_| !to_stdout) {
                Some(p) => {
                    let stem = p.file_stem().map_or("report".into(), |s| s.to_string_lossy().into_owned());
                    let name = format!("{stem}-progress.png");
                    (p.with_file_name(&name), Some(name))
                }
                None => match session {
                    Some(s) => {
                        let p = s.dir.join("progress.png");
                        let link = relative_to_cwd(&p).display().to_string();
                        (p, Some(link))
                    }
                    None => (PathBuf::new(), None),
                },
            };
            let link = link.filter(|_| !model.is_empty());
            if link.is_some() {
                write_file(&plot_path, &plot::png(model)?)?;
            }
            emit(out, to_stdout, markdown::render(model, link.as_deref()).as_bytes())?;
        }
        Format::Json => {
            let mut json = summary::to_json(&summary(events));
            json.push('\n');
            emit(out, to_stdout, json.as_bytes())?;
        }
        Format::Digest => emit(out, to_stdout, digest_text(events).as_bytes())?,
    }
    Ok(())
}

fn emit(out: Option<&Path>, to_stdout: bool, bytes: &[u8]) -> Result<()> {
    match out {
        Some(p) if !to_stdout => {
            write_file(p, bytes)?;
            eprintln!("wrote {}", p.display());
            Ok(())
        }
        _ => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes).context("cannot write to stdout")?;
            stdout.flush().context("cannot write to stdout")
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn relative_to_cwd(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// The directory holding `.autoresearch/`: `--repo`, else the nearest ancestor of the
/// current directory that has one, else the checkout root, else the current directory
/// (where an empty session is then reported).
pub fn session_root(repo: Option<&Path>) -> Result<PathBuf> {
    if let Some(r) = repo {
        return std::fs::canonicalize(r).with_context(|| format!("--repo {}", r.display()));
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    if let Some(found) = cwd.ancestors().find(|d| d.join(SESSIONS_DIR).is_dir()) {
        return Ok(found.to_path_buf());
    }
    Ok(crate::exec::build::find_repo(&cwd).unwrap_or(cwd))
}
