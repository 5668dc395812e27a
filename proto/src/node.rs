//! Node identity on the wire: ids and engine URLs, validated the same way
//! by the router that accepts them and the agent that sends them.

use std::net::SocketAddr;

/// Node ids are names people read: 1–128 printable characters without spaces.
pub fn valid_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("node_id must be 1 to 128 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
    {
        return Err(format!(
            "node_id {id:?} may only contain letters, digits and - _ . : @"
        ));
    }
    Ok(())
}

/// The parsed socket address of a URL's authority, when it is an IP literal
/// (`localhost` is taken as 127.0.0.1).
pub fn addr_of(url: &str) -> Option<SocketAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert!(valid_node_id("mac-studio.local:1@x_y").is_ok());
        assert!(valid_node_id("").is_err());
        assert!(valid_node_id("a b").is_err());
        assert!(valid_node_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn addresses_of_urls() {
        assert_eq!(
            addr_of("http://10.0.0.5:11434"),
            Some("10.0.0.5:11434".parse().unwrap())
        );
        assert_eq!(
            addr_of("http://localhost"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            addr_of("http://[::1]:9/x"),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(addr_of("http://mac.local:11434"), None);
    }
}
