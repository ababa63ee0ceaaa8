//! Validation failures as GitLab reports them: per-attribute messages (`name` → `can't be blank`)
//! that render either as full messages (`Name can't be blank`) in Ruby array text, or keyed by
//! attribute, in the order GitLab's model validators run.

use std::fmt;

/// One or more failed validations of a single record, in validator order.
///
/// Invariant: never empty; the only constructors take at least one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors {
    failures: Vec<(&'static str, String)>,
}

/// Collects failures while a record is validated.
#[derive(Debug, Default)]
pub struct Validator {
    failures: Vec<(&'static str, String)>,
}

impl Validator {
    pub fn new() -> Validator {
        Validator::default()
    }

    /// Records that `attribute` failed with `message` (`"can't be blank"`).
    pub fn fail(&mut self, attribute: &'static str, message: impl Into<String>) {
        self.failures.push((attribute, message.into()));
    }

    /// Adds every failure of `other`, keeping their order.
    pub fn extend(&mut self, other: ValidationErrors) {
        self.failures.extend(other.failures);
    }

    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                failures: self.failures,
            })
        }
    }
}

impl ValidationErrors {
    /// A single failed validation.
    pub fn single(attribute: &'static str, message: impl Into<String>) -> ValidationErrors {
        ValidationErrors {
            failures: vec![(attribute, message.into())],
        }
    }

    /// Full messages as Rails builds them: the humanized attribute, a space, the message.
    pub fn full_messages(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(attribute, message)| format!("{} {message}", humanize(attribute)))
            .collect()
    }

    /// Failures grouped by attribute, in first-seen order (GitLab's `{"name":["..."]}` shape).
    pub fn by_attribute(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut grouped: Vec<(&'static str, Vec<String>)> = Vec::new();
        for (attribute, message) in &self.failures {
            match grouped.iter_mut().find(|(name, _)| name == attribute) {
                Some((_, messages)) => messages.push(message.clone()),
                None => grouped.push((attribute, vec![message.clone()])),
            }
        }
        grouped
    }

    /// The full messages formatted like Ruby's `Array#inspect`, which is how GitLab interpolates
    /// model errors into `400 Bad request - ["Name can't be blank"]`.
    pub fn ruby_inspect(&self) -> String {
        ruby_array_inspect(&self.full_messages())
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_messages().join(", "))
    }
}

impl std::error::Error for ValidationErrors {}

/// Ruby's `Array#inspect` of an array of strings: `["a", "b \"c\""]`.
pub fn ruby_array_inspect(messages: &[String]) -> String {
    let items: Vec<String> = messages.iter().map(|m| ruby_string_inspect(m)).collect();
    format!("[{}]", items.join(", "))
}

/// Rails' `humanize`: `client_cert` → `Client cert`.
fn humanize(attribute: &str) -> String {
    let spaced = attribute.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Ruby's `String#inspect` for the characters that can appear in messages.
fn ruby_string_inspect(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_failures_is_ok() {
        assert_eq!(Validator::new().finish(), Ok(()));
    }

    #[test]
    fn failures_render_as_ruby_array_text() {
        let mut validator = Validator::new();
        validator.fail("name", "can't be blank");
        validator.fail("name", "can contain only '-'");
        let errors = validator.finish().unwrap_err();
        assert_eq!(
            errors.ruby_inspect(),
            r#"["Name can't be blank", "Name can contain only '-'"]"#
        );
    }

    #[test]
    fn attributes_are_humanized() {
        let errors = ValidationErrors::single("tls_host", "must be a valid hostname!");
        assert_eq!(
            errors.full_messages(),
            vec!["Tls host must be a valid hostname!"]
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(
            ruby_array_inspect(&[r#"a "b" \c"#.to_owned()]),
            r#"["a \"b\" \\c"]"#
        );
    }

    #[test]
    fn failures_group_by_attribute_in_order() {
        let mut validator = Validator::new();
        validator.fail("path", "is bad");
        validator.fail("name", "is bad");
        validator.fail("path", "is long");
        let grouped = validator.finish().unwrap_err().by_attribute();
        assert_eq!(
            grouped,
            vec![
                ("path", vec!["is bad".to_owned(), "is long".to_owned()]),
                ("name", vec!["is bad".to_owned()])
            ]
        );
    }
}
