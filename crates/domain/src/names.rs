//! Names and short texts with GitLab's validation rules: agent names, token names and
//! descriptions, project names and paths, usernames and e-mail addresses.

use crate::validation::{ValidationErrors, Validator};

/// The longest agent name GitLab accepts.
pub const AGENT_NAME_MAX_CHARS: usize = 63;
/// The longest agent token name.
pub const TOKEN_NAME_MAX_CHARS: usize = 255;
/// The longest agent token description.
pub const TOKEN_DESCRIPTION_MAX_CHARS: usize = 1024;
/// The longest project name or path, username, display name or e-mail.
pub const IDENTITY_TEXT_MAX_CHARS: usize = 255;
/// GitLab's `Project` validates `description` to at most 2,000 characters.
pub const PROJECT_DESCRIPTION_MAX_CHARS: usize = 2_000;

const AGENT_NAME_FORMAT: &str =
    "can contain only lowercase letters, digits, and '-', but cannot start or end with '-'";
const PROJECT_NAME_FORMAT: &str = "can contain only letters, digits, emoji, '_', '.', '+', dashes, or spaces. It must start with a letter, digit, emoji, or '_'.";
const PATH_FORMAT: &str = "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end in '.atom'";

/// A Kubernetes agent's name: `\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\z`, 1 to 63 characters.
/// Uniqueness within a project is the store's invariant, not this type's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(String);

impl AgentName {
    /// Validates like GitLab's `Clusters::Agent`: presence, length, then format, in that order,
    /// reporting every failure. An absent value is passed as `""`.
    pub fn parse(name: &str) -> Result<AgentName, ValidationErrors> {
        let mut validator = Validator::new();
        if name.trim().is_empty() {
            validator.fail("name", "can't be blank");
        }
        if name.chars().count() > AGENT_NAME_MAX_CHARS {
            validator.fail(
                "name",
                format!("is too long (maximum is {AGENT_NAME_MAX_CHARS} characters)"),
            );
        }
        if !is_dns_label(name) {
            validator.fail("name", AGENT_NAME_FORMAT);
        }
        validator.finish()?;
        Ok(AgentName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent token's name: present, at most 255 characters; need not be unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(name: &str) -> Result<TokenName, ValidationErrors> {
        let mut validator = Validator::new();
        if name.trim().is_empty() {
            validator.fail("name", "can't be blank");
        }
        check_max_chars(&mut validator, "name", name, TOKEN_NAME_MAX_CHARS);
        validator.finish()?;
        Ok(TokenName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent token's optional description: at most 1024 characters. An explicit `""` is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDescription(String);

impl TokenDescription {
    pub fn parse(description: &str) -> Result<TokenDescription, ValidationErrors> {
        let mut validator = Validator::new();
        check_max_chars(
            &mut validator,
            "description",
            description,
            TOKEN_DESCRIPTION_MAX_CHARS,
        );
        validator.finish()?;
        Ok(TokenDescription(description.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A project's display name and its URL path, validated together as GitLab's project create
/// does (either may be derived from the other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectNaming {
    name: String,
    path: String,
}

impl ProjectNaming {
    /// `name` and `path` as sent; a missing path is derived from the name (`My App` → `my-app`),
    /// and a missing name is the path.
    pub fn parse(
        name: Option<&str>,
        path: Option<&str>,
    ) -> Result<ProjectNaming, ValidationErrors> {
        let name = name.map(str::to_owned);
        let path = path.map(str::to_owned);
        let (name, path) = match (name, path) {
            (Some(name), Some(path)) => (name, path),
            (Some(name), None) => {
                let path = parameterize(&name);
                (name, path)
            }
            (None, Some(path)) => (path.clone(), path),
            (None, None) => (String::new(), String::new()),
        };
        let mut validator = Validator::new();
        if name.trim().is_empty() {
            validator.fail("name", "can't be blank");
        }
        check_max_chars(&mut validator, "name", &name, IDENTITY_TEXT_MAX_CHARS);
        if !name.is_empty() && !is_project_name(&name) {
            validator.fail("name", PROJECT_NAME_FORMAT);
        }
        if path.is_empty() {
            validator.fail("path", "can't be blank");
        }
        check_max_chars(&mut validator, "path", &path, IDENTITY_TEXT_MAX_CHARS);
        if !path.is_empty() && !is_path(&path) {
            validator.fail("path", PATH_FORMAT);
        }
        validator.finish()?;
        Ok(ProjectNaming { name, path })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A user's identity fields, validated together as GitLab's user create does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    username: String,
    name: String,
    email: String,
}

impl UserIdentity {
    pub fn parse(
        username: &str,
        name: &str,
        email: &str,
    ) -> Result<UserIdentity, ValidationErrors> {
        let mut validator = Validator::new();
        if username.is_empty() {
            validator.fail("username", "can't be blank");
        } else if !is_path(username) {
            validator.fail("username", PATH_FORMAT);
        }
        check_max_chars(
            &mut validator,
            "username",
            username,
            IDENTITY_TEXT_MAX_CHARS,
        );
        if name.trim().is_empty() {
            validator.fail("name", "can't be blank");
        }
        check_max_chars(&mut validator, "name", name, IDENTITY_TEXT_MAX_CHARS);
        if !is_email(email) {
            validator.fail("email", "is invalid");
        }
        check_max_chars(&mut validator, "email", email, IDENTITY_TEXT_MAX_CHARS);
        validator.finish()?;
        Ok(UserIdentity {
            username: username.to_owned(),
            name: name.to_owned(),
            email: email.to_owned(),
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn email(&self) -> &str {
        &self.email
    }
}

/// A project's description, at most [`PROJECT_DESCRIPTION_MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectDescription(String);

impl ProjectDescription {
    pub fn parse(description: &str) -> Result<ProjectDescription, ValidationErrors> {
        let mut validator = Validator::new();
        check_max_chars(
            &mut validator,
            "description",
            description,
            PROJECT_DESCRIPTION_MAX_CHARS,
        );
        validator.finish()?;
        Ok(ProjectDescription(description.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_max_chars(validator: &mut Validator, attribute: &'static str, value: &str, max: usize) {
    if value.chars().count() > max {
        validator.fail(
            attribute,
            format!("is too long (maximum is {max} characters)"),
        );
    }
}

/// `\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\z`
fn is_dns_label(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !name.is_empty() && name.chars().all(allowed) && !name.starts_with('-') && !name.ends_with('-')
}

/// GitLab's project name rule: starts with a letter, digit, emoji or `_`; then letters, digits,
/// emoji, `_`, `.`, `+`, dashes or spaces.
fn is_project_name(name: &str) -> bool {
    let is_emoji = |c: char| ('\u{00A9}'..='\u{1f9ff}').contains(&c) && !c.is_alphanumeric();
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphanumeric() || first == '_' || is_emoji(first))
        && chars.all(|c| {
            c.is_alphanumeric()
                || is_emoji(c)
                || matches!(c, '_' | '.' | '+' | '-' | ' ' | '\u{2010}'..='\u{2015}')
        })
}

/// GitLab's path rule for projects and namespaces.
fn is_path(path: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    !path.is_empty()
        && path.chars().all(allowed)
        && !path.starts_with('-')
        && !path.ends_with(".git")
        && !path.ends_with(".atom")
}

fn is_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Rails' `parameterize`: lower-case, every run of other characters becomes one `-`.
fn parameterize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_descriptions_are_at_most_2000_characters() {
        assert!(ProjectDescription::parse(&"é".repeat(2_000)).is_ok());
        let errors = ProjectDescription::parse(&"x".repeat(2_001)).unwrap_err();
        assert_eq!(
            errors.full_messages(),
            vec!["Description is too long (maximum is 2000 characters)"]
        );
    }

    fn messages(result: Result<impl std::fmt::Debug, ValidationErrors>) -> Vec<String> {
        result.unwrap_err().full_messages()
    }

    #[test]
    fn dns_label_agent_name_is_accepted() {
        assert_eq!(AgentName::parse("agent-1").unwrap().as_str(), "agent-1");
        assert!(AgentName::parse("a").is_ok());
    }

    #[test]
    fn blank_agent_name_reports_blank_and_format() {
        assert_eq!(
            messages(AgentName::parse("")),
            vec![
                "Name can't be blank".to_owned(),
                format!("Name {AGENT_NAME_FORMAT}")
            ]
        );
    }

    #[test]
    fn agent_name_with_symbols_is_rejected_with_gitlab_text() {
        assert_eq!(
            messages(AgentName::parse("#4^x")),
            vec![
                "Name can contain only lowercase letters, digits, and '-', but cannot start or end with '-'"
            ]
        );
    }

    #[test]
    fn agent_name_cannot_start_or_end_with_dash_or_use_uppercase() {
        assert!(AgentName::parse("-a").is_err());
        assert!(AgentName::parse("a-").is_err());
        assert!(AgentName::parse("Agent").is_err());
    }

    #[test]
    fn agent_name_of_63_chars_is_accepted_and_64_rejected() {
        assert!(AgentName::parse(&"a".repeat(63)).is_ok());
        assert_eq!(
            messages(AgentName::parse(&"a".repeat(64))),
            vec!["Name is too long (maximum is 63 characters)"]
        );
    }

    #[test]
    fn token_name_is_required_and_bounded() {
        assert!(TokenName::parse("ci").is_ok());
        assert_eq!(messages(TokenName::parse("")), vec!["Name can't be blank"]);
        assert_eq!(
            messages(TokenName::parse(&"x".repeat(256))),
            vec!["Name is too long (maximum is 255 characters)"]
        );
    }

    #[test]
    fn token_description_is_bounded_and_may_be_empty() {
        assert!(TokenDescription::parse("").is_ok());
        assert!(TokenDescription::parse(&"d".repeat(1024)).is_ok());
        assert_eq!(
            messages(TokenDescription::parse(&"d".repeat(1025))),
            vec!["Description is too long (maximum is 1024 characters)"]
        );
    }

    #[test]
    fn project_path_is_derived_from_name() {
        let naming = ProjectNaming::parse(Some("My Test App"), None).unwrap();
        assert_eq!(naming.name(), "My Test App");
        assert_eq!(naming.path(), "my-test-app");
    }

    #[test]
    fn project_name_defaults_to_path() {
        let naming = ProjectNaming::parse(None, Some("infra")).unwrap();
        assert_eq!(naming.name(), "infra");
    }

    #[test]
    fn project_path_ending_in_git_is_rejected() {
        let errors = ProjectNaming::parse(Some("x"), Some("x.git")).unwrap_err();
        assert_eq!(errors.by_attribute()[0].0, "path");
    }

    #[test]
    fn project_name_must_start_with_letter_digit_or_underscore() {
        assert!(ProjectNaming::parse(Some("-x"), Some("x")).is_err());
        assert!(ProjectNaming::parse(Some("_x y.z+w"), Some("x")).is_ok());
    }

    #[test]
    fn user_identity_checks_every_field() {
        assert!(UserIdentity::parse("alice", "Alice", "alice@example.com").is_ok());
        let errors = UserIdentity::parse("", " ", "nope").unwrap_err();
        let attributes: Vec<_> = errors.by_attribute().into_iter().map(|(a, _)| a).collect();
        assert_eq!(attributes, vec!["username", "name", "email"]);
    }
}
