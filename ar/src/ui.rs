//! Terminal output for `ar`: indicatif bars behind `prepare`'s [`Reporter`] trait.
//!
//! Only the binary draws; the library reports. When stderr is not a terminal (logs, CI,
//! tests) the bars are hidden and only the step lines are printed.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prepare::progress::{Progress, Reporter, Unit};

/// A reporter drawing indicatif bars on stderr.
pub struct Bars {
    multi: MultiProgress,
    interactive: bool,
}

impl Bars {
    pub fn new() -> Self {
        let interactive = std::io::stderr().is_terminal();
        let target =
            if interactive { ProgressDrawTarget::stderr_with_hz(8) } else { ProgressDrawTarget::hidden() };
        Bars { multi: MultiProgress::with_draw_target(target), interactive }
    }

    fn line(&self, text: String) {
        if self.interactive {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }
}

impl Reporter for Bars {
    fn step(&self, msg: &str) {
        self.line(msg.to_string());
    }
    fn info(&self, msg: &str) {
        self.line(format!("  {msg}"));
    }
    fn warn(&self, msg: &str) {
        self.line(format!("warning: {msg}"));
    }
    fn bar(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn Progress> {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        let template = match (unit, total.is_some()) {
            (Unit::Bytes, _) => "  {msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            (Unit::Items, true) => "  {msg:28} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
            (Unit::Items, false) => "  {msg:28} {spinner} {human_pos} {per_sec}",
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Box::new(Bar(self.multi.add(bar)))
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn restart(&self) {
        self.0.set_position(0);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.finish_and_clear();
        }
    }
}
