//! The backend of the UI in a native window: the desktop process is the peer. Commands go
//! to it as JSON over `window.ipc.postMessage`; it pushes JSON snapshots back by calling
//! `window.__hellopears_push`. No libp2p and no IndexedDB in the page.

use futures::StreamExt;
use futures::channel::mpsc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::app::Ui;
use hellopears_core::ui::{Command, PageAsk, Snapshot, WINDOW_MARKER, WINDOW_PUSH, WindowMessage};
use leptos::prelude::Set;

/// Whether this page runs in a HelloPears native window.
pub fn in_window() -> bool {
    web_sys::window().is_some_and(|w| js_sys::Reflect::has(&w, &WINDOW_MARKER.into()).unwrap_or(false))
}

/// Posts a message to the desktop process.
pub fn post(message: &WindowMessage) {
    let Some(window) = web_sys::window() else { return };
    let Ok(ipc) = js_sys::Reflect::get(&window, &"ipc".into()) else { return };
    let Ok(post) = js_sys::Reflect::get(&ipc, &"postMessage".into()) else { return };
    let Some(post) = post.dyn_ref::<js_sys::Function>() else { return };
    if let Ok(json) = serde_json::to_string(message) {
        let _ = post.call1(&ipc, &json.into());
    }
}

/// Connects the UI to the desktop process.
pub fn spawn(ui: Ui, mut commands: mpsc::UnboundedReceiver<Command>) {
    let first = std::cell::Cell::new(true);
    let answered = std::cell::Cell::new(0u64);
    let push = Closure::<dyn Fn(String)>::new(move |json: String| match serde_json::from_str::<Snapshot>(&json) {
        Ok(snapshot) => {
            // The default (empty) snapshot comes before the desktop process has its store open.
            if !snapshot.topic.is_empty() && first.replace(false) {
                mark_painted();
            }
            ui.set_topic(snapshot.topic);
            ui.set_access(snapshot.access);
            ui.set_network(snapshot.network);
            ui.set_members(snapshot.members, snapshot.can_manage);
            ui.set_lists(snapshot.lists);
            // Each answer to an invite or a list action is shown once.
            if let Some(reply) = snapshot.reply.filter(|reply| reply.seq > answered.get()) {
                answered.set(reply.seq);
                match reply.about {
                    PageAsk::Invite => ui.set_invite(reply.result),
                    PageAsk::Lists => ui.lists_message.set(reply.result.err().unwrap_or_default()),
                }
            }
            ui.set_writer(snapshot.writer);
            ui.set_todos(snapshot.todos);
            ui.set_peers(snapshot.peers);
            ui.set_status(snapshot.status);
        }
        Err(error) => web_sys::console::error_1(&format!("hellopears: bad snapshot: {error}").into()),
    });
    if let Some(window) = web_sys::window() {
        let _ = js_sys::Reflect::set(&window, &WINDOW_PUSH.into(), push.as_ref());
    }
    push.forget();
    wasm_bindgen_futures::spawn_local(async move {
        while let Some(command) = commands.next().await {
            post(&WindowMessage::Command(command));
        }
    });
    post(&WindowMessage::Ready);
}

/// Records (as `window.__hellopears_painted`, ms since the Unix epoch) the frame in which
/// the first state from the desktop process is on screen.
fn mark_painted() {
    let Some(window) = web_sys::window() else { return };
    let callback = Closure::once_into_js(move || {
        if let Some(window) = web_sys::window() {
            let _ = js_sys::Reflect::set(&window, &"__hellopears_painted".into(), &js_sys::Date::now().into());
        }
    });
    let _ = window.request_animation_frame(callback.unchecked_ref());
}
