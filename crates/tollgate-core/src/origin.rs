//! The gateway's public origins: the only base URLs its metadata documents and rewritten
//! answers (`registration_client_uri`) ever name.
//!
//! Nothing the client sends shapes them. The request's `Host` (`:authority`) only selects one
//! of the configured origins; a host that is none of them gets no document. `X-Forwarded-Proto`
//! and `:scheme` are never read: the scheme is the configured origin's. A document is cacheable,
//! so one built from `Host: evil.example` would poison every cache between client and gateway.

use url::Url;

use crate::policy;

/// One configured public origin, e.g. `https://api.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    /// `scheme://host[:port]`, the port only when it is not the scheme's default.
    pub origin: String,
    /// Lower-case host (IPv6 in brackets), without a trailing dot.
    host: String,
    port: u16,
    default_port: u16,
}

impl PublicOrigin {
    /// From a configured URL: http(s), a host, and nothing after the authority but `/`.
    pub fn from_url(url: &Url) -> Result<PublicOrigin, &'static str> {
        let default_port = match url.scheme() {
            "https" => 443,
            "http" => 80,
            _ => return Err("must be an http:// or https:// origin"),
        };
        let Some(host) = url.host_str() else {
            return Err("must name a host");
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry user information");
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err("must be an origin only (scheme://host[:port]): no path, query or fragment (the path is a setting of its own)");
        }
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let port = url.port().unwrap_or(default_port);
        let origin = if port == default_port {
            format!("{}://{host}", url.scheme())
        } else {
            format!("{}://{host}:{port}", url.scheme())
        };
        Ok(PublicOrigin {
            origin,
            host,
            port,
            default_port,
        })
    }

    /// The origin's host: lower-case (IPv6 in brackets), without a trailing dot.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether a request for one origin would also be a request for the other (the same host
    /// and port: the scheme is not in `Host`).
    pub fn same_authority(&self, other: &PublicOrigin) -> bool {
        self.host == other.host && self.port == other.port
    }

    /// Whether a request to `authority` (its `Host`) is a request to this origin: the same
    /// host (case and one trailing dot aside, [`policy::host_and_port`]) and the same port, an
    /// absent port meaning the scheme's default.
    pub fn serves(&self, authority: &str) -> bool {
        let Some((host, port)) = policy::host_and_port(authority) else {
            return false;
        };
        let port = match port {
            None => self.default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        port == self.port && host.eq_ignore_ascii_case(&self.host)
    }
}

/// The configured origin a request to `authority` reached, if any.
pub fn for_authority<'o>(origins: &'o [PublicOrigin], authority: &str) -> Option<&'o PublicOrigin> {
    origins.iter().find(|o| o.serves(authority))
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn origin(text: &str) -> Result<PublicOrigin, &'static str> {
        PublicOrigin::from_url(&Url::parse(text).unwrap())
    }

    #[test]
    fn an_origin_serves_its_own_host_in_every_spelling_and_nothing_else() {
        let o = origin("https://API.example.com/").unwrap();
        assert_eq!(o.origin, "https://api.example.com");
        for host in [
            "api.example.com",
            "API.Example.COM",
            "api.example.com.",
            "api.example.com:443",
            "api.example.com:",
            "api.example.com.:443",
        ] {
            assert!(o.serves(host), "{host}");
        }
        for host in [
            "evil.example",
            "api.example.com:80",
            "api.example.com.evil.example",
            "evil.example#api.example.com",
            "api.example.com:443:443",
            "api.example.com:x",
            "",
            ":443",
        ] {
            assert!(!o.serves(host), "{host}");
        }
    }

    #[test]
    fn ports_and_ip_literals() {
        let o = origin("http://127.0.0.1:10000").unwrap();
        assert_eq!(o.origin, "http://127.0.0.1:10000");
        assert!(o.serves("127.0.0.1:10000"));
        assert!(!o.serves("127.0.0.1"), "no port means 80 here");
        let v6 = origin("https://[::1]:8443").unwrap();
        assert_eq!(v6.origin, "https://[::1]:8443");
        assert!(v6.serves("[::1]:8443"));
        assert!(!v6.serves("[::1]"));
        assert!(!v6.serves("[::1]x"));
    }

    #[test]
    fn only_bare_origins_are_accepted() {
        for bad in [
            "https://api.example.com/oauth2",
            "https://api.example.com/?x=1",
            "https://api.example.com/#f",
            "https://user:pw@api.example.com",
            "ftp://api.example.com",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
        let o = origin("https://api.example.com.").unwrap();
        assert_eq!(o.origin, "https://api.example.com");
    }

    #[test]
    fn the_first_origin_that_serves_a_host_is_chosen() {
        let list = [
            origin("https://a.example").unwrap(),
            origin("https://b.example").unwrap(),
        ];
        assert_eq!(
            for_authority(&list, "B.example").map(|o| o.origin.as_str()),
            Some("https://b.example")
        );
        assert_eq!(for_authority(&list, "c.example"), None);
    }
}
