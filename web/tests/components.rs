//! The Leptos components against a test backend, in a real browser: what the backend
//! puts in the UI state shows in the DOM, and what the user does reaches the backend as
//! commands.
#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use hellopears_web::app::{App, Ui};
use hellopears_web::model::{Command, PeerView, SyncStatus, TodoView};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;
use web_sys::{Element, HtmlElement, HtmlInputElement};

wasm_bindgen_test_configure!(run_in_browser);

fn todo(id: &str, text: &str, done: bool) -> TodoView {
    TodoView { id: id.into(), text: text.into(), done, created: 0, author: "abcd1234".into() }
}

/// Mounts the app in a fresh container; returns the container and the command stream.
fn mount() -> (Element, Ui, mpsc::UnboundedReceiver<Command>) {
    let document = web_sys::window().and_then(|w| w.document()).expect("document");
    let container = document.create_element("div").expect("div");
    document.body().expect("body").append_child(&container).expect("append");
    let (ui, commands) = Ui::new("components");
    let target: HtmlElement = container.clone().dyn_into().expect("an HTML element");
    leptos::mount::mount_to(target, move || view! { <App ui=ui /> }).forget();
    (container, ui, commands)
}

/// Lets the reactive system run.
async fn settle() {
    futures_timer::Delay::new(Duration::from_millis(20)).await;
}

fn all(container: &Element, css: &str) -> Vec<Element> {
    let list = container.query_selector_all(css).expect("selector");
    (0..list.length()).filter_map(|i| list.item(i)?.dyn_into().ok()).collect()
}

fn one(container: &Element, css: &str) -> Element {
    container.query_selector(css).expect("selector").unwrap_or_else(|| panic!("no {css}"))
}

fn press_enter(input: &HtmlInputElement, value: &str) {
    input.set_value(value);
    let init = web_sys::KeyboardEventInit::new();
    init.set_key("Enter");
    init.set_bubbles(true);
    let event = web_sys::KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).expect("event");
    input.dispatch_event(&event).expect("dispatch");
}

fn click(element: &Element) {
    element.clone().dyn_into::<HtmlElement>().expect("clickable").click();
}

#[wasm_bindgen_test]
async fn the_list_shows_what_the_backend_holds() {
    let (container, ui, _commands) = mount();
    ui.set_todos(vec![todo("1", "milk", false), todo("2", "bread", true)]);
    ui.set_status(SyncStatus::Synced { peers: 1 });
    ui.set_peers(vec![PeerView {
        id: "12D3KooWpeer".into(),
        connection: "WebRTC direct to 127.0.0.1:9".into(),
        last_sync: 0,
    }]);
    settle().await;
    let items = all(&container, "[data-testid=todo-item]");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].get_attribute("data-id").as_deref(), Some("1"));
    let texts: Vec<String> =
        all(&container, "[data-testid=todo-text]").iter().filter_map(|e| e.text_content()).collect();
    assert_eq!(texts, ["milk", "bread"]);
    let toggles = all(&container, "[data-testid=todo-toggle]");
    assert!(!toggles[0].clone().dyn_into::<HtmlInputElement>().expect("checkbox").checked());
    assert!(toggles[1].clone().dyn_into::<HtmlInputElement>().expect("checkbox").checked());
    assert_eq!(one(&container, "[data-testid=todo-count]").text_content().as_deref(), Some("1 left"));
    let status = one(&container, "[data-testid=sync-status]");
    assert_eq!(status.get_attribute("data-status").as_deref(), Some("synced"));
    assert_eq!(status.text_content().as_deref(), Some("synced with 1 peer"));
    let peers = one(&container, "[data-testid=peers]").text_content().unwrap_or_default();
    assert!(peers.contains("WebRTC direct to 127.0.0.1:9"), "{peers}");

    // Filters.
    click(&one(&container, "[data-testid=filter-done]"));
    settle().await;
    assert_eq!(all(&container, "[data-testid=todo-item]").len(), 1);
    click(&one(&container, "[data-testid=filter-active]"));
    settle().await;
    let active = all(&container, "[data-testid=todo-text]");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].text_content().as_deref(), Some("milk"));

    // Alone.
    ui.set_peers(Vec::new());
    ui.set_status(SyncStatus::Alone);
    settle().await;
    assert_eq!(status.text_content().as_deref(), Some("alone, waiting for peers"));
    assert!(one(&container, "[data-testid=peers]").text_content().unwrap_or_default().contains("No peer connected"));
}

#[wasm_bindgen_test]
async fn user_actions_become_commands() {
    let (container, ui, mut commands) = mount();
    ui.set_todos(vec![todo("1", "milk", false), todo("2", "bread", true)]);
    settle().await;
    let input: HtmlInputElement = one(&container, "[data-testid=new-todo]").dyn_into().expect("input");
    press_enter(&input, "  eggs ");
    assert_eq!(commands.next().await, Some(Command::Add("eggs".into())));
    assert_eq!(input.value(), "", "the input clears after adding");
    press_enter(&input, "   ");

    click(&one(&container, "[data-testid=todo-item][data-id='1'] [data-testid=todo-toggle]"));
    assert_eq!(commands.next().await, Some(Command::Toggle("1".into())), "blank input sent nothing");
    click(&one(&container, "[data-testid=todo-item][data-id='2'] [data-testid=todo-delete]"));
    assert_eq!(commands.next().await, Some(Command::Remove("2".into())));
    click(&one(&container, "[data-testid=clear-completed]"));
    assert_eq!(commands.next().await, Some(Command::ClearCompleted));

    // Edit in place: double-click, type, Enter.
    let label = one(&container, "[data-testid=todo-item][data-id='1'] [data-testid=todo-text]");
    let dblclick = web_sys::MouseEvent::new("dblclick").expect("event");
    label.dispatch_event(&dblclick).expect("dispatch");
    settle().await;
    let edit: HtmlInputElement =
        one(&container, "[data-testid=todo-item][data-id='1'] [data-testid=todo-edit]").dyn_into().expect("input");
    assert_eq!(edit.value(), "milk");
    press_enter(&edit, "oat milk");
    assert_eq!(commands.next().await, Some(Command::Edit("1".into(), "oat milk".into())));
    settle().await;
    assert!(container.query_selector("[data-testid=todo-edit]").expect("selector").is_none(), "editing ends");
}

#[wasm_bindgen_test]
async fn long_lists_are_shown_a_page_at_a_time() {
    let (container, ui, _commands) = mount();
    ui.set_todos((0..450).map(|n| todo(&format!("{n:04}"), &format!("todo {n}"), false)).collect());
    settle().await;
    assert_eq!(all(&container, "[data-testid=todo-item]").len(), 200);
    let count = one(&container, "[data-testid=todo-count]");
    assert_eq!(count.get_attribute("data-total").as_deref(), Some("450"));
    click(&one(&container, "[data-testid=show-more]"));
    settle().await;
    assert_eq!(all(&container, "[data-testid=todo-item]").len(), 400);
    click(&one(&container, "[data-testid=show-more]"));
    settle().await;
    assert_eq!(all(&container, "[data-testid=todo-item]").len(), 450);
    assert!(container.query_selector("[data-testid=show-more]").expect("selector").is_none());
}
