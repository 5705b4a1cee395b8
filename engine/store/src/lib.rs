//! Weft store (work in progress).
