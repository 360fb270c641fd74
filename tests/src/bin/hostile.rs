//! A hostile peer for tests: a real libp2p client that dials a `hellopears up` peer and
//! misbehaves on the sync protocol in one of many ways, then reports what the peer did.
//!
//! `hostile MODE MULTIADDR [TOPIC] [HOLD_SECS]`. Every mode prints one line and exits 0:
//! - `garbage`, `oversized`, `bad-signature`, `other-topic`, `slowloris`, `entry-flood`:
//!   bad input; prints `dropped` when the peer closed the stream or connection in time.
//! - `many-writers`: 1,100 throwaway writers, one valid entry each, in one message.
//! - `writer-flood`: valid entries of new writers, message after message, for HOLD_SECS.
//! - `want-flood`: thousands of `Want`s for the peer's longest log; prints
//!   `received BYTES bytes in MS ms`.
//! - `hello-flood`: thousands of unacknowledged `Hello`s; prints `restarts N in MS ms`.
//! - `huge-lengths`: a `Have` claiming 4,096 writers with logs near 2^63 entries.
//! - `replay`: fetches a writer's entries and sends them back 50 times.
//! - `forged-pex`: peer records pointing at addresses that do not exist.
//! - `many-streams`: opens 20 sync streams; prints `streams kept N`.
//! - `stranger`: a made-up proof for a private list (TOPIC is its discovery key in hex);
//!   prints `learned nothing, dropped` when nothing but a blinded `Hello` came back.
//! - `relay-squat`: takes a relay slot on the peer and opens no session on any list;
//!   prints `reserved, then dropped` when the peer took the slot back (HOLD_SECS: 20).
//!
//! Modes that are not bad input hold the connection for HOLD_SECS (default 5), answering
//! nothing, then print `held`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use hellopears_core::keys::Keypair;
use hellopears_core::log::{Entry, EntryBody};
use hellopears_core::sync::{Message, WriterLen, frame};
use hellopears_core::topic::Topic;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, relay, tcp, yamux};

/// The client's behaviours: sync streams, and reservations on relays.
#[derive(NetworkBehaviour)]
struct Client {
    stream: libp2p_stream::Behaviour,
    relay: relay::client::Behaviour,
}

const SYNC: StreamProtocol = StreamProtocol::new("/hellopears/sync/1");

/// One sync session: framed writes on the stream we opened, reads (with a deadline) from
/// the stream the peer opened (each side writes on its own stream).
struct Conn {
    stream: libp2p::Stream,
    inbound: Option<libp2p::Stream>,
    arrivals: Arrivals,
    decoder: frame::FrameDecoder,
    buffer: Vec<u8>,
    /// Bytes read so far.
    read: usize,
}

impl Conn {
    async fn send(&mut self, message: &Message) -> anyhow::Result<()> {
        self.send_raw(&frame::encode(&message.encode())).await
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next message before `deadline`: `Ok(None)` on timeout, `Err` once the peer
    /// closed the stream.
    async fn recv(&mut self, deadline: Instant) -> anyhow::Result<Option<Message>> {
        loop {
            if let Some(bytes) = self.decoder.next_frame().map_err(|e| anyhow::anyhow!("{e}"))? {
                return Ok(Message::decode(&bytes).ok());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.inbound.is_none() {
                let arrivals = self.arrivals.clone();
                let mut arrivals = arrivals.lock().await;
                match tokio::time::timeout(left, arrivals.recv()).await {
                    Ok(Some(stream)) => self.inbound = Some(stream),
                    Ok(None) => bail!("closed"),
                    Err(_) => return Ok(None),
                }
                continue;
            }
            let Some(inbound) = self.inbound.as_mut() else { continue };
            match tokio::time::timeout(left, inbound.read(&mut self.buffer)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) | Ok(Err(_)) => bail!("closed"),
                Ok(Ok(n)) => {
                    self.read += n;
                    self.decoder.push(&self.buffer[..n]);
                }
            }
        }
    }

    /// Whether the peer closes the stream within `within`.
    async fn dropped_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline).await {
                Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(_) => {}
            }
        }
    }
}

/// A valid seq-0 entry of a fresh writer, signed for `topic`.
fn throwaway_entry(topic: &Topic, group: u64, index: u64) -> Vec<u8> {
    let key = Keypair::derive_for_tests(group, index).bound_to(topic.id().0);
    let body = EntryBody { writer: key.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload: vec![1] };
    Entry::sign(body, &key).bytes().to_vec()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else {
        bail!("usage: hostile MODE MULTIADDR [TOPIC] [HOLD_SECS]")
    };
    let topic = Topic::from_name(args.get(3).map_or("todo", String::as_str));
    let hold = Duration::from_secs(args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5));
    let addr: Multiaddr = addr.parse().context("multiaddr")?;
    let Some(Protocol::P2p(peer_id)) = addr.iter().last() else { bail!("the address needs /p2p/<peer id>") };
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_, relay| Client { stream: libp2p_stream::Behaviour::new(), relay })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.dial(addr.clone())?;
    let circuit = (mode == "relay-squat").then(|| addr.clone().with(Protocol::P2pCircuit));
    if let Some(circuit) = &circuit {
        swarm.listen_on(circuit.clone())?;
    }
    let (reserved_tx, mut reserved) = tokio::sync::mpsc::channel::<bool>(4);
    let mut control = swarm.behaviour().stream.new_control();
    // The peer's own sync streams carry its messages to us; taking them also keeps the
    // connection up for the attack.
    let mut incoming = control.accept(SYNC).context("accept")?;
    let (arrived, arrivals) = tokio::sync::mpsc::channel(32);
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            if arrived.send(stream).await.is_err() {
                break;
            }
        }
    });
    let arrivals = std::sync::Arc::new(tokio::sync::Mutex::new(arrivals));
    tokio::spawn(async move {
        let mut attempts = 0;
        loop {
            match swarm.select_next_some().await {
                libp2p::swarm::SwarmEvent::Behaviour(ClientEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => {
                    let _ = reserved_tx.try_send(true);
                }
                // A reservation asked for before the connection is up can fail: ask again.
                libp2p::swarm::SwarmEvent::ListenerClosed { .. } if attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Some(circuit) = &circuit {
                        let _ = swarm.listen_on(circuit.clone());
                    }
                }
                _ => {}
            }
        }
    });
    let mut conn = open(&mut control, peer_id, &arrivals).await?;
    let hello = Message::Hello { discovery: topic.discovery_key(), acknowledged: false, proof: None };
    let verdict = match mode.as_str() {
        "garbage" => {
            conn.send_raw(&[frame::encode(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]), frame::encode(&[7; 300])].concat())
                .await?;
            dropped(&mut conn, Duration::from_secs(10)).await
        }
        "oversized" => {
            conn.send_raw(&(64u32 << 20).to_be_bytes()).await?;
            dropped(&mut conn, Duration::from_secs(10)).await
        }
        // A stranger to a private list: it learned the discovery key (from the DHT) and
        // tries its luck with a made-up proof and an entry. It must learn nothing: no
        // writers, lengths, entries, fork evidence or peers, and see no discovery key.
        "stranger" => {
            let discovery = args.get(3).map(String::as_str).unwrap_or_default();
            // 64 hex characters, like a writer key.
            let key = hellopears_core::WriterId::from_hex(discovery).context("the discovery key in hex")?.0;
            let hello = Message::Hello {
                discovery: hellopears_core::topic::DiscoveryKey(key),
                acknowledged: false,
                proof: Some([7; 32]),
            };
            conn.send(&hello).await?;
            conn.send(&Message::Have { writers: vec![] }).await?;
            conn.send(&Message::Entries { entries: vec![throwaway_entry(&topic, 7_100, 0)] }).await?;
            let deadline = Instant::now() + hold;
            let mut learned = Vec::new();
            let dropped = loop {
                match conn.recv(deadline).await {
                    Err(_) => break true,
                    Ok(None) if Instant::now() >= deadline => break false,
                    Ok(Some(Message::Hello { discovery, .. })) if discovery.0 == [0; 32] => {}
                    Ok(Some(message)) => learned.push(format!("{message:?}").chars().take(60).collect::<String>()),
                    Ok(None) => {}
                }
            };
            if learned.is_empty() {
                format!("learned nothing, {}", if dropped { "dropped" } else { "kept open" })
            } else {
                format!("learned {}", learned.join(" | "))
            }
        }
        "relay-squat" => {
            let within = Duration::from_secs(10);
            match tokio::time::timeout(within, reserved.recv()).await {
                Ok(Some(true)) => {
                    if conn.dropped_within(hold).await {
                        "reserved, then dropped".to_owned()
                    } else {
                        "reserved and kept".to_owned()
                    }
                }
                _ => "not reserved".to_owned(),
            }
        }
        "other-topic" => {
            let other = Message::Hello {
                discovery: Topic::from_name("not yours").discovery_key(),
                acknowledged: false,
                proof: None,
            };
            conn.send(&other).await?;
            dropped(&mut conn, Duration::from_secs(10)).await
        }
        "bad-signature" => {
            let key = Keypair::derive_for_tests(666, 0);
            let body = EntryBody { writer: key.id(), seq: 0, prev: None, heads: vec![], clock: 1, payload: vec![] };
            let forged = Entry::sign(body, &key).with_signature_for_tests([9; 64]);
            conn.send(&hello).await?;
            conn.send(&Message::Entries { entries: vec![forged.bytes().to_vec()] }).await?;
            dropped(&mut conn, Duration::from_secs(10)).await
        }
        "slowloris" => {
            // A frame that announces 1,000 bytes and never sends them.
            conn.send(&hello).await?;
            let mut partial = 1000u32.to_be_bytes().to_vec();
            partial.extend_from_slice(&[1, 2, 3]);
            conn.send_raw(&partial).await?;
            let deadline = hellopears_core::limits::FRAME_DEADLINE_MS / 1000 + 10;
            dropped(&mut conn, Duration::from_secs(deadline)).await
        }
        "entry-flood" => {
            // More entries in one message than any honest batch.
            conn.send(&hello).await?;
            let entries = (0..5_000).map(|_| vec![1u8; 8]).collect();
            conn.send(&Message::Entries { entries }).await?;
            dropped(&mut conn, Duration::from_secs(10)).await
        }
        "many-writers" => {
            conn.send(&hello).await?;
            let entries = (0..1_100).map(|i| throwaway_entry(&topic, 7_001, i)).collect();
            conn.send(&Message::Entries { entries }).await?;
            held(&mut conn, hold).await
        }
        "writer-flood" => {
            conn.send(&hello).await?;
            let until = Instant::now() + hold;
            let mut next = 0;
            while Instant::now() < until {
                let entries = (next..next + 200).map(|i| throwaway_entry(&topic, 7_002, i)).collect();
                next += 200;
                conn.send(&Message::Entries { entries }).await?;
                let _ = conn.recv(Instant::now() + Duration::from_millis(10)).await;
            }
            format!("sent {next} writers")
        }
        "want-flood" => want_flood(&mut conn, &hello).await?,
        "hello-flood" => {
            conn.send(&hello).await?;
            let _ = conn.recv(Instant::now() + Duration::from_secs(2)).await;
            let started = Instant::now();
            for _ in 0..5_000 {
                conn.send(&hello).await?;
            }
            let mut restarts = 0;
            let deadline = Instant::now() + Duration::from_secs(3);
            while let Ok(Some(message)) = conn.recv(deadline).await {
                if matches!(message, Message::Have { .. }) {
                    restarts += 1;
                }
            }
            format!("restarts {restarts} in {} ms", started.elapsed().as_millis())
        }
        "huge-lengths" => {
            conn.send(&hello).await?;
            let writers = (0..4_096u64)
                .map(|i| WriterLen { writer: Keypair::derive_for_tests(7_003, i).id(), len: (1 << 62) - i })
                .collect();
            conn.send(&Message::Have { writers }).await?;
            held(&mut conn, hold).await
        }
        "replay" => {
            conn.send(&hello).await?;
            let entries = fetch_longest(&mut conn).await?;
            for _ in 0..50 {
                conn.send(&Message::Entries { entries: entries.clone() }).await?;
            }
            held(&mut conn, hold).await
        }
        "forged-pex" => {
            conn.send(&hello).await?;
            for round in 0..20u16 {
                let records = (0..64u16)
                    .map(|i| {
                        let peer = PeerId::random();
                        format!("/ip4/10.{}.{}.{}/tcp/9/p2p/{peer}", round % 250, i % 250, 1).into_bytes()
                    })
                    .collect();
                conn.send(&Message::Peers { records }).await?;
            }
            held(&mut conn, hold).await
        }
        "many-streams" => {
            conn.send(&hello).await?;
            let mut streams = vec![conn];
            for _ in 0..19 {
                if let Ok(mut extra) = open(&mut control, peer_id, &arrivals).await {
                    let _ = extra.send(&hello).await;
                    streams.push(extra);
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut kept = 0;
            for stream in &mut streams {
                if stream.send(&Message::Have { writers: vec![] }).await.is_ok()
                    && !stream.dropped_within(Duration::from_millis(300)).await
                {
                    kept += 1;
                }
            }
            format!("streams kept {kept}")
        }
        other => bail!("unknown mode {other}"),
    };
    println!("{verdict}");
    Ok(())
}

type Arrivals = std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<libp2p::Stream>>>;

async fn open(control: &mut libp2p_stream::Control, peer: PeerId, arrivals: &Arrivals) -> anyhow::Result<Conn> {
    let stream = tokio::time::timeout(Duration::from_secs(10), control.open_stream(peer, SYNC))
        .await
        .context("timed out opening the sync stream")??;
    Ok(Conn {
        stream,
        inbound: None,
        arrivals: arrivals.clone(),
        decoder: frame::FrameDecoder::default(),
        buffer: vec![0; 64 * 1024],
        read: 0,
    })
}

async fn dropped(conn: &mut Conn, within: Duration) -> String {
    if conn.dropped_within(within).await { "dropped".into() } else { "kept open".into() }
}

/// Holds the connection, reading and answering nothing.
async fn held(conn: &mut Conn, hold: Duration) -> String {
    if conn.dropped_within(hold).await { "dropped".into() } else { "held".into() }
}

/// The entries of the peer's longest log (up to one batch), fetched with one `Want`.
async fn fetch_longest(conn: &mut Conn) -> anyhow::Result<Vec<Vec<u8>>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut longest = None;
    while longest.is_none() {
        match conn.recv(deadline).await? {
            Some(Message::Have { writers }) => longest = writers.into_iter().max_by_key(|w| w.len),
            Some(_) => {}
            None => bail!("no Have from the peer"),
        }
    }
    let Some(WriterLen { writer, len }) = longest else { bail!("the peer holds no entries") };
    conn.send(&Message::Want { writer, start: 0, end: len }).await?;
    while Instant::now() < deadline {
        if let Some(Message::Entries { entries }) = conn.recv(deadline).await? {
            return Ok(entries);
        }
    }
    bail!("no entries from the peer")
}

/// Thousands of requests for the peer's longest log; reports what they bought.
async fn want_flood(conn: &mut Conn, hello: &Message) -> anyhow::Result<String> {
    conn.send(hello).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut longest = None;
    while longest.is_none() {
        match conn.recv(deadline).await? {
            Some(Message::Have { writers }) => longest = writers.into_iter().max_by_key(|w| w.len),
            Some(_) => {}
            None => bail!("no Have from the peer"),
        }
    }
    let Some(WriterLen { writer, len }) = longest else { bail!("the peer holds no entries") };
    let before = conn.read;
    let started = Instant::now();
    let want = frame::encode(&Message::Want { writer, start: 0, end: len }.encode());
    let burst: Vec<u8> = want.iter().copied().cycle().take(want.len() * 5_000).collect();
    conn.send_raw(&burst).await?;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if conn.recv(until).await.is_err() {
            break;
        }
    }
    Ok(format!("received {} bytes in {} ms", conn.read - before, started.elapsed().as_millis()))
}
