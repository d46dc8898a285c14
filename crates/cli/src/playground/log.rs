//! The playground's compact log: each child's JSON log lines (`--log-format
//! json`) rendered as one short line, prefixed with the node's name in the
//! node's color when the output is a terminal.
//!
//! ```text
//! n1 │ 20:22:14.927 INFO  ringkv member serving name=n1 restart=false
//! n2 │ 20:22:15.310 WARN  peer unreachable peer=n3
//! ```

use serde_json::Value;

/// Fields every event has, shown in fixed places or not at all.
const FIXED_FIELDS: [&str; 6] = ["timestamp", "level", "message", "target", "span", "spans"];

/// Node prefix colors (ANSI foreground codes), one per node, cycling.
const NODE_COLORS: [u8; 6] = [36, 35, 33, 32, 34, 31];

/// Longest field value shown; a longer one is cut with `…` (a log line
/// stays one screen line for the common fields).
const FIELD_CHARS_MAX: usize = 120;

/// Whether to color, decided once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Style {
    /// Emit ANSI colors.
    pub(crate) color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    /// `name │ ` in node `index`'s color.
    pub(crate) fn prefix(self, name: &str, index: usize, width: usize) -> String {
        let code = NODE_COLORS[index % NODE_COLORS.len()].to_string();
        self.paint(&code, &format!("{name:<width$} │ "))
    }

    fn level(self, level: &str) -> String {
        let code = match level {
            "ERROR" => "1;31",
            "WARN" => "33",
            "INFO" => "32",
            "DEBUG" => "34",
            _ => "2",
        };
        self.paint(code, &format!("{level:<5}"))
    }
}

fn field_text(value: &Value) -> String {
    let text = match value {
        Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > FIELD_CHARS_MAX {
        let cut: String = text.chars().take(FIELD_CHARS_MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// One line of a child's output, without the node prefix: a JSON event as
/// `time level message key=value…`, anything else (a panic message, say)
/// as it is.
pub(crate) fn render(line: &str, style: Style) -> String {
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let (Some(level), Some(message)) =
        (event.get("level").and_then(Value::as_str), event.get("message"))
    else {
        return line.to_owned();
    };
    // RFC 3339: keep the time of day to the millisecond.
    let time =
        event.get("timestamp").and_then(Value::as_str).and_then(|t| t.get(11..23)).unwrap_or("");
    let message = message.as_str().map_or_else(|| message.to_string(), str::to_owned);
    let mut out = format!("{time} {} {message}", style.level(level));
    for (key, value) in &event {
        if !FIXED_FIELDS.contains(&key.as_str()) {
            out.push_str(&style.paint("2", &format!(" {key}={}", field_text(value))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn json_events_become_one_compact_line() {
        let line = r#"{"timestamp":"2026-11-26T20:22:14.927868Z","level":"INFO","message":"ringkv member serving","name":"a","restart":false,"clients":"[127.0.0.1:23791]","target":"ringkv_server::server"}"#;
        assert_eq!(
            render(line, PLAIN),
            "20:22:14.927 INFO  ringkv member serving clients=[127.0.0.1:23791] name=a restart=false"
        );
    }

    #[test]
    fn values_with_spaces_are_quoted_and_long_ones_cut() {
        let long = "x".repeat(FIELD_CHARS_MAX + 5);
        let line = format!(
            r#"{{"timestamp":"2026-11-26T20:22:14.927868Z","level":"WARN","message":"m","why":"a b","long":"{long}"}}"#
        );
        let rendered = render(&line, PLAIN);
        assert!(rendered.contains(r#"why="a b""#), "{rendered}");
        assert!(rendered.contains(&format!("long={}…", "x".repeat(FIELD_CHARS_MAX))), "{rendered}");
    }

    #[test]
    fn anything_else_is_shown_as_it_is() {
        assert_eq!(
            render("thread 'main' panicked at src/x.rs:1:1", PLAIN),
            "thread 'main' panicked at src/x.rs:1:1"
        );
        assert_eq!(render(r#"{"no":"level"}"#, PLAIN), r#"{"no":"level"}"#);
    }

    #[test]
    fn colors_only_when_asked() {
        let colored = Style { color: true };
        assert!(colored.prefix("n1", 0, 2).starts_with("\x1b[36m"));
        assert_eq!(PLAIN.prefix("n1", 0, 3), "n1  │ ");
    }
}
