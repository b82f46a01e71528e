//! Writing to stdout without panicking: `outln!`/`out!` return the write error (a closed pipe
//! included) instead of `println!`'s panic, and `main` turns a broken pipe into a quiet exit 0.
//! Also the one table style every command uses, and the usage error that exits 2.

use comfy_table::{presets, CellAlignment, Table};
use std::io::Write;
use unicode_width::UnicodeWidthStr;

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

/// Writes a table laid out as [`table`] and [`write_table`] lay one out, a row at a time: `rows`
/// is called twice, once to size the columns and once to write them, so that a table of a million
/// rows (a million tenants) is never held whole.
pub fn write_rows<I>(
    w: &mut impl Write,
    header: &[&str],
    right: &[usize],
    rows: impl Fn() -> I,
) -> std::io::Result<()>
where
    I: Iterator<Item = Vec<String>>,
{
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows() {
        for (wd, cell) in widths.iter_mut().zip(&row) {
            *wd = (*wd).max(cell.width());
        }
    }
    let mut line = String::new();
    let mut put = |w: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| {
        line.clear();
        for (i, (cell, &wd)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = wd.saturating_sub(cell.width());
            if right.contains(&i) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(w, "{}", line.trim_end())
    };
    put(w, &mut header.iter().copied())?;
    for row in rows() {
        put(w, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes a table to stdout.
pub fn print_table(t: &Table) -> std::io::Result<()> {
    write_table(&mut std::io::stdout().lock(), t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cell() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_=-]{0,12}",
            "[0-9]{1,9}",
            Just("é-ünïcode".to_string()),
            Just("全角".to_string()),
        ]
    }

    proptest! {
        /// A table written a row at a time reads exactly as the same table laid out whole.
        #[test]
        fn rows_are_laid_out_as_a_whole_table_would_be(
            header in proptest::collection::vec("[a-z_]{1,10}", 1..6),
            rows in proptest::collection::vec(proptest::collection::vec(cell(), 6), 0..8),
            right in proptest::collection::vec(0usize..6, 0..4),
        ) {
            let n = header.len();
            let rows: Vec<Vec<String>> = rows.into_iter().map(|mut r| { r.truncate(n); r }).collect();
            let names: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut t = table(&names, &right);
            for r in &rows {
                t.add_row(r.clone());
            }
            let mut whole = Vec::new();
            write_table(&mut whole, &t).unwrap();
            let mut streamed = Vec::new();
            write_rows(&mut streamed, &names, &right, || rows.iter().cloned()).unwrap();
            prop_assert_eq!(String::from_utf8(streamed).unwrap(), String::from_utf8(whole).unwrap());
        }
    }
}
