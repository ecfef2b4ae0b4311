//! NATS client credentials carried in the URLs: `nats://user:password@host:4222` or
//! `nats://token@host:4222` (percent-encoded where needed). async-nats ignores credentials in a
//! URL, so they are taken out and handed to the client; and every URL we log goes through
//! [`redact_urls`] first ([`redact_url`] serves any one URL with a login, PostgreSQL's too).

use percent_encoding::percent_decode_str;

use crate::error::QueueError;

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    UserPassword { user: String, password: String },
    Token(String),
}

// By hand: a password must not reach a log through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, .. }}"),
            Credentials::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// The URLs without their credentials, and the one set of credentials they carry. URLs that
/// disagree are refused: a client has one identity, whichever server it reaches.
pub(crate) fn split_credentials(urls: &[String]) -> Result<(Vec<String>, Option<Credentials>), QueueError> {
    let mut bare = Vec::with_capacity(urls.len());
    let mut found: Option<Option<Credentials>> = None;
    for url in urls {
        let (without, credentials) = split_one(url)?;
        match &found {
            Some(previous) if *previous != credentials => {
                return Err(QueueError::Config(format!(
                    "the NATS URLs carry different credentials ({}): give every URL the same user and password",
                    redact_urls(&urls.join(","))
                )))
            }
            _ => found = Some(credentials),
        }
        bare.push(without);
    }
    Ok((bare, found.flatten()))
}

fn split_one(url: &str) -> Result<(String, Option<Credentials>), QueueError> {
    let Some((userinfo, start, end)) = userinfo(url) else {
        return Ok((url.to_owned(), None));
    };
    let decode = |part: &str| {
        percent_decode_str(part).decode_utf8().map(|text| text.into_owned()).map_err(|_| {
            QueueError::Config(format!("the credentials in the NATS URL {} are not UTF-8", redact_urls(url)))
        })
    };
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => Credentials::UserPassword { user: decode(user)?, password: decode(password)? },
        None => Credentials::Token(decode(userinfo)?),
    };
    Ok((format!("{}{}", &url[..start], &url[end..]), Some(credentials)))
}

/// `user:password` of `scheme://user:password@host...`, with the byte range of `user:password@`.
fn userinfo(url: &str) -> Option<(&str, usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_len = url[start..].find(['/', '?', '#']).unwrap_or(url.len() - start);
    let at = url[start..start + authority_len].rfind('@')?;
    Some((&url[start..start + at], start, start + at + 1))
}

/// `urls` (comma-separated) with every password or token replaced by `***`, for logs and errors.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',').map(redact_url).collect::<Vec<_>>().join(",")
}

/// One `scheme://user:password@host...` URL (NATS, PostgreSQL, any) with its password or token
/// replaced by `***`, for logs and errors; a URL without credentials is returned as it is.
///
/// A password holding `/`, `?` or `#` unencoded ends the authority early for a strict reader, but
/// PostgreSQL's URL parser reads the credentials up to the first `@` whatever they hold: so when
/// the authority has no `@` and the rest of the URL has one, everything before that `@` is taken
/// for credentials too. Hiding a path that held an `@` costs a log line some detail; showing a
/// password would cost the password.
pub fn redact_url(url: &str) -> String {
    let userinfo = userinfo(url).or_else(|| {
        let start = url.find("://")? + 3;
        let at = url[start..].find('@')?;
        Some((&url[start..start + at], start, start + at + 1))
    });
    match userinfo {
        Some((info, start, end)) => {
            let shown = match info.split_once(':') {
                // A user name never holds `/`, `?` or `#`; if this one does, it is not one.
                Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***@"),
                _ => "***@".to_owned(),
            };
            format!("{}{shown}{}", &url[..start], &url[end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn user_and_password_are_taken_out_of_every_url() {
        let (bare, credentials) = split_credentials(&strings(&[
            "nats://resizer:p%40ss@10.0.0.11:4222",
            "nats://resizer:p%40ss@10.0.0.12:4222",
        ]))
        .expect("same credentials");
        assert_eq!(bare, ["nats://10.0.0.11:4222", "nats://10.0.0.12:4222"]);
        assert_eq!(credentials, Some(Credentials::UserPassword { user: "resizer".into(), password: "p@ss".into() }));
    }

    #[test]
    fn a_lone_user_part_is_a_token_and_plain_urls_have_none() {
        let (bare, credentials) = split_credentials(&strings(&["nats://s3cret@host:4222/"])).expect("token");
        assert_eq!((bare[0].as_str(), credentials), ("nats://host:4222/", Some(Credentials::Token("s3cret".into()))));
        let (bare, credentials) = split_credentials(&strings(&["nats://127.0.0.1:4222", "host:4222"])).expect("none");
        assert_eq!((bare, credentials), (strings(&["nats://127.0.0.1:4222", "host:4222"]), None));
    }

    #[test]
    fn urls_with_different_credentials_are_refused_without_showing_them() {
        for urls in [&["nats://a:one@h1:4222", "nats://a:two@h2:4222"][..], &["nats://a:one@h1:4222", "nats://h2:4222"]]
        {
            let error = split_credentials(&strings(urls)).expect_err("refused").to_string();
            assert!(error.contains("different credentials"), "{error}");
            assert!(!error.contains("one") && !error.contains("two"), "{error}");
        }
    }

    #[test]
    fn redaction_hides_passwords_and_tokens_only() {
        assert_eq!(
            redact_urls("nats://resizer:pw@h1:4222,nats://tok@h2:4222,nats://h3:4222,h4:4222"),
            "nats://resizer:***@h1:4222,nats://***@h2:4222,nats://h3:4222,h4:4222"
        );
        // A password with `/`, `?` or `#` written unencoded (PostgreSQL reads up to the first `@`)
        // is hidden too, at the cost of hiding a path that holds an `@`.
        for url in [
            "postgres://identity:pa/ss@db/resizer",
            "postgres://identity:pa?ss@db/resizer",
            "postgres://identity:p#w@db/resizer",
        ] {
            assert_eq!(redact_url(url), "postgres://identity:***@db/resizer");
        }
        assert_eq!(redact_urls("nats://h1:4222/x@y"), "nats://h1:***@y");
        assert_eq!(
            redact_url("postgres://db:5432/resizer?sslmode=verify-full"),
            "postgres://db:5432/resizer?sslmode=verify-full"
        );
        // One URL whose password holds a comma (PostgreSQL's, say) is redacted whole.
        assert_eq!(redact_url("postgres://identity:a,b@db:5432/resizer"), "postgres://identity:***@db:5432/resizer");
        let debug = format!("{:?}", Credentials::UserPassword { user: "u".into(), password: "hidden".into() });
        assert!(!debug.contains("hidden"), "{debug}");
    }
}
