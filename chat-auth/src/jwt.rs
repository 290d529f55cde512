//! [`JwtAuth`]: a JSON Web Token at the handshake becomes the connection's identity.
//!
//! The rules, in the order they are checked (any failure → HTTP 401, nothing upgraded):
//!
//! 1. A token is presented, by `?token=` or `Authorization: Bearer` (see
//!    [`presented_token`](crate::presented_token)).
//! 2. Its header names exactly the algorithm of the configuration. The algorithm is
//!    pinned by [`JwtAlgorithm`], never taken from the token: `alg: none`, an RS256
//!    token at an HS256 server (or the reverse — the classic key-confusion attack) and
//!    any other algorithm are refused before any signature work. A `crit` header is
//!    refused too (no extension is understood), and keys named by the token (`jwk`,
//!    `jku`, `x5u`, `kid`) are ignored: the key is the configured one.
//! 3. The signature verifies with the configured key.
//! 4. `exp` is present and, with the leeway, in the future; `nbf`, when present, is not
//!    beyond now plus the leeway; `iss` and `aud` are required and must match when the
//!    configuration names them. A token carrying an `aud` is refused by a configuration
//!    without one (RFC 7519 §4.1.3: a recipient that is not named must reject it).
//! 5. `sub` is a valid [`UserId`] (1 to 128 visible characters): the connection's user
//!    id, shared by every connection of that user. `name` is a valid [`Username`] (the
//!    `set_username` rules: trimmed, at least 2 characters, cut to 20, no invisible,
//!    bidi or control characters): the user's display name, and `set_username` is then
//!    refused with `username_locked`. Without `name`, the display name is `sub`'s first
//!    20 characters (`user x` for a one-character `sub`) unless
//!    [`JwtConfig::require_name`] says to refuse.
//!
//! **Identity is `sub`**, never the name: two tokens with one `name` (two "John
//! Smith"s), or two long subjects cut to the same 20 characters, are two users. The
//! engine shows the second one online under a disambiguated name (`John Smith (2)`);
//! nobody is refused or closed because of a name (PROTOCOL.md, "Identity").
//!
//! The connection may stay open until `exp` plus the leeway; then the runtime closes it
//! with 4001 (see [`Admitted::expires_in`]).
//!
//! Refusal reasons ([`TokenError`]) go to the client in the 401 body and to the debug
//! log; they never contain the token.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_core::{
    Admission, Admitted, ConnectionInfo, Identity, Rejection, UserId, Username, async_trait,
};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

use crate::token::presented_token;

/// The default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as
/// the hash output (256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The one signature algorithm a [`JwtAuth`] accepts, with its key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (at least [`MIN_HS256_SECRET_BYTES`] bytes).
    Hs256 {
        /// The shared secret, as raw bytes.
        secret: Vec<u8>,
    },
    /// RSASSA-PKCS1-v1_5 with SHA-256, verified with an RSA public key.
    Rs256 {
        /// The public key in PEM form (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
        public_key_pem: Vec<u8>,
    },
    /// Ed25519 (`alg: EdDSA`), verified with an Ed25519 public key.
    EdDsa {
        /// The public key in PEM form (`BEGIN PUBLIC KEY`).
        public_key_pem: Vec<u8>,
    },
}

impl JwtAlgorithm {
    /// The name the token's `alg` header must carry.
    pub fn name(&self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 { .. } => "HS256",
            JwtAlgorithm::Rs256 { .. } => "RS256",
            JwtAlgorithm::EdDsa { .. } => "EdDSA",
        }
    }
}

impl fmt::Debug for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret; public keys are long and not interesting either.
        write!(f, "JwtAlgorithm::{}", self.name())
    }
}

/// How [`JwtAuth`] validates tokens. Start from [`JwtConfig::new`] and change fields or
/// chain the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The only algorithm accepted, and its key.
    pub algorithm: JwtAlgorithm,
    /// When set, `iss` must be present and equal to it.
    pub issuer: Option<String>,
    /// When set, `aud` must be present and be (or contain) it. When not set, tokens that
    /// carry an `aud` are refused.
    pub audience: Option<String>,
    /// Clock skew allowed between the token's issuer and this server, applied to `exp`
    /// (a token is accepted, and its session lasts, until `exp + leeway`) and `nbf`.
    /// Default [`DEFAULT_LEEWAY`] (30 s).
    pub leeway: Duration,
    /// Refuse tokens without a `name` claim instead of using `sub` as the name.
    /// Default `false`.
    pub require_name: bool,
}

impl JwtConfig {
    /// This algorithm and key, no issuer or audience check, [`DEFAULT_LEEWAY`], `sub` as
    /// the name when `name` is missing.
    pub fn new(algorithm: JwtAlgorithm) -> Self {
        JwtConfig {
            algorithm,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
            require_name: false,
        }
    }
}

chat_core::config_setters! {
    JwtConfig {
        with_algorithm => algorithm: JwtAlgorithm,
        with_issuer => issuer: Option<String>,
        with_audience => audience: Option<String>,
        with_leeway => leeway: Duration,
        with_require_name => require_name: bool,
    }
}

/// Why a [`JwtConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// The HS256 secret is shorter than [`MIN_HS256_SECRET_BYTES`].
    #[error("an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes, got {0}")]
    SecretTooShort(usize),
    /// The PEM holds a private key. The server only needs (and should only hold) the
    /// public half.
    #[error("the {0} key is a private key: configure the public key")]
    PrivateKey(&'static str),
    /// The PEM is not a public key of the configured algorithm.
    #[error("not a valid {algorithm} public key in PEM form: {reason}")]
    InvalidKey {
        /// The configured algorithm.
        algorithm: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// `issuer` or `audience` is set but empty.
    #[error("the JWT {0} is set but empty")]
    Empty(&'static str),
}

/// Why a token was refused. The text (`Display`) is the 401 response's body: it says
/// what to fix and never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token (or an empty one).
    #[error("missing token: send ?token= or Authorization: Bearer")]
    Missing,
    /// More than one token, and they differ, or a repeated `Authorization` header or
    /// `token` parameter.
    #[error("more than one token presented")]
    Ambiguous,
    /// An `Authorization` header with a scheme other than `Bearer`.
    #[error("the Authorization header must use the Bearer scheme")]
    UnsupportedScheme,
    /// Longer than [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES).
    #[error("token too long")]
    TooLong,
    /// Not a JWS compact token, undecodable base64 or JSON, or a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm than the configured one (`none` included).
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The header has a `crit` parameter: an extension this server does not implement.
    #[error("token uses a critical header extension")]
    CriticalHeader,
    /// The signature does not verify with the configured key.
    #[error("invalid token signature")]
    Signature,
    /// A required claim is absent.
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// `exp` (plus the leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is later than now plus the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// `aud` does not name the configured audience (or names one when none is
    /// configured).
    #[error("token audience not accepted")]
    Audience,
    /// `sub` is not a valid user id.
    #[error("token `sub` is not a valid user id")]
    Subject,
    /// `name` (or `sub` standing in for it) is not a valid username.
    #[error("token `name` is not a valid username")]
    Name,
}

/// An [`Admission`] that requires a valid JWT and admits its holder as the token's user.
///
/// ```
/// use chat_auth::{JwtAlgorithm, JwtAuth, JwtConfig};
///
/// let secret = b"a shared secret of at least 32 bytes!".to_vec();
/// let mut config = JwtConfig::new(JwtAlgorithm::Hs256 { secret });
/// config.issuer = Some("https://auth.example".into());
/// let auth = JwtAuth::new(config)?;
/// // chat_core::Server::new(…).with_admission(std::sync::Arc::new(auth))
/// # Ok::<(), chat_auth::JwtConfigError>(())
/// ```
pub struct JwtAuth {
    key: DecodingKey,
    algorithm: &'static str,
    validation: Validation,
    leeway: Duration,
    require_name: bool,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway", &self.leeway)
            .field("require_name", &self.require_name)
            .finish_non_exhaustive()
    }
}

/// The claims this crate reads. Unknown claims are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    name: Option<String>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
}

/// RFC 7519's NumericDate: seconds since the epoch, possibly fractional.
#[derive(Deserialize, Clone, Copy)]
#[serde(transparent)]
struct NumericDate(f64);

impl NumericDate {
    /// `None` for negative, non-finite or unrepresentable values.
    fn to_system_time(self) -> Option<SystemTime> {
        let since_epoch = Duration::try_from_secs_f64(self.0).ok()?;
        UNIX_EPOCH.checked_add(since_epoch)
    }
}

/// The parts of the JOSE header checked before any signature work.
#[derive(Deserialize)]
struct Header {
    alg: String,
    crit: Option<serde::de::IgnoredAny>,
}

impl JwtAuth {
    /// Checks the configuration and loads the key.
    pub fn new(config: JwtConfig) -> Result<Self, JwtConfigError> {
        let JwtConfig {
            algorithm,
            issuer,
            audience,
            leeway,
            require_name,
        } = config;
        let name = algorithm.name();
        let (key, alg) = match &algorithm {
            JwtAlgorithm::Hs256 { secret } => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(JwtConfigError::SecretTooShort(secret.len()));
                }
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtAlgorithm::Rs256 { public_key_pem } => {
                refuse_private(public_key_pem, name)?;
                let key =
                    DecodingKey::from_rsa_pem(public_key_pem).map_err(|e| invalid_key(name, &e))?;
                (key, Algorithm::RS256)
            }
            JwtAlgorithm::EdDsa { public_key_pem } => {
                refuse_private(public_key_pem, name)?;
                let key =
                    DecodingKey::from_ed_pem(public_key_pem).map_err(|e| invalid_key(name, &e))?;
                (key, Algorithm::EdDSA)
            }
        };
        let mut validation = Validation::new(alg);
        // Time claims are checked here, against a `now` the caller passes in (tests pin
        // it; `jsonwebtoken` would read the clock itself, in whole seconds).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // `exp` and `sub` are required by `verify` itself (which also tells a malformed
        // `exp` from a missing one); `iss` and `aud` are `jsonwebtoken`'s to check.
        let mut required = Vec::new();
        if let Some(issuer) = &issuer {
            if issuer.is_empty() {
                return Err(JwtConfigError::Empty("issuer"));
            }
            // Without `iss` in the required set, `jsonwebtoken` skips the check for a
            // token that simply leaves the claim out.
            required.push("iss");
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = &audience {
            if audience.is_empty() {
                return Err(JwtConfigError::Empty("audience"));
            }
            required.push("aud");
            validation.set_audience(&[audience]);
        }
        // With no audience configured, `validate_aud` stays on: a token that names an
        // audience is meant for somebody else.
        validation.set_required_spec_claims(&required);
        Ok(JwtAuth {
            key,
            algorithm: name,
            validation,
            leeway,
            require_name,
        })
    }

    /// Validates `token` as of `now` (see the module docs for the rules): the identity it
    /// carries and how long its session may last.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Admitted, TokenError> {
        self.check_header(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| token_error(e.kind()))?;
        let claims = data.claims;

        let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        let exp = exp.to_system_time().ok_or(TokenError::Malformed)?;
        // A deadline beyond what `SystemTime` represents is no deadline worth keeping.
        let expires_in = match exp.checked_add(self.leeway) {
            Some(deadline) => Some(
                deadline
                    .duration_since(now)
                    .ok()
                    .filter(|left| !left.is_zero())
                    .ok_or(TokenError::Expired)?,
            ),
            None => None,
        };
        if let Some(nbf) = claims.nbf {
            let nbf = nbf.to_system_time().ok_or(TokenError::Malformed)?;
            let earliest = now.checked_add(self.leeway).unwrap_or(now);
            if nbf > earliest {
                return Err(TokenError::NotYetValid);
            }
        }

        let sub = claims.sub.ok_or(TokenError::MissingClaim("sub"))?;
        let user_id = UserId::parse(&sub).map_err(|_| TokenError::Subject)?;
        let username = match (&claims.name, self.require_name) {
            (Some(name), _) => Username::parse(name).map_err(|_| TokenError::Name)?,
            (None, true) => return Err(TokenError::MissingClaim("name")),
            // Named after `sub`: its first 20 characters (a 1-character `sub` becomes
            // `user x`). Subjects that share them (`google-oauth2|1076…`) are told apart
            // by the engine's disambiguation, like any two users with one name.
            (None, false) => Username::parse(&sub)
                .or_else(|_| Username::parse(&format!("user {sub}")))
                .map_err(|_| TokenError::Name)?,
        };
        let admitted = Admitted::user(Identity { user_id, username });
        Ok(match expires_in {
            Some(left) => admitted.expiring_in(left),
            None => admitted,
        })
    }

    /// Pins the algorithm ourselves, before `jsonwebtoken` parses anything, so that
    /// `alg: none` and friends are reported as what they are and a future library change
    /// cannot widen what is accepted.
    fn check_header(&self, token: &str) -> Result<(), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: Header = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if header.alg != self.algorithm {
            return Err(TokenError::Algorithm);
        }
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        Ok(())
    }
}

#[async_trait]
impl Admission for JwtAuth {
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        // The one wall-clock read: `exp` and `nbf` are wall-clock times.
        let now = SystemTime::now();
        presented_token(info)
            .and_then(|token| token.ok_or(TokenError::Missing))
            .and_then(|token| self.verify(&token, now))
            .map_err(|why| {
                tracing::debug!(client = ?info.client_ip(), reason = %why, "token refused");
                Rejection::Unauthorized(why.to_string())
            })
    }
}

/// A PEM labelled as a private key is refused outright: a server that only verifies
/// should never hold one, and `jsonwebtoken` would otherwise accept an RSA private key
/// as if it were the public one.
fn refuse_private(pem: &[u8], algorithm: &'static str) -> Result<(), JwtConfigError> {
    if pem
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(JwtConfigError::PrivateKey(algorithm));
    }
    Ok(())
}

fn invalid_key(algorithm: &'static str, e: &jsonwebtoken::errors::Error) -> JwtConfigError {
    JwtConfigError::InvalidKey {
        algorithm,
        reason: e.to_string(),
    }
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => TokenError::MissingClaim("exp"),
            "sub" => TokenError::MissingClaim("sub"),
            "iss" => TokenError::MissingClaim("iss"),
            "aud" => TokenError::MissingClaim("aud"),
            _ => TokenError::Malformed,
        },
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidSubject => TokenError::Subject,
        // Shape, base64, JSON, UTF-8, claim types, and anything a later version adds.
        _ => TokenError::Malformed,
    }
}
