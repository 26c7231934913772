//! [`redact`]: the one function through which every URL a source or route is configured
//! with, and every error that may quote one, is shown (in `/api/health`, on `_sources/<name>`,
//! in the log). A URL's userinfo and its query (and fragment) are where credentials live
//! (`http://user:pass@host`, `?apikey=…`, `?token=…`): they become `***`, so
//! `http://admin:pw@host/status?apikey=k` shows as `http://***@host/status?***`. The scheme,
//! host, port and path stay: they are what tells a user which device is at fault.

use std::borrow::Cow;

/// What a secret part of a URL is replaced with.
const HIDDEN: &str = "***";

/// `text` with the userinfo and query of every URL in it replaced by `***`. A URL is found
/// by its `scheme://`, and ends at white space or a quote; closing punctuation right after
/// it (`)`, `,`, `.`, ...: reqwest writes "for url (http://…)") stays outside it. Idempotent:
/// redacting a redacted text changes nothing.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        out.push_str(&rest[..at + 3]);
        if scheme_start == at {
            // No scheme before `://`: not a URL; go on after it.
            rest = after;
            continue;
        }
        redact_after_scheme(&after[..end], &mut out);
        rest = &after[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends `url` (what follows `scheme://`) with its userinfo, query and fragment hidden.
fn redact_after_scheme(url: &str, out: &mut String) {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, tail) = url.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(HIDDEN);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let Some(secret_start) = tail.find(['?', '#']) else {
        out.push_str(tail);
        return;
    };
    let (path, secret) = tail.split_at(secret_start);
    out.push_str(path);
    // Punctuation that closes the sentence around the URL is not part of it.
    let kept = secret.trim_end_matches([')', ']', '}', ',', '.', ';', ':']);
    out.push_str(&secret[..1]);
    if kept.len() > 1 {
        out.push_str(HIDDEN);
    }
    out.push_str(&secret[kept.len()..]);
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn userinfo_and_query_are_hidden_and_the_rest_stays() {
        assert_eq!(
            redact("http://admin:pw@10.0.0.5:8080/status?apikey=k&x=1"),
            "http://***@10.0.0.5:8080/status?***"
        );
        assert_eq!(redact("ws://u@host/ws#token=t"), "ws://***@host/ws#***");
        assert_eq!(
            redact("mqtt://user:secret@broker:1883"),
            "mqtt://***@broker:1883"
        );
    }

    #[test]
    fn urls_inside_an_error_are_found_and_the_sentence_around_them_kept() {
        let reqwest = "error sending request for url (http://127.0.0.1:9/s?apikey=k): \
                       client error (Connect): Connection refused";
        assert_eq!(
            redact(reqwest),
            "error sending request for url (http://127.0.0.1:9/s?***): \
             client error (Connect): Connection refused"
        );
        assert_eq!(
            redact("url \"https://a:b@x/p?q\": bad, also wss://y/?t=1."),
            "url \"https://***@x/p?***\": bad, also wss://y/?***."
        );
    }

    #[test]
    fn text_without_a_secret_is_unchanged_and_redacting_twice_changes_nothing() {
        for text in [
            "no url here",
            "http://127.0.0.1:8080/status",
            "a :// that is no url",
            "http://host/path?",
        ] {
            assert_eq!(redact(text), text);
        }
        let once = redact("see http://a:b@h/p?k=v#f and ws://c@d?x").into_owned();
        assert!(!once.contains("k=v") && !once.contains("a:b") && !once.contains("c@"));
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn non_ascii_text_around_a_url_is_kept_whole() {
        assert_eq!(
            redact("gerät ünreachable: http://ü:p@höst/ä?ö=1 – ende"),
            "gerät ünreachable: http://***@höst/ä?*** – ende"
        );
        assert_eq!(redact("ü://x?y ähttp://z@w"), "ü://x?y ähttp://***@w");
    }
}
