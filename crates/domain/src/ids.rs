//! Typed ids. Each kind of record has its own id type, so that no signature can swap an agent id
//! for a project id; the numbers themselves come from storage and are monotonic, never reused.

use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a number that storage issued for this kind of record.
            pub const fn new(value: u64) -> $name {
                $name(value)
            }

            /// The number, for storage keys and the wire.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// An id as a client sent it. GitLab's ids are positive; a negative number names no
            /// record, so it becomes 0, which storage never issues: the lookup then finds
            /// nothing and the 404 comes at its usual place in the order of checks.
            pub fn from_wire(value: i64) -> $name {
                $name(u64::try_from(value).unwrap_or(0))
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A user's id.
    UserId
);
id_type!(
    /// A project's id.
    ProjectId
);
id_type!(
    /// A Kubernetes agent's id.
    AgentId
);
id_type!(
    /// An agent token's id.
    AgentTokenId
);
id_type!(
    /// A receptive agent's URL configuration's id.
    UrlConfigurationId
);
id_type!(
    /// A personal access token's id.
    PersonalAccessTokenId
);
id_type!(
    /// An audit event's id.
    AuditEventId
);

/// How a caller names a project: GitLab takes a numeric id or a URL-decoded full path
/// (`namespace/path`, matched case-insensitively) in the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    Id(ProjectId),
    FullPath(String),
    /// Something that is neither (a negative or overflowing number, a bare word): it names no
    /// project, and GitLab answers 404 for it rather than 400.
    Nothing,
}

impl ProjectRef {
    /// Parses GitLab's rule: `/^-?\d+$/` is an id, anything with a `/` is a path.
    pub fn parse(raw: &str) -> ProjectRef {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return match raw.parse::<u64>() {
                Ok(id) => ProjectRef::Id(ProjectId::new(id)),
                Err(_) => ProjectRef::Nothing,
            };
        }
        if raw.contains('/') {
            return ProjectRef::FullPath(raw.to_owned());
        }
        ProjectRef::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_refs_follow_gitlabs_pattern() {
        assert_eq!(ProjectRef::parse("20"), ProjectRef::Id(ProjectId::new(20)));
        assert_eq!(ProjectRef::parse("-3"), ProjectRef::Nothing);
        assert_eq!(
            ProjectRef::parse("root/test"),
            ProjectRef::FullPath("root/test".to_owned())
        );
        assert_eq!(ProjectRef::parse("12a"), ProjectRef::Nothing);
        assert_eq!(ProjectRef::parse("-"), ProjectRef::Nothing);
        assert_eq!(
            ProjectRef::parse("99999999999999999999999"),
            ProjectRef::Nothing
        );
    }

    #[test]
    fn negative_wire_ids_name_no_record() {
        assert_eq!(AgentId::from_wire(-5).get(), 0);
        assert_eq!(AgentId::from_wire(5).get(), 5);
    }

    #[test]
    fn ids_of_different_kinds_print_their_number() {
        assert_eq!(AgentId::new(7).to_string(), "7");
        assert_eq!(ProjectId::new(7).get(), 7);
    }
}
