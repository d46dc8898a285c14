//! Human-readable renderings: operations as text, counterexamples as a text
//! timeline and as SVG.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use bytes::Bytes;

use crate::counterexample::Counterexample;
use crate::history::{Call, Compare, OpId, Operation, Outcome, ProcessId, Ret};

/// Most keys listed before "and N more".
pub const KEYS_SHOWN_MAX: usize = 8;

/// Target width, in characters, of the bars of a text timeline.
pub const TIMELINE_WIDTH_CHARS: usize = 100;

/// Bytes as a quoted, escaped string when they are UTF-8, as hex otherwise.
pub(crate) struct ShowBytes<'a>(pub(crate) &'a Bytes);

impl fmt::Display for ShowBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// `"a", "b"`, shortened past [`KEYS_SHOWN_MAX`].
pub(crate) fn write_key_list(f: &mut dyn fmt::Write, keys: &[Bytes]) -> fmt::Result {
    for (i, key) in keys.iter().take(KEYS_SHOWN_MAX).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", ShowBytes(key))?;
    }
    if keys.len() > KEYS_SHOWN_MAX {
        write!(f, " and {} more", keys.len() - KEYS_SHOWN_MAX)?;
    }
    Ok(())
}

/// What an operation asked and got, e.g. `put "x" = "1" -> ok (revision 7)`.
pub(crate) fn describe(op: &Operation) -> String {
    let mut s = String::new();
    let b = |v: &Bytes| ShowBytes(v).to_string();
    match &op.call {
        Call::Get { key } => write!(s, "get {}", b(key)),
        Call::Put { key, value } => write!(s, "put {} = {}", b(key), b(value)),
        Call::Delete { key } => write!(s, "delete {}", b(key)),
        Call::CompareAndSet { key, compare, value } => {
            let condition = match compare {
                Compare::Value(Some(v)) => format!("value = {}", b(v)),
                Compare::Value(None) | Compare::ModRevision(crate::Revision(0)) => {
                    "absent".to_string()
                }
                Compare::ModRevision(r) => format!("mod_revision = {r}"),
            };
            write!(s, "cas {} if {condition} then {}", b(key), b(value))
        }
        Call::Range { keys } => {
            s.push_str("range ");
            write_key_list(&mut s, keys)
        }
    }
    .expect("writing to a String cannot fail");
    s.push_str(" -> ");
    let revision = |r: &Option<crate::Revision>| match r {
        Some(r) => format!(" (revision {r})"),
        None => String::new(),
    };
    let ret = match &op.outcome {
        Outcome::Fail => "failed".to_string(),
        Outcome::Unknown => "unknown".to_string(),
        Outcome::Ok(Ret::Get(None)) => "absent".to_string(),
        Outcome::Ok(Ret::Get(Some(found))) => match found.mod_revision {
            Some(r) => format!("{} (mod_revision {r})", b(&found.value)),
            None => b(&found.value),
        },
        Outcome::Ok(Ret::Put { revision: r }) => format!("ok{}", revision(r)),
        Outcome::Ok(Ret::Delete { deleted, revision: r }) => {
            let what = match deleted {
                Some(true) => "deleted",
                Some(false) => "not found",
                None => "ok",
            };
            format!("{what}{}", revision(r))
        }
        Outcome::Ok(Ret::CompareAndSet { succeeded, revision: r }) => {
            let what = if *succeeded { "succeeded" } else { "not succeeded" };
            format!("{what}{}", revision(r))
        }
        Outcome::Ok(Ret::Range(kvs)) => {
            let keys = op.call.keys();
            let parts: Vec<String> = keys
                .iter()
                .map(|key| match kvs.iter().find(|kv| kv.key == key) {
                    None => format!("{} absent", b(key)),
                    Some(kv) => match kv.mod_revision {
                        Some(r) => format!("{} = {} (mod_revision {r})", b(key), b(&kv.value)),
                        None => format!("{} = {}", b(key), b(&kv.value)),
                    },
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    };
    s.push_str(&ret);
    s
}

fn interval(op: &Operation) -> String {
    match op.completed_at {
        Some(c) => format!("t={}..{}", op.invoked_at, c),
        None => format!("t={}..", op.invoked_at),
    }
}

/// One aligned line: id, process, interval, description.
pub(crate) fn op_line(id: OpId, op: &Operation) -> String {
    format!(
        "{:<6} {:<4} {:<15} {}",
        id.to_string(),
        op.process.to_string(),
        interval(op),
        describe(op)
    )
}

/// E.g. `ok, t=300..305`, for citing an operation in passing.
pub(crate) fn outcome_and_time(op: &Operation) -> String {
    let outcome = match op.outcome {
        Outcome::Ok(_) => "ok",
        Outcome::Fail => "failed",
        Outcome::Unknown => "outcome unknown",
    };
    format!("{outcome}, {}", interval(op))
}

/// How an operation is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Part of the longest linearizable order.
    Linearized,
    /// Could not be placed after it.
    Unplaced,
    /// Outcome unknown, left out of the order.
    Unknown,
}

impl Class {
    fn fill(self) -> char {
        match self {
            Class::Linearized => '-',
            Class::Unplaced => '=',
            Class::Unknown => '~',
        }
    }
}

/// The operations a timeline shows, with their class and column span.
struct Layout<'a> {
    bars: Vec<Bar<'a>>,
    processes: Vec<ProcessId>,
    columns: usize,
    first: u64,
    last: u64,
}

struct Bar<'a> {
    id: OpId,
    op: &'a Operation,
    class: Class,
    start: usize,
    /// Column of the completion; `None` when it never completed.
    end: Option<usize>,
}

fn layout(cx: &Counterexample) -> Layout<'_> {
    let mut classes: BTreeMap<OpId, Class> = BTreeMap::new();
    classes.extend(cx.context.iter().map(|&id| (id, Class::Linearized)));
    classes.extend(cx.unknown.iter().map(|&id| (id, Class::Unknown)));
    classes.extend(cx.unplaced.iter().map(|u| (u.op, Class::Unplaced)));
    let shown: Vec<(OpId, &Operation, Class)> = classes
        .into_iter()
        .filter_map(|(id, class)| cx.operations.get(&id).map(|op| (id, op, class)))
        .collect();
    let times: BTreeSet<u64> = shown
        .iter()
        .flat_map(|(_, op, _)| std::iter::once(op.invoked_at.0).chain(op.completed_at.map(|t| t.0)))
        .collect();
    let times: Vec<u64> = times.into_iter().collect();
    let column = |t: u64| times.partition_point(|&x| x < t);
    let bars = shown
        .into_iter()
        .map(|(id, op, class)| Bar {
            id,
            op,
            class,
            start: column(op.invoked_at.0),
            end: op.completed_at.map(|t| column(t.0)),
        })
        .collect::<Vec<_>>();
    let processes: BTreeSet<ProcessId> = bars.iter().map(|b| b.op.process).collect();
    Layout {
        bars,
        processes: processes.into_iter().collect(),
        columns: times.len(),
        first: times.first().copied().unwrap_or(0),
        last: times.last().copied().unwrap_or(0),
    }
}

/// See [`Counterexample::timeline`].
pub(crate) fn timeline(cx: &Counterexample) -> String {
    let layout = layout(cx);
    let mut out = String::new();
    if layout.bars.is_empty() {
        return out;
    }
    // Columns are the distinct event times (order, not scale), each
    // `cell` characters wide.
    let cell = (TIMELINE_WIDTH_CHARS / layout.columns.max(1)).clamp(2, 8);
    let width = layout.columns * cell + 2;
    let label_width = layout.processes.iter().map(|p| p.to_string().len()).max().unwrap_or(2);
    for &process in &layout.processes {
        let mut row = vec![' '; width];
        for bar in layout.bars.iter().filter(|b| b.op.process == process) {
            let start = bar.start * cell;
            let (end, closing) = match bar.end {
                Some(end) if bar.class == Class::Unknown => (end * cell, '>'),
                Some(end) => (end * cell, ']'),
                None => (width - 1, '>'),
            };
            if end == start {
                row[start] = '|';
                continue;
            }
            row[start] = '[';
            for c in &mut row[start + 1..end] {
                *c = bar.class.fill();
            }
            row[end] = closing;
            let label: Vec<char> = bar.id.to_string().chars().collect();
            if end - start > label.len() {
                row[start + 1..start + 1 + label.len()].copy_from_slice(&label);
            }
        }
        let row: String = row.into_iter().collect();
        let _ = writeln!(out, "{:>label_width$} {}", process.to_string(), row.trim_end());
    }
    if let Some(cut) = cx.cut
        && let Some(bar) = layout.bars.iter().find(|b| b.id == cut)
        && let Some(end) = bar.end
    {
        let _ =
            writeln!(out, "{:>label_width$} {}^ {cut} completes here", "", " ".repeat(end * cell));
    }
    let _ = writeln!(
        out,
        "[-#n-] linearized, in the order found   [=#n=] could not be placed   \
         [~#n~> outcome unknown\ncolumns are the {} distinct event times from t={} to t={} \
         (in order, not to scale)",
        layout.columns, layout.first, layout.last
    );
    out
}

/// Pixel sizes of the SVG timeline.
const SVG_COLUMN_PX: usize = 28;
const SVG_ROW_PX: usize = 26;
const SVG_LABEL_PX: usize = 56;
const SVG_MARGIN_PX: usize = 10;
const SVG_MIN_WIDTH_PX: usize = 600;

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Fill, stroke and extra attributes of a bar.
fn svg_style(class: Class) -> (&'static str, &'static str, &'static str) {
    match class {
        Class::Linearized => ("#cfe3f4", "#3b78b0", ""),
        Class::Unplaced => ("#f9c4b4", "#c0392b", ""),
        Class::Unknown => ("#eeeeee", "#888888", r#" stroke-dasharray="4 3""#),
    }
}

/// See [`Counterexample::svg`].
pub(crate) fn svg(cx: &Counterexample) -> String {
    let layout = layout(cx);
    let columns = layout.columns.max(1);
    let width =
        (SVG_LABEL_PX + (columns + 1) * SVG_COLUMN_PX + SVG_MARGIN_PX).max(SVG_MIN_WIDTH_PX);
    let rows_bottom = SVG_MARGIN_PX + (layout.processes.len() + 1) * SVG_ROW_PX;
    let height = rows_bottom + 3 * SVG_ROW_PX;
    let x = |column: usize| SVG_LABEL_PX + column * SVG_COLUMN_PX;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mut keys = String::new();
    let _ = write_key_list(&mut keys, &cx.keys);
    let _ = writeln!(
        out,
        r#"<text x="{SVG_MARGIN_PX}" y="{}" font-weight="bold">not linearizable: {}</text>"#,
        SVG_MARGIN_PX + 12,
        xml_escape(&keys)
    );
    if let Some(cut) = cx.cut
        && let Some(end) = layout.bars.iter().find(|b| b.id == cut).and_then(|b| b.end)
    {
        let _ = writeln!(
            out,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#c0392b" stroke-dasharray="2 2"><title>{cut} completes: the shortest failing prefix ends here</title></line>"##,
            x(end),
            SVG_MARGIN_PX + SVG_ROW_PX,
            rows_bottom
        );
    }
    for (row, &process) in layout.processes.iter().enumerate() {
        let y = SVG_MARGIN_PX + (row + 1) * SVG_ROW_PX;
        let _ = writeln!(out, r#"<text x="{SVG_MARGIN_PX}" y="{}">{process}</text>"#, y + 15);
        for bar in layout.bars.iter().filter(|b| b.op.process == process) {
            let (fill, stroke, extra) = svg_style(bar.class);
            let x0 = x(bar.start);
            let x1 = bar.end.map_or(x(columns), x).max(x0 + 6);
            let title = xml_escape(&op_line(bar.id, bar.op));
            let _ = writeln!(
                out,
                r#"<g><title>{title}</title><rect x="{x0}" y="{}" width="{}" height="{}" rx="3" fill="{fill}" stroke="{stroke}"{extra}/><text x="{}" y="{}">{}</text></g>"#,
                y + 2,
                x1 - x0,
                SVG_ROW_PX - 6,
                x0 + 3,
                y + 15,
                bar.id
            );
        }
    }
    let legend_y = rows_bottom + 6;
    let mut legend_x = SVG_MARGIN_PX;
    for (class, label) in [
        (Class::Linearized, "linearized, in the order found"),
        (Class::Unplaced, "could not be placed"),
        (Class::Unknown, "outcome unknown"),
    ] {
        let (fill, stroke, extra) = svg_style(class);
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x}" y="{legend_y}" width="14" height="12" rx="2" fill="{fill}" stroke="{stroke}"{extra}/><text x="{}" y="{}">{label}</text>"#,
            legend_x + 18,
            legend_y + 10
        );
        legend_x += 18 + 7 * label.len() + 16;
    }
    let _ = writeln!(
        out,
        r#"<text x="{SVG_MARGIN_PX}" y="{}">columns: the distinct event times t={}..{} (order, not scale); hover a bar for details</text>"#,
        legend_y + 12 + SVG_ROW_PX,
        layout.first,
        layout.last
    );
    out.push_str("</svg>\n");
    out
}
