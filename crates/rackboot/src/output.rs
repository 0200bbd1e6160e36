//! Output for people (aligned tables) or scripts (`-o json`).
//!
//! Everything the CLI prints on standard output goes through [`outln!`] and
//! [`out!`]: when the reader went away (`rackboot machine list | head -1`)
//! the process exits quietly with 141, as coreutils do when SIGPIPE kills
//! them, instead of panicking like `println!`.

use std::io::Write;

use serde::Serialize;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables and lines for people.
    Text,
    /// JSON: one document (an array for lists); NDJSON for streams (`events --follow`).
    Json,
}

/// Exit status when standard output's reader went away: 128 + SIGPIPE, what
/// a shell reports for a coreutils command killed by it.
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes to standard output; a closed pipe ends the process quietly.
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for CLI output.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*), true) };
}

/// `print!` for CLI output.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*), false) };
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// One JSON document on one line (a stream's element).
pub fn print_json_line<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// A plain left-aligned text table.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        Table {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.to_vec());
    }

    pub fn print(&self) {
        let cols = self.rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i + 1 == cols {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}", w = widths[i])
                    }
                })
                .collect();
            outln!("{}", line.join("  ").trim_end());
        }
    }
}
