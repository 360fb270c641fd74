//! HelloPears in a browser tab: a full peer (the core, libp2p over WebRTC to desktop peers,
//! IndexedDB) under a Leptos UI. The UI only talks to the backend interface in [`model`],
//! so the same components run in a native window over the desktop process (`bridge`).

pub mod model;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
mod bridge;
#[cfg(target_arch = "wasm32")]
pub mod idb;
#[cfg(target_arch = "wasm32")]
mod peer;

use hellopears_core::topic::Topic;

/// The topic a share link's fragment names (`#topic=NAME`), or the default topic.
pub fn topic_from_fragment(fragment: &str) -> Topic {
    let fragment = fragment.trim_start_matches('#');
    let name = fragment
        .split('&')
        .find_map(|pair| pair.strip_prefix("topic="))
        .map(decode_component)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "todo".into());
    Topic::from_name(&name)
}

/// The fragment of a share link for a topic.
pub fn share_fragment(topic: &Topic) -> String {
    format!("#topic={}", encode_component(topic.name()))
}

/// Percent-encodes what is not safe in a URL fragment value.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Undoes [`encode_component`] (invalid escapes are kept as they are).
fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The app's entry point in a tab: starts the in-tab peer and mounts the UI.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let fragment = web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default();
    let topic = topic_from_fragment(&fragment);
    // `debug=garbage`: this tab sends garbage on the sync protocol, so tests can check that
    // desktop peers refuse it. It only makes this tab misbehave.
    let garbage = fragment.trim_start_matches('#').split('&').any(|pair| pair == "debug=garbage");
    if bridge::in_window() {
        // In a native window the desktop process is the peer.
        app::mount(topic.name().to_owned(), bridge::spawn);
    } else {
        app::mount(topic.name().to_owned(), move |ui, commands| peer::spawn(topic, ui, commands, garbage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_links_round_trip() {
        for name in ["groceries", "work & home", "päivä/ö#1"] {
            let topic = Topic::from_name(name);
            assert_eq!(topic_from_fragment(&share_fragment(&topic)), topic);
        }
        assert_eq!(topic_from_fragment("").name(), "todo");
        assert_eq!(topic_from_fragment("#x=1&topic=work").name(), "work");
        assert_eq!(topic_from_fragment("#topic=a%2").name(), "a%2");
    }
}
