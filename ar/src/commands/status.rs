//! `ar status [--watch]`: the session at a glance, from the journal and the loop's live.json.
//!
//! `--watch` redraws in place once a second (cursor home, each line cleared to its end, the
//! rest of the screen cleared) instead of scrolling, hides the cursor while it runs, and
//! restores it when Ctrl-C (or SIGTERM) arrives. Without a terminal it prints once, so
//! `ar status --watch > log` or a test never hangs.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use crate::journal::{now, read_events};
use crate::report::model::Model;
use crate::report::status::{read_live, render};
use crate::report::{SESSIONS_DIR, pick};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Session tag (default: the most recently modified session in .autoresearch/).
    #[arg(long)]
    pub tag: Option<String>,
    /// Redraw every second until Ctrl-C (prints once when stdout is not a terminal).
    #[arg(long)]
    pub watch: bool,
    /// The repository holding .autoresearch/ (default: found from the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

/// Width used when stdout is not a terminal: lines are cut only when absurdly long.
const PIPE_WIDTH: usize = 200;

pub fn run(args: StatusArgs) -> Result<()> {
    let root = super::report::session_root(args.repo.as_deref())?;
    let tty = std::io::stdout().is_terminal();
    if !args.watch || !tty {
        let width = if tty { terminal_size().0 } else { PIPE_WIDTH };
        print!("{}", frame(&root, args.tag.as_deref(), width)?);
        return Ok(());
    }
    watch(&root, args.tag.as_deref())
}

/// One screen: the session picked afresh (a new session may have started since).
fn frame(root: &Path, tag: Option<&str>, width: usize) -> Result<String> {
    let Some(session) = pick(root, tag)? else {
        return Ok(format!(
            "No session journal in {} yet: `ar loop` starts one.\n",
            root.join(SESSIONS_DIR).display()
        ));
    };
    let model = Model::from_events(&read_events(&session.journal)?);
    let live = read_live(&session.dir);
    Ok(render(&model, live.as_ref(), now(), width))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing that is safe inside a signal handler.
    STOP.store(true, Ordering::SeqCst);
}

fn watch(root: &Path, tag: Option<&str>) -> Result<()> {
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut out = std::io::stdout();
    write!(out, "\x1b[?25l\x1b[2J")?;
    let result = loop {
        let (width, rows) = terminal_size();
        // A damaged journal mid-watch is shown, not fatal: the loop may be repairing it.
        let text = frame(root, tag, width).unwrap_or_else(|e| format!("error: {e:#}\n"));
        let mut screen = String::from("\x1b[H");
        // Never more lines than the screen holds (minus the footer): a scroll would break
        // the redraw-in-place.
        for line in text.lines().take(rows.saturating_sub(3).max(1)) {
            screen.push_str(line);
            screen.push_str("\x1b[K\n");
        }
        screen.push_str("\n(ar status --watch: every second; Ctrl-C to quit)\x1b[K\n\x1b[J");
        if let Err(e) = out.write_all(screen.as_bytes()).and_then(|()| out.flush()) {
            break Err(e.into());
        }
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) && !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if STOP.load(Ordering::SeqCst) {
            break Ok(());
        }
    };
    let _ = write!(out, "\x1b[?25h");
    let _ = out.flush();
    result
}

/// Columns and rows of the terminal on stdout (80×24 when it cannot be asked).
fn terminal_size() -> (usize, usize) {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    let cols = if rc == 0 && ws.ws_col > 0 { usize::from(ws.ws_col) } else { 80 };
    let rows = if rc == 0 && ws.ws_row > 0 { usize::from(ws.ws_row) } else { 24 };
    (cols, rows)
}
