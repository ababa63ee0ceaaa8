//! Request decoding with GitLab's rules: the caller's token, path ids, and parameters merged
//! from the query string and a JSON or form body, coerced the way Grape coerces them.

use super::{ApiError, MAX_BODY_BYTES, RestState};
use crate::app::agents::UnmodifiedSinceSeconds;
use crate::app::credentials::{
    AGENT_TOKEN_HEADER, AUTHORIZATION_HEADER, KAS_JWT_HEADER, PRIVATE_TOKEN_HEADER, SUDO_HEADER,
    presented_token,
};
use crate::app::pagination::{KeysetRequest, Pagination};
use crate::app::refusals::ParameterError;
use crate::app::{Caller, Credentials, Error, Intent};
use agentreg_domain::ids::ProjectRef;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AsHeaderName, HeaderName};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use secrecy::SecretString;
use serde_json::{Map, Value};

/// The authenticated caller. Extract it first, so that a 401 beats every other error.
pub(crate) struct Authenticated(pub(crate) std::sync::Arc<Caller>);

impl FromRequestParts<RestState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RestState,
    ) -> Result<Self, Self::Rejection> {
        let intent = match parts.method {
            Method::GET | Method::HEAD | Method::OPTIONS => Intent::Read,
            _ => Intent::Write,
        };
        let credentials = Credentials {
            token: personal_token(&parts.headers, parts.uri.query()),
            client: client_address(parts),
            sudo: sudo_identifier(&parts.headers, parts.uri.query()),
        };
        Ok(Authenticated(
            state.app.authenticate(credentials, intent).await?,
        ))
    }
}

/// The peer address of the connection, when the listener recorded it.
pub(crate) struct ClientAddress(pub(crate) Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts)))
    }
}

fn client_address(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<crate::server::Client>()
        .map(|client| client.address)
}

/// The token from `PRIVATE-TOKEN`, `Authorization: Bearer`, or `private_token` in the query.
/// GitLab's `sudo` parameter, or else its `Sudo` header.
fn sudo_identifier(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_query = query.and_then(|query| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(key, _)| key == "sudo")
            .map(|(_, value)| value)
    });
    from_query
        .or_else(|| header_text(headers, &SUDO).map(|value| value.trim().to_owned()))
        .filter(|identifier| !identifier.is_empty())
}

fn personal_token(headers: &HeaderMap, query: Option<&str>) -> Option<SecretString> {
    if let Some(token) = presented_token(|name| match credential_header(name) {
        Some(known) => header_text(headers, known),
        None => header_text(headers, name),
    }) {
        return Some(SecretString::from(token));
    }
    let query = query?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == "private_token")
        .map(|(_, value)| SecretString::from(value))
}

/// A header's value as text, if present and printable. Pass a [`HeaderName`] on hot paths: a
/// lookup by `&str` parses the name on every call.
pub(crate) fn header_text(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The credential headers, parsed once.
pub(crate) static PRIVATE_TOKEN: HeaderName = HeaderName::from_static(PRIVATE_TOKEN_HEADER);
pub(crate) static AUTHORIZATION: HeaderName = HeaderName::from_static(AUTHORIZATION_HEADER);
pub(crate) static SUDO: HeaderName = HeaderName::from_static(SUDO_HEADER);
pub(crate) static KAS_JWT: HeaderName = HeaderName::from_static(KAS_JWT_HEADER);
pub(crate) static AGENT_TOKEN: HeaderName = HeaderName::from_static(AGENT_TOKEN_HEADER);

/// The parsed name of a credential header that [`presented_token`] asks for by name.
fn credential_header(name: &str) -> Option<&'static HeaderName> {
    [&PRIVATE_TOKEN, &AUTHORIZATION]
        .into_iter()
        .find(|known| known.as_str() == name)
}

/// The route's path parameters, percent-decoded.
pub(crate) struct Ids(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(pairs) =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::MalformedPath)?;
        Ok(Ids(pairs))
    }
}

impl Ids {
    /// A parameter as text (`id` may be a path such as `root/test`).
    pub(crate) fn text(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default()
    }

    /// The project reference: a numeric id or a full path.
    pub(crate) fn project(&self) -> ProjectRef {
        ProjectRef::parse(self.text("id"))
    }

    /// An integer parameter, or Grape's `<name> is invalid`.
    pub(crate) fn integer(&self, name: &'static str) -> Result<i64, Error> {
        parse_integer(self.text(name)).ok_or_else(|| Error::invalid(name))
    }

    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// The request's parameters: the query string, overridden by a JSON object or form body.
pub(crate) struct Params {
    values: Map<String, Value>,
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = Map::new();
        if let Some(query) = request.uri().query() {
            merge_form(&mut values, query.as_bytes())?;
        }
        // Most reads come without a body: nothing to read or parse.
        if axum::body::HttpBody::is_end_stream(request.body()) {
            return Ok(Params { values });
        }
        let content_type = header_text(request.headers(), header::CONTENT_TYPE).map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params { values });
        }
        match content_type.as_deref() {
            Some("application/json") | None => {
                let parsed: Value =
                    serde_json::from_slice(&body).map_err(|_| ApiError::MalformedBody)?;
                let Value::Object(object) = parsed else {
                    return Err(ApiError::MalformedBody);
                };
                values.extend(object);
            }
            Some("application/x-www-form-urlencoded") => merge_form(&mut values, &body)?,
            Some(other) => return Err(ApiError::UnsupportedContentType(other.to_owned())),
        }
        Ok(Params { values })
    }
}

impl Params {
    /// A required string: `None` if absent; JSON `null` counts as present and empty, as Grape
    /// lets it through to model validation.
    pub(crate) fn required_text(&self, name: &'static str) -> Result<Option<String>, Error> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(String::new())),
            Some(value) => scalar_text(value)
                .map(Some)
                .ok_or_else(|| Error::invalid(name)),
        }
    }

    /// An optional string: absent and `null` are both `None`.
    pub(crate) fn optional_text(&self, name: &'static str) -> Result<Option<String>, Error> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => scalar_text(value)
                .map(Some)
                .ok_or_else(|| Error::invalid(name)),
        }
    }

    /// An integer given as a JSON number or as decimal text.
    pub(crate) fn integer(&self, name: &'static str) -> Result<Option<i64>, Error> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .or_else(|| number.as_u64().map(|_| i64::MAX))
                .map(Some)
                .ok_or_else(|| Error::invalid(name)),
            Some(Value::String(text)) => parse_integer(text)
                .map(Some)
                .ok_or_else(|| Error::invalid(name)),
            Some(_) => Err(Error::invalid(name)),
        }
    }

    /// A list of strings: a JSON array, repeated `name[]` form fields, or comma-separated text.
    pub(crate) fn text_list(&self, name: &'static str) -> Result<Option<Vec<String>>, Error> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(scalar_text)
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| Error::invalid(name)),
            Some(Value::String(text)) => Ok(Some(
                text.split(',').map(|item| item.trim().to_owned()).collect(),
            )),
            Some(_) => Err(Error::invalid(name)),
        }
    }

    /// `page` and `per_page`, validated.
    pub(crate) fn pagination(&self) -> Result<Pagination, Error> {
        let page = self.integer("page")?;
        let per_page = self.integer("per_page")?;
        Pagination::new(page, per_page)
    }

    /// The pagination a list asked for: offset (`pagination` absent or `offset`) or keyset
    /// (`pagination=keyset`, with `order_by`, `sort` and `cursor`). `page` and `per_page` are
    /// checked in both, as GitLab declares them for both.
    pub(crate) fn paging(&self) -> Result<Paging, Error> {
        let pagination = self.pagination()?;
        match self.optional_text("pagination")?.as_deref() {
            None | Some("offset") => Ok(Paging::Offset(pagination)),
            Some("keyset") => Ok(Paging::Keyset(KeysetRequest::new(
                self.optional_text("order_by")?,
                self.optional_text("sort")?,
                self.optional_text("cursor")?,
                self.integer("per_page")?,
            )?)),
            Some(_) => Err(Error::InvalidParameter(ParameterError::UnknownValue(
                "pagination",
            ))),
        }
    }

    /// The query parameters to repeat in `Link` URLs (everything but the paging ones).
    pub(crate) fn link_pairs(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "page" | "per_page" | "private_token"))
            .filter_map(|(key, value)| scalar_text(value).map(|text| (key.clone(), text)))
            .collect()
    }
}

/// Which pagination a list request asked for.
pub(crate) enum Paging {
    Offset(Pagination),
    Keyset(KeysetRequest),
}

/// Grape's Integer coercion: optional minus sign, then digits. Values beyond 64 bits are
/// saturated; no record has such an id, so they end as "not found".
fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<i64>().unwrap_or(if text.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Adds form-encoded pairs; `name[]` fields accumulate into an array.
fn merge_form(values: &mut Map<String, Value>, form: &[u8]) -> Result<(), ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(form).map_err(|_| ApiError::MalformedBody)?;
    for (key, value) in pairs {
        if let Some(list_key) = key.strip_suffix("[]") {
            let entry = values
                .entry(list_key.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(Value::String(value));
            }
        } else {
            values.insert(key, Value::String(value));
        }
    }
    Ok(())
}

/// Where the request was sent: its path as sent and its Host, for absolute links.
pub(crate) struct RequestTarget {
    pub(crate) path: String,
    pub(crate) host: Option<String>,
    /// `https` over TLS or behind a trusted proxy that saw TLS, else `http`.
    pub(crate) scheme: &'static str,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestTarget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestTarget {
            path: parts.uri.path().to_owned(),
            host: header_text(&parts.headers, header::HOST)
                .map(str::to_owned)
                .or_else(|| parts.uri.authority().map(ToString::to_string)),
            scheme: parts
                .extensions
                .get::<crate::server::Client>()
                .map_or("http", |client| client.scheme),
        })
    }
}

impl RequestTarget {
    /// The configured external URL, or `<scheme>://<Host>`.
    pub(crate) fn origin(&self, state: &RestState) -> String {
        match (&state.external_url, &self.host) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) => format!("{}://{host}", self.scheme),
            (None, None) => format!("{}://localhost", self.scheme),
        }
    }
}

/// `If-Unmodified-Since` as GitLab reads it (Ruby's `Time.parse`): an HTTP date or an ISO 8601
/// time. A value that does not parse is ignored, as GitLab ignores it.
pub(crate) fn unmodified_since(headers: &HeaderMap) -> Option<UnmodifiedSinceSeconds> {
    let text = header_text(headers, header::IF_UNMODIFIED_SINCE)?.trim();
    if let Ok(at) = httpdate::parse_http_date(text) {
        let seconds = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        return Some(UnmodifiedSinceSeconds(i64::try_from(seconds).ok()?));
    }
    let compact_offset = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
    );
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(text, &compact_offset))
        .ok()?;
    Some(UnmodifiedSinceSeconds(at.unix_timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_grape_coercion() {
        assert_eq!(parse_integer("42"), Some(42));
        assert_eq!(parse_integer("-1"), Some(-1));
        assert_eq!(parse_integer("abc"), None);
        assert_eq!(parse_integer("1.5"), None);
        assert_eq!(parse_integer(""), None);
        assert_eq!(parse_integer("99999999999999999999999"), Some(i64::MAX));
    }

    #[test]
    fn form_lists_accumulate() {
        let mut values = Map::new();
        merge_form(&mut values, b"scopes[]=api&scopes[]=read_api&name=x").unwrap();
        let params = Params { values };
        assert_eq!(
            params.text_list("scopes").unwrap(),
            Some(vec!["api".to_owned(), "read_api".to_owned()])
        );
        assert_eq!(params.required_text("name").unwrap(), Some("x".to_owned()));
    }

    #[test]
    fn null_is_empty_when_required_and_absent_when_optional() {
        let mut values = Map::new();
        values.insert("name".to_owned(), Value::Null);
        let params = Params { values };
        assert_eq!(params.required_text("name").unwrap(), Some(String::new()));
        assert_eq!(params.optional_text("name").unwrap(), None);
        assert_eq!(params.required_text("other").unwrap(), None);
    }

    #[test]
    fn unmodified_since_accepts_http_and_iso_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "if-unmodified-since",
            "1990-01-12T00:00:48-0600".parse().unwrap(),
        );
        assert_eq!(
            unmodified_since(&headers),
            Some(UnmodifiedSinceSeconds(632_124_048))
        );
        headers.insert(
            "if-unmodified-since",
            "Fri, 12 Jan 1990 06:00:48 GMT".parse().unwrap(),
        );
        assert_eq!(
            unmodified_since(&headers),
            Some(UnmodifiedSinceSeconds(632_124_048))
        );
        headers.insert("if-unmodified-since", "yesterday-ish".parse().unwrap());
        assert_eq!(unmodified_since(&headers), None);
    }

    #[test]
    fn bearer_and_private_token_headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer glpat-abc".parse().unwrap());
        assert!(personal_token(&headers, None).is_some());
        assert!(personal_token(&HeaderMap::new(), Some("private_token=glpat-x")).is_some());
        assert!(personal_token(&HeaderMap::new(), Some("page=2")).is_none());
    }
}
