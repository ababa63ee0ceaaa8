//! Where callers present credentials, for both edges: the header names (gRPC metadata keys are
//! the same, lowercase) and how a personal access token is picked out of them. The edges read
//! the values from their own request types; the rules live here once.

/// GitLab's `PRIVATE-TOKEN` header: a personal access token.
pub const PRIVATE_TOKEN_HEADER: &str = "private-token";
/// `Authorization: Bearer <personal access token>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// GitLab's `Sudo` header: the id or username of the user an administrator acts as.
pub const SUDO_HEADER: &str = "sudo";
/// The agent server's JWT on its internal calls (`Gitlab-Kas-Api-Request`).
pub const KAS_JWT_HEADER: &str = "gitlab-kas-api-request";
/// The agent's token on the agent server's internal calls (`Gitlab-Agent-Api-Request`).
pub const AGENT_TOKEN_HEADER: &str = "gitlab-agent-api-request";

/// The personal access token in `PRIVATE-TOKEN`, or else in `Authorization: Bearer`, trimmed.
/// A `PRIVATE-TOKEN` header that is present wins even when blank. `header` returns a header's
/// (or metadata entry's) value when it is present and printable.
pub fn presented_token<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    header(PRIVATE_TOKEN_HEADER)
        .or_else(|| {
            header(AUTHORIZATION_HEADER).and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
        })
        .map(|token| token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_from(headers: &[(&'static str, &'static str)]) -> Option<String> {
        presented_token(|name| {
            headers
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        })
    }

    #[test]
    fn private_token_header_wins_over_a_bearer_token_even_when_blank() {
        let both = [
            (PRIVATE_TOKEN_HEADER, " glpat-private "),
            (AUTHORIZATION_HEADER, "Bearer glpat-bearer"),
        ];
        let blank = [
            (PRIVATE_TOKEN_HEADER, "  "),
            (AUTHORIZATION_HEADER, "Bearer glpat-bearer"),
        ];

        assert_eq!(token_from(&both).as_deref(), Some("glpat-private"));
        assert_eq!(token_from(&blank).as_deref(), Some(""));
    }

    #[test]
    fn bearer_token_is_read_with_either_case_of_the_scheme_and_nothing_else_is() {
        assert_eq!(
            token_from(&[(AUTHORIZATION_HEADER, "bearer glpat-x ")]).as_deref(),
            Some("glpat-x")
        );
        assert_eq!(token_from(&[(AUTHORIZATION_HEADER, "Basic Zm9v")]), None);
        assert_eq!(token_from(&[(SUDO_HEADER, "root")]), None);
    }
}
