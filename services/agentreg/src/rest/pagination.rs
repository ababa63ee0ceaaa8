//! GitLab's pagination headers: `X-Total`, `X-Total-Pages`, `X-Per-Page`, `X-Page`,
//! `X-Next-Page`, `X-Prev-Page` and an absolute `Link` whose query repeats every request
//! parameter (route ids included) in alphabetical order, as GitLab builds it; and in keyset mode
//! only a `Link` to the next page, with its `cursor`, as `Gitlab::Pagination::Keyset`'s header
//! builder does.

use crate::app::pagination::{KeysetPageInfo, PageInfo};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Where a list was requested, for building `Link` URLs.
pub(crate) struct LinkBase<'a> {
    /// `https://host` with no trailing slash.
    pub(crate) origin: String,
    /// The request path as sent (still percent-encoded).
    pub(crate) path: &'a str,
    /// Query and route parameters other than `page` and `per_page`.
    pub(crate) params: Vec<(String, String)>,
}

pub(crate) fn headers(base: &LinkBase<'_>, info: &PageInfo) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let optional = |page: Option<u64>| page.map(|p| p.to_string()).unwrap_or_default();
    for (name, value) in [
        ("x-total", info.total.to_string()),
        ("x-total-pages", info.total_pages.to_string()),
        ("x-per-page", info.per_page.to_string()),
        ("x-page", info.page.to_string()),
        ("x-next-page", optional(info.next_page)),
        ("x-prev-page", optional(info.prev_page)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let mut links = Vec::new();
    if let Some(prev) = info.prev_page {
        links.push(format!(
            "<{}>; rel=\"prev\"",
            page_url(base, prev, info.per_page)
        ));
    }
    if let Some(next) = info.next_page {
        links.push(format!(
            "<{}>; rel=\"next\"",
            page_url(base, next, info.per_page)
        ));
    }
    links.push(format!(
        "<{}>; rel=\"first\"",
        page_url(base, 1, info.per_page)
    ));
    links.push(format!(
        "<{}>; rel=\"last\"",
        page_url(base, info.total_pages, info.per_page)
    ));
    if let Ok(value) = HeaderValue::from_str(&links.join(", ")) {
        headers.insert(header::LINK, value);
    }
    headers
}

/// `Link: <...>; rel="next"` to the next keyset page, or nothing on the last page.
pub(crate) fn keyset_headers(base: &LinkBase<'_>, info: &KeysetPageInfo) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(cursor) = &info.next_cursor {
        let url = url_with(
            base,
            [
                ("cursor", cursor.clone()),
                ("order_by", info.order_by.to_owned()),
                ("per_page", info.per_page.to_string()),
                ("sort", info.sort.to_owned()),
            ],
        );
        if let Ok(value) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            headers.insert(header::LINK, value);
        }
    }
    headers
}

fn page_url(base: &LinkBase<'_>, page: u64, per_page: u64) -> String {
    url_with(
        base,
        [
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
        ],
    )
}

/// The list's URL with its parameters and these, sorted by name.
fn url_with<const N: usize>(base: &LinkBase<'_>, extra: [(&str, String); N]) -> String {
    let mut params: Vec<(String, String)> = base.params.clone();
    params.extend(extra.map(|(name, value)| (name.to_owned(), value)));
    params.sort();
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    format!("{}{}?{query}", base.origin, base.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_repeats_sorted_params_with_absolute_urls() {
        let base = LinkBase {
            origin: "https://gitlab.example.com".to_owned(),
            path: "/api/v4/projects/root%2Ftest/cluster_agents",
            params: vec![("id".to_owned(), "root/test".to_owned())],
        };
        let info = PageInfo {
            total: 3,
            total_pages: 3,
            per_page: 1,
            page: 2,
            next_page: Some(3),
            prev_page: Some(1),
        };
        let headers = headers(&base, &info);
        let link = headers[header::LINK].to_str().unwrap();
        assert_eq!(
            link,
            "<https://gitlab.example.com/api/v4/projects/root%2Ftest/cluster_agents?id=root%2Ftest&page=1&per_page=1>; rel=\"prev\", \
             <https://gitlab.example.com/api/v4/projects/root%2Ftest/cluster_agents?id=root%2Ftest&page=3&per_page=1>; rel=\"next\", \
             <https://gitlab.example.com/api/v4/projects/root%2Ftest/cluster_agents?id=root%2Ftest&page=1&per_page=1>; rel=\"first\", \
             <https://gitlab.example.com/api/v4/projects/root%2Ftest/cluster_agents?id=root%2Ftest&page=3&per_page=1>; rel=\"last\""
        );
        assert_eq!(headers["x-next-page"], "3");
        assert_eq!(headers["x-total"], "3");
    }

    #[test]
    fn keyset_link_has_only_next_with_the_cursor_and_sorted_params() {
        let base = LinkBase {
            origin: "https://gitlab.example.com".to_owned(),
            path: "/api/v4/projects/7/cluster_agents",
            params: vec![
                ("pagination".to_owned(), "keyset".to_owned()),
                ("id".to_owned(), "7".to_owned()),
            ],
        };
        let mut info = KeysetPageInfo {
            per_page: 2,
            order_by: "name",
            sort: "asc",
            next_cursor: Some("eyJuYW1lIjoiYiIsIl9rZCI6Im4ifQ==".to_owned()),
        };

        let headers = keyset_headers(&base, &info);

        assert_eq!(
            headers[header::LINK],
            "<https://gitlab.example.com/api/v4/projects/7/cluster_agents?\
             cursor=eyJuYW1lIjoiYiIsIl9rZCI6Im4ifQ%3D%3D&id=7&order_by=name&pagination=keyset&\
             per_page=2&sort=asc>; rel=\"next\""
        );
        assert_eq!(headers.len(), 1, "no totals in keyset mode");
        info.next_cursor = None;
        assert!(keyset_headers(&base, &info).is_empty());
    }

    #[test]
    fn last_page_has_empty_next() {
        let base = LinkBase {
            origin: "http://h".to_owned(),
            path: "/p",
            params: vec![],
        };
        let info = PageInfo {
            total: 0,
            total_pages: 1,
            per_page: 20,
            page: 1,
            next_page: None,
            prev_page: None,
        };
        let headers = headers(&base, &info);
        assert_eq!(headers["x-next-page"], "");
        assert_eq!(headers["x-prev-page"], "");
        assert!(
            !headers[header::LINK]
                .to_str()
                .unwrap()
                .contains("rel=\"next\"")
        );
    }
}
