//! Weft domain model (work in progress).
