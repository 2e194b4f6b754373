//! Where the control plane may send a request: the same URL check as the edge
//! (`tollbooth_core::ssrf`), plus the DNS answers, since a Lambda can resolve names.
//!
//! A provider `base_url` is checked when it is saved and again before every model pull.
//! A name is resolved, every address it answers with must be public, and the pull then
//! connects to exactly those addresses (`reqwest::ClientBuilder::resolve_to_addrs`), so
//! a second, different answer (DNS rebinding) is never used. Loopback is allowed only
//! with `ALLOW_LOOPBACK_UPSTREAMS=1` (tests and `make dev`), refused unless `ENVIRONMENT`
//! is `local`, `test` or `development`.
//! Clients built here follow no redirects.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tollbooth_core::ssrf::{check_host, check_url, Host, ParsedUrl, SsrfError, SsrfPolicy};

use crate::error::{ApiError, ApiResult};

/// The checked destination of a URL: the parsed URL and the addresses to connect to
/// (empty for IP literals, which need no resolution).
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: ParsedUrl,
    pub addrs: Vec<SocketAddr>,
}

fn policy(allow_loopback: bool) -> SsrfPolicy {
    SsrfPolicy { allow_loopback }
}

/// The 400 for a refused `base_url`; it names the reason, never an address it resolved.
pub fn refused(param: &str, e: &SsrfError) -> ApiError {
    ApiError::invalid(param, format!("{param} is not allowed: {e}"))
}

/// The URL check alone (no DNS): scheme, userinfo, literal addresses, blocked names.
pub fn check_syntax(url: &str, allow_loopback: bool) -> Result<ParsedUrl, SsrfError> {
    check_url(url, policy(allow_loopback))
}

/// Checks every resolved address of a name.
pub fn check_addrs(addrs: &[IpAddr], allow_loopback: bool) -> Result<(), SsrfError> {
    if addrs.is_empty() {
        return Err(SsrfError::Malformed("the host name does not resolve"));
    }
    for a in addrs {
        let host = match a {
            IpAddr::V4(v4) => Host::Ipv4(*v4),
            IpAddr::V6(v6) => Host::Ipv6(*v6),
        };
        check_host(&host, policy(allow_loopback))?;
    }
    Ok(())
}

/// The full check: the URL, then (for a name) every address DNS answers with.
/// `resolve` is the resolver (tests pass a fixed table).
pub async fn check_destination<F, Fut>(
    url: &str,
    allow_loopback: bool,
    resolve: F,
) -> Result<Destination, SsrfError>
where
    F: FnOnce(String, u16) -> Fut,
    Fut: std::future::Future<Output = Vec<IpAddr>>,
{
    let parsed = check_syntax(url, allow_loopback)?;
    let addrs = match &parsed.host {
        Host::Domain(name) => {
            let ips = resolve(name.clone(), parsed.port).await;
            // `localhost` is a name: with the local flag it may answer loopback only.
            check_addrs(&ips, allow_loopback)?;
            ips.into_iter()
                .map(|ip| SocketAddr::new(ip, parsed.port))
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(Destination { url: parsed, addrs })
}

/// The system resolver (`getaddrinfo` through tokio); an error is "no addresses".
pub async fn system_resolve(name: String, port: u16) -> Vec<IpAddr> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((name.as_str(), port)),
    )
    .await
    {
        Ok(Ok(it)) => it.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    }
}

/// Checks `url` with the system resolver, before a request to it.
pub async fn check(url: &str, allow_loopback: bool) -> Result<Destination, SsrfError> {
    check_destination(url, allow_loopback, system_resolve).await
}

/// The check when a `base_url` is saved: the URL, and every address its name resolves
/// to *if* it resolves (a provider may be configured before its DNS exists; the pull
/// checks again and refuses a name without answers).
pub async fn check_saved(url: &str, allow_loopback: bool) -> Result<(), SsrfError> {
    let parsed = check_syntax(url, allow_loopback)?;
    if let Host::Domain(name) = &parsed.host {
        let ips = system_resolve(name.clone(), parsed.port).await;
        if !ips.is_empty() {
            check_addrs(&ips, allow_loopback)?;
        }
    }
    Ok(())
}

/// An HTTP client that connects only to the checked addresses and follows no redirect.
pub fn client_for(dest: &Destination, timeout: Duration) -> ApiResult<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Host::Domain(name) = &dest.url.host {
        b = b.resolve_to_addrs(name, &dest.addrs);
    }
    b.build().map_err(|_| ApiError::internal("http client"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn fixed(ips: Vec<IpAddr>) -> impl FnOnce(String, u16) -> std::future::Ready<Vec<IpAddr>> {
        move |_, _| std::future::ready(ips)
    }

    #[tokio::test]
    async fn test_literal_private_addresses_refused() {
        for url in [
            "http://127.0.0.1:9001/v1",
            "http://169.254.169.254/latest",
            "http://10.0.0.7/v1",
            "http://[::1]/v1",
            "http://0x7f.1/v1",
            "http://user@example.com/v1",
            "ftp://example.com",
        ] {
            let r = check_destination(url, false, fixed(vec![])).await;
            assert!(r.is_err(), "{url} passed");
        }
    }

    #[tokio::test]
    async fn test_names_resolving_to_private_addresses_refused() {
        let private = [
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
        ];
        for ip in private {
            // One bad answer among good ones is enough to refuse.
            let ips = vec![IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), ip];
            let e = check_destination("https://api.example.com/v1", false, fixed(ips))
                .await
                .unwrap_err();
            assert!(matches!(e, SsrfError::BlockedAddress(_)), "{ip}: {e}");
        }
        // A private answer stays refused with the loopback flag; loopback passes.
        let e = check_destination(
            "http://internal.example.com/v1",
            true,
            fixed(vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))]),
        )
        .await;
        assert!(e.is_err());
        let ok = check_destination(
            "http://localhost:8080/v1",
            true,
            fixed(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        )
        .await
        .unwrap();
        assert_eq!(ok.addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        // Without the flag, `localhost` is refused by name or by answer.
        assert!(check_destination(
            "http://localhost:8080/v1",
            false,
            fixed(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        )
        .await
        .is_err());
        // A name that does not resolve is refused too.
        assert!(
            check_destination("https://nowhere.example.com", false, fixed(vec![]))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn test_public_destination_pins_addresses() {
        let d = check_destination(
            "https://api.example.com/v1",
            false,
            fixed(vec![IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34))]),
        )
        .await
        .unwrap();
        assert_eq!(d.addrs, vec!["93.184.216.34:443".parse().unwrap()]);
        assert!(client_for(&d, Duration::from_secs(1)).is_ok());
    }
}
