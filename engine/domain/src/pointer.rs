//! JSON Pointers (RFC 6901): how every issue says where in a document it lies.

use std::fmt;

/// A JSON Pointer built segment by segment, escaping `~` and `/` in each segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pointer(String);

impl Pointer {
    /// The pointer to the whole document (`""`).
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// This pointer extended by one segment (an object key or an array index).
    pub(crate) fn child(&self, segment: impl fmt::Display) -> Self {
        let segment = segment.to_string();
        let mut out = String::with_capacity(self.0.len() + segment.len() + 1);
        out.push_str(&self.0);
        out.push('/');
        for c in segment.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
        Self(out)
    }

    /// The pointer as text.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a syntactically valid JSON Pointer: empty, or `/`-prefixed segments in which
/// every `~` is followed by `0` or `1`.
pub(crate) fn is_valid_pointer(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    if !s.starts_with('/') {
        return false;
    }
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_escapes_tilde_and_slash() {
        let p = Pointer::root().child("steps").child(2).child("a/b~c");
        assert_eq!(p.into_string(), "/steps/2/a~1b~0c");
    }

    #[test]
    fn root_is_empty() {
        assert_eq!(Pointer::root().to_string(), "");
    }

    #[test]
    fn pointer_syntax() {
        assert!(is_valid_pointer(""));
        assert!(is_valid_pointer("/a/0/b~1c~0"));
        assert!(is_valid_pointer("/"));
        assert!(!is_valid_pointer("a/b"));
        assert!(!is_valid_pointer("/a~2"));
        assert!(!is_valid_pointer("/a~"));
    }
}
