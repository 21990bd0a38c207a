//! Who the client is. Behind a proxy every connection comes from the proxy, so the client's
//! address is the one the proxy writes into `X-Forwarded-For`; but anyone else who can
//! reach the api could write that header too. Only peers in `FLOWFORGE_TRUSTED_PROXIES`
//! are believed, and of the header only the hops they added (nginx's `set_real_ip_from`
//! with `real_ip_recursive`).

use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

use ipnet::IpNet;

/// How often proxy host names are resolved again (a restarted proxy container comes
/// back with another address).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// The peers whose `X-Forwarded-For` is believed: address ranges, and host names
/// resolved now and every [`RESOLVE_EVERY`].
#[derive(Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
    resolved: RwLock<Vec<IpAddr>>,
}

impl TrustedProxies {
    /// A comma-separated list of addresses, CIDR ranges and host names; empty trusts no one.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut proxies = TrustedProxies::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(net) = item.parse::<IpNet>() {
                proxies.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                proxies.nets.push(IpNet::from(ip));
            } else if item.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') && item.len() <= 253 {
                proxies.hosts.push(item.to_owned());
            } else {
                return Err(format!("{item:?} is not an address, a CIDR range or a host name"));
            }
        }
        Ok(proxies)
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.hosts.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip)) || self.resolved.read().expect("resolved proxies").contains(&ip)
    }

    /// Looks the host names up again; a name that does not resolve right now keeps its
    /// last addresses (a proxy being restarted is still the proxy).
    pub async fn resolve(&self) {
        if self.hosts.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for host in &self.hosts {
            match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => found.extend(addrs.map(|a| a.ip().to_canonical())),
                Err(e) => {
                    tracing::debug!(host, error = %e, "trusted proxy does not resolve");
                    return;
                }
            }
        }
        *self.resolved.write().expect("resolved proxies") = found;
    }

    /// Runs [`TrustedProxies::resolve`] every [`RESOLVE_EVERY`], forever.
    pub async fn keep_resolved(self: std::sync::Arc<Self>) {
        loop {
            self.resolve().await;
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    }

    /// The client's address: walking `X-Forwarded-For` from the right (the hop nearest to
    /// us) past every trusted proxy, the first address no trusted proxy has; the peer itself
    /// when it is not trusted. A hop that is not an address ends the walk at the proxy
    /// that passed it on.
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { return client };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(proxies.client_ip(ip("192.0.2.7"), ["203.0.113.9"].into_iter()), ip("192.0.2.7"));
        assert_eq!(TrustedProxies::default().client_ip(ip("10.1.1.1"), ["203.0.113.9"].into_iter()), ip("10.1.1.1"));
    }

    #[test]
    fn only_the_hops_trusted_proxies_added_are_believed() {
        let proxies = TrustedProxies::parse("10.0.0.1, 10.0.1.0/24").unwrap();
        // A client that sent its own header: the forged values sit left of the real one.
        let header = ["198.51.100.1, 198.51.100.2", "203.0.113.9, 10.0.1.5"];
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), header.into_iter()), ip("203.0.113.9"));
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), std::iter::empty()), ip("10.0.0.1"));
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), ["junk, 203.0.113.9"].into_iter()), ip("203.0.113.9"));
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), ["203.0.113.9, junk"].into_iter()), ip("10.0.0.1"));
        // IPv4 peers on a dual-stack socket arrive mapped into IPv6.
        assert_eq!(proxies.client_ip(ip("::ffff:10.0.0.1"), ["203.0.113.9"].into_iter()), ip("203.0.113.9"));
    }

    #[test]
    fn the_list_takes_addresses_ranges_and_names() {
        let p = TrustedProxies::parse("proxy, 127.0.0.1 ,fd00::/8").unwrap();
        assert_eq!((p.nets.len(), p.hosts.as_slice()), (2, ["proxy".to_string()].as_slice()));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("not a host!").is_err());
    }

    proptest::proptest! {
        /// Any X-Forwarded-For: the answer is the peer or an address the header holds.
        #[test]
        fn any_forwarded_for_gives_the_peer_or_one_of_its_hops(header in "[0-9a-f.:, ]{0,60}", octet in 0u8..=255) {
            let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
            let peer: IpAddr = format!("10.0.0.{octet}").parse().unwrap();
            let client = proxies.client_ip(peer, [header.as_str()].into_iter());
            let hops: Vec<IpAddr> = header.split(',').filter_map(|h| h.trim().parse::<IpAddr>().ok())
                .map(|ip| ip.to_canonical()).collect();
            proptest::prop_assert!(client == peer || hops.contains(&client));
            let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
            proptest::prop_assert_eq!(proxies.client_ip(untrusted, [header.as_str()].into_iter()), untrusted);
        }
    }
}
