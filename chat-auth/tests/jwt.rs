//! The token validation matrix of `JwtAuth`: one test per rule, with a pinned `now`.
//!
//! RS256 and EdDSA tokens are signed with the TEST-ONLY keys in `tests/fixtures/`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_auth::{JwtAlgorithm, JwtAuth, JwtConfig, JwtConfigError, TokenError};
use chat_core::{Admission, ConnectionInfo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &[u8] = b"test-only secret, 32 bytes or more!!";
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/rsa-public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("fixtures/ed25519-private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("fixtures/ed25519-public.pem");
const ED_OTHER_PRIVATE: &[u8] = include_bytes!("fixtures/ed25519-other-private.pem");

/// The pinned "now" of every check here.
const NOW_SECS: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn hs256() -> JwtAuth {
    JwtAuth::new(JwtConfig::new(JwtAlgorithm::Hs256 {
        secret: SECRET.to_vec(),
    }))
    .expect("valid config")
}

fn hs256_with(edit: impl FnOnce(&mut JwtConfig)) -> JwtAuth {
    let mut config = JwtConfig::new(JwtAlgorithm::Hs256 {
        secret: SECRET.to_vec(),
    });
    edit(&mut config);
    JwtAuth::new(config).expect("valid config")
}

/// Claims valid for an hour from `now()`.
fn claims() -> Value {
    json!({"sub": "user-1", "name": "Alice", "exp": NOW_SECS + 3600})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("an object").remove(key);
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("signing works")
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn rs(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test RSA key");
    sign(Algorithm::RS256, &key, claims)
}

fn ed(private: &[u8], claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(private).expect("test Ed25519 key");
    sign(Algorithm::EdDSA, &key, claims)
}

/// A token with a hand-made header and signature.
fn raw(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // The crate under test verifies with jsonwebtoken; signing by hand with the same
    // library's primitive keeps the forged token honest (a real HMAC, wrong key family).
    let token =
        jsonwebtoken::crypto::sign(message, &EncodingKey::from_secret(key), Algorithm::HS256)
            .expect("HMAC signing works");
    URL_SAFE_NO_PAD.decode(token).expect("base64url")
}

fn user_of(result: Result<chat_core::Admitted, TokenError>) -> (String, String, Option<Duration>) {
    let admitted = result.expect("token accepted");
    let identity = admitted.identity.expect("an identity");
    (
        identity.user_id.as_str().to_owned(),
        identity.username.as_str().to_owned(),
        admitted.expires_in,
    )
}

// ---- the happy paths ----------------------------------------------------------------

#[test]
fn a_valid_hs256_token_admits_its_sub_and_name_until_exp_plus_leeway() {
    let (id, name, expires_in) = user_of(hs256().verify(&hs(&claims()), now()));
    assert_eq!((id.as_str(), name.as_str()), ("user-1", "Alice"));
    assert_eq!(expires_in, Some(Duration::from_secs(3600 + 30)));
}

#[test]
fn a_valid_rs256_token_is_accepted_with_the_public_key() {
    let auth = JwtAuth::new(JwtConfig::new(JwtAlgorithm::Rs256 {
        public_key_pem: RSA_PUBLIC.to_vec(),
    }))
    .expect("valid config");
    let (id, _, _) = user_of(auth.verify(&rs(&claims()), now()));
    assert_eq!(id, "user-1");
}

#[test]
fn a_valid_eddsa_token_is_accepted_and_another_signer_is_not() {
    let auth = JwtAuth::new(JwtConfig::new(JwtAlgorithm::EdDsa {
        public_key_pem: ED_PUBLIC.to_vec(),
    }))
    .expect("valid config");
    let (id, _, _) = user_of(auth.verify(&ed(ED_PRIVATE, &claims()), now()));
    assert_eq!(id, "user-1");
    assert_eq!(
        auth.verify(&ed(ED_OTHER_PRIVATE, &claims()), now()),
        Err(TokenError::Signature)
    );
}

#[test]
fn fractional_numeric_dates_are_honoured() {
    let token = hs(&with(claims(), "exp", json!(NOW_SECS as f64 + 0.5)));
    let auth = hs256_with(|c| c.leeway = Duration::ZERO);
    let (_, _, expires_in) = user_of(auth.verify(&token, now()));
    assert_eq!(expires_in, Some(Duration::from_millis(500)));
}

// ---- signature and algorithm --------------------------------------------------------

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let other = EncodingKey::from_secret(b"another secret, also 32 bytes long!!");
    let token = sign(Algorithm::HS256, &other, &claims());
    assert_eq!(hs256().verify(&token, now()), Err(TokenError::Signature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let token = hs(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("admin")).to_string());
    parts[1] = &forged;
    assert_eq!(
        hs256().verify(&parts.join("."), now()),
        Err(TokenError::Signature)
    );
}

#[test]
fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let token = raw(&json!({"alg": alg, "typ": "JWT"}), &claims(), b"");
        assert_eq!(
            hs256().verify(&token, now()),
            Err(TokenError::Algorithm),
            "{alg}"
        );
        // Without even the trailing dot.
        let bare = token.trim_end_matches('.');
        assert_eq!(
            hs256().verify(bare, now()),
            Err(TokenError::Malformed),
            "{alg}"
        );
    }
}

#[test]
fn an_rs256_token_at_an_hs256_server_is_refused() {
    assert_eq!(
        hs256().verify(&rs(&claims()), now()),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused_by_an_rs256_server() {
    // The classic key-confusion forgery: HMAC with the (public) RSA key as the secret.
    let auth = JwtAuth::new(JwtConfig::new(JwtAlgorithm::Rs256 {
        public_key_pem: RSA_PUBLIC.to_vec(),
    }))
    .expect("valid config");
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let signature = hmac_sha256(RSA_PUBLIC, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(auth.verify(&token, now()), Err(TokenError::Algorithm));
}

#[test]
fn other_hmac_strengths_are_refused() {
    let key = EncodingKey::from_secret(SECRET);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, &key, &claims());
        assert_eq!(hs256().verify(&token, now()), Err(TokenError::Algorithm));
    }
}

#[test]
fn a_critical_header_extension_is_refused() {
    let header = json!({"alg": "HS256", "crit": ["exp"], "exp": 1});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let signature = hmac_sha256(SECRET, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(
        hs256().verify(&token, now()),
        Err(TokenError::CriticalHeader)
    );
}

#[test]
fn garbage_is_malformed() {
    for token in ["", "abc", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.e30"] {
        assert_eq!(
            hs256().verify(token, now()),
            Err(TokenError::Malformed),
            "{token:?}"
        );
    }
}

// ---- time ---------------------------------------------------------------------------

#[test]
fn an_expired_token_is_refused() {
    let token = hs(&with(claims(), "exp", json!(NOW_SECS - 3600)));
    assert_eq!(hs256().verify(&token, now()), Err(TokenError::Expired));
}

#[test]
fn a_token_without_exp_is_refused() {
    let token = hs(&without(claims(), "exp"));
    assert_eq!(
        hs256().verify(&token, now()),
        Err(TokenError::MissingClaim("exp"))
    );
}

#[test]
fn exp_of_the_wrong_type_is_malformed() {
    let token = hs(&with(claims(), "exp", json!("tomorrow")));
    assert_eq!(hs256().verify(&token, now()), Err(TokenError::Malformed));
    let negative = hs(&with(claims(), "exp", json!(-5)));
    assert_eq!(hs256().verify(&negative, now()), Err(TokenError::Malformed));
}

#[test]
fn the_leeway_edge_for_exp() {
    // Leeway 30 s: valid while now < exp + 30 s.
    let at = |exp: u64| hs256().verify(&hs(&with(claims(), "exp", json!(exp))), now());
    let (_, _, left) = user_of(at(NOW_SECS - 29));
    assert_eq!(left, Some(Duration::from_secs(1)));
    assert_eq!(at(NOW_SECS - 30), Err(TokenError::Expired));
    assert_eq!(at(NOW_SECS - 31), Err(TokenError::Expired));
    // Leeway zero: exp must be in the future.
    let strict = hs256_with(|c| c.leeway = Duration::ZERO);
    let token = hs(&with(claims(), "exp", json!(NOW_SECS)));
    assert_eq!(strict.verify(&token, now()), Err(TokenError::Expired));
    let token = hs(&with(claims(), "exp", json!(NOW_SECS + 1)));
    assert_eq!(
        strict.verify(&token, now()).expect("valid").expires_in,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn nbf_in_the_future_is_refused_within_the_leeway_it_is_not() {
    let at = |nbf: u64| hs256().verify(&hs(&with(claims(), "nbf", json!(nbf))), now());
    assert_eq!(at(NOW_SECS + 31), Err(TokenError::NotYetValid));
    assert!(at(NOW_SECS + 30).is_ok());
    assert!(at(NOW_SECS - 100).is_ok());
}

// ---- issuer and audience ------------------------------------------------------------

fn iss_aud() -> JwtAuth {
    hs256_with(|c| {
        c.issuer = Some("https://auth.example".into());
        c.audience = Some("chat".into());
    })
}

fn good_iss_aud() -> Value {
    with(
        with(claims(), "iss", json!("https://auth.example")),
        "aud",
        json!("chat"),
    )
}

#[test]
fn issuer_and_audience_match_when_configured() {
    assert!(iss_aud().verify(&hs(&good_iss_aud()), now()).is_ok());
    let many = with(good_iss_aud(), "aud", json!(["billing", "chat"]));
    assert!(iss_aud().verify(&hs(&many), now()).is_ok());
}

#[test]
fn a_wrong_or_missing_issuer_is_refused() {
    let wrong = with(good_iss_aud(), "iss", json!("https://evil.example"));
    assert_eq!(
        iss_aud().verify(&hs(&wrong), now()),
        Err(TokenError::Issuer)
    );
    let missing = without(good_iss_aud(), "iss");
    assert_eq!(
        iss_aud().verify(&hs(&missing), now()),
        Err(TokenError::MissingClaim("iss"))
    );
}

#[test]
fn a_wrong_or_missing_audience_is_refused() {
    let wrong = with(good_iss_aud(), "aud", json!("billing"));
    assert_eq!(
        iss_aud().verify(&hs(&wrong), now()),
        Err(TokenError::Audience)
    );
    let missing = without(good_iss_aud(), "aud");
    assert_eq!(
        iss_aud().verify(&hs(&missing), now()),
        Err(TokenError::MissingClaim("aud"))
    );
}

#[test]
fn a_token_for_some_audience_is_refused_when_none_is_configured() {
    let token = hs(&with(claims(), "aud", json!("billing")));
    assert_eq!(hs256().verify(&token, now()), Err(TokenError::Audience));
}

// ---- sub and name -------------------------------------------------------------------

#[test]
fn an_invalid_sub_is_refused() {
    let too_long = "x".repeat(129);
    for sub in [json!(""), json!(too_long), json!("zero\u{200B}width")] {
        let token = hs(&with(claims(), "sub", sub.clone()));
        assert_eq!(
            hs256().verify(&token, now()),
            Err(TokenError::Subject),
            "{sub}"
        );
    }
    let number = hs(&with(claims(), "sub", json!(42)));
    assert_eq!(hs256().verify(&number, now()), Err(TokenError::Malformed));
    let missing = hs(&without(claims(), "sub"));
    assert_eq!(
        hs256().verify(&missing, now()),
        Err(TokenError::MissingClaim("sub"))
    );
}

#[test]
fn a_name_with_bidi_or_invisible_characters_is_refused() {
    for name in ["\u{202E}ecilA", "Al\u{2066}ice", "A\u{200D}lice", "x"] {
        let token = hs(&with(claims(), "name", json!(name)));
        assert_eq!(
            hs256().verify(&token, now()),
            Err(TokenError::Name),
            "{name:?}"
        );
    }
}

#[test]
fn a_name_follows_the_set_username_rules() {
    let token = hs(&with(
        claims(),
        "name",
        json!("  A name longer than twenty chars "),
    ));
    let (_, name, _) = user_of(hs256().verify(&token, now()));
    assert_eq!(name, "A name longer than t");
}

#[test]
fn without_name_the_sub_is_the_name_unless_a_name_is_required() {
    let token = hs(&without(claims(), "name"));
    let (id, name, _) = user_of(hs256().verify(&token, now()));
    assert_eq!((id.as_str(), name.as_str()), ("user-1", "user-1"));
    let strict = hs256_with(|c| c.require_name = true);
    assert_eq!(
        strict.verify(&token, now()),
        Err(TokenError::MissingClaim("name"))
    );
    // Long subjects are cut to 20 characters for display only: the identity is the
    // whole `sub` (two such users are two users; the engine disambiguates the name).
    let long = "google-oauth2|107612345678901234567";
    let token = hs(&with(without(claims(), "name"), "sub", json!(long)));
    let (id, name, _) = user_of(hs256().verify(&token, now()));
    assert_eq!((id.as_str(), name.as_str()), (long, "google-oauth2|107612"));
    // A one-character `sub` is a valid identity but too short a name.
    let token = hs(&with(without(claims(), "name"), "sub", json!("x")));
    let (id, name, _) = user_of(hs256().verify(&token, now()));
    assert_eq!((id.as_str(), name.as_str()), ("x", "user x"));
}

// ---- configuration ------------------------------------------------------------------

#[test]
fn configuration_mistakes_are_errors() {
    let short = JwtAuth::new(JwtConfig::new(JwtAlgorithm::Hs256 {
        secret: b"short".to_vec(),
    }));
    assert_eq!(short.err(), Some(JwtConfigError::SecretTooShort(5)));

    let private = JwtAuth::new(JwtConfig::new(JwtAlgorithm::Rs256 {
        public_key_pem: RSA_PRIVATE.to_vec(),
    }));
    assert_eq!(private.err(), Some(JwtConfigError::PrivateKey("RS256")));

    let wrong_kind = JwtAuth::new(JwtConfig::new(JwtAlgorithm::EdDsa {
        public_key_pem: RSA_PUBLIC.to_vec(),
    }));
    assert!(matches!(
        wrong_kind.err(),
        Some(JwtConfigError::InvalidKey {
            algorithm: "EdDSA",
            ..
        })
    ));
    let not_pem = JwtAuth::new(JwtConfig::new(JwtAlgorithm::Rs256 {
        public_key_pem: b"hello".to_vec(),
    }));
    assert!(matches!(
        not_pem.err(),
        Some(JwtConfigError::InvalidKey { .. })
    ));

    let mut empty_issuer = JwtConfig::new(JwtAlgorithm::Hs256 {
        secret: SECRET.to_vec(),
    });
    empty_issuer.issuer = Some(String::new());
    assert_eq!(
        JwtAuth::new(empty_issuer).err(),
        Some(JwtConfigError::Empty("issuer"))
    );
}

#[test]
fn debug_output_shows_no_secret() {
    let config = JwtConfig::new(JwtAlgorithm::Hs256 {
        secret: SECRET.to_vec(),
    });
    let shown = format!(
        "{config:?} {:?}",
        JwtAuth::new(config.clone()).expect("valid")
    );
    assert!(!shown.contains("test-only secret"), "{shown}");
    assert!(shown.contains("HS256"), "{shown}");
}

// ---- as an Admission ----------------------------------------------------------------

fn info(query: Option<String>, authorization: Option<String>) -> ConnectionInfo {
    ConnectionInfo {
        query,
        headers: authorization
            .map(|value| ("authorization".to_owned(), value))
            .into_iter()
            .collect(),
        ..ConnectionInfo::default()
    }
}

/// Claims valid for an hour of the real clock (`admit` reads it).
fn live_claims() -> Value {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    with(claims(), "exp", json!(unix + 3600))
}

#[tokio::test]
async fn admit_reads_the_token_from_the_query_or_the_header() {
    let token = hs(&live_claims());
    let auth = hs256();
    for info in [
        info(Some(format!("token={token}")), None),
        info(None, Some(format!("Bearer {token}"))),
        info(
            Some(format!("token={token}")),
            Some(format!("Bearer {token}")),
        ),
    ] {
        let admitted = auth.admit(&info).await.expect("admitted");
        let identity = admitted.identity.expect("an identity");
        assert_eq!(identity.user_id.as_str(), "user-1");
        let left = admitted.expires_in.expect("an expiry");
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3630));
    }
}

#[tokio::test]
async fn admit_refuses_with_401_and_never_echoes_the_token() {
    let auth = hs256();
    let missing = auth.admit(&info(None, None)).await.expect_err("refused");
    assert_eq!(missing.status(), 401);
    assert!(missing.reason().starts_with("missing token"));

    let expired = hs(&with(claims(), "exp", json!(1_000)));
    let refused = auth
        .admit(&info(Some(format!("token={expired}")), None))
        .await
        .expect_err("refused");
    assert_eq!((refused.status(), refused.reason()), (401, "token expired"));

    let other = hs(&with(live_claims(), "sub", json!("mallory")));
    let two = auth
        .admit(&info(
            Some(format!("token={}", hs(&live_claims()))),
            Some(format!("Bearer {other}")),
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        (two.status(), two.reason()),
        (401, "more than one token presented")
    );
    for rejection in [missing, refused, two] {
        assert!(!rejection.reason().contains("eyJ"), "{rejection:?}");
    }
}
