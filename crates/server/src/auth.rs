//! Who may do what: API keys and JWTs from the `[auth]` section, each resolving to a
//! [`Grant`] of topic patterns per action. Every entry point (WebSocket upgrade and `auth`
//! message, SSE, REST) asks [`Auth`] for a grant and checks it before acting; reads are
//! narrowed in the hub itself ([`statecast_core::Client::set_scope`]), so nothing outside
//! `read` is ever queued for a client.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use statecast_core::{ErrorCode, HubError, Pattern};

/// The `[auth]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    pub jwt: Option<JwtConfig>,
    /// How long a WebSocket may stay open without authenticating.
    #[serde(default = "default_auth_timeout_ms")]
    pub auth_timeout_ms: u64,
}

/// One `[[auth.keys]]` entry: the key (or its SHA-256, hex) and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for logs.
    pub name: Option<String>,
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    #[serde(flatten)]
    pub permissions: Permissions,
}

/// Pattern lists per action, as in a key entry or a JWT's permissions claim.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub event: Vec<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

/// `[auth.jwt]`: exactly one of `secret` (HS256), `public_key_file` (PEM, RS256 or ES256)
/// or `jwks_file` (keys chosen by the token's `kid`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub secret: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The claim holding the permissions (an object like a key entry).
    #[serde(default = "default_permissions_claim")]
    pub permissions_claim: String,
}

fn default_auth_timeout_ms() -> u64 {
    5_000
}

fn default_permissions_claim() -> String {
    "statecast".into()
}

/// What one credential may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Who: a key's name or a token's `sub`, for logs.
    pub subject: String,
    pub read: Vec<Pattern>,
    pub write: Vec<Pattern>,
    pub event: Vec<Pattern>,
    pub command: Vec<Pattern>,
    pub admin: bool,
    /// When a token stops being valid.
    pub expires: Option<SystemTime>,
}

/// The actions a grant covers.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Read,
    Write,
    Event,
    Command,
}

impl Grant {
    /// Everything: what every client has while authentication is off.
    pub fn everything() -> Grant {
        let all = vec![Pattern::new("#").unwrap_or_else(|_| unreachable!("# is a pattern"))];
        Grant {
            subject: "anonymous".into(),
            read: all.clone(),
            write: all.clone(),
            event: all.clone(),
            command: all,
            admin: true,
            expires: None,
        }
    }

    fn from_permissions(subject: String, p: &Permissions) -> Result<Grant, String> {
        let list = |what: &str, texts: &[String]| {
            texts
                .iter()
                .map(|t| Pattern::new(t).map_err(|e| format!("{what} pattern {t:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Grant {
            subject,
            read: list("read", &p.read)?,
            write: list("write", &p.write)?,
            event: list("event", &p.event)?,
            command: list("command", &p.command)?,
            admin: p.admin,
            expires: None,
        })
    }

    /// Whether the grant allows `action` on `topic`.
    pub fn allows(&self, action: Action, topic: &str) -> bool {
        let patterns = match action {
            Action::Read => &self.read,
            Action::Write => &self.write,
            Action::Event => &self.event,
            Action::Command => &self.command,
        };
        patterns.iter().any(|p| p.matches(topic))
    }

    /// `Ok` if allowed, else the `forbidden` error to answer.
    pub fn check(&self, action: Action, topic: &str) -> Result<(), HubError> {
        if self.allows(action, topic) {
            return Ok(());
        }
        let verb = match action {
            Action::Read => "read",
            Action::Write => "write",
            Action::Event => "publish events on",
            Action::Command => "send commands to",
        };
        Err(HubError::new(
            ErrorCode::Forbidden,
            format!("{} may not {verb} {topic}", self.subject),
        ))
    }

    /// The read scope for the hub: `None` when everything may be read.
    pub fn scope(&self) -> Option<Vec<Pattern>> {
        if self.read.iter().any(|p| p.as_str() == "#") {
            None
        } else {
            Some(self.read.clone())
        }
    }

    /// Time left until the grant expires (zero if it has).
    pub fn remaining(&self) -> Option<Duration> {
        self.expires
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
    }
}

/// The configured credentials.
pub struct Auth {
    /// SHA-256 of each key, with what it grants.
    keys: Vec<([u8; 32], Grant)>,
    jwt: Option<Jwt>,
    pub auth_timeout: Duration,
}

struct Jwt {
    keys: JwtKeys,
    validation: Validation,
    permissions_claim: String,
}

enum JwtKeys {
    One(DecodingKey),
    Set(Vec<(Option<String>, DecodingKey, Algorithm)>),
}

impl Auth {
    /// No credentials: authentication is off and everyone may do everything.
    pub fn off() -> Auth {
        Auth {
            keys: Vec::new(),
            jwt: None,
            auth_timeout: Duration::from_millis(default_auth_timeout_ms()),
        }
    }

    pub fn from_config(config: &AuthConfig) -> Result<Auth, String> {
        let mut keys = Vec::new();
        for (i, k) in config.keys.iter().enumerate() {
            let at = |e: &str| format!("auth.keys[{}]: {e}", i + 1);
            let hash = match (&k.key, &k.key_sha256) {
                (Some(key), None) if !key.is_empty() => sha256(key),
                (None, Some(hex)) => {
                    parse_hex(hex).ok_or_else(|| at("key_sha256 must be 64 hex digits"))?
                }
                _ => return Err(at("give either `key` or `key_sha256`")),
            };
            let name = k.name.clone().unwrap_or_else(|| format!("key {}", i + 1));
            keys.push((
                hash,
                Grant::from_permissions(name, &k.permissions).map_err(|e| at(&e))?,
            ));
        }
        let jwt = config.jwt.as_ref().map(Jwt::new).transpose()?;
        Ok(Auth {
            keys,
            jwt,
            auth_timeout: Duration::from_millis(config.auth_timeout_ms.max(1)),
        })
    }

    /// Whether clients must present a credential.
    pub fn required(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// The grant for a presented token (an API key or a JWT), or `unauthorized` saying why.
    pub fn verify(&self, token: &str) -> Result<Grant, HubError> {
        let unauthorized = |why: String| HubError::new(ErrorCode::Unauthorized, why);
        let hash = sha256(token);
        if let Some((_, grant)) = self.keys.iter().find(|(h, _)| *h == hash) {
            return Ok(grant.clone());
        }
        match &self.jwt {
            Some(jwt) if token.matches('.').count() == 2 => jwt.verify(token).map_err(unauthorized),
            _ => Err(unauthorized("unknown API key".into())),
        }
    }

    /// The grant of an HTTP request: its bearer token, or `?token=` where allowed (`query`).
    /// Without authentication, everything.
    pub fn grant(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Grant>, HubError> {
        if !self.required() {
            return Ok(Some(Grant::everything()));
        }
        match bearer(headers).or(query) {
            Some(token) => self.verify(token).map(Some),
            None => Ok(None),
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Jwt {
    fn new(c: &JwtConfig) -> Result<Jwt, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| format!("auth.jwt: cannot read {}: {e}", path.display()))
        };
        let (keys, algorithms) = match (&c.secret, &c.public_key_file, &c.jwks_file) {
            (Some(secret), None, None) if !secret.is_empty() => (
                JwtKeys::One(DecodingKey::from_secret(secret.as_bytes())),
                vec![Algorithm::HS256],
            ),
            (None, Some(path), None) => {
                let pem = read(path)?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (JwtKeys::One(key), vec![Algorithm::RS256])
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (JwtKeys::One(key), vec![Algorithm::ES256])
                } else {
                    return Err(format!(
                        "auth.jwt: {} is not an RSA or EC public key in PEM",
                        path.display()
                    ));
                }
            }
            (None, None, Some(path)) => {
                let set: JwkSet = serde_json::from_slice(&read(path)?)
                    .map_err(|e| format!("auth.jwt: {} is not a JWKS: {e}", path.display()))?;
                let mut keys = Vec::new();
                for jwk in &set.keys {
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| format!("auth.jwt: a key in {}: {e}", path.display()))?;
                    let algorithm = match &jwk.algorithm {
                        AlgorithmParameters::RSA(_) => Algorithm::RS256,
                        AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                        _ => {
                            return Err(format!(
                                "auth.jwt: {}: only RSA and EC keys are supported",
                                path.display()
                            ));
                        }
                    };
                    keys.push((jwk.common.key_id.clone(), key, algorithm));
                }
                let algorithms = keys.iter().map(|k| k.2).collect();
                (JwtKeys::Set(keys), algorithms)
            }
            _ => {
                return Err(
                    "auth.jwt: give exactly one of `secret`, `public_key_file`, `jwks_file`".into(),
                );
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.validate_nbf = true;
        validation.leeway = 0;
        // `exp` is checked in `verify`: jsonwebtoken takes only whole non-negative seconds
        // and calls any other value missing.
        validation.validate_exp = false;
        validation.set_required_spec_claims::<&str>(&[]);
        match &c.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &c.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Jwt {
            keys,
            validation,
            permissions_claim: c.permissions_claim.clone(),
        })
    }

    fn verify(&self, token: &str) -> Result<Grant, String> {
        use jsonwebtoken::errors::ErrorKind;
        let key = match &self.keys {
            JwtKeys::One(key) => key,
            JwtKeys::Set(keys) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| format!("malformed token: {e}"))?;
                let found = keys.iter().find(|(kid, _, alg)| {
                    *alg == header.alg && (header.kid.is_none() || *kid == header.kid)
                });
                &found.ok_or("no key in the JWKS matches the token's kid")?.1
            }
        };
        let data =
            jsonwebtoken::decode::<Value>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired".to_string(),
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                    ErrorKind::InvalidSignature => "the token's signature is wrong".to_string(),
                    ErrorKind::InvalidAudience => "the token is for another audience".to_string(),
                    ErrorKind::InvalidIssuer => "the token is from another issuer".to_string(),
                    ErrorKind::InvalidAlgorithm => {
                        "the token uses an algorithm not accepted".to_string()
                    }
                    ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                    _ => format!("malformed token: {e}"),
                }
            })?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("token")
            .to_string();
        let permissions: Permissions = match claims.get(&self.permissions_claim) {
            Some(p) => serde_json::from_value(p.clone())
                .map_err(|e| format!("the `{}` claim: {e}", self.permissions_claim))?,
            None => Permissions::default(),
        };
        let mut grant = Grant::from_permissions(subject, &permissions)?;
        grant.expires = expiry(claims.get("exp"), SystemTime::now())?;
        Ok(grant)
    }
}

/// An expiry further away than this is none in practice: it arms no timer, so no instant
/// or timer is ever computed from it (`exp = 2^64 - 1` must not overflow).
const NO_PRACTICAL_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When a token whose `exp` claim is `exp` stops being valid, seen at `now`: `exp` is a
/// NumericDate (RFC 7519: seconds since the epoch, fractions allowed); missing, not a
/// non-negative number, or not after `now`, the token is refused.
fn expiry(exp: Option<&Value>, now: SystemTime) -> Result<Option<SystemTime>, String> {
    let exp = exp.ok_or("the token has no `exp` claim")?;
    let seconds = exp
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("`exp` is not a valid time: {exp}"))?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Only a time beyond any `Duration` fails to convert.
    let Ok(at) = Duration::try_from_secs_f64(seconds) else {
        return Ok(None);
    };
    match at.checked_sub(since_epoch) {
        None | Some(Duration::ZERO) => Err("the token has expired".into()),
        Some(left) if left > NO_PRACTICAL_EXPIRY => Ok(None),
        Some(left) => Ok(Some(now + left)),
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a key as the hex `key_sha256` takes (for `statecast hash-key`).
pub fn key_sha256(key: &str) -> String {
    sha256(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller of a REST request: its grant (from `Authorization: Bearer`) and
/// address. Requests without a valid credential are refused with 401 (and logged).
pub struct Caller {
    pub grant: Grant,
    pub peer: Option<std::net::SocketAddr>,
}

impl axum::extract::FromRequestParts<std::sync::Arc<crate::app::App>> for Caller {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &std::sync::Arc<crate::app::App>,
    ) -> Result<Caller, Self::Rejection> {
        let peer = parts.extensions.get::<crate::listener::Peer>().map(|p| p.0);
        app.check_rate(peer.map(|p| p.ip()), None)
            .map_err(crate::error::ApiError)?;
        app.caller(&parts.headers, None, peer)
            .map_err(crate::error::ApiError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn at(exp: Value) -> Result<Option<SystemTime>, String> {
        expiry(Some(&exp), UNIX_EPOCH + NOW)
    }

    #[test]
    fn a_fractional_exp_expires_at_its_fraction() {
        let exp = NOW.as_secs_f64() + 3.5;
        assert_eq!(
            at(json!(exp)),
            Ok(Some(UNIX_EPOCH + NOW + Duration::from_millis(3500)))
        );
        assert_eq!(
            at(json!(NOW.as_secs() + 4)),
            Ok(Some(UNIX_EPOCH + NOW + Duration::from_secs(4)))
        );
    }

    #[test]
    fn an_exp_past_the_horizon_is_no_expiry_and_never_overflows() {
        for exp in [json!(u64::MAX), json!(f64::MAX), json!(1e300)] {
            assert_eq!(at(exp), Ok(None));
        }
    }

    #[test]
    fn an_exp_now_or_before_has_expired() {
        for exp in [
            json!(0),
            json!(NOW.as_secs()),
            json!(NOW.as_secs_f64() - 0.5),
        ] {
            assert_eq!(at(exp), Err("the token has expired".into()));
        }
    }

    #[test]
    fn an_exp_that_is_not_a_non_negative_number_is_not_a_valid_time() {
        for exp in [
            json!(-1),
            json!(-0.0001),
            json!("1900000000"),
            json!(null),
            json!({}),
        ] {
            let refusal = at(exp.clone()).expect_err("refused");
            assert!(
                refusal.starts_with("`exp` is not a valid time"),
                "{exp}: {refusal}"
            );
        }
        assert_eq!(
            expiry(None, UNIX_EPOCH + NOW),
            Err("the token has no `exp` claim".into())
        );
    }
}
