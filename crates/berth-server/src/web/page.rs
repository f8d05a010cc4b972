//! The web app's page frame (one stylesheet and one script, both inline
//! and allowed by hash in the Content-Security-Policy, so a page is one
//! request and loads nothing else), and the small formatting helpers its
//! pages share: relative times, UTC times, sizes.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_axum::Identity;
use berth_proxy::pages::escape_html as esc;

/// The stylesheet of every page.
pub(crate) const CSS: &str = include_str!("app.css");
/// The script of the web app's pages: confirmation of kills, the running
/// list's refresh, following logs, checks of form fields. Every page works
/// without it.
pub(crate) const JS: &str = include_str!("app.js");

/// The Content-Security-Policy of the web app's pages: nothing from
/// elsewhere, no inline code but [`CSS`] and [`JS`] (by hash), requests
/// to berth only, no framing.
pub(crate) static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src '{css}'; script-src '{js}'; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; frame-ancestors 'none'",
        css = sha256_source(CSS),
        js = sha256_source(JS),
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// A CSP hash source (`sha256-<base64>`) for `text`.
fn sha256_source(text: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes())))
}

/// Which part of the app a page belongs to (its tab in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// The running containers (`/`), and the pages of one container.
    Running,
    /// Tools and data files (`/ui/launch`).
    Launch,
    /// Memory, counts, removals (`/ui/fleet`).
    Fleet,
}

/// A plain page (no navigation; also used for berth's login and error
/// pages, which container hosts serve too): `title` (escaped) and `body`
/// (HTML).
pub(crate) fn plain(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title>\
         <style>{CSS}</style></head><body><main><h1><a href=\"/\">berth</a> · {t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// A page of the web app: the navigation with `nav` current, who is
/// signed in (with the logout form, carrying `csrf_field`, unless that is
/// empty), `title` as the heading and `body` (HTML) under it.
pub(crate) fn framed(nav: Nav, me: Option<&Identity>, csrf_field: &str, title: &str, body: &str) -> String {
    let link = |n: Nav, href: &str, text: &str| {
        let current = if n == nav { " aria-current=\"page\"" } else { "" };
        format!("<li><a href=\"{href}\"{current}>{text}</a></li>")
    };
    // Pages without a CSRF field (the same for everyone: error pages) have
    // no logout form, which would be refused without one.
    let logout = if csrf_field.is_empty() {
        String::new()
    } else {
        format!(" · <form class=inline method=post action=/auth/logout>{csrf_field}<button>Log out</button></form>")
    };
    let who = match me {
        Some(i) => format!(
            "<div class=who>Signed in as <b>{user}</b>{admin}{only}{logout}</div>",
            user = esc(&i.user),
            admin = if i.admin { " (admin)" } else { "" },
            only = i.only.as_ref().map(|o| format!(", for {} only", esc(&o.join(", ")))).unwrap_or_default(),
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · berth</title>\
         <style>{CSS}</style></head><body><a class=skip href=\"#main\">Skip to content</a>\
         <header class=top><a class=brand href=\"/\">berth</a><nav aria-label=\"berth\"><ul>{running}{launch}{fleet}</ul></nav>{who}</header>\
         <main id=main><h1>{t}</h1>{body}</main><script>{JS}</script></body></html>",
        t = esc(title),
        running = link(Nav::Running, "/", "Running"),
        launch = link(Nav::Launch, "/ui/launch", "Launch"),
        fleet = link(Nav::Fleet, "/ui/fleet", "Fleet"),
    )
}

/// `html` as a response with `status`, the page policy and no caching
/// (pages carry CSRF tokens and per-user data).
pub(crate) fn respond(status: StatusCode, html: String) -> Response {
    let mut resp = (status, axum::response::Html(html)).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// How long ago, in words: "just now", "3 min ago", "2 h ago", "4 d ago".
pub(crate) fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A duration, coarsely: "under a minute", "3 min", "2 h 5 min", "4 d 3 h".
pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => "under a minute".to_owned(),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `t` in UTC as `2025-01-31 12:34:56`, to the second.
pub(crate) fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// A `<time>` element for `t`, reading `text`, with the UTC time as its
/// machine value and tooltip.
pub(crate) fn time_el(t: SystemTime, text: &str) -> String {
    let at = utc(t);
    format!("<time datetime=\"{}Z\" title=\"{at} UTC\">{}</time>", at.replace(' ', "T"), esc(text))
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A byte count for people: "812 B", "4.2 KiB", "3.0 MiB".
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)), "2000-02-29 01:01:01");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31 23:59:59");
        assert_eq!(ago(Duration::from_secs(59)), "just now");
        assert_eq!(ago(Duration::from_secs(185)), "3 min ago");
        assert_eq!(ago(Duration::from_secs(7300)), "2 h ago");
        assert_eq!(span(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(4300), "4.2 KiB");
        let el = time_el(UNIX_EPOCH, "<x>");
        assert!(el.starts_with("<time datetime=\"1970-01-01T00:00:00Z\"") && el.ends_with(">&lt;x&gt;</time>"), "{el}");
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_code() {
        let csp = CSP.to_str().unwrap_or_default().to_owned();
        assert!(csp.contains(&sha256_source(CSS)) && csp.contains(&sha256_source(JS)), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        // The inline script and style are exactly the hashed text.
        let html = framed(Nav::Running, None, "", "t", "");
        assert!(html.contains(&format!("<style>{CSS}</style>")) && html.contains(&format!("<script>{JS}</script>")));
    }
}
