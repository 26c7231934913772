//! The `?token=` of a query string, percent-decoded: how every transport that allows a
//! token in the URL (a browser cannot set headers on a WebSocket or an `EventSource`)
//! reads it.

/// The value of `token` in `query` (`a=1&token=...`), decoded.
pub(crate) fn token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
}

/// `%XX` escapes and `+` decoded.
fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_among_other_parameters_and_decoded() {
        assert_eq!(
            token(Some("match=a%2F%23&token=a%2Bb+c%3D")).as_deref(),
            Some("a+b c=")
        );
        assert_eq!(token(Some("token=plain")).as_deref(), Some("plain"));
        assert_eq!(token(Some("mytoken=x")), None);
        assert_eq!(token(None), None);
        // A stray `%` stays as it is.
        assert_eq!(token(Some("token=100%")).as_deref(), Some("100%"));
    }
}
