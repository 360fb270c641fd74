//! A STUN responder (RFC 8489 Binding only): a reachable peer answers "what address do
//! you see me at" for the tabs and desktops of its lists, so that no third-party STUN
//! server is needed for server-reflexive candidates.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter};
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

/// The most answers per second (a request is 20 bytes, an answer 44: no amplification
/// worth abusing, but no unbounded work either).
const MAX_ANSWERS_PER_SECOND: u32 = 500;

/// The answer to a Binding request from `from`, or `None` for anything else.
pub fn answer(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let mut message = Message::new();
    message.raw = request.to_vec();
    message.decode().ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let mut response = Message::new();
    let mapped = XorMappedAddress { ip: from.ip(), port: from.port() };
    let setters: [Box<dyn Setter>; 3] = [Box::new(message.transaction_id), Box::new(BINDING_SUCCESS), Box::new(mapped)];
    response.build(&setters).ok()?;
    Some(response.raw)
}

/// The mapped address in a Binding success response (for tests and diagnostics).
pub fn mapped_address(response: &[u8]) -> Option<SocketAddr> {
    let mut message = Message::new();
    message.raw = response.to_vec();
    message.decode().ok()?;
    if message.typ != BINDING_SUCCESS {
        return None;
    }
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&message).ok()?;
    Some(SocketAddr::new(mapped.ip, mapped.port))
}

/// Answers Binding requests on `socket` until it fails.
pub async fn serve_stun(socket: UdpSocket) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1500];
    let mut window = Instant::now();
    let mut answered = 0u32;
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        if window.elapsed() > Duration::from_secs(1) {
            window = Instant::now();
            answered = 0;
        }
        if answered >= MAX_ANSWERS_PER_SECOND {
            continue;
        }
        if let Some(reply) = answer(&buf[..len], from) {
            answered += 1;
            if let Err(error) = socket.send_to(&reply, from).await {
                tracing::debug!(%from, %error, "cannot answer a STUN request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Vec<u8> {
        let mut message = Message::new();
        let setters: [Box<dyn Setter>; 2] = [Box::new(BINDING_REQUEST), Box::new(stun::agent::TransactionId::new())];
        message.build(&setters).expect("request");
        message.raw
    }

    #[test]
    fn a_binding_request_gets_the_address_it_came_from() {
        let from: SocketAddr = "203.0.113.7:40123".parse().expect("address");
        let reply = answer(&request(), from).expect("an answer");
        assert_eq!(mapped_address(&reply), Some(from));
        assert_eq!(answer(b"not stun", from), None);
        assert_eq!(answer(&reply, from), None, "a response is not answered");
    }

    #[tokio::test]
    async fn the_responder_answers_over_udp() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server_addr = server.local_addr().expect("addr");
        let task = tokio::spawn(serve_stun(server));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client.send_to(b"garbage", server_addr).await.expect("send");
        client.send_to(&request(), server_addr).await.expect("send");
        let mut buf = [0u8; 1500];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(mapped_address(&buf[..len]), client.local_addr().ok());
        task.abort();
    }
}
