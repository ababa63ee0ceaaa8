//! Who may do what: GitLab's project access levels, token scopes, the day a personal access
//! token stops working, and the cluster abilities that the agent API checks.

use std::fmt;
use time::Date;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// A project member's role, with GitLab's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessLevel {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

/// An `access_level` that is not one of 10, 20, 30, 40 or 50.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access level {0} is not one of 10, 20, 30, 40, 50")]
pub struct InvalidAccessLevel(pub i64);

impl AccessLevel {
    pub fn from_value(value: i64) -> Result<AccessLevel, InvalidAccessLevel> {
        match value {
            10 => Ok(AccessLevel::Guest),
            20 => Ok(AccessLevel::Reporter),
            30 => Ok(AccessLevel::Developer),
            40 => Ok(AccessLevel::Maintainer),
            50 => Ok(AccessLevel::Owner),
            other => Err(InvalidAccessLevel(other)),
        }
    }

    pub fn value(self) -> i64 {
        match self {
            AccessLevel::Guest => 10,
            AccessLevel::Reporter => 20,
            AccessLevel::Developer => 30,
            AccessLevel::Maintainer => 40,
            AccessLevel::Owner => 50,
        }
    }
}

/// A personal access token scope: the two that the agent API distinguishes, and `sudo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Full read and write access.
    Api,
    /// GET and HEAD only.
    ReadApi,
    /// An administrator may act as another user (GitLab's `Sudo`); grants no access itself.
    Sudo,
}

/// A scope name that agentreg does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}")]
pub struct UnknownScope(pub String);

impl Scope {
    /// Every scope, in GitLab's order.
    pub const ALL: [Scope; 3] = [Scope::Api, Scope::ReadApi, Scope::Sudo];

    pub fn parse(name: &str) -> Result<Scope, UnknownScope> {
        match name {
            "api" => Ok(Scope::Api),
            "read_api" => Ok(Scope::ReadApi),
            "sudo" => Ok(Scope::Sudo),
            other => Err(UnknownScope(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Api => "api",
            Scope::ReadApi => "read_api",
            Scope::Sudo => "sudo",
        }
    }

    /// GitLab's names of `scopes`, in their order, as the edges show a token's scopes.
    pub fn names(scopes: &[Scope]) -> Vec<String> {
        scopes
            .iter()
            .map(|scope| scope.as_str().to_owned())
            .collect()
    }

    /// Whether a token with this scope may call a route that writes.
    pub fn allows_write(self) -> bool {
        match self {
            Scope::Api => true,
            Scope::ReadApi | Scope::Sudo => false,
        }
    }

    /// Whether a token with this scope may call a route that reads.
    pub fn allows_read(self) -> bool {
        match self {
            Scope::Api | Scope::ReadApi => true,
            Scope::Sudo => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The day from which a personal access token no longer works (GitLab's `expires_at`), in UTC.
/// `Display` writes it as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpiryDate(Date);

/// An `expires_at` that is not a calendar date written `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expiry date {0:?} is not a date written YYYY-MM-DD")]
pub struct InvalidExpiryDate(pub String);

/// What the caller is to one project: an administrator, a member with a role, or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectRole {
    Admin,
    Member(AccessLevel),
    NonMember,
}

/// What a route on a project's agents asks of the caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPermission {
    /// `read_cluster_agent` / `read_cluster`: Developer and above.
    Read,
    /// `create_cluster` / `admin_cluster`: Maintainer and above.
    Admin,
}

impl ExpiryDate {
    /// Parses an ISO date, `YYYY-MM-DD`. A sign before the year is accepted (and not written
    /// back), as it always was.
    pub fn parse(text: &str) -> Result<ExpiryDate, InvalidExpiryDate> {
        Date::parse(text, ISO_DATE)
            .map(ExpiryDate)
            .map_err(|_| InvalidExpiryDate(text.to_owned()))
    }

    pub fn date(self) -> Date {
        self.0
    }
}

impl fmt::Display for ExpiryDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.format(ISO_DATE).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl ProjectRole {
    /// `read_project`: members of any role and administrators see a (private) project.
    pub fn can_read_project(self) -> bool {
        match self {
            ProjectRole::Admin | ProjectRole::Member(_) => true,
            ProjectRole::NonMember => false,
        }
    }

    /// `read_cluster_agent` / `read_cluster`: Developer and above.
    pub fn can_read_cluster(self) -> bool {
        self.at_least(AccessLevel::Developer)
    }

    /// `create_cluster` / `admin_cluster`: Maintainer and above.
    pub fn can_admin_cluster(self) -> bool {
        self.at_least(AccessLevel::Maintainer)
    }

    /// Whether the role grants `permission`.
    pub fn allows(self, permission: ClusterPermission) -> bool {
        match permission {
            ClusterPermission::Read => self.can_read_cluster(),
            ClusterPermission::Admin => self.can_admin_cluster(),
        }
    }

    /// `admin_project_member`: Maintainer and above may add members.
    pub fn can_admin_members(self) -> bool {
        self.at_least(AccessLevel::Maintainer)
    }

    fn at_least(self, level: AccessLevel) -> bool {
        match self {
            ProjectRole::Admin => true,
            ProjectRole::Member(own) => own >= level,
            ProjectRole::NonMember => false,
        }
    }
}

/// GitLab's date format, `YYYY-MM-DD`.
const ISO_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_levels_round_trip_through_their_values() {
        for value in [10, 20, 30, 40, 50] {
            assert_eq!(AccessLevel::from_value(value).unwrap().value(), value);
        }
    }

    #[test]
    fn unknown_access_level_is_rejected() {
        assert_eq!(AccessLevel::from_value(35), Err(InvalidAccessLevel(35)));
    }

    #[test]
    fn developer_reads_but_does_not_administer_clusters() {
        let role = ProjectRole::Member(AccessLevel::Developer);
        assert!(role.can_read_cluster());
        assert!(!role.can_admin_cluster());
    }

    #[test]
    fn cluster_permissions_follow_the_cluster_checks() {
        let developer = ProjectRole::Member(AccessLevel::Developer);
        let maintainer = ProjectRole::Member(AccessLevel::Maintainer);
        assert!(developer.allows(ClusterPermission::Read));
        assert!(!developer.allows(ClusterPermission::Admin));
        assert!(maintainer.allows(ClusterPermission::Admin));
        assert!(!ProjectRole::NonMember.allows(ClusterPermission::Read));
    }

    #[test]
    fn reporter_cannot_read_clusters() {
        assert!(!ProjectRole::Member(AccessLevel::Reporter).can_read_cluster());
        assert!(ProjectRole::Member(AccessLevel::Reporter).can_read_project());
    }

    #[test]
    fn maintainer_and_admin_administer_clusters() {
        assert!(ProjectRole::Member(AccessLevel::Maintainer).can_admin_cluster());
        assert!(ProjectRole::Admin.can_admin_cluster());
    }

    #[test]
    fn non_member_sees_nothing() {
        assert!(!ProjectRole::NonMember.can_read_project());
        assert!(!ProjectRole::NonMember.can_read_cluster());
    }

    #[test]
    fn read_api_scope_cannot_write() {
        assert!(!Scope::ReadApi.allows_write());
        assert!(Scope::Api.allows_write());
        assert_eq!(Scope::parse("read_api"), Ok(Scope::ReadApi));
        assert!(Scope::parse("write_repository").is_err());
    }

    #[test]
    fn sudo_scope_grants_neither_reads_nor_writes() {
        assert_eq!(Scope::parse("sudo"), Ok(Scope::Sudo));
        assert_eq!(Scope::Sudo.as_str(), "sudo");
        assert!(!Scope::Sudo.allows_read() && !Scope::Sudo.allows_write());
        assert!(Scope::ReadApi.allows_read() && Scope::Api.allows_read());
    }

    #[test]
    fn expiry_dates_parse_in_iso_format_only_and_print_back_the_same() {
        let expiry_date = ExpiryDate::parse("2030-01-31").unwrap();
        assert_eq!(expiry_date.to_string(), "2030-01-31");
        assert_eq!(
            expiry_date.date(),
            Date::from_calendar_date(2030, time::Month::January, 31).unwrap()
        );
        for text in [
            "31/01/2030",
            "2030-02-30",
            "2030-1-31",
            "2030-01-31T00:00:00Z",
            "",
        ] {
            assert_eq!(
                ExpiryDate::parse(text),
                Err(InvalidExpiryDate(text.to_owned()))
            );
        }
    }
}
