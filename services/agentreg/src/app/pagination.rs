//! GitLab's offset pagination: `page` (default 1; below 1 means 1) and `per_page` (default 20;
//! clamped to 100; 0 refused; negative means the default), and the totals for the headers; and
//! GitLab's keyset pagination (`pagination=keyset`): an order (`order_by`, `sort`), and an opaque
//! `cursor` naming the last item of the previous page, as `Gitlab::Pagination::Keyset` encodes
//! it (URL-safe base64 of a JSON object of the order's values as strings, with `_kd: "n"`).

use super::Error;
use super::refusals::ParameterError;
use agentreg_domain::entities::Agent;
use agentreg_domain::ids::AgentId;
use agentreg_storage::PageWindow;
use agentreg_storage::agents::{AgentSeek, Direction};
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use std::collections::BTreeMap;

/// Kaminari's default page size.
pub const DEFAULT_PER_PAGE: u64 = 20;
/// Kaminari's maximum page size; larger requests are clamped.
pub const MAX_PER_PAGE: u64 = 100;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pagination {
    page: u64,
    per_page: u64,
}

/// The totals of a paged list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    pub total: u64,
    pub total_pages: u64,
    pub per_page: u64,
    pub page: u64,
    pub next_page: Option<u64>,
    pub prev_page: Option<u64>,
}

impl Pagination {
    /// Applies GitLab's rules to the integers a client sent.
    pub fn new(page: Option<i64>, per_page: Option<i64>) -> Result<Pagination, Error> {
        let per_page = match per_page {
            Some(0) => {
                return Err(Error::InvalidParameter(ParameterError::ExcludedValue(
                    "per_page",
                )));
            }
            Some(n) if n < 0 => DEFAULT_PER_PAGE,
            Some(n) => u64::try_from(n).unwrap_or(MAX_PER_PAGE).min(MAX_PER_PAGE),
            None => DEFAULT_PER_PAGE,
        };
        let page = match page {
            Some(n) if n >= 1 => u64::try_from(n).unwrap_or(1),
            Some(_) | None => 1,
        };
        Ok(Pagination { page, per_page })
    }

    pub fn page(self) -> u64 {
        self.page
    }

    pub fn per_page(self) -> u64 {
        self.per_page
    }

    pub(crate) fn window(self) -> PageWindow {
        PageWindow {
            offset: (self.page - 1).saturating_mul(self.per_page),
            limit: self.per_page,
        }
    }

    pub(crate) fn info(self, total: u64) -> PageInfo {
        let total_pages = total.div_ceil(self.per_page).max(1);
        PageInfo {
            total,
            total_pages,
            per_page: self.per_page,
            page: self.page,
            next_page: (self.page < total_pages).then_some(self.page + 1),
            prev_page: (self.page > 1).then(|| self.page - 1),
        }
    }

    /// Pages an in-memory list (short lists such as an agent's active tokens).
    pub(crate) fn slice<T>(self, items: Vec<T>) -> (Vec<T>, PageInfo) {
        let info = self.info(items.len() as u64);
        let window = self.window();
        let offset = usize::try_from(window.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(window.limit).unwrap_or(usize::MAX);
        (items.into_iter().skip(offset).take(limit).collect(), info)
    }
}

/// A keyset page request as the client sent it. Its page size follows the offset rules and is
/// checked with the other parameters; its order and cursor are checked after the project and
/// the role, as GitLab's paginator does ([`KeysetRequest::pagination`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetRequest {
    order_by: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
    per_page: u64,
}

/// A validated keyset page request over a project's agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetPagination {
    seek: AgentSeek,
    per_page: u64,
}

/// What a keyset page says about the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetPageInfo {
    pub per_page: u64,
    /// `order_by` and `sort` in effect, for the next page's link.
    pub order_by: &'static str,
    pub sort: &'static str,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// `order_by` when keyset pagination is asked for without one (GitLab's
/// `CursorBasedRequestContext`).
pub const DEFAULT_KEYSET_ORDER_BY: &str = "id";
/// `sort` when keyset pagination is asked for without one.
pub const DEFAULT_KEYSET_SORT: &str = "desc";

/// The key of a cursor's direction; this service only gives cursors to the next page (`n`).
const CURSOR_DIRECTION_KEY: &str = "_kd";
const FORWARD: &str = "n";

impl KeysetRequest {
    /// Checks the page size with GitLab's offset rules; the rest is checked by
    /// [`KeysetRequest::pagination`].
    pub fn new(
        order_by: Option<String>,
        sort: Option<String>,
        cursor: Option<String>,
        per_page: Option<i64>,
    ) -> Result<KeysetRequest, Error> {
        let per_page = Pagination::new(None, per_page)?.per_page();
        Ok(KeysetRequest {
            order_by,
            sort,
            cursor,
            per_page,
        })
    }

    /// The order and the cursor, as GitLab checks them: an order keyset pagination cannot
    /// follow is `405 Keyset pagination is not yet available for this type of request`; a cursor
    /// that is not one of this order's is `cursor is invalid`.
    pub(crate) fn pagination(&self) -> Result<KeysetPagination, Error> {
        let direction = match self.sort.as_deref().unwrap_or(DEFAULT_KEYSET_SORT) {
            "asc" => Direction::Ascending,
            "desc" => Direction::Descending,
            _ => return Err(Error::KeysetUnavailable),
        };
        let order_by = self.order_by.as_deref().unwrap_or(DEFAULT_KEYSET_ORDER_BY);
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| Error::invalid("cursor"))?),
        };
        let value = |key: &str| -> Result<Option<String>, Error> {
            match &cursor {
                None => Ok(None),
                Some(fields) => fields
                    .get(key)
                    .map(|value| Some(value.clone()))
                    .ok_or_else(|| Error::invalid("cursor")),
            }
        };
        let seek = match order_by {
            "id" => {
                let after = value("id")?
                    .map(|id| id.parse::<u64>().map_err(|_| Error::invalid("cursor")))
                    .transpose()?;
                AgentSeek::Id {
                    direction,
                    after: after.map(AgentId::new),
                }
            }
            "name" => AgentSeek::Name {
                direction,
                after: value("name")?,
            },
            _ => return Err(Error::KeysetUnavailable),
        };
        Ok(KeysetPagination {
            seek,
            per_page: self.per_page,
        })
    }
}

impl KeysetPagination {
    pub fn per_page(&self) -> u64 {
        self.per_page
    }

    pub(crate) fn seek(&self) -> AgentSeek {
        self.seek.clone()
    }

    /// The page's info, given the agents read (at most `per_page + 1`: one more than the page
    /// says whether there is a next page) and trims the extra one.
    pub(crate) fn finish(&self, agents: &mut Vec<Agent>) -> KeysetPageInfo {
        let per_page = usize::try_from(self.per_page).unwrap_or(usize::MAX);
        let has_next = agents.len() > per_page;
        agents.truncate(per_page);
        let (order_by, direction) = match &self.seek {
            AgentSeek::Id { direction, .. } => ("id", direction),
            AgentSeek::Name { direction, .. } => ("name", direction),
        };
        let next_cursor = agents
            .last()
            .filter(|_| has_next)
            .map(|last| match &self.seek {
                AgentSeek::Id { .. } => encode_cursor("id", &last.id.get().to_string()),
                AgentSeek::Name { .. } => encode_cursor("name", &last.name),
            });
        KeysetPageInfo {
            per_page: self.per_page,
            order_by,
            sort: match direction {
                Direction::Ascending => "asc",
                Direction::Descending => "desc",
            },
            next_cursor,
        }
    }
}

/// GitLab's cursor: the URL-safe base64 (padded) of `{"<key>":"<value>","_kd":"n"}`.
fn encode_cursor(key: &str, value: &str) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert(key.to_owned(), serde_json::Value::from(value));
    fields.insert(
        CURSOR_DIRECTION_KEY.to_owned(),
        serde_json::Value::from(FORWARD),
    );
    URL_SAFE.encode(serde_json::Value::Object(fields).to_string())
}

/// A cursor's values as strings (numbers are taken as their decimal text); `None` for anything
/// that is not a forward cursor: not base64 (padded or not), not a JSON object of strings and
/// numbers, or a cursor to a previous page.
fn decode_cursor(cursor: &str) -> Option<BTreeMap<String, String>> {
    let bytes = URL_SAFE
        .decode(cursor)
        .or_else(|_| URL_SAFE_NO_PAD.decode(cursor))
        .ok()?;
    let serde_json::Value::Object(fields) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    let mut values = BTreeMap::new();
    for (key, value) in fields {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Array(_)
            | serde_json::Value::Object(_) => return None,
        };
        values.insert(key, text);
    }
    match values.remove(CURSOR_DIRECTION_KEY).as_deref() {
        None | Some(FORWARD) => Some(values),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_page_one_of_twenty() {
        let pagination = Pagination::new(None, None).unwrap();
        assert_eq!((pagination.page(), pagination.per_page()), (1, 20));
    }

    #[test]
    fn per_page_zero_is_refused() {
        assert!(matches!(
            Pagination::new(None, Some(0)),
            Err(error) if error.to_string() == "per_page has a value not allowed"
        ));
    }

    #[test]
    fn huge_per_page_is_clamped_and_negative_is_default() {
        assert_eq!(
            Pagination::new(None, Some(1_000_000_000_000))
                .unwrap()
                .per_page(),
            100
        );
        assert_eq!(Pagination::new(None, Some(-5)).unwrap().per_page(), 20);
        assert_eq!(Pagination::new(Some(-2), None).unwrap().page(), 1);
    }

    #[test]
    fn info_has_at_least_one_page_and_neighbours() {
        let info = Pagination::new(Some(2), Some(2)).unwrap().info(5);
        assert_eq!(info.total_pages, 3);
        assert_eq!((info.prev_page, info.next_page), (Some(1), Some(3)));
        let empty = Pagination::new(None, None).unwrap().info(0);
        assert_eq!(
            (empty.total_pages, empty.next_page, empty.prev_page),
            (1, None, None)
        );
    }

    fn keyset(
        order_by: Option<&str>,
        sort: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<KeysetPagination, Error> {
        KeysetRequest::new(
            order_by.map(str::to_owned),
            sort.map(str::to_owned),
            cursor.map(str::to_owned),
            Some(2),
        )?
        .pagination()
    }

    fn agent(id: u64, name: &str) -> Agent {
        Agent {
            id: AgentId::new(id),
            project_id: agentreg_domain::ids::ProjectId::new(1),
            name: name.to_owned(),
            created_by_user_id: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            url_configuration_id: None,
        }
    }

    #[test]
    fn keyset_defaults_to_ids_descending_as_gitlab() {
        let pagination = keyset(None, None, None).unwrap();

        assert_eq!(
            pagination.seek(),
            AgentSeek::Id {
                direction: Direction::Descending,
                after: None
            }
        );
    }

    #[test]
    fn keyset_orders_other_than_id_and_name_either_way_are_unavailable() {
        for (order_by, sort) in [
            (Some("created_at"), None),
            (Some("ID"), None),
            (None, Some("random")),
        ] {
            assert!(matches!(
                keyset(order_by, sort, None),
                Err(Error::KeysetUnavailable)
            ));
        }
        assert!(keyset(Some("name"), Some("asc"), None).is_ok());
    }

    #[test]
    fn a_next_cursor_is_gitlabs_encoding_and_leads_after_the_last_item() {
        let pagination = keyset(Some("name"), Some("asc"), None).unwrap();
        let mut agents = vec![agent(7, "b"), agent(3, "c"), agent(9, "d")];

        let info = pagination.finish(&mut agents);

        assert_eq!(
            agents.len(),
            2,
            "the extra agent only says a next page exists"
        );
        let cursor = info.next_cursor.unwrap();
        assert_eq!(
            URL_SAFE.decode(&cursor).unwrap(),
            br#"{"name":"c","_kd":"n"}"#
        );
        assert_eq!((info.order_by, info.sort), ("name", "asc"));
        assert_eq!(
            keyset(Some("name"), Some("asc"), Some(&cursor))
                .unwrap()
                .seek(),
            AgentSeek::Name {
                direction: Direction::Ascending,
                after: Some("c".to_owned())
            }
        );
    }

    #[test]
    fn the_last_page_has_no_next_cursor() {
        let pagination = keyset(None, None, None).unwrap();
        let mut agents = vec![agent(9, "a"), agent(8, "b")];

        let info = pagination.finish(&mut agents);

        assert_eq!((agents.len(), info.next_cursor), (2, None));
    }

    #[test]
    fn id_cursors_accept_gitlabs_strings_numbers_and_unpadded_base64() {
        let padded = URL_SAFE.encode(r#"{"id":"42","_kd":"n"}"#);
        let number = URL_SAFE_NO_PAD.encode(r#"{"id":42}"#);

        for cursor in [padded, number] {
            assert_eq!(
                keyset(Some("id"), Some("asc"), Some(&cursor))
                    .unwrap()
                    .seek(),
                AgentSeek::Id {
                    direction: Direction::Ascending,
                    after: Some(AgentId::new(42))
                }
            );
        }
    }

    #[test]
    fn cursors_of_another_order_direction_or_shape_are_invalid() {
        let invalid = |order_by: &str, cursor: String| {
            matches!(
                keyset(Some(order_by), None, Some(&cursor)),
                Err(Error::InvalidParameter(message)) if message.to_string() == "cursor is invalid"
            )
        };

        assert!(invalid("id", "not base64!".to_owned()));
        assert!(invalid("id", URL_SAFE.encode("not json")));
        assert!(invalid("id", URL_SAFE.encode(r#"["42"]"#)));
        assert!(invalid("id", URL_SAFE.encode(r#"{"name":"a"}"#)));
        assert!(invalid("id", URL_SAFE.encode(r#"{"id":"-1"}"#)));
        assert!(invalid("id", URL_SAFE.encode(r#"{"id":"42","_kd":"p"}"#)));
        assert!(invalid("name", URL_SAFE.encode(r#"{"name":null}"#)));
        assert!(
            keyset(Some("id"), None, Some("")).is_ok(),
            "empty is the first page"
        );
    }

    #[test]
    fn keyset_page_sizes_follow_the_offset_rules() {
        let per_page = |value: i64| {
            KeysetRequest::new(None, None, None, Some(value))
                .map(|request| request.pagination().unwrap().per_page())
        };

        assert_eq!(per_page(1_000).unwrap(), MAX_PER_PAGE);
        assert_eq!(per_page(-3).unwrap(), DEFAULT_PER_PAGE);
        assert!(matches!(per_page(0), Err(Error::InvalidParameter(_))));
    }

    #[test]
    fn huge_page_numbers_do_not_overflow() {
        let pagination = Pagination::new(Some(i64::MAX), Some(100)).unwrap();
        let (items, info) = pagination.slice(vec![1, 2, 3]);
        assert!(items.is_empty());
        assert_eq!(info.next_page, None);
    }
}
