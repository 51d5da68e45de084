//! The process logger: env_logger (`RUST_LOG`, default `info`) behind a
//! filter that keeps pairing secrets out of the log.
//!
//! wasup's own lines never carry a key, secret, QR text or credential. The
//! WhatsApp engine's can: at debug it prints every protocol node, and the
//! `pair-device` node the server sends holds the QR refs (the first part of
//! every QR text); at info it prints the pairing code it was given. Lines of
//! other crates are therefore checked and those parts replaced by `[redacted]`
//! before they are written. Binary node content (keys, signatures) is never
//! printed by the engine (it shows `<!-- N bytes -->`).

use log::{LevelFilter, Log, Metadata, Record};

const REDACTED: &str = "[redacted]";

/// Install the logger. Call once, first thing.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max: LevelFilter = inner.filter();
    if log::set_boxed_logger(Box::new(Redacting { inner })).is_ok() {
        log::set_max_level(max);
    }
}

struct Redacting {
    inner: env_logger::Logger,
}

impl Log for Redacting {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let target = record.target();
        if target == "wasup" || target.starts_with("wasup::") || target.starts_with("wasup_") {
            return self.inner.log(record);
        }
        let text = record.args().to_string();
        match redact(target, &text) {
            Some(clean) => self.inner.log(
                &Record::builder()
                    .args(format_args!("{clean}"))
                    .level(record.level())
                    .target(target)
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// `text` with pairing secrets replaced, or None when it holds none.
fn redact(target: &str, text: &str) -> Option<String> {
    let mut out = redact_between(text, "<ref>", "</ref>");
    if target.ends_with("/PairCode") {
        out = Some(redact_codes(out.as_deref().unwrap_or(text)));
    }
    out.filter(|clean| clean != text)
}

/// Replace what stands between every `open` and the next `close`.
fn redact_between(text: &str, open: &str, close: &str) -> Option<String> {
    if !text.contains(open) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        let inner = &rest[at + open.len()..];
        let Some(end) = inner.find(close) else {
            // Cut off (the engine truncates long nodes): hide the tail too.
            out.push_str(&rest[..at + open.len()]);
            out.push_str(REDACTED);
            return Some(out);
        };
        out.push_str(&rest[..at + open.len()]);
        out.push_str(REDACTED);
        out.push_str(close);
        rest = &inner[end + close.len()..];
    }
    out.push_str(rest);
    Some(out)
}

/// Replace every word that looks like a pairing code: 8 letters or digits
/// (`ABCD1234`, also written `ABCD-1234`).
fn redact_codes(text: &str) -> String {
    let is_code = |w: &str| {
        let w: String = w.chars().filter(|c| *c != '-').collect();
        w.len() == 8
            && w.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    text.split(' ')
        .map(|word| {
            let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            if !core.is_empty() && is_code(core) {
                word.replace(core, REDACTED)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn qr_refs_are_redacted_from_engine_lines() {
        let node =
            r#"<iq id="1"><pair-device><ref>2@AbC+/=</ref><ref>2@xyz</ref></pair-device></iq>"#;
        assert_eq!(
            redact("Client/Recv", node).unwrap(),
            "<iq id=\"1\"><pair-device><ref>[redacted]</ref><ref>[redacted]</ref></pair-device></iq>"
        );
        assert_eq!(
            redact("Client/Recv", "<pair-device><ref>2@cut off").unwrap(),
            "<pair-device><ref>[redacted]"
        );
        assert_eq!(redact("Client/Recv", "<success t=\"1\"/>"), None);
    }

    #[test]
    fn pairing_codes_are_redacted() {
        assert_eq!(
            redact(
                "Client/PairCode",
                "Stage 1 complete, waiting for phone confirmation. Code: M3FA2H2Q"
            )
            .unwrap(),
            "Stage 1 complete, waiting for phone confirmation. Code: [redacted]"
        );
        assert_eq!(
            redact("Bot/PairCode", "Pair code generated: ABCD-1234.").unwrap(),
            "Pair code generated: [redacted]."
        );
        assert_eq!(
            redact(
                "Client/PairCode",
                "Starting pair code authentication for phone: 628123456789"
            ),
            None
        );
    }
}
