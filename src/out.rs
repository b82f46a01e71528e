//! Writing to stdout without panicking: `outln!`/`out!` return the write error (a closed pipe
//! included) instead of `println!`'s panic, and `main` turns a broken pipe into a quiet exit 0.
//! Also the one table style every command uses, and the usage error that exits 2.

use comfy_table::{presets, CellAlignment, Table};
use std::io::Write;

/// `writeln!` to stdout, `?`-propagating the error.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock())?;
    }};
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?;
    }};
}

/// `write!` to stdout, `?`-propagating the error.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($t)*)?;
    }};
}

pub(crate) use {out, outln};

/// An error in how joypath was called: printed like any error, but exits 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow::Error`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// A borderless, aligned table with a header row; `right` lists the numeric columns.
pub fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.to_vec());
    for &c in right {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Writes a table, each line without its trailing padding.
pub fn write_table(w: &mut impl Write, t: &Table) -> std::io::Result<()> {
    for line in t.lines() {
        let line = line.strip_prefix(' ').unwrap_or(&line);
        writeln!(w, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes a table to stdout.
pub fn print_table(t: &Table) -> std::io::Result<()> {
    write_table(&mut std::io::stdout().lock(), t)
}
