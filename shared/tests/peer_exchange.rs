//! Peer exchange: a peer that connects learns at once where the peers already connected
//! listen, without waiting for its own addresses to arrive (a browser tab's may come late).

use hellopears_core::node::{Config, Input, Node, Open, Output};
use hellopears_core::storage::LoadedState;
use hellopears_core::topic::Topic;

fn node(seed: u8) -> Node<u8> {
    let topic = Topic::from_name("pex");
    Node::open(topic, LoadedState::default(), [seed; 32], Config::default()).expect("node").0
}

/// Delivers `outputs` of `from` (known to `to` as `from_id`) to `to`; returns `to`'s
/// outputs and the records it was told to dial.
fn deliver(to: &mut Node<u8>, from_id: u8, outputs: Vec<Output<u8>>, now: u64) -> (Vec<Output<u8>>, Vec<Vec<u8>>) {
    let mut next = Vec::new();
    let mut dial = Vec::new();
    for output in outputs {
        if let Output::Send(_, frame) = output {
            for out in to.handle(Input::Frame(from_id, frame), now) {
                if let Output::Dial(record) = &out {
                    dial.push(record.clone());
                }
                next.push(out);
            }
        }
    }
    (next, dial)
}

/// Answers `node`'s persists (to memory) until it asks for none; returns everything else.
fn settle(node: &mut Node<u8>, mut outputs: Vec<Output<u8>>, now: u64) -> Vec<Output<u8>> {
    let mut rest = Vec::new();
    for _ in 0..10 {
        let mut next = Vec::new();
        for output in outputs.drain(..) {
            match output {
                Output::Persist(id, _) => next.extend(node.handle(Input::Persisted(id, Ok(())), now)),
                other => rest.push(other),
            }
        }
        if next.is_empty() {
            break;
        }
        outputs = next;
    }
    rest
}

#[test]
fn a_newcomer_learns_the_known_peers_addresses_at_once() {
    let record = b"/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWLbRVXu9Rw6Tgt8vtWahxyHWDtFngdTDY54x6g1oi8Ytj".to_vec();
    let mut hub = node(1);
    let started = hub.handle(Input::Tick, 0);
    settle(&mut hub, started, 0);
    // Peer 2 is connected and has told its addresses.
    for input in [
        Input::Connected { remote: 2, open: Open::Now, identity: vec![] },
        Input::StreamOpened(2),
        Input::Listening(2, vec![record.clone()]),
    ] {
        let outputs = hub.handle(input, 0);
        settle(&mut hub, outputs, 0);
    }
    // Peer 3 connects; its own addresses never arrive.
    let mut newcomer = node(3);
    for input in [Input::Connected { remote: 1, open: Open::Now, identity: vec![] }, Input::StreamOpened(1)] {
        let outputs = newcomer.handle(input, 0);
        settle(&mut newcomer, outputs, 0);
    }
    let mut to_newcomer = hub.handle(Input::Connected { remote: 3, open: Open::Now, identity: vec![] }, 1);
    to_newcomer.extend(hub.handle(Input::StreamOpened(3), 1));
    let to_newcomer = settle(&mut hub, to_newcomer, 1);
    let (_, dial) = deliver(&mut newcomer, 1, to_newcomer, 2);
    assert_eq!(dial, vec![record], "the newcomer was not told where peer 2 listens");
}
