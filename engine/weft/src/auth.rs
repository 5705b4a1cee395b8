//! API tokens and roles.
//!
//! A token is a random secret the client sends as `Authorization: Bearer <token>`. The server
//! keeps only its SHA-256: configured tokens are hashed when the configuration is loaded, tokens
//! created through the API are stored hashed and shown once. Roles are ordered: `read` < `write`
//! < `admin`; a route asks for the least role it needs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use weft_store::{NewToken, Store, StoreError, TokenRecord};

use crate::config::ConfiguredToken;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read anything.
    Read,
    /// Read, and create/change definitions and runs.
    Write,
    /// Everything, including tokens and plugin uploads.
    Admin,
}

impl Role {
    /// The role's name as written in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("'{other}' is not a role (read, write, admin)")),
        }
    }
}

/// The SHA-256 of a token, the only form in which the server keeps it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hash a plaintext token.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }
    /// Parse a hex-encoded hash (64 hex digits).
    pub fn from_hex(hex_digest: &str) -> Option<TokenHash> {
        let bytes = hex::decode(hex_digest.trim()).ok()?;
        Some(TokenHash(bytes.try_into().ok()?))
    }
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (`anonymous` when authentication is off).
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable bearer token was presented.
    #[error("missing bearer token")]
    Missing,
    /// The token is unknown or revoked.
    #[error("invalid token")]
    Invalid,
    /// The token store could not be read.
    #[error("token lookup failed: {0}")]
    Store(#[from] StoreError),
}

/// A newly created token: the only time its plaintext exists on the server.
#[derive(Debug)]
pub struct IssuedToken {
    /// The stored record.
    pub record: TokenRecord,
    /// The secret, to give to the caller once.
    pub plaintext: String,
}

/// The owner of token state: configured tokens in memory, API-created tokens in the store.
#[derive(Clone)]
pub struct Authenticator {
    configured: Arc<[ConfiguredToken]>,
    store: Arc<dyn Store>,
}

impl Authenticator {
    /// Build from the configured tokens and the store.
    pub fn new(configured: Vec<ConfiguredToken>, store: Arc<dyn Store>) -> Self {
        Self {
            configured: configured.into(),
            store,
        }
    }

    /// Whether requests must carry a token. Authentication is on when any token is configured.
    pub fn enabled(&self) -> bool {
        !self.configured.is_empty()
    }

    /// Resolve a bearer token to a principal.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let token = bearer
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let hash = TokenHash::of(token);
        if let Some(t) = self.configured.iter().find(|t| t.hash == hash) {
            return Ok(Principal {
                name: t.name.clone(),
                role: t.role,
            });
        }
        let record = self
            .store
            .find_token_by_hash(&hash.to_hex())
            .await?
            .ok_or(AuthError::Invalid)?;
        let role = record.role.parse().map_err(|_| AuthError::Invalid)?;
        Ok(Principal {
            name: record.name,
            role,
        })
    }

    /// Create a token with a fresh random secret (`weft_` + 43 URL-safe characters).
    pub async fn issue(&self, name: &str, role: Role) -> Result<IssuedToken, StoreError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let plaintext = format!("weft_{}", hex::encode(bytes));
        let record = self
            .store
            .insert_token(NewToken {
                name: name.to_string(),
                role: role.as_str().to_string(),
                sha256_hex: TokenHash::of(&plaintext).to_hex(),
            })
            .await?;
        Ok(IssuedToken { record, plaintext })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert_eq!("write".parse::<Role>(), Ok(Role::Write));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn token_hash_round_trips_hex_and_hides_in_debug() {
        let hash = TokenHash::of("secret");
        assert_eq!(
            hash.to_hex(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash.clone()));
        assert_eq!(TokenHash::from_hex("abc"), None);
        assert_eq!(format!("{hash:?}"), "TokenHash(..)");
    }
}
