//! The on-disk records. Each value is one version byte followed by the record's JSON. A format
//! change adds a `v2` module and a migration; a `v1` record is never reinterpreted in place.

use agentreg_domain::access::{InvalidExpiryDate, UnknownScope};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version byte of every record in [`v1`].
pub(crate) const V1: u8 = 1;

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record has unknown version {0}")]
    UnknownVersion(u8),
    #[error("record is empty")]
    Empty,
    #[error("record body is malformed")]
    Malformed(#[source] serde_json::Error),
    /// A PostgreSQL row names a scope agentreg does not know (sled reports it as `Malformed`).
    #[error("record holds an unknown scope")]
    UnknownScope(#[source] UnknownScope),
    /// A PostgreSQL row holds an expiry that is not a date (sled reports it as `Malformed`).
    #[error("record holds a malformed expiry date")]
    InvalidExpiryDate(#[source] InvalidExpiryDate),
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut bytes = vec![V1];
    // Serializing these plain structs into a Vec cannot fail: they have string keys and no
    // custom serializers.
    serde_json::to_writer(&mut bytes, record).unwrap_or_default();
    bytes
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        Some((&V1, body)) => serde_json::from_slice(body).map_err(DecodeError::Malformed),
        Some((&other, _)) => Err(DecodeError::UnknownVersion(other)),
        None => Err(DecodeError::Empty),
    }
}

pub(crate) mod v1 {
    use agentreg_domain::access::{ExpiryDate, Scope};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct User {
        pub(crate) username: String,
        pub(crate) name: String,
        pub(crate) email: String,
        pub(crate) is_admin: bool,
        pub(crate) created_at_ms: i64,
    }

    #[derive(Clone, Serialize, Deserialize)]
    pub(crate) struct PersonalAccessToken {
        pub(crate) user_id: u64,
        pub(crate) name: String,
        #[serde(with = "super::scope_names")]
        pub(crate) scopes: Vec<Scope>,
        #[serde(with = "super::expiry_date")]
        pub(crate) expires_at: Option<ExpiryDate>,
        pub(crate) revoked: bool,
        pub(crate) handle: String,
        pub(crate) secret_hash: String,
        pub(crate) created_at_ms: i64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Project {
        pub(crate) name: String,
        pub(crate) path: String,
        pub(crate) description: Option<String>,
        pub(crate) owner_id: u64,
        pub(crate) created_at_ms: i64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Member {
        pub(crate) access_level: i64,
        pub(crate) created_at_ms: i64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Agent {
        pub(crate) project_id: u64,
        pub(crate) name: String,
        pub(crate) created_by_user_id: Option<u64>,
        pub(crate) created_at_ms: i64,
        pub(crate) updated_at_ms: i64,
        pub(crate) url_configuration_id: Option<u64>,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub(crate) struct AgentTokenSet {
        pub(crate) active: Vec<u64>,
        pub(crate) revoked: Vec<u64>,
        /// The expiry of each token that has one. Added with token lifecycle: absent in older
        /// records (no token expired then), and omitted when empty so older records read back
        /// byte for byte.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub(crate) expiries: BTreeMap<u64, i64>,
        /// The overlap deadline of each rotated token (added with token lifecycle, as above).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub(crate) retiring: BTreeMap<u64, i64>,
    }

    #[derive(Clone, Serialize, Deserialize)]
    pub(crate) struct AgentToken {
        pub(crate) agent_id: u64,
        pub(crate) project_id: u64,
        pub(crate) name: String,
        pub(crate) description: Option<String>,
        pub(crate) revoked: bool,
        pub(crate) created_by_user_id: Option<u64>,
        pub(crate) created_at_ms: i64,
        pub(crate) handle: String,
        pub(crate) secret_hash: String,
        // Added with token lifecycle. Absent in older records, which hold tokens that never
        // expire and revoked tokens without details; omitted when unset, so those records read
        // back byte for byte.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) expires_at_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) revoked_at_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) revoked_by_user_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) revoked_reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) retiring_until_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) successor_id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) pending_predecessor_id: Option<u64>,
    }

    #[derive(Clone, Serialize, Deserialize)]
    pub(crate) enum UrlAuth {
        Jwt {
            public_key: Vec<u8>,
            sealed_private_key: Vec<u8>,
        },
        Mtls {
            client_cert: String,
            sealed_client_key: Vec<u8>,
        },
    }

    #[derive(Clone, Serialize, Deserialize)]
    pub(crate) struct UrlConfiguration {
        pub(crate) agent_id: u64,
        pub(crate) project_id: u64,
        pub(crate) url: String,
        pub(crate) ca_cert: Option<String>,
        pub(crate) tls_host: Option<String>,
        pub(crate) auth: UrlAuth,
        pub(crate) created_by_user_id: Option<u64>,
        pub(crate) created_at_ms: i64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct AuditEvent {
        pub(crate) author_id: Option<u64>,
        pub(crate) entity_id: u64,
        pub(crate) entity_type: String,
        pub(crate) details: serde_json::Value,
        pub(crate) created_at_ms: i64,
    }

    /// A rotated successor's secret, sealed by the app, for one more fetch by its rotator.
    #[derive(Clone, Serialize, Deserialize)]
    pub(crate) struct RotationRetrieval {
        pub(crate) user_id: u64,
        pub(crate) successor_id: u64,
        pub(crate) sealed_secret: Vec<u8>,
        pub(crate) expires_at_ms: i64,
    }
}

/// A personal access token's scopes as their GitLab names (`["api","read_api"]`), as they were
/// stored when the record held strings. A name agentreg does not know fails the decode.
mod scope_names {
    use agentreg_domain::access::Scope;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        scopes: &[Scope],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(scopes.iter().map(|scope| scope.as_str()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Scope>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|name| Scope::parse(name).map_err(D::Error::custom))
            .collect()
    }
}

/// A personal access token's expiry as `"YYYY-MM-DD"` or `null`, as it was stored when the record
/// held a string. A value that is not a date fails the decode.
mod expiry_date {
    use agentreg_domain::access::ExpiryDate;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        expires_at: &Option<ExpiryDate>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match expires_at {
            Some(expires_at) => serializer.collect_str(expires_at),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ExpiryDate>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| ExpiryDate::parse(&text).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentreg_domain::access::{ExpiryDate, Scope};

    fn bytes_of(body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![V1];
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn records_round_trip_with_a_version_byte() {
        let member = v1::Member {
            access_level: 40,
            created_at_ms: 5,
        };
        let bytes = encode(&member);
        assert_eq!(bytes[0], V1);
        let back: v1::Member = decode(&bytes).unwrap();
        assert_eq!(back.access_level, 40);
    }

    #[test]
    fn token_records_written_before_token_lifecycle_still_decode() {
        let old = br#"{"agent_id":1,"project_id":2,"name":"t","description":null,"revoked":true,"created_by_user_id":null,"created_at_ms":3,"handle":"h","secret_hash":"$argon2id$x"}"#;
        let mut bytes = vec![V1];
        bytes.extend_from_slice(old);
        let token: v1::AgentToken = decode(&bytes).unwrap();
        assert!(token.revoked);
        assert_eq!(token.expires_at_ms, None);
        assert_eq!(token.revoked_reason, None);
        assert_eq!(encode(&token), bytes);
        let mut set_bytes = vec![V1];
        set_bytes.extend_from_slice(br#"{"active":[1],"revoked":[2]}"#);
        let set: v1::AgentTokenSet = decode(&set_bytes).unwrap();
        assert!(set.expiries.is_empty());
        assert_eq!(encode(&set), set_bytes);
    }

    #[test]
    fn personal_access_token_records_read_typed_and_write_back_byte_for_byte() {
        let stored = br#"{"user_id":1,"name":"ci","scopes":["api","read_api","sudo"],"expires_at":"2030-01-01","revoked":false,"handle":"h","secret_hash":"$argon2id$x","created_at_ms":3}"#;
        let mut bytes = vec![V1];
        bytes.extend_from_slice(stored);
        let token: v1::PersonalAccessToken = decode(&bytes).unwrap();
        assert_eq!(token.scopes, [Scope::Api, Scope::ReadApi, Scope::Sudo]);
        assert_eq!(
            token.expires_at,
            Some(ExpiryDate::parse("2030-01-01").unwrap())
        );
        assert_eq!(encode(&token), bytes);
        let never = bytes_of(br#"{"user_id":1,"name":"ci","scopes":["api"],"expires_at":null,"revoked":true,"handle":"h","secret_hash":"$argon2id$x","created_at_ms":3}"#);
        let token: v1::PersonalAccessToken = decode(&never).unwrap();
        assert_eq!(token.expires_at, None);
        assert_eq!(encode(&token), never);
    }

    #[test]
    fn personal_access_token_records_with_an_unknown_scope_or_a_bad_date_are_refused() {
        let unknown_scope = bytes_of(br#"{"user_id":1,"name":"ci","scopes":["api","write_repository"],"expires_at":null,"revoked":false,"handle":"h","secret_hash":"$argon2id$x","created_at_ms":3}"#);
        let bad_date = bytes_of(br#"{"user_id":1,"name":"ci","scopes":["api"],"expires_at":"01/01/2030","revoked":false,"handle":"h","secret_hash":"$argon2id$x","created_at_ms":3}"#);
        for bytes in [unknown_scope, bad_date] {
            assert!(matches!(
                decode::<v1::PersonalAccessToken>(&bytes),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn unknown_versions_are_refused_not_reinterpreted() {
        let mut bytes = encode(&v1::Member {
            access_level: 40,
            created_at_ms: 5,
        });
        bytes[0] = 2;
        assert!(matches!(
            decode::<v1::Member>(&bytes),
            Err(DecodeError::UnknownVersion(2))
        ));
        assert!(matches!(decode::<v1::Member>(&[]), Err(DecodeError::Empty)));
    }
}
