//! Tabs of one list in one browser: sibling peers over a `BroadcastChannel`. Each open tab
//! writes with a key of its own (see [`crate::locks`]); siblings sync with each other
//! directly, with the same sync sessions as with desktop peers (their libp2p peer ids name
//! them, and a private list's session proofs bind them), so two tabs converge with no
//! desktop at all. A sibling of a private list that is not a member yet asks for an invite;
//! a writer tab makes one and hands its secret over the channel, and the new tab joins with
//! it through their session like any joiner.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// The largest message taken from the channel (a frame and its header).
const MAX_MESSAGE_BYTES: usize = hellopears_core::limits::MAX_MESSAGE_BYTES + 1024;
/// How often a tab that is not a member asks its siblings for an invite.
const ASK_EVERY_MS: u64 = 2_000;
/// How long a writer tab waits before inviting the same device again.
const INVITE_AGAIN_MS: u64 = 30_000;
/// How long an invite handed to a sibling stays valid.
pub const SIBLING_INVITE_MS: u64 = 10 * 60_000;

/// What siblings say.
#[derive(Debug, Serialize, Deserialize)]
enum Body {
    /// A tab opened (or answers one that did).
    Hello {
        /// An answer to another tab's `Hello` (not answered again).
        reply: bool,
    },
    /// A tab is closing.
    Bye,
    /// A sync frame.
    Frame(Vec<u8>),
    /// A tab that is not a member asks for an invite for its writer key.
    InviteMe([u8; 32]),
    /// An invite's secret, for the sibling it is addressed to.
    Invite([u8; 32]),
}

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    body: Body,
}

/// What a sibling did, for the tab's loop.
#[derive(Debug)]
pub enum Event {
    /// A sibling is there (new).
    Joined(PeerId),
    /// A sibling (re)started: any session with it starts again.
    Greeted(PeerId),
    /// A sibling left.
    Left(PeerId),
    /// A frame from a sibling.
    Frame(PeerId, Vec<u8>),
    /// A sibling asks for an invite for this writer key.
    InviteMe(PeerId, hellopears_core::WriterId),
    /// A sibling invites us.
    Invited([u8; 32]),
}

/// This tab's end of the channel.
pub struct Siblings {
    channel: web_sys::BroadcastChannel,
    me: PeerId,
    known: HashSet<PeerId>,
    inbox: Rc<RefCell<Vec<Event>>>,
    asked_at: u64,
    invited: HashMap<hellopears_core::WriterId, u64>,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_hide: Closure<dyn FnMut()>,
}

impl std::fmt::Debug for Siblings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Siblings").field("me", &self.me).field("known", &self.known).finish()
    }
}

impl Siblings {
    /// Opens the channel of `database` (one per list) and greets the tabs already there.
    /// `wake` is signalled whenever events wait in [`Siblings::take`].
    pub fn open(database: &str, me: PeerId, wake: futures::channel::mpsc::UnboundedSender<()>) -> Result<Self, String> {
        let channel = web_sys::BroadcastChannel::new(&format!("hellopears-siblings/{database}"))
            .map_err(|e| format!("no BroadcastChannel: {e:?}"))?;
        let inbox: Rc<RefCell<Vec<Event>>> = Rc::default();
        let on_message = {
            let (inbox, wake) = (inbox.clone(), wake.clone());
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
                let Some(bytes) = event.data().dyn_ref::<js_sys::Uint8Array>().map(js_sys::Uint8Array::to_vec) else {
                    return;
                };
                if bytes.len() > MAX_MESSAGE_BYTES {
                    return;
                }
                if let Some(event) = decode(&bytes, me) {
                    inbox.borrow_mut().push(event);
                    let _ = wake.unbounded_send(());
                }
            })
        };
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let on_hide = {
            let channel = channel.clone();
            Closure::<dyn FnMut()>::new(move || post(&channel, me, None, Body::Bye))
        };
        if let Some(window) = web_sys::window() {
            let _ = window.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
        }
        post(&channel, me, None, Body::Hello { reply: false });
        Ok(Self {
            channel,
            me,
            known: HashSet::new(),
            inbox,
            asked_at: 0,
            invited: HashMap::new(),
            _on_message: on_message,
            _on_hide: on_hide,
        })
    }

    /// Whether `peer` is a sibling tab.
    pub fn is_sibling(&self, peer: &PeerId) -> bool {
        self.known.contains(peer)
    }

    /// The events that came since the last call. Greetings are answered here.
    pub fn take(&mut self) -> Vec<Event> {
        let events = std::mem::take(&mut *self.inbox.borrow_mut());
        let mut out = Vec::new();
        for event in events {
            match event {
                Event::Joined(peer) => {
                    if self.known.insert(peer) {
                        out.push(Event::Joined(peer));
                    }
                }
                Event::Greeted(peer) => {
                    if !self.known.insert(peer) {
                        out.push(Event::Left(peer));
                    }
                    out.push(Event::Joined(peer));
                }
                Event::Left(peer) => {
                    if self.known.remove(&peer) {
                        out.push(Event::Left(peer));
                    }
                }
                Event::Frame(peer, _) | Event::InviteMe(peer, _) if !self.known.contains(&peer) => {
                    // A sibling we missed the greeting of (opened while this tab loaded).
                    self.known.insert(peer);
                    out.push(Event::Joined(peer));
                    out.push(event);
                }
                event => out.push(event),
            }
        }
        out
    }

    /// Answers a sibling's greeting, so it learns of this tab (for each [`Event::Joined`]).
    pub fn greet(&self, to: PeerId) {
        post(&self.channel, self.me, Some(to), Body::Hello { reply: true });
    }

    /// Sends a sync frame to a sibling.
    pub fn send(&self, to: PeerId, frame: Vec<u8>) {
        post(&self.channel, self.me, Some(to), Body::Frame(frame));
    }

    /// Forgets a sibling the node dropped (it greets again when it reloads).
    pub fn forget(&mut self, peer: &PeerId) {
        self.known.remove(peer);
    }

    /// Asks the siblings for an invite for `writer`, at most every [`ASK_EVERY_MS`].
    pub fn ask_for_invite(&mut self, writer: hellopears_core::WriterId, now: u64) {
        if self.known.is_empty() || now.saturating_sub(self.asked_at) < ASK_EVERY_MS {
            return;
        }
        self.asked_at = now;
        post(&self.channel, self.me, None, Body::InviteMe(writer.0));
    }

    /// Whether to invite `writer` now (not again within [`INVITE_AGAIN_MS`]).
    pub fn should_invite(&mut self, writer: hellopears_core::WriterId, now: u64) -> bool {
        match self.invited.get(&writer) {
            Some(at) if now.saturating_sub(*at) < INVITE_AGAIN_MS => false,
            _ => {
                self.invited.insert(writer, now);
                true
            }
        }
    }

    /// Hands an invite's secret to a sibling.
    pub fn invite(&self, to: PeerId, secret: [u8; 32]) {
        post(&self.channel, self.me, Some(to), Body::Invite(secret));
    }
}

fn post(channel: &web_sys::BroadcastChannel, me: PeerId, to: Option<PeerId>, body: Body) {
    let message = Message { from: me.to_bytes(), to: to.map(|peer| peer.to_bytes()), body };
    let Ok(bytes) = postcard::to_allocvec(&message) else { return };
    let array = js_sys::Uint8Array::from(bytes.as_slice());
    if let Err(error) = channel.post_message(&array) {
        web_sys::console::warn_1(&format!("hellopears: cannot reach the other tabs: {error:?}").into());
    }
}

/// A message for this tab, as an event (`None`: malformed, ours, or for another tab).
fn decode(bytes: &[u8], me: PeerId) -> Option<Event> {
    let message: Message = postcard::from_bytes(bytes).ok()?;
    let from = PeerId::from_bytes(&message.from).ok()?;
    if from == me {
        return None;
    }
    if let Some(to) = message.to
        && PeerId::from_bytes(&to).ok()? != me
    {
        return None;
    }
    Some(match message.body {
        Body::Hello { reply: false } => Event::Greeted(from),
        Body::Hello { reply: true } => Event::Joined(from),
        Body::Bye => Event::Left(from),
        Body::Frame(frame) => Event::Frame(from, frame),
        Body::InviteMe(writer) => Event::InviteMe(from, hellopears_core::WriterId(writer)),
        Body::Invite(secret) => Event::Invited(secret),
    })
}
