//! Redaction of captured bodies, applied to every string of the JSON before it is
//! stored. Hand-written scanners instead of a regex engine keep the worker small; the
//! rules (docs/training-data.md):
//!
//! - **API keys**: a token starting at a word boundary with one of the prefixes
//!   (default [`DEFAULT_KEY_PREFIXES`]) followed by at least 12 of `[A-Za-z0-9_-]` →
//!   `[REDACTED_KEY]`.
//! - **Emails**: `local@domain.tld` (local `[A-Za-z0-9._%+-]`, domain labels
//!   `[A-Za-z0-9-]`, a TLD of two or more letters) → `[REDACTED_EMAIL]`.
//! - **Phone numbers**: 9 to 15 digits in groups separated by single spaces, dashes,
//!   dots or parentheses, with a leading `+` or at least one separator (so plain
//!   integers such as timestamps survive) → `[REDACTED_PHONE]`.
//! - **Literals**: each configured string → `[REDACTED]`.

use serde_json::Value;

use super::settings::CaptureSettings;

pub const KEY_MARK: &str = "[REDACTED_KEY]";
pub const EMAIL_MARK: &str = "[REDACTED_EMAIL]";
pub const PHONE_MARK: &str = "[REDACTED_PHONE]";
pub const LITERAL_MARK: &str = "[REDACTED]";

/// Key prefixes used when the settings name none.
pub const DEFAULT_KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "rk_",
    "AIza",
    "ghp_",
    "gho_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "hf_",
];

const KEY_MIN_TAIL: usize = 12;

/// A configured redactor.
#[derive(Debug, Clone)]
pub struct Redactor {
    key_prefixes: Option<Vec<String>>,
    emails: bool,
    phones: bool,
    literals: Vec<String>,
}

impl Redactor {
    pub fn new(s: &CaptureSettings) -> Self {
        let key_prefixes = s.redact_api_keys.then(|| {
            if s.key_prefixes.is_empty() {
                DEFAULT_KEY_PREFIXES
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect()
            } else {
                s.key_prefixes
                    .iter()
                    .filter(|p| !p.is_empty())
                    .cloned()
                    .collect()
            }
        });
        Redactor {
            key_prefixes,
            emails: s.redact_emails,
            phones: s.redact_phones,
            literals: s
                .redact_literals
                .iter()
                .filter(|l| !l.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// Redacts one string.
    pub fn text(&self, input: &str) -> String {
        let mut s = input.to_owned();
        for lit in &self.literals {
            if s.contains(lit.as_str()) {
                s = s.replace(lit.as_str(), LITERAL_MARK);
            }
        }
        if let Some(prefixes) = &self.key_prefixes {
            s = redact_keys(&s, prefixes);
        }
        if self.emails && s.contains('@') {
            s = redact_emails(&s);
        }
        if self.phones {
            s = redact_phones(&s);
        }
        s
    }

    /// Redacts every string of a JSON value in place (object keys are kept).
    pub fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                let r = self.text(s);
                if r != *s {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(m) => m.values_mut().for_each(|x| self.value(x)),
            _ => {}
        }
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn redact_keys(s: &str, prefixes: &[String]) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || chars.get(i - 1).is_none_or(|c| !is_key_char(*c));
        let mut matched = None;
        if boundary {
            for p in prefixes {
                let pc: Vec<char> = p.chars().collect();
                if chars.get(i..i + pc.len()) == Some(pc.as_slice()) {
                    let mut j = i + pc.len();
                    while chars.get(j).is_some_and(|c| is_key_char(*c)) {
                        j += 1;
                    }
                    if j - i - pc.len() >= KEY_MIN_TAIL {
                        matched = Some(j);
                        break;
                    }
                }
            }
        }
        match matched {
            Some(end) => {
                out.push_str(KEY_MARK);
                i = end;
            }
            None => {
                if let Some(c) = chars.get(i) {
                    out.push(*c);
                }
                i += 1;
            }
        }
    }
    out
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

fn redact_emails(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut emitted = 0; // chars[..emitted] are in `out`
    let mut i = 0;
    while i < chars.len() {
        if chars.get(i) != Some(&'@') {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > emitted && chars.get(start - 1).is_some_and(|c| is_local_char(*c)) {
            start -= 1;
        }
        let mut end = i + 1;
        while chars.get(end).is_some_and(|c| is_domain_char(*c)) {
            end += 1;
        }
        // Trailing dots end a sentence, not the domain.
        while end > i + 1 && chars.get(end - 1) == Some(&'.') {
            end -= 1;
        }
        let domain: String = chars.get(i + 1..end).unwrap_or(&[]).iter().collect();
        let tld_ok = domain.rsplit_once('.').is_some_and(|(head, tld)| {
            !head.is_empty() && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
        });
        if start < i && tld_ok {
            out.extend(chars.get(emitted..start).unwrap_or(&[]));
            out.push_str(EMAIL_MARK);
            emitted = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.extend(chars.get(emitted..).unwrap_or(&[]));
    out
}

fn redact_phones(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut emitted = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars.get(i).copied().unwrap_or(' ');
        let prev_ok = i == 0 || chars.get(i - 1).is_none_or(|p| !p.is_alphanumeric());
        let starts = prev_ok && (c.is_ascii_digit() || c == '+' || c == '(');
        if !starts {
            i += 1;
            continue;
        }
        let plus = c == '+';
        let mut j = if plus { i + 1 } else { i };
        let mut digits = 0;
        let mut seps = 0;
        let mut last_digit_end = j;
        let mut prev_sep = plus;
        while let Some(&d) = chars.get(j) {
            if d.is_ascii_digit() {
                digits += 1;
                prev_sep = false;
                last_digit_end = j + 1;
            } else if matches!(d, ' ' | '-' | '.' | '(' | ')') {
                // `(` may open and `)` close a group next to a space; two plain
                // separators in a row end the number.
                if prev_sep
                    && !matches!(d, '(' | ')')
                    && !matches!(chars.get(j - 1), Some('(' | ')'))
                {
                    break;
                }
                seps += 1;
                prev_sep = true;
            } else {
                break;
            }
            j += 1;
        }
        let next_ok = chars
            .get(last_digit_end)
            .is_none_or(|n| !n.is_alphanumeric());
        if (9..=15).contains(&digits) && (plus || seps > 0) && next_ok {
            out.extend(chars.get(emitted..i).unwrap_or(&[]));
            out.push_str(PHONE_MARK);
            emitted = last_digit_end;
            i = last_digit_end;
        } else {
            // Skip the whole run: a long digit string is not re-scanned from its middle.
            i = last_digit_end.max(i + 1);
        }
    }
    out.extend(chars.get(emitted..).unwrap_or(&[]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(&CaptureSettings::default())
    }

    #[test]
    fn test_api_keys() {
        let r = r();
        assert_eq!(
            r.text("key sk-abcdEFGH1234567890xyz and AIzaSyA1234567890abcdef."),
            "key [REDACTED_KEY] and [REDACTED_KEY]."
        );
        assert_eq!(r.text("sk-short"), "sk-short");
        assert_eq!(r.text("task-abcdefghijklmnop"), "task-abcdefghijklmnop");
        assert_eq!(
            r.text("Bearer sk-tb1234567890-secretsecretsecret"),
            "Bearer [REDACTED_KEY]"
        );
    }

    #[test]
    fn test_emails() {
        let r = r();
        assert_eq!(
            r.text("write to jane.doe+x@example.co.uk. or bob@host"),
            "write to [REDACTED_EMAIL]. or bob@host"
        );
        assert_eq!(r.text("@mention a@b.c"), "@mention a@b.c");
        assert_eq!(r.text("ünï ä@x.io"), "ünï ä@x.io");
    }

    #[test]
    fn test_phones() {
        let r = r();
        assert_eq!(
            r.text("call +1 415 555 0100 now"),
            "call [REDACTED_PHONE] now"
        );
        assert_eq!(r.text("call (415) 555-0100."), "call [REDACTED_PHONE].");
        assert_eq!(r.text("+4915112345678"), PHONE_MARK);
        // Plain integers (timestamps, ids) and short numbers stay.
        assert_eq!(r.text("ts 1700000000123"), "ts 1700000000123");
        assert_eq!(
            r.text("version 1.2.3 and 2024-01-01"),
            "version 1.2.3 and 2024-01-01"
        );
        assert_eq!(r.text("id abc123456789"), "id abc123456789");
    }

    #[test]
    fn test_literals_and_switches() {
        let s = CaptureSettings {
            redact_emails: false,
            redact_phones: false,
            redact_api_keys: true,
            key_prefixes: vec!["tb_".into()],
            redact_literals: vec!["corp.internal".into()],
            ..CaptureSettings::default()
        };
        let r = Redactor::new(&s);
        assert_eq!(
            r.text("a@b.com tb_123456789012345 sk-123456789012345 at corp.internal"),
            "a@b.com [REDACTED_KEY] sk-123456789012345 at [REDACTED]"
        );
    }

    #[test]
    fn test_value_walks_every_string() {
        let mut v = serde_json::json!({"messages": [{"role": "user",
            "content": [{"type": "text", "text": "me@example.com"}]}], "n": 1});
        r().value(&mut v);
        assert_eq!(v["messages"][0]["content"][0]["text"], EMAIL_MARK);
        assert_eq!(v["messages"][0]["role"], "user");
    }
}
