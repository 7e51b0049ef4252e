//! HTML pages of the development provider: login form, error page, signed-out page.
//!
//! Every value that reaches a page is HTML-escaped here, including values from the request
//! (client_id, error texts), so the pages are not an XSS playground. Each page carries the
//! "not for production" banner.

use super::users::{DemoGroups, DEMO_USERS};

const BANNER: &str = "Development OpenID provider of portcullis: NOT for production. \
                      Demo users and passwords are public.";

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}\
         .banner{{background:#b00020;color:#fff;padding:.6em;font-weight:bold}}\
         .error{{color:#b00020}}</style></head><body>\
         <div class=\"banner\" role=\"alert\">{banner}</div>\n<h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
        banner = escape(BANNER),
    )
}

/// The login form: lists the demo users and posts `username`, `password` and the hidden
/// `request_id` to `action` (a path on this server).
pub(crate) fn login_form(
    action: &str,
    request_id: &str,
    client_id: &str,
    error: Option<&str>,
) -> String {
    let mut rows = String::new();
    for u in DEMO_USERS {
        let groups = match u.groups {
            DemoGroups::List([]) => "(none)".to_owned(),
            DemoGroups::List(list) => list.join(", "),
            DemoGroups::Generated { count, .. } => format!("{count} long group names"),
        };
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
            escape(u.username),
            escape(u.password),
            escape(u.email),
            escape(&groups)
        ));
    }
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>Signing in to <code>{client}</code>.</p>\n{error}\
         <form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"request_id\" value=\"{request_id}\">\n\
         <p><label>Username <input name=\"username\" autocomplete=\"username\" autofocus></label></p>\n\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\n\
         <p><button type=\"submit\">Sign in</button></p>\n</form>\n\
         <table><caption>Demo users</caption>\
         <tr><th>username</th><th>password</th><th>email</th><th>groups</th></tr>\n{rows}</table>",
        client = escape(client_id),
        action = escape(action),
        request_id = escape(request_id),
    );
    page("Sign in", &body)
}

/// An error shown to the user instead of a redirect (unknown client, unregistered redirect_uri).
pub(crate) fn error_page(title: &str, message: &str) -> String {
    page(
        title,
        &format!("<p class=\"error\">{}</p>", escape(message)),
    )
}

/// Shown by end_session when there is no post_logout_redirect_uri.
pub(crate) fn signed_out() -> String {
    page(
        "Signed out",
        "<p>You are signed out of the development provider.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_from_the_request() {
        let html = login_form(
            "/login",
            "r\"id",
            "<script>alert(1)</script>",
            Some("bad & 'x'"),
        );
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("value=\"r&quot;id\""));
        assert!(html.contains("bad &amp; &#39;x&#39;"));
        assert!(html.contains("NOT for production"));
        assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
        assert!(html.contains("<button type=\"submit\">"));
        assert!(html.contains("<code>alice</code>") && html.contains("400 long group names"));
        assert!(error_page("t", "<b>").contains("&lt;b&gt;"));
    }
}
