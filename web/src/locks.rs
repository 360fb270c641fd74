//! Web Locks: which writer key this tab may use. Tabs of one list in one browser share its
//! IndexedDB database; two tabs appending to one writer's log at once would fork it. Each
//! tab holds a lock on a writer slot for as long as it is open, and writes with that slot's
//! key (and is a libp2p peer with that slot's identity), so concurrent tabs write with
//! different keys and a reloaded tab reuses its key.

use futures::channel::oneshot;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// Takes the first free writer slot of a list (0 when Web Locks are unavailable).
pub async fn writer_slot(list: &str, slots: u32) -> u32 {
    let Some(locks) = lock_manager() else {
        web_sys::console::warn_1(&"hellopears: no Web Locks in this browser; tabs of one list share a writer".into());
        return 0;
    };
    for slot in 0..slots {
        if try_hold(&locks, &format!("hellopears-writer/{list}/{slot}")).await {
            return slot;
        }
    }
    // Every slot is taken: a new slot past them (its key is kept for later, too).
    slots + (js_sys::Math::random() * 1_000_000.0) as u32
}

fn lock_manager() -> Option<JsValue> {
    let navigator = web_sys::window()?.navigator();
    let locks = js_sys::Reflect::get(&navigator, &"locks".into()).ok()?;
    (!locks.is_undefined() && !locks.is_null()).then_some(locks)
}

/// Asks for a lock without waiting; when granted, it is held until the tab closes.
async fn try_hold(locks: &JsValue, name: &str) -> bool {
    let (granted_tx, granted_rx) = oneshot::channel::<bool>();
    let callback = Closure::once_into_js(move |lock: JsValue| -> js_sys::Promise {
        let granted = !lock.is_null() && !lock.is_undefined();
        let _ = granted_tx.send(granted);
        if granted {
            // Never settles: the lock is released when the tab goes away.
            js_sys::Promise::new(&mut |_, _| {})
        } else {
            js_sys::Promise::resolve(&JsValue::UNDEFINED)
        }
    });
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"ifAvailable".into(), &JsValue::TRUE);
    let Ok(request) = js_sys::Reflect::get(locks, &"request".into()) else { return false };
    let Some(request) = request.dyn_ref::<js_sys::Function>() else { return false };
    if request.call3(locks, &name.into(), &options, &callback).is_err() {
        return false;
    }
    granted_rx.await.unwrap_or(false)
}
