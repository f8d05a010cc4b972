//! Small text helpers: base64, percent-decoding, query strings, HTML escaping.
//!
//! ```
//! use berth_tool_http::text::{html_escape, query_param};
//!
//! assert_eq!(query_param("path=%2Ftmp%2Fa+b&n=3", "path"), Some(b"/tmp/a b".to_vec()));
//! assert_eq!(html_escape("<b>&</b>"), "&lt;b&gt;&amp;&lt;/b&gt;");
//! ```

/// The standard base64 alphabet (RFC 4648 §4).
const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` as standard base64 with `=` padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(BASE64_ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Value of one ASCII hex digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes in `s` (and `+` as a space when `plus_as_space`,
/// as in query strings). Malformed escapes are kept as they are.
pub fn percent_decode(s: &str, plus_as_space: bool) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The percent-decoded value of the first parameter `name` in the query
/// string `query` (without the leading `?`). A parameter without `=` has an
/// empty value.
pub fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key, true) == name.as_bytes()).then(|| percent_decode(value, true))
    })
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64_encode(input), expected);
        }
        assert_eq!(base64_encode(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("hello%20world", false), b"hello world");
        assert_eq!(percent_decode("a+b", false), b"a+b");
        assert_eq!(percent_decode("a+b", true), b"a b");
        assert_eq!(percent_decode("%2f%2F%41", false), b"//A");
        assert_eq!(percent_decode("100%", false), b"100%");
        assert_eq!(percent_decode("%zz%4", false), b"%zz%4");
        assert_eq!(percent_decode("%C3%A9", false), "é".as_bytes());
        assert_eq!(percent_decode("%ff", false), [0xff]);
    }

    #[test]
    fn query_params() {
        let q = "path=%2Ftmp%2Fa+b&n=3&flag&n=4";
        assert_eq!(query_param(q, "path"), Some(b"/tmp/a b".to_vec()));
        assert_eq!(query_param(q, "n"), Some(b"3".to_vec()));
        assert_eq!(query_param(q, "flag"), Some(Vec::new()));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param("", "n"), None);
    }

    #[test]
    fn html_escaping() {
        assert_eq!(html_escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(html_escape("{\"a\": 1}"), "{&quot;a&quot;: 1}");
        assert_eq!(html_escape("plain é"), "plain é");
    }
}
