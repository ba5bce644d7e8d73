//! The HTTP client Assent talks to OpenID providers with, made so that an owner's provider
//! settings cannot turn it against the network it runs in (server-side request forgery, issue 12).
//!
//! - Every request's URL passes `domain::sso::check_endpoint` first: https (plain http only to a
//!   loopback host with `ASSENT_SSO_ALLOW_LOOPBACK=1`), and an address written in the URL is
//!   judged before any connection (a literal IP never reaches a resolver).
//! - Host names are resolved by `GuardedResolver`, at every new connection: a name that resolves
//!   to any forbidden address is refused, so a provider whose DNS answer changes after the
//!   settings were saved (DNS rebinding) still reaches nothing inside.
//! - No proxy (a proxy would resolve names where we cannot judge them), no redirects (a redirect
//!   could lead anywhere), and no answer larger than `MAX_RESPONSE_BYTES`, read in chunks.
//!
//! What went wrong is for the log only: callers tell the owner and the browser one generic answer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use url::Url;

use crate::domain::sso::{check_endpoint, forbidden_address, forbidden_name};

/// The largest discovery document, key set or token response read: real ones are a few KiB
/// (Entra's discovery ~2 KiB, its key set ~10 KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Longest a name may take to resolve when settings are checked.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to a provider did not get an answer. Its text is for the log: it names the host
/// and the rule, never a secret (codes and the client secret travel in bodies and headers, which
/// are never printed).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{host} refused: {why}")]
    Refused { host: String, why: &'static str },
    #[error("{host} could not be resolved: {cause}")]
    Resolve { host: String, cause: String },
    #[error("the answer of {host} is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { host: String },
    #[error("the request failed: {0}")]
    Request(String),
}

impl FetchError {
    fn refused(host: &str, why: &'static str) -> Self {
        FetchError::Refused {
            host: host.to_owned(),
            why,
        }
    }
}

/// Resolves `host` and checks every address it resolves to; all or nothing, so a name that mixes
/// a public address with a private one (a rebinding trick) is refused outright.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, FetchError> {
    if let Some(why) = forbidden_name(host) {
        return Err(FetchError::refused(host, why));
    }
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)));
    let addrs: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            return Err(FetchError::Resolve {
                host: host.to_owned(),
                cause: e.to_string(),
            })
        }
        Err(_) => {
            return Err(FetchError::Resolve {
                host: host.to_owned(),
                cause: "timed out".into(),
            })
        }
    };
    if addrs.is_empty() {
        return Err(FetchError::Resolve {
            host: host.to_owned(),
            cause: "no address".into(),
        });
    }
    for addr in &addrs {
        if let Some(why) = forbidden_address(addr.ip(), allow_loopback) {
            return Err(FetchError::refused(host, why));
        }
    }
    Ok(addrs)
}

/// Checks a URL the server will not fetch itself but sends browsers to (the authorization
/// endpoint), or will fetch later (the token endpoint): its form, and where its host resolves now.
pub async fn vet_url(url: &Url, allow_loopback: bool) -> Result<(), FetchError> {
    let host = url.host_str().unwrap_or_default();
    check_endpoint(url, allow_loopback).map_err(|why| FetchError::refused(host, why))?;
    if let Some(url::Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        resolve_checked(name, port, allow_loopback).await?;
    }
    Ok(())
}

/// reqwest's resolver, replaced: names resolve only to addresses a provider may have.
struct GuardedResolver {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port.
            let addrs = resolve_checked(&host, 0, allow_loopback).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client `openidconnect` is given for discovery, keys and the token request.
pub struct ProviderHttp {
    client: reqwest::Client,
    allow_loopback: bool,
}

impl ProviderHttp {
    pub fn new(allow_loopback: bool) -> Self {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback }))
            .no_proxy()
            // A redirect could lead our requests anywhere the provider's answer says (the
            // openidconnect crate's advice, against server-side request forgery).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("assent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with rustls builds");
        Self {
            client,
            allow_loopback,
        }
    }

    pub fn allow_loopback(&self) -> bool {
        self.allow_loopback
    }

    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let url = Url::parse(&request.uri().to_string())
            .map_err(|_| FetchError::Request("not a URL".into()))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        check_endpoint(&url, self.allow_loopback).map_err(|why| FetchError::refused(&host, why))?;
        let request = reqwest::Request::try_from(request)
            .map_err(|e| FetchError::Request(error_chain(&e)))?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| FetchError::Request(error_chain(&e)))?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(FetchError::TooLarge { host });
        }
        let mut builder = openidconnect::http::Response::builder()
            .status(response.status())
            .version(response.version());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        // Content-Length may be absent (chunked) or lie: the cap holds on what is read.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Request(error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(FetchError::TooLarge { host });
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| FetchError::Request(e.to_string()))
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}

/// An error and its sources on one line ("error sending request: connection refused"), for the log.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use openidconnect::http;
    use std::str::FromStr;

    fn get(url: &str) -> HttpRequest {
        http::Request::builder()
            .uri(url)
            .method(http::Method::GET)
            .body(Vec::new())
            .unwrap()
    }

    /// A listener on loopback that counts connections: proof that a refusal sent nothing.
    async fn listener() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = l.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn loopback_literals_are_refused_before_connecting_unless_allowed() {
        let (base, seen) = listener().await;
        let http = ProviderHttp::new(false);
        let err = http
            .call(get(&format!("{base}/.well-known/openid-configuration")))
            .await;
        assert!(matches!(err, Err(FetchError::Refused { .. })), "{err:?}");
        let err = http
            .call(get(&base.replace("http://", "https://")))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Refused { .. }), "{err:?}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn localhost_by_name_is_refused_before_connecting() {
        let (base, seen) = listener().await;
        let port = base.rsplit(':').next().unwrap();
        let http = ProviderHttp::new(false);
        // https, so the scheme rule passes and the name reaches the resolver.
        let err = http
            .call(get(&format!("https://localhost:{port}/jwks")))
            .await
            .unwrap_err();
        assert!(
            error_chain(&err).contains("loopback"),
            "the resolver did not say why: {}",
            error_chain(&err)
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_forbidden_addresses() {
        let resolver = GuardedResolver {
            allow_loopback: false,
        };
        let resolved = reqwest::dns::Resolve::resolve(
            &resolver,
            reqwest::dns::Name::from_str("localhost").unwrap(),
        )
        .await;
        assert!(resolved.is_err());
        let allowed = GuardedResolver {
            allow_loopback: true,
        };
        let resolved = reqwest::dns::Resolve::resolve(
            &allowed,
            reqwest::dns::Name::from_str("localhost").unwrap(),
        )
        .await
        .map(|a| a.collect::<Vec<_>>());
        assert!(resolved.is_ok_and(|a| a.iter().all(|a| a.ip().is_loopback())));
        for name in ["metadata.google.internal", "metadata"] {
            let err = resolve_checked(name, 80, true).await.unwrap_err();
            assert!(matches!(err, FetchError::Refused { .. }), "{name}: {err:?}");
        }
    }

    #[tokio::test]
    async fn answers_past_the_cap_are_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            // Two answers: one announced too large, one chunked past the cap.
            for chunked in [false, true] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        MAX_RESPONSE_BYTES + 1
                    )
                };
                let _ = s.write_all(head.as_bytes()).await;
                let piece = vec![b' '; 16 * 1024];
                for _ in 0..(MAX_RESPONSE_BYTES / piece.len() + 2) {
                    let sent = if chunked {
                        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                        c.extend_from_slice(&piece);
                        c.extend_from_slice(b"\r\n");
                        s.write_all(&c).await
                    } else {
                        s.write_all(&piece).await
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            }
        });
        let http = ProviderHttp::new(true);
        for _ in 0..2 {
            let err = http
                .call(get(&format!("http://{addr}/jwks")))
                .await
                .unwrap_err();
            assert!(matches!(err, FetchError::TooLarge { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let answer = ProviderHttp::new(true)
            .call(get(&format!(
                "http://{addr}/.well-known/openid-configuration"
            )))
            .await
            .unwrap();
        assert_eq!(answer.status(), 302);
    }
}
