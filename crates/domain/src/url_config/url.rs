//! The URI grammar of a URL configuration: the agent's `grpc`/`grpcs` URL (GitLab's
//! `validate_url` rules) and the bare host of `tls_host` (GitLab's `HostValidator`).

use std::net::Ipv6Addr;

use super::{UrlConfigViolation, is_longer_than};

// Limits of GitLab's database columns, which agentreg enforces as validation errors.
const MAX_URL_CHARS: usize = 2048;
const MAX_TLS_HOST_CHARS: usize = 2048;

pub(super) fn url_violation(url: &str) -> Option<UrlConfigViolation> {
    if is_longer_than(url, MAX_URL_CHARS) {
        Some(UrlConfigViolation::UrlTooLong)
    } else if is_agent_url(url) {
        None
    } else {
        Some(UrlConfigViolation::UrlInvalid)
    }
}

pub(super) fn tls_host_violation(tls_host: &str) -> Option<UrlConfigViolation> {
    if is_longer_than(tls_host, MAX_TLS_HOST_CHARS) {
        Some(UrlConfigViolation::TlsHostTooLong)
    } else if is_bare_host(tls_host) {
        None
    } else {
        Some(UrlConfigViolation::TlsHostInvalid)
    }
}

/// What the `validate_url` gem accepts with schemes `grpc` and `grpcs`: the whole value is a URI
/// (ASCII only, complete percent escapes), the scheme is exactly `grpc` or `grpcs`, and there is a
/// non-empty host.
fn is_agent_url(value: &str) -> bool {
    let has_agent_scheme = value.starts_with("grpc://") || value.starts_with("grpcs://");
    if !has_agent_scheme || !value.bytes().all(is_uri_byte) || !has_complete_percent_escapes(value)
    {
        return false;
    }
    // Credentials in the URL would be shown to every Developer who reads the configuration,
    // and a percent-escape in the host (`%00`) names no host a resolver would look up.
    ::url::Url::parse(value).is_ok_and(|url| {
        url.username().is_empty()
            && url.password().is_none()
            && url
                .host_str()
                .is_some_and(|host| !host.is_empty() && !host.contains('%'))
    })
}

/// GitLab's `HostValidator`: `URI.parse("http://" + value).host == value`, that is an RFC 3986
/// host (a registered name, an IPv4 address or a bracketed IP literal) with nothing around it.
fn is_bare_host(value: &str) -> bool {
    if let Some(literal) = value
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return literal.parse::<Ipv6Addr>().is_ok() || is_ip_future(literal);
    }
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| is_unreserved(byte) || is_sub_delim(byte) || byte == b'%')
        && has_complete_percent_escapes(value)
}

/// RFC 3986 `IPvFuture`: `v` 1*HEXDIG `.` 1*( unreserved / sub-delims / `:` ).
fn is_ip_future(literal: &str) -> bool {
    let Some(rest) = literal
        .strip_prefix('v')
        .or_else(|| literal.strip_prefix('V'))
    else {
        return false;
    };
    let Some((version, address)) = rest.split_once('.') else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|byte| byte.is_ascii_hexdigit())
        && !address.is_empty()
        && address
            .bytes()
            .all(|byte| is_unreserved(byte) || is_sub_delim(byte) || byte == b':')
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_uri_byte(byte: u8) -> bool {
    is_unreserved(byte)
        || is_sub_delim(byte)
        || matches!(byte, b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@' | b'%')
}

fn has_complete_percent_escapes(value: &str) -> bool {
    let mut bytes = value.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let is_escape = matches!(
                (bytes.next(), bytes.next()),
                (Some(high), Some(low)) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit()
            );
            if !is_escape {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{TestResult, URL, input, messages};
    use super::super::{UrlAuthSpec, UrlConfigInput, UrlConfigSpec};

    // URL

    #[test]
    fn grpc_url_is_accepted_and_kept_as_sent() -> TestResult {
        let spec = UrlConfigSpec::parse(&input(URL))?;
        assert_eq!(spec.url(), URL);
        assert_eq!(spec.ca_cert(), None);
        assert_eq!(spec.tls_host(), None);
        assert!(matches!(spec.auth(), UrlAuthSpec::Jwt));
        Ok(())
    }

    #[test]
    fn grpcs_url_to_localhost_with_port_and_path_is_accepted() -> TestResult {
        for url in [
            "grpcs://localhost:4242",
            "grpcs://10.0.0.1:8443/agent/path?x=1",
            "grpc://[::1]:4242",
            "grpc://agent.example.com/a%20b",
        ] {
            UrlConfigSpec::parse(&input(url))?;
        }
        Ok(())
    }

    #[test]
    fn https_url_is_rejected() {
        assert_eq!(
            messages(&input("https://agent.example.com")),
            ["Url is not a valid URL"]
        );
    }

    #[test]
    fn url_without_scheme_is_rejected() {
        assert_eq!(messages(&input("not.a.url")), ["Url is not a valid URL"]);
    }

    #[test]
    fn empty_url_is_rejected() {
        assert_eq!(messages(&input("")), ["Url is not a valid URL"]);
        assert_eq!(messages(&input("   ")), ["Url is not a valid URL"]);
    }

    #[test]
    fn url_without_host_is_rejected() {
        for url in [
            "grpc://",
            "grpc:agent.example.com",
            "grpc:///path",
            "grpcs://:4242",
        ] {
            assert_eq!(messages(&input(url)), ["Url is not a valid URL"], "{url}");
        }
    }

    #[test]
    fn url_that_is_not_a_whole_uri_is_rejected() {
        for url in [
            " grpc://agent.example.com",
            "grpc://agent.example.com ",
            "grpc://agent example.com",
            "GRPC://agent.example.com",
            "grpc://agént.example.com",
            "grpc://agent.example.com/%zz",
            "grpc://agent.example.com:99999",
        ] {
            assert_eq!(messages(&input(url)), ["Url is not a valid URL"], "{url}");
        }
    }

    #[test]
    fn url_with_credentials_or_an_escaped_host_is_rejected() {
        for url in [
            "grpc://user:pass@agent.example.com:443",
            "grpcs://user@agent.example.com",
            "grpc://agent%00.example.com",
            "grpc://%61gent.example.com",
        ] {
            assert_eq!(messages(&input(url)), ["Url is not a valid URL"], "{url}");
        }
    }

    #[test]
    fn url_of_2048_characters_is_accepted() -> TestResult {
        let url = format!("{URL}/{}", "a".repeat(2048 - URL.len() - 1));
        assert_eq!(url.len(), 2048);
        UrlConfigSpec::parse(&input(&url))?;
        Ok(())
    }

    #[test]
    fn url_over_2048_characters_is_too_long() {
        let url = format!("{URL}/{}", "a".repeat(2048 - URL.len()));
        assert_eq!(
            messages(&input(&url)),
            ["Url is too long (maximum is 2048 characters)"]
        );
        let garbage = "x".repeat(100_000);
        assert_eq!(
            messages(&input(&garbage)),
            ["Url is too long (maximum is 2048 characters)"]
        );
    }

    // tls_host

    #[test]
    fn hostname_tls_host_is_accepted() -> TestResult {
        for tls_host in [
            "host.example.com",
            "example.com",
            "10.1.2.3",
            "[::1]",
            "Host-1.Example",
        ] {
            let spec = UrlConfigSpec::parse(&UrlConfigInput {
                tls_host: Some(tls_host),
                ..input(URL)
            })?;
            assert_eq!(spec.tls_host(), Some(tls_host));
        }
        Ok(())
    }

    #[test]
    fn tls_host_with_scheme_port_path_or_userinfo_is_rejected() {
        for tls_host in [
            "https://exmple.com/path",
            "host:443",
            "host/",
            "user@host",
            "host?query",
            "host#fragment",
            "exa mple.com",
            "[not-an-ip]",
            "hést.example.com",
        ] {
            assert_eq!(
                messages(&UrlConfigInput {
                    tls_host: Some(tls_host),
                    ..input(URL)
                }),
                ["Tls host must be a valid hostname!"],
                "{tls_host}"
            );
        }
    }

    #[test]
    fn blank_tls_host_counts_as_absent() -> TestResult {
        let spec = UrlConfigSpec::parse(&UrlConfigInput {
            tls_host: Some(" \t\n"),
            ..input(URL)
        })?;
        assert_eq!(spec.tls_host(), None);
        Ok(())
    }

    #[test]
    fn tls_host_over_2048_characters_is_too_long() -> TestResult {
        let longest = "a".repeat(2048);
        UrlConfigSpec::parse(&UrlConfigInput {
            tls_host: Some(&longest),
            ..input(URL)
        })?;
        let too_long = "a".repeat(2049);
        assert_eq!(
            messages(&UrlConfigInput {
                tls_host: Some(&too_long),
                ..input(URL)
            }),
            ["Tls host is too long (maximum is 2048 characters)"]
        );
        Ok(())
    }
}
