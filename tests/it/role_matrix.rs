//! Role matrix (being written).
