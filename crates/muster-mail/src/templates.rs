//! Mail templates: plain text and HTML, compiled in, each overridable by a file of the same
//! name in a directory (`MUSTER_MAIL_TEMPLATES_DIR`).
//!
//! A template's text file starts with a `Subject: …` line and a blank line; the rest is the
//! body. `{{name}}` is replaced by the value of `name` (HTML-escaped in the HTML body); an
//! unknown name is left as it is, so a typo shows in the mail instead of vanishing.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The kinds of mail muster sends.
pub mod kinds {
    pub const TEST: &str = "test";
    pub const PASSWORD_RESET: &str = "password_reset";
    pub const PASSWORD_CHANGED: &str = "password_changed";
    pub const INVITATION: &str = "invitation";
    pub const SIGNUP_CONFIRMATION: &str = "signup_confirmation";
    pub const SIGNUP_REFUSED: &str = "signup_refused";
    pub const SIGNUP_AWAITING_APPROVAL: &str = "signup_awaiting_approval";
    pub const SIGNUP_APPROVED: &str = "signup_approved";
    pub const SIGNUP_REJECTED: &str = "signup_rejected";
}

const BUILT_IN: &[(&str, &str, &str)] = &[
    (
        kinds::TEST,
        include_str!("templates/test.txt"),
        include_str!("templates/test.html"),
    ),
    (
        kinds::PASSWORD_RESET,
        include_str!("templates/password_reset.txt"),
        include_str!("templates/password_reset.html"),
    ),
    (
        kinds::PASSWORD_CHANGED,
        include_str!("templates/password_changed.txt"),
        include_str!("templates/password_changed.html"),
    ),
    (
        kinds::INVITATION,
        include_str!("templates/invitation.txt"),
        include_str!("templates/invitation.html"),
    ),
    (
        kinds::SIGNUP_CONFIRMATION,
        include_str!("templates/signup_confirmation.txt"),
        include_str!("templates/signup_confirmation.html"),
    ),
    (
        kinds::SIGNUP_REFUSED,
        include_str!("templates/signup_refused.txt"),
        include_str!("templates/signup_refused.html"),
    ),
    (
        kinds::SIGNUP_AWAITING_APPROVAL,
        include_str!("templates/signup_awaiting_approval.txt"),
        include_str!("templates/signup_awaiting_approval.html"),
    ),
    (
        kinds::SIGNUP_APPROVED,
        include_str!("templates/signup_approved.txt"),
        include_str!("templates/signup_approved.html"),
    ),
    (
        kinds::SIGNUP_REJECTED,
        include_str!("templates/signup_rejected.txt"),
        include_str!("templates/signup_rejected.html"),
    ),
];

/// A rendered message. `link` is the one-time link it carries, if any (kept so that a
/// super-user can read a pending invitation's link when no mail can be sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("no mail template {0:?}")]
    Unknown(String),
    #[error("reading mail template {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("mail template {0} must start with a \"Subject: \" line and a blank line")]
    NoSubject(String),
}

/// The templates in force.
#[derive(Debug, Clone)]
pub struct Templates {
    /// kind, text, HTML.
    entries: Vec<(String, String, String)>,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            entries: BUILT_IN
                .iter()
                .map(|(k, t, h)| ((*k).to_owned(), (*t).to_owned(), (*h).to_owned()))
                .collect(),
        }
    }
}

impl Templates {
    /// The built-in templates, each replaced by `<dir>/<kind>.txt` / `<kind>.html` where such a
    /// file exists. Every template is checked now, so a broken one stops the start.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut t = Self::default();
        if let Some(dir) = dir {
            for (kind, text, html) in &mut t.entries {
                for (ext, slot) in [("txt", &mut *text), ("html", &mut *html)] {
                    let path = dir.join(format!("{kind}.{ext}"));
                    match std::fs::read_to_string(&path) {
                        Ok(s) => *slot = s,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(cause) => return Err(TemplateError::Read { path, cause }),
                    }
                }
            }
        }
        for (kind, text, _) in &t.entries {
            split_subject(text).ok_or_else(|| TemplateError::NoSubject(format!("{kind}.txt")))?;
        }
        Ok(t)
    }

    /// Renders `kind` with `vars`; `link` is recorded in the result.
    pub fn render(&self, kind: &str, vars: &[(&str, &str)], link: Option<&str>) -> Result<Rendered, TemplateError> {
        let (_, text, html) = self
            .entries
            .iter()
            .find(|(k, _, _)| k == kind)
            .ok_or_else(|| TemplateError::Unknown(kind.to_owned()))?;
        let (subject, body) = split_subject(text).ok_or_else(|| TemplateError::NoSubject(format!("{kind}.txt")))?;
        Ok(Rendered {
            // A value with a line break must not add headers.
            subject: fill(subject, vars, |v| v.replace(['\r', '\n'], " ")),
            text: fill(body, vars, str::to_owned),
            html: fill(html, vars, escape_html),
            link: link.map(str::to_owned),
        })
    }
}

/// The subject line and the body after the blank line.
fn split_subject(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("Subject:")?;
    let (subject, body) = rest.split_once('\n')?;
    let body = body.strip_prefix("\r\n").or_else(|| body.strip_prefix('\n'))?;
    Some((subject.trim(), body))
}

fn fill(template: &str, vars: &[(&str, &str)], escape: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(&escape(v)),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_values_escaped_in_html_and_unknown_names_kept() {
        let t = Templates::default();
        let r = t
            .render(
                kinds::PASSWORD_RESET,
                &[
                    ("username", "<b>ann</b>"),
                    ("link", "https://x/r?t=a&b"),
                    ("expires", "soon"),
                ],
                Some("https://x/r?t=a&b"),
            )
            .expect("renders");
        assert_eq!(r.subject, "Reset your password");
        assert!(r.text.contains("Hello <b>ann</b>,"));
        assert!(r.text.contains("https://x/r?t=a&b\n"));
        assert!(r.html.contains("Hello &lt;b&gt;ann&lt;/b&gt;,"));
        assert!(r.html.contains("href=\"https://x/r?t=a&amp;b\""));
        assert_eq!(
            fill("a {{ nope }} {{x}}", &[("x", "1")], str::to_owned),
            "a {{ nope }} 1"
        );
        assert_eq!(fill("a {{x", &[("x", "1")], str::to_owned), "a {{x");
    }

    #[test]
    fn a_directory_overrides_templates_and_a_broken_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("muster-mail-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("test.txt"), "Subject: Hi {{public_url}}\n\nBody\n").expect("write");
        let t = Templates::load(Some(&dir)).expect("loads");
        let r = t
            .render(kinds::TEST, &[("public_url", "x\r\nBcc: y")], None)
            .expect("renders");
        assert_eq!(r.subject, "Hi x  Bcc: y");
        assert_eq!(r.text, "Body\n");
        std::fs::write(dir.join("invitation.txt"), "no subject").expect("write");
        assert!(matches!(Templates::load(Some(&dir)), Err(TemplateError::NoSubject(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
