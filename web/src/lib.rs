//! HelloPears in a browser tab: a full peer (the core, libp2p over WebRTC to desktop peers,
//! IndexedDB) under a Leptos UI. The UI only talks to the backend interface in [`model`],
//! so the same components run in a native window over the desktop process (`bridge`).

/// The backend interface, defined once in the core.
pub use hellopears_core::ui as model;
pub use hellopears_core::ui::{peers_from_fragment, share_fragment, share_fragment_with_peers, topic_from_fragment};

pub mod addresses;
#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
mod bridge;
#[cfg(target_arch = "wasm32")]
pub mod idb;
#[cfg(target_arch = "wasm32")]
pub mod lists;
#[cfg(target_arch = "wasm32")]
pub mod locks;
#[cfg(target_arch = "wasm32")]
mod peer;
#[cfg(target_arch = "wasm32")]
pub mod siblings;

/// The app's entry point in a tab: starts the in-tab peer and mounts the UI.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let fragment = web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default();
    // An invite link (`#join=...`) or a private list this browser holds (`#list=ID`);
    // otherwise the public topic `#topic=NAME`.
    let source = lists::Source::from_fragment(&fragment);
    let name = source.name();
    // `debug=garbage`: this tab sends garbage on the sync protocol, so tests can check that
    // desktop peers refuse it. Only in builds for the browser tests (feature `test-hooks`):
    // a link could otherwise get a user's tab banned by every desktop.
    let garbage =
        cfg!(feature = "test-hooks") && fragment.trim_start_matches('#').split('&').any(|pair| pair == "debug=garbage");
    if bridge::in_window() {
        // In a native window the desktop process is the peer.
        app::mount(name, bridge::spawn);
    } else {
        app::mount(name, move |ui, commands| peer::spawn(source, ui, commands, garbage));
    }
}
