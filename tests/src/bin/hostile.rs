//! A hostile peer for tests: dials a `hellopears up` peer and sends bad input on the sync
//! protocol, then reports whether the peer dropped it.
//!
//! `hostile garbage|oversized|bad-signature|other-topic MULTIADDR [TOPIC]`: prints `dropped`
//! and exits 0 when the peer closed the stream or connection within 10 s; exits 1 otherwise.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use hellopears_core::keys::Keypair;
use hellopears_core::log::{Entry, EntryBody};
use hellopears_core::sync::Message;
use hellopears_core::topic::Topic;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};

const SYNC: StreamProtocol = StreamProtocol::new("/hellopears/sync/1");

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else {
        bail!("usage: hostile garbage|oversized|bad-signature|other-topic MULTIADDR [TOPIC]")
    };
    let topic = Topic::from_name(args.get(3).map_or("todo", String::as_str));
    let addr: Multiaddr = addr.parse().context("multiaddr")?;
    let Some(Protocol::P2p(peer_id)) = addr.iter().last() else { bail!("the address needs /p2p/<peer id>") };
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    swarm.dial(addr)?;
    let mut control = swarm.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = tokio::time::timeout(Duration::from_secs(10), control.open_stream(peer_id, SYNC))
        .await
        .context("timed out opening the sync stream")??;
    let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: false }.encode();
    let bytes: Vec<u8> = match mode.as_str() {
        "garbage" => [frame(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]), frame(&[7; 300])].concat(),
        "oversized" => (64u32 << 20).to_be_bytes().to_vec(),
        "other-topic" => frame(
            &Message::Hello { discovery: Topic::from_name("not yours").discovery_key(), acknowledged: false }.encode(),
        ),
        "bad-signature" => {
            let key = Keypair::derive_for_tests(666, 0);
            let body = EntryBody { writer: key.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload: vec![] };
            let forged = Entry::sign(body, &key).with_signature_for_tests([9; 64]);
            let entries = Message::Entries { entries: vec![forged.bytes().to_vec()] }.encode();
            [frame(&hello), frame(&entries)].concat()
        }
        other => bail!("unknown mode {other}"),
    };
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let mut buf = [0u8; 4096];
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match dropped {
        Ok(()) => {
            println!("dropped");
            Ok(())
        }
        Err(_) => bail!("the peer kept the stream open"),
    }
}
