//! A small SVG timeline of operations and faults around an anomaly: one row
//! per client worker, each operation a bar from invocation to completion
//! (green ok, grey fail, orange unknown, red the operations the checker
//! named), faults as shaded bands across every row.

use std::fmt::Write as _;

use crate::history::{FaultEvent, OpOutcome, OpRecord};

/// Most operations drawn (the ones nearest the anomaly win).
pub const OPS_DRAWN_MAX: usize = 600;
/// Width of the drawing area in pixels.
pub const WIDTH_PX: u64 = 1200;
/// Height of one worker's row in pixels.
pub const ROW_PX: u64 = 18;
/// Left margin for row labels, in pixels.
pub const LABEL_PX: u64 = 60;
/// Height of the fault band area above the rows, in pixels.
pub const FAULTS_PX: u64 = 40;

/// What to draw.
#[derive(Debug)]
pub struct Picture<'a> {
    /// Every operation (those outside the window are skipped).
    pub ops: &'a [OpRecord],
    /// Every fault event.
    pub faults: &'a [FaultEvent],
    /// The time window, ns since the run started.
    pub window: (u64, u64),
    /// Operations to draw in red, by (worker, invoked_ns).
    pub highlight: &'a [(usize, u64)],
    /// A vertical marker (the anomaly's time) and its label.
    pub marker: Option<(u64, String)>,
    /// The title.
    pub title: String,
}

/// Fault intervals: each `start` up to the next `end` (one fault at a time),
/// or to `until` when none follows.
pub fn fault_intervals(faults: &[FaultEvent], until: u64) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    let mut open: Option<&FaultEvent> = None;
    for f in faults {
        match f.phase {
            "start" => {
                if let Some(o) = open.take() {
                    out.push((o.at_ns, f.at_ns, label(o)));
                }
                open = Some(f);
            }
            "end" => {
                if let Some(o) = open.take() {
                    out.push((o.at_ns, f.at_ns, label(o)));
                }
            }
            _ => {}
        }
    }
    if let Some(o) = open {
        out.push((o.at_ns, until.max(o.at_ns), label(o)));
    }
    out
}

fn label(f: &FaultEvent) -> String {
    let nodes: Vec<String> = f.nodes.iter().map(|n| format!("n{n}")).collect();
    format!("{} {}", f.fault, nodes.join(","))
}

/// Renders the picture as a standalone SVG document.
pub fn render(p: &Picture<'_>) -> String {
    let (from, to) = (p.window.0, p.window.1.max(p.window.0 + 1));
    let mut ops: Vec<&OpRecord> =
        p.ops.iter().filter(|o| o.completed_ns >= from && o.invoked_ns <= to).collect();
    if ops.len() > OPS_DRAWN_MAX {
        let centre = p.marker.as_ref().map_or(from / 2 + to / 2, |m| m.0);
        ops.sort_by_key(|o| o.invoked_ns.abs_diff(centre));
        ops.truncate(OPS_DRAWN_MAX);
    }
    let workers = ops.iter().map(|o| o.worker + 1).max().unwrap_or(1) as u64;
    let height = FAULTS_PX + workers * ROW_PX + 40;
    let width = LABEL_PX + WIDTH_PX + 20;
    let x = |t: u64| -> u64 { LABEL_PX + (t.clamp(from, to) - from) * WIDTH_PX / (to - from) };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="10">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="4" y="12" font-size="12">{}</text>"#, escape(&p.title));
    for (a, b, name) in fault_intervals(p.faults, to) {
        if b < from || a > to {
            continue;
        }
        let (xa, xb) = (x(a), x(b).max(x(a) + 1));
        let _ = writeln!(
            s,
            r#"<rect x="{xa}" y="{}" width="{}" height="{}" fill="red" fill-opacity="0.12"><title>{}</title></rect>"#,
            FAULTS_PX - 20,
            xb - xa,
            workers * ROW_PX + 20,
            escape(&name)
        );
        let _ = writeln!(
            s,
            r#"<text x="{xa}" y="{}" fill="darkred">{}</text>"#,
            FAULTS_PX - 8,
            escape(&name)
        );
    }
    for w in 0..workers {
        let y = FAULTS_PX + w * ROW_PX;
        let _ = writeln!(s, r#"<text x="4" y="{}">w{w}</text>"#, y + 12);
    }
    for o in &ops {
        let y = FAULTS_PX + o.worker as u64 * ROW_PX + 2;
        let (xa, xb) = (x(o.invoked_ns), x(o.completed_ns).max(x(o.invoked_ns) + 2));
        let hot = p.highlight.contains(&(o.worker, o.invoked_ns));
        let colour = match (hot, o.outcome) {
            (true, _) => "crimson",
            (false, OpOutcome::Ok) => "seagreen",
            (false, OpOutcome::Fail) => "grey",
            (false, OpOutcome::Unknown) => "orange",
        };
        let title = format!(
            "w{} n{} {} {:?} [{:.3}s, {:.3}s] {}",
            o.worker,
            o.node,
            o.f,
            o.outcome,
            o.invoked_ns as f64 / 1e9,
            o.completed_ns as f64 / 1e9,
            o.value
        );
        let _ = writeln!(
            s,
            r#"<rect x="{xa}" y="{y}" width="{}" height="{}" fill="{colour}"><title>{}</title></rect>"#,
            xb - xa,
            ROW_PX - 4,
            escape(&title)
        );
    }
    if let Some((t, text)) = &p.marker {
        let xm = x(*t);
        let _ = writeln!(
            s,
            r#"<line x1="{xm}" y1="{}" x2="{xm}" y2="{}" stroke="black" stroke-dasharray="4 2"/>"#,
            FAULTS_PX - 20,
            FAULTS_PX + workers * ROW_PX
        );
        let _ = writeln!(
            s,
            r#"<text x="{xm}" y="{}">{}</text>"#,
            FAULTS_PX + workers * ROW_PX + 14,
            escape(text)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_PX}" y="{}">{:.3}s</text><text x="{}" y="{}" text-anchor="end">{:.3}s</text>"#,
        height - 6,
        from as f64 / 1e9,
        LABEL_PX + WIDTH_PX,
        height - 6,
        to as f64 / 1e9
    );
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(worker: usize, a: u64, b: u64, outcome: OpOutcome) -> OpRecord {
        OpRecord {
            worker,
            node: 0,
            f: "write",
            invoked_ns: a,
            completed_ns: b,
            outcome,
            value: serde_json::json!({"key": "k<1>"}),
            error: None,
        }
    }

    fn fault(at_ns: u64, phase: &'static str) -> FaultEvent {
        FaultEvent {
            at_ns,
            phase,
            fault: "kill-leader".into(),
            nodes: vec![1],
            detail: String::new(),
        }
    }

    #[test]
    fn faults_pair_start_with_the_next_end() {
        let f = [fault(10, "start"), fault(20, "end"), fault(30, "start")];
        assert_eq!(
            fault_intervals(&f, 50),
            vec![(10, 20, "kill-leader n1".to_owned()), (30, 50, "kill-leader n1".to_owned())]
        );
    }

    #[test]
    fn draws_ops_in_the_window_and_escapes_text() {
        let ops = [
            op(0, 0, 10, OpOutcome::Ok),
            op(1, 100, 200, OpOutcome::Unknown),
            op(0, 5000, 6000, OpOutcome::Ok),
        ];
        let faults = [fault(50, "start"), fault(150, "end")];
        let svg = render(&Picture {
            ops: &ops,
            faults: &faults,
            window: (0, 1000),
            highlight: &[(1, 100)],
            marker: Some((120, "anomaly".into())),
            title: "a < b".into(),
        });
        assert!(svg.starts_with("<svg"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            3,
            "two ops in the window and one fault:\n{svg}"
        );
        assert!(svg.contains("crimson"));
        assert!(svg.contains("a &lt; b"));
        assert!(svg.contains("k&lt;1&gt;"));
    }
}
