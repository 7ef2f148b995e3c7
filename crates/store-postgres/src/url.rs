//! [`PgUrl`]: where the store connects, parsed from a `postgres://` URL (or
//! taken from a `tokio_postgres::Config`), whose `Display` and `Debug` never
//! show the password.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode as PgSslMode};

/// How the connection is encrypted: the URL's `sslmode`, as libpq spells it.
///
/// Over Unix sockets no TLS is used, whatever the mode (as libpq). Over TCP,
/// every mode but `disable` uses rustls, trusting the system's root
/// certificates, or exactly the certificates of the URL's `sslrootcert` PEM
/// file when it names one (a private CA). The server's certificate chain is
/// always verified, in every mode that uses TLS (unlike libpq, `require`
/// does not accept an unverified certificate):
///
/// - `prefer` and `require`: the chain, and the host name against the
///   certificate (as `verify-full`; `prefer` goes without TLS only when the
///   server does not offer it, or no root certificate is found);
/// - `verify-ca`: the chain only, not the host name (as libpq);
/// - `verify-full`: the chain, and the host name (or IP address) of the URL
///   against the certificate's names.
///
/// An `sslrootcert` file that cannot be read or holds no certificate is an
/// error (naming the file) in every mode, `prefer` too, whenever TLS would be
/// used (a TCP host, and not `disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (libpq's default).
    Prefer,
    /// TLS or no connection (the certificate chain and host name are
    /// verified, as `verify-full`).
    Require,
    /// TLS or no connection (the certificate chain is verified, the host
    /// name is not).
    VerifyCa,
    /// TLS or no connection (the certificate and host name are verified).
    VerifyFull,
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(format!("unknown sslmode {s:?}")),
        })
    }
}

/// Where a [`PgStore`](crate::PgStore) connects: a parsed
/// `postgres://user:password@host:port/db?sslmode=require` or
/// `postgresql://user@/db?host=/path/to/socket-dir` URL.
///
/// `Display` and `Debug` print the URL with the password as `***`:
///
/// ```
/// use youops_store_postgres::PgUrl;
///
/// let url: PgUrl = "postgres://ops:s3cret@db.example:5433/audit?sslmode=require".parse().unwrap();
/// assert_eq!(url.to_string(), "postgres://ops:***@db.example:5433/audit?sslmode=require");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    ssl: SslMode,
    root_cert: Option<PathBuf>,
}

impl PgUrl {
    /// Parse a `postgres://` or `postgresql://` URL. Query parameters:
    /// `host` (a host name, or a socket directory starting with `/`), `port`,
    /// `user`, `password`, `dbname`, `sslmode`, `sslrootcert` (a PEM file of
    /// the certificates to trust instead of the system's roots),
    /// `application_name`, `connect_timeout` (seconds). The error never
    /// contains the password.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or("a PostgreSQL URL starts with postgres:// or postgresql://")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let mut config = tokio_postgres::Config::new();
        let (userinfo, hostspec) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                config.user(decode(user, "the user name")?);
            }
            if let Some(p) = password {
                let p = urlencoding::decode_binary(p.as_bytes());
                config.password(p.as_ref());
            }
        }
        parse_hosts(&mut config, hostspec)?;
        if !path.is_empty() {
            config.dbname(decode(path, "the database name")?);
        }
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "password" {
                let p = urlencoding::decode_binary(value.as_bytes());
                config.password(p.as_ref());
                continue;
            }
            let value = decode(value, &format!("parameter `{key}`"))?;
            if key == "sslrootcert" {
                if value.is_empty() {
                    return Err("sslrootcert is empty: give the path of a PEM file".into());
                }
                root_cert = Some(PathBuf::from(value));
                continue;
            }
            apply_param(&mut config, &mut ssl, key, &value)?;
        }
        if config.get_hosts().is_empty() {
            return Err(
                "no host: give one (postgres://host/db) or a socket directory \
                        (postgresql://user@/db?host=/run/postgresql)"
                    .into(),
            );
        }
        config.ssl_mode(pg_ssl_mode(ssl));
        Ok(PgUrl {
            config,
            ssl,
            root_cert,
        })
    }

    /// Connect as `config` says; TLS as its `ssl_mode` says (`prefer` or
    /// `require`: rustls with the system's roots).
    pub fn from_config(config: tokio_postgres::Config) -> PgUrl {
        let ssl = match config.get_ssl_mode() {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        PgUrl {
            config,
            ssl,
            root_cert: None,
        }
    }

    /// The connection settings (with the password: do not log them).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl
    }

    /// The URL's `sslrootcert`: the PEM file whose certificates are trusted
    /// instead of the system's roots.
    pub fn ssl_root_cert(&self) -> Option<&std::path::Path> {
        self.root_cert.as_deref()
    }

    /// Whether connections use TLS (rustls): some host is reached over TCP,
    /// and `sslmode` is not `disable`.
    pub fn uses_tls(&self) -> bool {
        self.ssl != SslMode::Disable
            && self
                .config
                .get_hosts()
                .iter()
                .any(|h| matches!(h, Host::Tcp(_)))
    }

    /// The password, if any (for redacting it from error messages).
    pub(crate) fn password(&self) -> Option<String> {
        self.config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

fn parse_hosts(config: &mut tokio_postgres::Config, hostspec: &str) -> Result<(), String> {
    for spec in hostspec.split(',').filter(|s| !s.is_empty()) {
        let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 host without its `]`")?;
            (h, after.strip_prefix(':'))
        } else {
            match spec.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (spec, None),
            }
        };
        if !host.is_empty() {
            config.host(decode(host, "a host name")?);
        }
        if let Some(p) = port {
            config.port(parse_port(p)?);
        }
    }
    Ok(())
}

fn apply_param(
    config: &mut tokio_postgres::Config,
    ssl: &mut SslMode,
    key: &str,
    value: &str,
) -> Result<(), String> {
    match key {
        "host" => {
            for h in value.split(',').filter(|h| !h.is_empty()) {
                if h.starts_with('/') {
                    config.host_path(PathBuf::from(h));
                } else {
                    config.host(h);
                }
            }
        }
        "port" => {
            for p in value.split(',') {
                config.port(parse_port(p)?);
            }
        }
        "user" => {
            config.user(value);
        }
        "dbname" => {
            config.dbname(value);
        }
        "sslmode" => *ssl = value.parse()?,
        "application_name" => {
            config.application_name(value);
        }
        "connect_timeout" => {
            let secs: u64 = value
                .parse()
                .map_err(|_| format!("connect_timeout {value:?} is not a number of seconds"))?;
            config.connect_timeout(Duration::from_secs(secs));
        }
        _ => return Err(format!("unknown parameter `{key}`")),
    }
    Ok(())
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse().map_err(|_| format!("invalid port {p:?}"))
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    urlencoding::decode(s)
        .map(|c| c.into_owned())
        .map_err(|_| format!("{what} is not valid percent-encoded UTF-8"))
}

fn pg_ssl_mode(ssl: SslMode) -> PgSslMode {
    match ssl {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    }
}

impl FromStr for PgUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PgUrl::parse(s)
    }
}

fn enc(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

impl fmt::Display for PgUrl {
    /// The URL with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.write_str("postgres://")?;
        if let Some(user) = c.get_user() {
            f.write_str(&enc(user))?;
        }
        if c.get_password().is_some() {
            f.write_str(":***")?;
        }
        if c.get_user().is_some() || c.get_password().is_some() {
            f.write_str("@")?;
        }
        let mut params: Vec<(&str, String)> = Vec::new();
        let ports = c.get_ports();
        let mut tcp = Vec::new();
        for (i, h) in c.get_hosts().iter().enumerate() {
            let port = ports.get(i).or(ports.first());
            match h {
                Host::Tcp(name) => {
                    let name = if name.contains(':') {
                        format!("[{name}]")
                    } else {
                        enc(name)
                    };
                    tcp.push(match port {
                        Some(p) => format!("{name}:{p}"),
                        None => name,
                    });
                }
                Host::Unix(path) => {
                    params.push(("host", path.display().to_string()));
                    if let Some(p) = port {
                        params.push(("port", p.to_string()));
                    }
                }
            }
        }
        f.write_str(&tcp.join(","))?;
        if let Some(db) = c.get_dbname() {
            write!(f, "/{}", enc(db))?;
        }
        if self.ssl != SslMode::Prefer {
            params.push(("sslmode", self.ssl.as_str().to_string()));
        }
        if let Some(path) = &self.root_cert {
            params.push(("sslrootcert", path.display().to_string()));
        }
        if let Some(app) = c.get_application_name() {
            params.push(("application_name", app.to_string()));
        }
        for (i, (k, v)) in params.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            // Socket paths stay readable: `/` needs no escaping in a query.
            write!(f, "{sep}{k}={}", enc(v).replace("%2F", "/"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_socket_urls_and_redacts_the_password() {
        let u = PgUrl::parse("postgresql://al%40ice:p%40ss%3Aword@db1:5433,db2/audit?sslmode=verify-full&application_name=x")
            .unwrap();
        assert_eq!(u.config().get_user(), Some("al@ice"));
        assert_eq!(u.config().get_password(), Some(&b"p@ss:word"[..]));
        assert_eq!(u.config().get_dbname(), Some("audit"));
        assert_eq!(u.config().get_ports(), [5433]);
        assert_eq!(u.ssl_mode(), SslMode::VerifyFull);
        assert!(u.uses_tls());
        let shown = format!("{u} {u:?}");
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert!(shown.contains("al%40ice:***@db1:5433"), "{shown}");

        let s = PgUrl::parse("postgresql://postgres@/db1?host=/tmp/pg.x/sock&port=5432").unwrap();
        assert!(!s.uses_tls());
        assert_eq!(
            s.to_string(),
            "postgresql://postgres@/db1?host=/tmp/pg.x/sock&port=5432".replacen(
                "postgresql",
                "postgres",
                1
            )
        );
        let q = PgUrl::parse("postgres://u@h/db?password=hunter22").unwrap();
        assert!(!format!("{q}{q:?}").contains("hunter22"));
    }

    #[test]
    fn sslrootcert_is_kept_and_shown() {
        let u = PgUrl::parse(
            "postgres://u:hunter22@127.0.0.1:5433/db?sslmode=verify-ca&sslrootcert=/etc/pg/ca%20x.pem",
        )
        .unwrap();
        assert_eq!(u.ssl_mode(), SslMode::VerifyCa);
        assert_eq!(
            u.ssl_root_cert(),
            Some(std::path::Path::new("/etc/pg/ca x.pem"))
        );
        assert_eq!(
            u.to_string(),
            "postgres://u:***@127.0.0.1:5433/db?sslmode=verify-ca&sslrootcert=/etc/pg/ca%20x.pem"
        );
        assert_eq!(
            PgUrl::parse(&u.to_string()).unwrap().ssl_root_cert(),
            u.ssl_root_cert()
        );
        assert!(PgUrl::parse("postgres://u@h/db")
            .unwrap()
            .ssl_root_cert()
            .is_none());
        let e = PgUrl::parse("postgres://u:hunter22@h/db?sslrootcert=").unwrap_err();
        assert!(e.contains("sslrootcert") && !e.contains("hunter22"), "{e}");
    }

    #[test]
    fn errors_name_the_problem_not_the_password() {
        for bad in [
            "mysql://u:hunter22@h/db",
            "postgres://u:hunter22@h:99999/db",
            "postgres://u:hunter22@h/db?sslmode=sometimes",
            "postgres://u:hunter22@h/db?colour=blue",
            "postgres://u:hunter22@/db",
        ] {
            let e = PgUrl::parse(bad).unwrap_err();
            assert!(!e.contains("hunter22"), "{e}");
        }
    }

    proptest::proptest! {
        /// Any text: an answer, never a panic; and the password of a URL
        /// never shows, parsed or refused, in `Display`, `Debug` or an error.
        #[test]
        fn any_url_is_handled_and_its_password_never_shows(
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9]{8,16}",
            rest in "[a-z0-9.:/?&=%@_-]{0,40}",
            noise in "\\PC{0,40}",
        ) {
            let _ = PgUrl::parse(&noise);
            let url = format!("postgres://{user}:{password}@{rest}");
            match PgUrl::parse(&url) {
                Ok(u) => {
                    proptest::prop_assert!(!u.to_string().contains(&password), "{u}");
                    let debug = format!("{u:?}");
                    proptest::prop_assert!(!debug.contains(&password), "{}", debug);
                }
                Err(e) => proptest::prop_assert!(!e.contains(&password), "{e}"),
            }
        }
    }
}
