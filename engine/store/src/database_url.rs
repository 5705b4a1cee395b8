//! Database URLs: which backend they name, and how to print them without their password.

use crate::{Backend, StoreError};

pub(crate) fn backend_of(url: &str) -> Result<Backend, StoreError> {
    let scheme_is = |prefix: &str| {
        url.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if scheme_is("sqlite:") {
        Ok(Backend::Sqlite)
    } else if scheme_is("postgres://") || scheme_is("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::InvalidUrl(format!(
            "{}: expected sqlite://PATH, sqlite::memory:, postgres://... or postgresql://...",
            redact_url(url)
        )))
    }
}

/// Redact the password in a database URL, for logs and error messages:
/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`. A `password=` query
/// parameter is redacted too. When unsure where the password ends, more is redacted, never less.
pub fn redact_url(url: &str) -> String {
    let mut out = match userinfo_password(url) {
        Some(Password { start, end }) => {
            format!("{}***{}", &url[..start], &url[end..])
        }
        None => url.to_owned(),
    };
    if let Some(query_start) = out.find('?') {
        let query = out.split_off(query_start + 1);
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, value)) if !value.is_empty() && is_password_key(key) => {
                    format!("{key}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_password_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// Where the password of `scheme://user:password@host...` lies in `url` (byte range).
struct Password {
    start: usize,
    end: usize,
}

fn userinfo_password(url: &str) -> Option<Password> {
    let rest_start = url.find("://")? + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (colon, at) = match authority.rfind('@') {
        Some(at) => (authority[..at].find(':')?, at),
        // No '@' before the first '/', '?' or '#', but one later and a ':' before it: either a
        // port and an '@' in the path or query, or a password holding a raw '/', '?' or '#'.
        // Assume the latter.
        None => (authority.find(':')?, rest.rfind('@')?),
    };
    (at > colon + 1).then_some(Password {
        start: rest_start + colon + 1,
        end: rest_start + at,
    })
}

/// The passwords a URL carries (as written in it, and percent-decoded), to scrub them from
/// messages that a driver may have built from the URL.
fn passwords_of(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(Password { start, end }) = userinfo_password(url) {
        found.push(url[start..end].to_owned());
    }
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or("");
    for param in query.split('&') {
        if let Some((key, value)) = param.split_once('=')
            && !value.is_empty()
            && is_password_key(key)
        {
            found.push(value.to_owned());
        }
    }
    let decoded: Vec<String> = found.iter().map(|p| percent_decode(p)).collect();
    found.extend(decoded);
    found.retain(|p| !p.is_empty());
    found
}

/// Replace in `message` every occurrence of the password that `url` carries with `***`.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut passwords = passwords_of(url);
    // Longest first, so that a password containing another one is replaced whole.
    passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = message.to_owned();
    for password in passwords {
        out = out.replace(&password, "***");
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                match (char::from(*hi).to_digit(16), char::from(*lo).to_digit(16)) {
                    (Some(hi), Some(lo)) => u8::try_from(hi * 16 + lo).ok(),
                    _ => None,
                }
            }
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_raw_and_decoded_passwords() {
        let url = "postgres://u:p%40ss@h/db?sslpassword=other";
        assert_eq!(
            scrub("bad p%40ss, p@ss and other", url),
            "bad ***, *** and ***"
        );
    }

    #[test]
    fn backend_of_is_case_insensitive_on_the_scheme() {
        assert_eq!(backend_of("SQLite::memory:").ok(), Some(Backend::Sqlite));
        assert_eq!(
            backend_of("PostgreSQL://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(matches!(
            backend_of("mysql://u:pw@h/db"),
            Err(StoreError::InvalidUrl(m)) if !m.contains("pw")
        ));
    }
}
