//! `[store] url`: a store's URL, which may carry a password.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A store's URL (`[store] url`, `YOUOPS_STORE_URL`). It may carry a
/// password, so it shows itself, formatted or serialized, with the password
/// masked: `postgres://app:***@db/youops`. [`expose`](Self::expose) gives
/// the whole URL to the code that connects.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// Wrap a URL.
    pub fn new(url: impl Into<String>) -> Self {
        StoreUrl(url.into())
    }

    /// The whole URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme before `://`, if the URL has one.
    pub fn scheme(&self) -> Option<&str> {
        let (scheme, _) = self.0.split_once("://")?;
        let ok = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        ok.then_some(scheme)
    }

    /// The URL with the password masked: in the user info
    /// (`user:password@`) and in a `password=` query parameter.
    pub fn redacted(&self) -> String {
        let mut out = self.0.clone();
        if let Some((scheme, rest)) = self.0.split_once("://") {
            // Up to the query, not the path: a password written with an
            // unencoded `/` must not end the user info early (hiding a
            // path's `@` too is the safe side).
            let authority_end = rest.find(['?', '#']).unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@') {
                if let Some(colon) = rest[..at].find(':') {
                    out = format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
                }
            }
        }
        mask_query_password(&out)
    }
}

/// `password=…` in a query string, masked.
fn mask_query_password(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({:?})", self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let cases = [
            (
                "postgres://app:s3cret@db.example:5432/youops?sslmode=require",
                "postgres://app:***@db.example:5432/youops?sslmode=require",
            ),
            (
                "postgresql://app@/youops?host=/run/pg",
                "postgresql://app@/youops?host=/run/pg",
            ),
            (
                "postgres:///youops?user=app&password=s3cret&host=/run/pg",
                "postgres:///youops?user=app&password=***&host=/run/pg",
            ),
            (
                "postgres://app:p%40ss@db/youops",
                "postgres://app:***@db/youops",
            ),
            ("postgres://a:b@c:d@db/x", "postgres://a:***@db/x"),
            ("/var/lib/youops", "/var/lib/youops"),
        ];
        for (url, shown) in cases {
            let u = StoreUrl::new(url);
            assert_eq!(u.redacted(), shown);
            assert_eq!(u.to_string(), shown);
            assert_eq!(format!("{u:?}"), format!("StoreUrl({shown:?})"));
            assert_eq!(serde_json::to_string(&u).unwrap(), format!("{shown:?}"));
            assert_eq!(u.expose(), url);
            for secret in ["s3cret", "p%40ss"] {
                assert!(!u.to_string().contains(secret) && !format!("{u:?}").contains(secret));
            }
        }
        assert_eq!(StoreUrl::new("postgres://x/y").scheme(), Some("postgres"));
        assert_eq!(StoreUrl::new("/a/b").scheme(), None);
        assert_eq!(StoreUrl::new("a b://x").scheme(), None);
    }

    proptest::proptest! {
        /// Any URL, any password: redacting never panics, and a password
        /// given in the user info or a `password=` parameter never shows.
        #[test]
        fn no_password_ever_shows(
            scheme in "(postgres|postgresql|x)",
            user in "[a-z%0-9]{0,8}",
            password in "[A-Za-z0-9!%*+~/]{6,16}",
            host in "[a-z0-9.:\\[\\]/@?&=]{0,20}",
            in_query in proptest::bool::ANY,
        ) {
            let url = if in_query {
                format!("{scheme}://{user}@{host}/db?a=1&password={password}&b=2")
            } else {
                format!("{scheme}://{user}:{password}@{host}/db")
            };
            let u = StoreUrl::new(url.clone());
            let shown = [u.redacted(), u.to_string(), format!("{u:?}")];
            for s in shown {
                proptest::prop_assert!(!s.contains(&password), "{s} (from {url})");
            }
            proptest::prop_assert_eq!(u.expose(), url.as_str());
        }

        /// Redacting and reading the scheme of any text never panics.
        #[test]
        fn any_text_is_handled(text in "\\PC{0,60}") {
            let u = StoreUrl::new(text);
            let _ = (u.redacted(), u.scheme());
        }
    }
}
