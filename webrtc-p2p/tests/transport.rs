//! Two rust-libp2p swarms that share a connection upgrade to `/webrtc` through the
//! signaling protocol, then talk over the WebRTC connection alone; a peer that sends
//! garbage on the signaling protocol is reported.
#![cfg(feature = "tokio")]

use std::time::Duration;

use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Transport as _;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Swarm, noise, tcp, yamux};
use webrtc_p2p::tokio::{Config, Misbehaviour, Transport};

const ECHO: StreamProtocol = StreamProtocol::new("/echo/1");

#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
}

fn swarm() -> (Swarm<Behaviour>, mpsc::UnboundedReceiver<Misbehaviour>) {
    // Two rustls providers in the tree (QUIC's aws-lc-rs, webrtc-rs's ring): pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stream = libp2p_stream::Behaviour::new();
    let control = stream.new_control();
    let config = Config { loopback_candidates: true, ..Config::default() };
    let key = libp2p::identity::Keypair::generate_ed25519();
    let (transport, reports) = Transport::new(key.public().to_peer_id(), control, config);
    let mut transport = Some(transport);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_other_transport(|_| {
            transport.take().expect("built once").map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
        })
        .expect("webrtc")
        .with_behaviour(|_| Behaviour { stream })
        .expect("behaviour")
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    (swarm, reports)
}

async fn listen_tcp(swarm: &mut Swarm<Behaviour>) -> Multiaddr {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

fn is_webrtc(endpoint: &libp2p::core::ConnectedPoint) -> bool {
    webrtc_p2p::is_webrtc_addr(endpoint.get_remote_address())
}

/// Drives both swarms until `done` says so for an event of `a` (or of `b`).
async fn drive<F>(a: &mut Swarm<Behaviour>, b: &mut Swarm<Behaviour>, mut done: F)
where
    F: FnMut(bool, &SwarmEvent<BehaviourEvent>) -> bool,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::select! {
                event = a.select_next_some() => if done(true, &event) { return },
                event = b.select_next_some() => if done(false, &event) { return },
            }
        }
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swarms_upgrade_a_shared_connection_to_webrtc_and_talk_over_it() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "webrtc_p2p=debug".into()))
        .with_test_writer()
        .try_init();
    let (mut a, _) = swarm();
    let (mut b, _) = swarm();
    let b_id = *b.local_peer_id();
    let b_tcp = listen_tcp(&mut b).await;
    b.listen_on("/webrtc".parse().expect("addr")).expect("listen /webrtc");
    a.dial(b_tcp.clone().with(libp2p::multiaddr::Protocol::P2p(b_id))).expect("dial tcp");
    let mut tcp = None;
    drive(&mut a, &mut b, |is_a, event| {
        if let SwarmEvent::ConnectionEstablished { connection_id, .. } = event
            && is_a
        {
            tcp = Some(*connection_id);
        }
        tcp.is_some()
    })
    .await;

    // The "relayed" connection is TCP here: any connection can carry the signaling.
    let webrtc: Multiaddr = format!("{b_tcp}/p2p/{b_id}/p2p-circuit/webrtc/p2p/{b_id}").parse().expect("addr");
    a.dial(webrtc).expect("dial /webrtc");
    let (mut a_up, mut b_up) = (false, false);
    drive(&mut a, &mut b, |is_a, event| {
        match event {
            SwarmEvent::ConnectionEstablished { endpoint, .. } if is_webrtc(endpoint) => {
                *(if is_a { &mut a_up } else { &mut b_up }) = true;
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("the /webrtc dial failed: {error}"),
            SwarmEvent::IncomingConnectionError { error, .. } => panic!("the /webrtc handshake failed: {error}"),
            _ => {}
        }
        a_up && b_up
    })
    .await;

    // Close the TCP connection: what follows can only go over WebRTC.
    assert!(a.close_connection(tcp.expect("tcp")));
    let mut closed = 0;
    drive(&mut a, &mut b, |_, event| {
        if let SwarmEvent::ConnectionClosed { endpoint, .. } = event {
            assert!(!is_webrtc(endpoint), "the WebRTC connection closed");
            closed += 1;
        }
        closed == 2
    })
    .await;

    let mut incoming = b.behaviour().stream.new_control().accept(ECHO).expect("accept");
    let mut a_control = a.behaviour().stream.new_control();
    let echo = tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let mut buf = vec![0u8; 5];
            stream.read_exact(&mut buf).await.expect("read");
            stream.write_all(&buf).await.expect("write");
            stream.flush().await.expect("flush");
        }
    });
    let talk = async move {
        let mut replies = Vec::new();
        for round in 0..3u8 {
            let mut stream = a_control.open_stream(b_id, ECHO).await.unwrap_or_else(|error| panic!("open: {error:?}"));
            stream.write_all(&[b'h', b'e', b'l', b'l', b'0' + round]).await.expect("write");
            stream.flush().await.expect("flush");
            let mut buf = vec![0u8; 5];
            stream.read_exact(&mut buf).await.expect("read");
            replies.push(buf);
        }
        replies
    };
    let run_swarms = async {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                _ = b.select_next_some() => {}
            }
        }
    };
    let replies = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            replies = talk => replies,
            () = run_swarms => unreachable!(),
        }
    })
    .await
    .expect("echoed in time");
    assert_eq!(replies, vec![b"hell0".to_vec(), b"hell1".to_vec(), b"hell2".to_vec()]);
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_signaling_is_reported() {
    let (mut a, _) = swarm();
    let (mut b, mut reports) = swarm();
    let a_id = *a.local_peer_id();
    let b_id = *b.local_peer_id();
    let b_tcp = listen_tcp(&mut b).await;
    b.listen_on("/webrtc".parse().expect("addr")).expect("listen /webrtc");
    a.dial(b_tcp.with(libp2p::multiaddr::Protocol::P2p(b_id))).expect("dial tcp");
    drive(&mut a, &mut b, |is_a, event| is_a && matches!(event, SwarmEvent::ConnectionEstablished { .. })).await;

    let mut control = a.behaviour().stream.new_control();
    let hostile = async move {
        // Garbage SDP.
        let mut stream = control.open_stream(b_id, webrtc_p2p::SIGNALING_PROTOCOL).await.expect("open");
        let garbage = webrtc_p2p::proto::Message { r#type: Some(0), data: Some("v=0 hello".into()) };
        stream.write_all(&prost::Message::encode_length_delimited_to_vec(&garbage)).await.expect("write");
        stream.flush().await.expect("flush");
        futures::future::pending::<()>().await;
    };
    let report = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            report = reports.next() => report.expect("a report"),
            () = hostile => unreachable!(),
            () = async { loop { tokio::select! { _ = a.select_next_some() => {}, _ = b.select_next_some() => {} } } } => unreachable!(),
        }
    })
    .await
    .expect("reported in time");
    assert_eq!(report.peer, a_id);
    assert!(report.reason.contains("SDP"), "{}", report.reason);
}
