//! The connection target: URL, schema, TLS, and the password kept out of every message.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;

use crate::{Error, Result};

/// Where to mirror: a PostgreSQL server, database and role, and the schema TADS owns there.
#[derive(Clone)]
pub struct Pg {
    config: tokio_postgres::Config,
    shown: String,
    schema: String,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("url", &self.shown)
            .field("schema", &self.schema)
            .finish()
    }
}

/// `url` with its password replaced by `***`: `postgres://user:***@host/db`, and
/// `password=***` in the key=value form.
pub fn mask_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The authority ends at the first '/', '?' or '#'; the password is after the first ':'
        // of the userinfo, which ends at the last '@' of the authority.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some(at) = authority.rfind('@') {
            let (userinfo, host) = authority.split_at(at);
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***{host}{}", mask_query(tail));
            }
        }
        return format!("{scheme}://{authority}{}", mask_query(tail));
    }
    mask_key_values(url)
}

/// libpq's key=value form (`host=db password = 'a b' dbname=x`) printed back with the password
/// as `***`: parsed as libpq parses it (spaces around `=`, single-quoted values with `\'` and
/// `\\` escapes), so no part of a password is left. Text that does not parse is not shown at
/// all if it mentions a password.
fn mask_key_values(text: &str) -> String {
    let mut chars = text.chars().peekable();
    let mut out: Vec<String> = Vec::new();
    let skip_space = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        if chars.peek().is_none() {
            return out.join(" ");
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_space(&mut chars);
        if chars.next() != Some('=') || key.is_empty() {
            break;
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            value.push('\'');
            let mut closed = false;
            while let Some(c) = chars.next() {
                value.push(c);
                if c == '\\' {
                    value.extend(chars.next());
                } else if c == '\'' {
                    closed = true;
                    break;
                }
            }
            if !closed {
                break;
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
                if c == '\\' {
                    value.extend(chars.next());
                }
            }
        }
        let shown = if key.eq_ignore_ascii_case("password") {
            "***"
        } else {
            &value
        };
        out.push(format!("{key}={shown}"));
    }
    if text.to_ascii_lowercase().contains("password") {
        "(a connection string that cannot be parsed; not shown, it holds a password)".into()
    } else {
        text.to_string()
    }
}

/// `password=…` (in a query string or the key=value form) as `password=***`.
fn mask_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("password=") {
        out.push_str(&rest[..i + "password=".len()]);
        out.push_str("***");
        let after = &rest[i + "password=".len()..];
        let end = after.find(['&', ' ']).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A PostgreSQL error on one line: its message and detail, without the server's context.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let s = c.to_string();
                if !text.contains(&s) {
                    text = format!("{text}: {s}");
                }
                cause = c.source();
            }
            text
        }
    };
    text.replace('\n', " ")
}

/// Accepts any server certificate: `sslmode=require` and `prefer` encrypt without verifying
/// who the server is, as libpq does.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Pg {
    /// Parses a connection URL (`postgres://user:password@host:5432/db?sslmode=require`, or
    /// libpq's `host=… dbname=…` form) and the schema to use. `sslmode=disable` connects in
    /// plain text; `prefer` (the default) uses TLS when the server offers it; `require`
    /// insists on TLS. Like libpq in those modes, TLS encrypts without verifying the server's
    /// certificate.
    pub fn parse(url: &str, schema: &str) -> Result<Self> {
        let shown = mask_url(url);
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                Error::Config(format!(
                    "--pg {shown}: not a PostgreSQL URL ({})",
                    describe(&e)
                ))
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("tads");
        }
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(Error::Config(format!(
                "--pg-schema `{schema}`: use lowercase letters, digits and _ (not first), at most 63"
            )));
        }
        Ok(Self {
            config,
            shown,
            schema: schema.to_string(),
        })
    }

    /// The URL with the password masked.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The schema's name quoted for SQL.
    pub fn schema_ident(&self) -> String {
        format!("\"{}\"", self.schema)
    }

    /// A message about this target: `postgres://u:***@h/db: <what>`.
    pub(crate) fn error(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        Error::Server(format!("{}: {what}: {}", self.shown, describe(e)))
    }

    /// Connects (5 s timeout unless the URL sets `connect_timeout`) and drives the connection
    /// in the background.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let connected = if self.config.get_ssl_mode() == SslMode::Disable {
            self.config
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                })
        } else {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config(format!("TLS: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            self.config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await
                .map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                })
        };
        connected.map_err(|e| self.error("cannot connect", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://tads:s3cr:et@db.example:5432/ops?sslmode=require"),
            "postgres://tads:***@db.example:5432/ops?sslmode=require"
        );
        assert_eq!(
            mask_url("postgresql://tads@127.0.0.1/test"),
            "postgresql://tads@127.0.0.1/test"
        );
        assert_eq!(
            mask_url("host=db user=tads password=hunter2 dbname=ops"),
            "host=db user=tads password=*** dbname=ops"
        );
        for (text, shown) in [
            (
                "host=127.0.0.1 user=postgres password = S3cr3tPW dbname=x",
                "host=127.0.0.1 user=postgres password=*** dbname=x",
            ),
            (
                "host=h password='my secret pw' dbname=x",
                "host=h password=*** dbname=x",
            ),
            ("password= 'it\\'s a b' host=h", "password=*** host=h"),
            ("  host = h  PASSWORD =p\\ q ", "host=h PASSWORD=***"),
        ] {
            assert_eq!(mask_url(text), shown, "{text}");
        }
        let broken = mask_url("host=h password='never closed");
        assert!(!broken.contains("never"), "{broken}");
        assert_eq!(mask_url("host=h dbname"), "host=h dbname");
        assert_eq!(
            mask_url("postgres://u@h/db?password=x&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
    }

    #[test]
    fn bad_urls_and_schemas_are_named_without_the_password() {
        let e = Pg::parse("postgres://u:hunter2@h:notaport/db", "tads")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--pg postgres://u:***@h:notaport/db"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(Pg::parse("postgres://h/db", "Bad-Schema").is_err());
        assert_eq!(
            Pg::parse("postgres://h/db", "tads").unwrap().schema(),
            "tads"
        );
    }
}
