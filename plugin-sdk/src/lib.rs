//! Weft plugin SDK (work in progress).
