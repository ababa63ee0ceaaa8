//! What the benchmarks share: the agent server's JWT and medians.

#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "benchmark helpers; each benchmark uses some of them"
)]

/// A KAS JWT signed with `secret`, valid for four minutes (agentreg refuses any that lives more
/// than five).
pub(crate) fn kas_jwt(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        serde_json::json!({"iss": "gitlab-kas", "aud": "gitlab", "iat": now, "exp": now + 240});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// The median of `values` (the upper one of an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
