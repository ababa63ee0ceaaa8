//! GitLab's offset pagination: `page` (default 1; below 1 means 1) and `per_page` (default 20;
//! clamped to 100; 0 refused; negative means the default), and the totals for the headers.

use super::Error;
use super::refusals::ParameterError;
use agentreg_storage::PageWindow;

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

    #[test]
    fn huge_page_numbers_do_not_overflow() {
        let pagination = Pagination::new(Some(i64::MAX), Some(100)).unwrap();
        let (items, info) = pagination.slice(vec![1, 2, 3]);
        assert!(items.is_empty());
        assert_eq!(info.next_page, None);
    }
}
