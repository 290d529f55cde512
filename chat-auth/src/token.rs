//! Where a handshake's bearer token is: `Authorization: Bearer <token>` or `?token=`.
//!
//! Browsers cannot set headers on a WebSocket, so they put the token in the query;
//! other clients may use either. A request that presents the token in more than one
//! place must present the *same* token everywhere: two different tokens are refused
//! rather than one of them picked, so no proxy or client quirk decides which identity
//! wins.

use chat_core::ConnectionInfo;

use crate::jwt::TokenError;

/// The query parameter that carries a token.
pub const TOKEN_QUERY_PARAM: &str = "token";

/// Longest token accepted, in bytes. Real JWTs are well under 2 KiB; the bound keeps the
/// base64 and JSON work of a refused request small. (The transport already bounds the
/// request head, 16 KiB by default.)
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The token the handshake presents.
///
/// `Ok(None)`: no token at all. Errors: a non-`Bearer` `Authorization` header, more than
/// one `Authorization` header, two different tokens, an empty or oversized token.
pub fn presented_token(info: &ConnectionInfo) -> Result<Option<String>, TokenError> {
    let mut headers = info
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.as_str());
    let from_header = match (headers.next(), headers.next()) {
        (None, _) => None,
        (Some(value), None) => Some(bearer(value)?),
        (Some(_), Some(_)) => return Err(TokenError::Ambiguous),
    };
    let mut params = info.query_params(TOKEN_QUERY_PARAM);
    let from_query = match (params.next(), params.next()) {
        (None, _) => None,
        (Some(token), None) => Some(token),
        (Some(_), Some(_)) => return Err(TokenError::Ambiguous),
    };
    let token = match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => return Err(TokenError::Ambiguous),
        (Some(token), _) | (None, Some(token)) => token,
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    Ok(Some(token))
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1; the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(value: &str) -> Result<String, TokenError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::UnsupportedScheme);
    }
    Ok(rest.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(query: Option<&str>, headers: &[(&str, &str)]) -> ConnectionInfo {
        ConnectionInfo {
            query: query.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ConnectionInfo::default()
        }
    }

    #[test]
    fn from_the_query() {
        let got = presented_token(&info(Some("room=a&token=abc.def.ghi"), &[]));
        assert_eq!(got, Ok(Some("abc.def.ghi".into())));
    }

    #[test]
    fn from_the_authorization_header_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER   abc  "] {
            let got = presented_token(&info(None, &[("authorization", value)]));
            assert_eq!(got, Ok(Some("abc".into())), "{value}");
        }
    }

    #[test]
    fn none_anywhere() {
        assert_eq!(presented_token(&info(Some("room=a"), &[])), Ok(None));
    }

    #[test]
    fn the_same_token_in_both_places_is_fine() {
        let got = presented_token(&info(Some("token=abc"), &[("authorization", "Bearer abc")]));
        assert_eq!(got, Ok(Some("abc".into())));
    }

    #[test]
    fn two_different_tokens_are_refused() {
        let both = info(Some("token=abc"), &[("authorization", "Bearer xyz")]);
        assert_eq!(presented_token(&both), Err(TokenError::Ambiguous));
        let twice = info(Some("token=abc&token=abc"), &[]);
        assert_eq!(presented_token(&twice), Err(TokenError::Ambiguous));
        let two_headers = info(
            None,
            &[("authorization", "Bearer a"), ("Authorization", "Bearer a")],
        );
        assert_eq!(presented_token(&two_headers), Err(TokenError::Ambiguous));
    }

    #[test]
    fn other_schemes_and_empty_or_huge_tokens_are_refused() {
        let basic = info(None, &[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(presented_token(&basic), Err(TokenError::UnsupportedScheme));
        let bare = info(None, &[("authorization", "Bearer")]);
        assert_eq!(presented_token(&bare), Err(TokenError::Missing));
        let empty = info(Some("token="), &[]);
        assert_eq!(presented_token(&empty), Err(TokenError::Missing));
        let huge = format!("token={}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            presented_token(&info(Some(&huge), &[])),
            Err(TokenError::TooLong)
        );
    }
}
