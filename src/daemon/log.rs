//! The daemon's log: one line per event on stderr, as `key=value` text or JSON lines.

use serde_json::{Map, Value};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub format: Format,
}

impl Log {
    /// Writes one event; `fields` in order, `ts` and `event` first.
    pub fn event(&self, event: &str, fields: &[(&str, Value)]) {
        let line = render(self.format, chrono::Utc::now(), event, fields);
        // One write per line so lines from the output threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

fn render(
    format: Format,
    ts: chrono::DateTime<chrono::Utc>,
    event: &str,
    fields: &[(&str, Value)],
) -> String {
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match format {
        Format::Json => {
            let mut m = Map::new();
            m.insert("ts".into(), Value::String(ts));
            m.insert("event".into(), Value::String(event.into()));
            for (k, v) in fields {
                m.insert((*k).into(), v.clone());
            }
            format!("{}\n", Value::Object(m))
        }
        Format::Text => {
            let mut s = format!("{ts} {event}");
            for (k, v) in fields {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if v.is_empty() || v.contains([' ', '"', '=']) {
                    s.push_str(&format!(" {k}={}", Value::String(v)));
                } else {
                    s.push_str(&format!(" {k}={v}"));
                }
            }
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_quotes_values_with_spaces_and_json_is_one_object() {
        let ts = "2026-11-30T02:00:00Z".parse().unwrap();
        let f = [
            ("job", json!("pg/backup")),
            ("line", json!("a b")),
            ("code", json!(0)),
        ];
        assert_eq!(
            render(Format::Text, ts, "job_end", &f),
            "2026-11-30T02:00:00.000Z job_end job=pg/backup line=\"a b\" code=0\n"
        );
        let j: Value = serde_json::from_str(&render(Format::Json, ts, "job_end", &f)).unwrap();
        assert_eq!(
            (j["event"].as_str(), j["code"].as_i64()),
            (Some("job_end"), Some(0))
        );
    }
}
