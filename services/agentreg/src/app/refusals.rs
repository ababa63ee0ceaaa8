//! Why the app refuses a request, as typed values carrying their data. Each type's `Display` is
//! GitLab's message for it, and is the only place that text is written: both edges render it
//! through [`super::Error`]'s `Display`, REST in GitLab's body, gRPC as the status message.

use agentreg_domain::entities::RevocationReasonTooLong;
use agentreg_domain::tokens::{RotationRefused, TokenLimitReached};

/// A parameter refused before the operation runs, as GitLab's API layer (Grape) refuses it:
/// REST answers `400 {"error": <message>}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// Required parameters are absent: `email is missing, name is missing`. Never empty.
    #[error("{}", missing_message(.0))]
    Missing(Vec<&'static str>),
    /// A value of the wrong type or format: `expires_at is invalid`.
    #[error("{0} is invalid")]
    Invalid(&'static str),
    /// A value outside the allowed ones: `status does not have a valid value`.
    #[error("{0} does not have a valid value")]
    UnknownValue(&'static str),
    /// A value the parameter excludes: `per_page has a value not allowed`.
    #[error("{0} has a value not allowed")]
    ExcludedValue(&'static str),
    /// Neither of two alternatives is present:
    /// `name, path are missing, at least one parameter must be provided`.
    #[error("{}, {} are missing, at least one parameter must be provided", .0[0], .0[1])]
    AtLeastOneOf([&'static str; 2]),
    /// Two parameters that exclude each other are both present:
    /// `page, keyset are mutually exclusive`.
    #[error("{}, {} are mutually exclusive", .0[0], .0[1])]
    MutuallyExclusive([&'static str; 2]),
    /// A revocation reason over its limit: `reason is too long (maximum is 255 characters)`.
    #[error("{0}")]
    ReasonTooLong(RevocationReasonTooLong),
}

/// An operation the current state does not allow: REST answers
/// `400 {"message": "400 Bad request - <reason>"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The agent already has its maximum of active tokens.
    #[error("{0}")]
    TokenLimitReached(TokenLimitReached),
    /// The token is rotating, or another of the agent's tokens is. Never
    /// [`RotationRefused::NotFound`], which is `Error::RecordNotFound`.
    #[error("{0}")]
    Rotation(RotationRefused),
    /// The agent already has its one URL configuration.
    #[error("URL configuration already exists for this agent")]
    UrlConfigurationExists,
}

/// A unique value is already taken: REST answers `409 {"message": <message>}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("Username has already been taken")]
    UsernameTaken,
    #[error("Email has already been taken")]
    EmailTaken,
    #[error("Member already exists")]
    AlreadyMember,
}

/// Grape's message for absent parameters, one clause per parameter in the order given.
fn missing_message(parameters: &[&'static str]) -> String {
    parameters
        .iter()
        .map(|parameter| format!("{parameter} is missing"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_errors_render_grape_messages() {
        let cases = [
            (
                ParameterError::Missing(vec!["email", "name"]),
                "email is missing, name is missing",
            ),
            (
                ParameterError::Invalid("expires_at"),
                "expires_at is invalid",
            ),
            (
                ParameterError::UnknownValue("status"),
                "status does not have a valid value",
            ),
            (
                ParameterError::ExcludedValue("per_page"),
                "per_page has a value not allowed",
            ),
            (
                ParameterError::AtLeastOneOf(["user_id", "username"]),
                "user_id, username are missing, at least one parameter must be provided",
            ),
            (
                ParameterError::ReasonTooLong(RevocationReasonTooLong),
                "reason is too long (maximum is 255 characters)",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn refusals_and_conflicts_render_gitlab_messages() {
        assert_eq!(
            Refusal::TokenLimitReached(TokenLimitReached { active: 2 }).to_string(),
            "An agent can have only two active tokens at a time"
        );
        assert_eq!(
            Refusal::Rotation(RotationRefused::RotationInProgress).to_string(),
            "An agent can rotate only one token at a time"
        );
        assert_eq!(
            Refusal::UrlConfigurationExists.to_string(),
            "URL configuration already exists for this agent"
        );
        assert_eq!(Conflict::AlreadyMember.to_string(), "Member already exists");
    }
}
