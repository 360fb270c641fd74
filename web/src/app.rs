//! The Leptos UI. It knows nothing of networking or storage: it renders what a backend puts
//! into [`Ui`] and sends [`Command`]s back.

use futures::channel::mpsc;
use hellopears_core::access::Role;
use leptos::prelude::*;
use web_sys::KeyboardEvent;

use hellopears_core::ui::{Command, ListEntry, MemberInfo, PeerView, SyncStatus, TodoView, WindowMessage};

/// The UI's state and its line to the backend. Copyable, so every component and closure
/// can hold it.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// The topic's name.
    pub topic: RwSignal<String>,
    /// Our writer id (short).
    pub writer: RwSignal<String>,
    /// The todos, newest first.
    pub todos: RwSignal<Vec<TodoView>>,
    /// Connected peers.
    pub peers: RwSignal<Vec<PeerView>>,
    /// Sync state.
    pub status: RwSignal<SyncStatus>,
    /// Who can read and write the list ("public: anyone…" or "private, <role>").
    pub access: RwSignal<String>,
    /// How the desktop peer behind a native window finds others (empty in a tab).
    pub network: RwSignal<String>,
    /// Addresses of peers that hold the topic, for its share link.
    pub share_peers: RwSignal<Vec<String>>,
    /// The members of a private list.
    pub members: RwSignal<Vec<MemberInfo>>,
    /// Whether this device may invite and remove members.
    pub can_manage: RwSignal<bool>,
    /// The last invite link made here (or why none could be).
    pub invite: RwSignal<Option<Result<String, String>>>,
    /// The lists of the desktop peer behind a native window (a tab keeps its own).
    pub lists: RwSignal<Vec<ListEntry>>,
    /// Why the last list action failed ("" when it did not).
    pub lists_message: RwSignal<String>,
    commands: StoredValue<mpsc::UnboundedSender<Command>>,
}

impl Ui {
    /// A UI for `topic`, and the receiving end of its commands for the backend.
    pub fn new(topic: &str) -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded();
        let ui = Self {
            topic: RwSignal::new(topic.to_owned()),
            writer: RwSignal::new(String::new()),
            todos: RwSignal::new(Vec::new()),
            peers: RwSignal::new(Vec::new()),
            status: RwSignal::new(SyncStatus::Loading),
            access: RwSignal::new(String::new()),
            network: RwSignal::new(String::new()),
            share_peers: RwSignal::new(Vec::new()),
            members: RwSignal::new(Vec::new()),
            can_manage: RwSignal::new(false),
            invite: RwSignal::new(None),
            lists: RwSignal::new(Vec::new()),
            lists_message: RwSignal::new(String::new()),
            commands: StoredValue::new(tx),
        };
        (ui, rx)
    }

    /// Sends a command to the backend.
    pub fn send(&self, command: Command) {
        self.commands.with_value(|tx| {
            let _ = tx.unbounded_send(command);
        });
    }

    /// Sets the todo list (skipped when nothing changed).
    pub fn set_todos(&self, todos: Vec<TodoView>) {
        if self.todos.with_untracked(|old| *old != todos) {
            self.todos.set(todos);
        }
    }

    /// Sets the peers (skipped when nothing changed).
    pub fn set_peers(&self, peers: Vec<PeerView>) {
        if self.peers.with_untracked(|old| *old != peers) {
            self.peers.set(peers);
        }
    }

    /// Sets the sync status (skipped when unchanged).
    pub fn set_status(&self, status: SyncStatus) {
        if self.status.with_untracked(|old| *old != status) {
            self.status.set(status);
        }
    }

    /// Sets the topic's name.
    pub fn set_topic(&self, topic: String) {
        if self.topic.with_untracked(|old| *old != topic) {
            self.topic.set(topic);
        }
    }

    /// Sets our writer id.
    pub fn set_writer(&self, writer: String) {
        self.writer.set(writer);
    }

    /// Sets the members and whether this device manages them (skipped when unchanged).
    pub fn set_members(&self, members: Vec<MemberInfo>, can_manage: bool) {
        if self.members.with_untracked(|old| *old != members) {
            self.members.set(members);
        }
        if self.can_manage.get_untracked() != can_manage {
            self.can_manage.set(can_manage);
        }
    }

    /// Sets the desktop's lists (skipped when unchanged).
    pub fn set_lists(&self, lists: Vec<ListEntry>) {
        if self.lists.with_untracked(|old| *old != lists) {
            self.lists.set(lists);
        }
    }

    /// Shows an invite link (or why none was made).
    pub fn set_invite(&self, invite: Result<String, String>) {
        self.invite.set(Some(invite));
    }

    /// Sets who can read and write the list (skipped when unchanged).
    pub fn set_access(&self, access: String) {
        if self.access.with_untracked(|old| *old != access) {
            self.access.set(access);
        }
    }

    /// Sets the addresses a share link carries (skipped when unchanged).
    pub fn set_share_peers(&self, peers: Vec<String>) {
        if self.share_peers.with_untracked(|old| *old != peers) {
            self.share_peers.set(peers);
        }
    }

    /// Sets how the desktop peer finds others (skipped when unchanged).
    pub fn set_network(&self, network: String) {
        if self.network.with_untracked(|old| *old != network) {
            self.network.set(network);
        }
    }
}

/// Todos rendered per page of a long list.
const PAGE: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    All,
    Active,
    Done,
}

impl Filter {
    fn admits(self, todo: &TodoView) -> bool {
        match self {
            Filter::All => true,
            Filter::Active => !todo.done,
            Filter::Done => todo.done,
        }
    }
}

/// Mounts the app on the page's body; `start` gets the UI state and starts a backend.
pub fn mount(topic: String, start: impl FnOnce(Ui, mpsc::UnboundedReceiver<Command>) + 'static) {
    leptos::mount::mount_to_body(move || {
        let (ui, commands) = Ui::new(&topic);
        start(ui, commands);
        view! { <App ui=ui /> }
    });
}

/// How often an open tab asks its server which version of the app it serves.
const UPDATE_CHECK_MS: u64 = 5_000;

/// "version N available, reload": when the peer that served this tab runs the app by key and
/// now serves a newer version than the one the tab loaded (it serves the new one at the
/// next load, and the service worker fetches the network first).
#[component]
fn UpdateNotice() -> impl IntoView {
    let available = RwSignal::new(None::<u64>);
    wasm_bindgen_futures::spawn_local(async move {
        let mut loaded = None;
        loop {
            if let Some(version) = crate::peer::served_app_version().await {
                match loaded {
                    None => loaded = Some(version),
                    Some(mine) if version > mine => available.set(Some(version)),
                    Some(_) => {}
                }
            }
            futures_timer::Delay::new(std::time::Duration::from_millis(UPDATE_CHECK_MS)).await;
        }
    });
    let reload = |_| {
        if let Some(window) = web_sys::window() {
            let _ = window.location().reload();
        }
    };
    view! {
        <Show when=move || available.get().is_some()>
            <p class="update" data-testid="update">
                {move || format!("version {} available, reload", available.get().unwrap_or_default())}
                " "
                <button on:click=reload>"Reload"</button>
            </p>
        </Show>
    }
}

/// The whole app.
#[component]
pub fn App(ui: Ui) -> impl IntoView {
    let filter = RwSignal::new(Filter::All);
    // Long lists are shown a page at a time (more on scrolling to the end, or the button),
    // so a list of 10,000 paints as fast as one of 200.
    let shown = RwSignal::new(PAGE);
    let matching = move || ui.todos.with(|todos| todos.iter().filter(|t| filter.get().admits(t)).count());
    let visible = move || {
        let limit = shown.get();
        ui.todos.with(|todos| todos.iter().filter(|t| filter.get().admits(t)).take(limit).cloned().collect::<Vec<_>>())
    };
    let hidden = move || matching().saturating_sub(shown.get());
    let more = move || shown.update(|n| *n += PAGE);
    let _scroll = window_event_listener(leptos::ev::scroll, move |_| {
        let Some(window) = web_sys::window() else { return };
        let bottom =
            window.scroll_y().unwrap_or(0.0) + window.inner_height().ok().and_then(|h| h.as_f64()).unwrap_or(0.0);
        let height = window.document().and_then(|d| d.document_element()).map_or(0.0, |e| e.scroll_height() as f64);
        if bottom >= height - 400.0 && hidden() > 0 {
            more();
        }
    });
    let remaining = move || ui.todos.with(|todos| todos.iter().filter(|t| !t.done).count());
    let done = move || ui.todos.with(|todos| todos.iter().filter(|t| t.done).count());
    let on_new = move |ev: KeyboardEvent| {
        if ev.key() != "Enter" {
            return;
        }
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let text = input.value();
        if !text.trim().is_empty() {
            ui.send(Command::Add(text.trim().to_owned()));
            input.set_value("");
        }
    };
    let filter_button = move |which: Filter, label: &'static str| {
        view! {
            <button
                class:selected=move || filter.get() == which
                data-testid=format!("filter-{}", label.to_lowercase())
                on:click=move |_| filter.set(which)
            >
                {label}
            </button>
        }
    };
    view! {
        <main class="app">
            <header>
                <h1>"HelloPears"</h1>
                <TopicBar ui=ui />
            </header>
            <UpdateNotice />
            <p class="status" data-testid="sync-status" data-status=move || ui.status.get().word()>
                {move || ui.status.get().line()}
            </p>
            <input
                class="new-todo"
                data-testid="new-todo"
                placeholder="What needs to be done?"
                autofocus
                on:keydown=on_new
            />
            <ul class="todos" data-testid="todo-list">
                <For each=visible key=|todo| (todo.id.clone(), todo.text.clone(), todo.done) let:todo>
                    <TodoItem ui=ui todo=todo />
                </For>
            </ul>
            <Show when=move || { hidden() > 0 }>
                <button class="more" data-testid="show-more" on:click=move |_| more()>
                    {move || format!("Show more ({} not shown)", hidden())}
                </button>
            </Show>
            <footer class="counts">
                <span data-testid="todo-count" data-total=move || ui.todos.with(Vec::len)>
                    {move || format!("{} left", remaining())}
                </span>
                {filter_button(Filter::All, "All")}
                {filter_button(Filter::Active, "Active")}
                {filter_button(Filter::Done, "Done")}
                <button
                    data-testid="clear-completed"
                    disabled=move || done() == 0
                    on:click=move |_| ui.send(Command::ClearCompleted)
                >
                    {move || format!("Clear completed ({})", done())}
                </button>
            </footer>
            <Members ui=ui />
            // In the native window the desktop peer holds the lists; a tab holds its own.
            {if crate::bridge::in_window() {
                view! { <DesktopLists ui=ui /> }.into_any()
            } else {
                view! { <Lists ui=ui /> }.into_any()
            }}
            <Peers ui=ui />
        </main>
    }
}

/// The topic: its name, a share link, and a form to join another.
#[component]
fn TopicBar(ui: Ui) -> impl IntoView {
    let share = move || {
        let topic = hellopears_core::topic::Topic::from_name(&ui.topic.get());
        let base = web_sys::window()
            .and_then(|w| w.location().href().ok())
            .map(|href| href.split('#').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        format!("{base}{}", crate::share_fragment_with_peers(&topic, &ui.share_peers.get()))
    };
    let join = move |ev: KeyboardEvent| {
        if ev.key() != "Enter" {
            return;
        }
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let name = input.value();
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        // A topic is its own replica: load the page again on it.
        let fragment = crate::share_fragment(&hellopears_core::topic::Topic::from_name(name));
        if let Some(location) = web_sys::window().map(|w| w.location()) {
            let _ = location.set_hash(&fragment);
            let _ = location.reload();
        }
    };
    view! {
        <div class="topic">
            <span>"topic "</span>
            <strong data-testid="topic-name">{move || ui.topic.get()}</strong>
            <span class="access" data-testid="access">{move || format!(" · {}", ui.access.get())}</span>
            <span class="writer">" · you are "<code data-testid="writer-id">{move || ui.writer.get()}</code></span>
            <a class="share" data-testid="share-link" href=share>"share link"</a>
            <input class="join" data-testid="join-topic" placeholder="join or create a topic…" on:keydown=join />
        </div>
    }
}

/// One todo: toggle, text (double-click to edit in place), delete.
#[component]
fn TodoItem(ui: Ui, todo: TodoView) -> impl IntoView {
    let editing = RwSignal::new(false);
    let id = todo.id.clone();
    let (toggle_id, delete_id, edit_id) = (id.clone(), id.clone(), id.clone());
    let original = todo.text.clone();
    let on_edit_key = move |ev: KeyboardEvent| match ev.key().as_str() {
        "Enter" => {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            let text = input.value();
            let text = text.trim();
            if text.is_empty() {
                ui.send(Command::Remove(edit_id.clone()));
            } else if text != original {
                ui.send(Command::Edit(edit_id.clone(), text.to_owned()));
            }
            editing.set(false);
        }
        "Escape" => editing.set(false),
        _ => {}
    };
    let text = todo.text.clone();
    view! {
        <li class="todo" class:done=todo.done data-testid="todo-item" data-id=id data-done=todo.done.to_string()>
            <input
                type="checkbox"
                data-testid="todo-toggle"
                prop:checked=todo.done
                on:change=move |_| ui.send(Command::Toggle(toggle_id.clone()))
            />
            <Show
                when=move || editing.get()
                fallback=move || {
                    view! {
                        <label data-testid="todo-text" on:dblclick=move |_| editing.set(true)>
                            {todo.text.clone()}
                        </label>
                    }
                }
            >
                <input
                    class="edit"
                    data-testid="todo-edit"
                    value=text.clone()
                    autofocus
                    on:keydown=on_edit_key.clone()
                    on:blur=move |_| editing.set(false)
                />
            </Show>
            <span class="author" title="author">{todo.author.clone()}</span>
            <button
                class="delete"
                data-testid="todo-delete"
                title="delete"
                on:click=move |_| ui.send(Command::Remove(delete_id.clone()))
            >
                "×"
            </button>
        </li>
    }
}

/// Connected peers and how they are connected.
#[component]
fn Peers(ui: Ui) -> impl IntoView {
    let ago = |ms: u64| {
        if ms == 0 {
            return "never".to_owned();
        }
        let seconds = (js_sys::Date::now() as u64).saturating_sub(ms) / 1000;
        format!("{seconds}s ago")
    };
    view! {
        <section class="peers" data-testid="peers">
            <h2>{move || format!("Peers ({})", ui.peers.with(Vec::len))}</h2>
            <Show when=move || ui.peers.with(Vec::is_empty)>
                <p class="alone">"No peer connected: your changes are kept here and sync when one is reachable."</p>
            </Show>
            <Show when=move || ui.network.with(|line| !line.is_empty())>
                <p class="network" data-testid="network">{move || ui.network.get()}</p>
            </Show>
            <ul>
                <For each=move || ui.peers.get() key=|peer| peer.clone() let:peer>
                    <li data-testid="peer" data-peer=peer.id.clone()>
                        <code>{tail(&peer.id, 8)}</code>
                        " · " {peer.connection.clone()} " · last sync " {ago(peer.last_sync)}
                    </li>
                </For>
            </ul>
        </section>
    }
}

/// The members of a private list: names and roles; writers invite (link and QR code) and
/// remove members (after a confirmation).
#[component]
fn Members(ui: Ui) -> impl IntoView {
    let role = RwSignal::new(Role::Writer);
    let invite = move |_| ui.send(Command::NewInvite { role: role.get_untracked(), valid_ms: 7 * 86_400_000 });
    let pick = move |ev: leptos::ev::Event| {
        let select: web_sys::HtmlSelectElement = event_target(&ev);
        role.set(match select.value().as_str() {
            "read-only" => Role::ReadOnly,
            "blind" => Role::Blind,
            _ => Role::Writer,
        });
    };
    let qr = move |link: &str| {
        qrcode::QrCode::new(link.as_bytes())
            .map(|code| code.render::<qrcode::render::svg::Color>().min_dimensions(180, 180).build())
            .unwrap_or_default()
    };
    view! {
        <Show when=move || ui.members.with(|m| !m.is_empty())>
            <section class="members" data-testid="members">
                <h2>{move || format!("Members ({})", ui.members.with(Vec::len))}</h2>
                <ul>
                    <For each=move || ui.members.get() key=|member| member.clone() let:member>
                        {member_row(ui, member)}
                    </For>
                </ul>
                <Show when=move || ui.can_manage.get()>
                    <div class="invite">
                        <select data-testid="invite-role" on:change=pick>
                            <option value="writer">"can write"</option>
                            <option value="read-only">"read only"</option>
                            <option value="blind">"blind (stores, reads nothing)"</option>
                        </select>
                        <button data-testid="invite" on:click=invite>"Invite a device"</button>
                    </div>
                </Show>
                {move || ui.invite.get().map(|invite| match invite {
                    Ok(link) => view! {
                        <div class="invite-link">
                            <p>"One device may join with this link within 7 days:"</p>
                            <input readonly data-testid="invite-link" value=link.clone() />
                            <div class="qr" data-testid="invite-qr" inner_html=qr(&link)></div>
                        </div>
                    }.into_any(),
                    Err(error) => view! { <p class="error" data-testid="invite-error">{error}</p> }.into_any(),
                })}
            </section>
        </Show>
    }
}

/// The lists this browser holds: switch between them, create a private one, join one from
/// an invite link.
#[component]
fn Lists(ui: Ui) -> impl IntoView {
    let error = RwSignal::new(String::new());
    // Read again when the open list is named (it is remembered as it opens).
    let known = move || {
        ui.topic.track();
        crate::lists::known()
    };
    let create = move |ev: KeyboardEvent| {
        if ev.key() != "Enter" {
            return;
        }
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let name = input.value();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(message) = crate::lists::create(&name).await {
                error.set(message);
            }
        });
    };
    let join = move |ev: KeyboardEvent| {
        if ev.key() != "Enter" {
            return;
        }
        let input: web_sys::HtmlInputElement = event_target(&ev);
        match hellopears_core::access::InviteLink::decode(&input.value()) {
            Ok(link) => crate::lists::open(&format!("#{}{}", hellopears_core::access::JOIN_FRAGMENT, link.encode())),
            Err(message) => error.set(message.to_string()),
        }
    };
    view! {
        <section class="lists" data-testid="lists">
            <h2>"Lists"</h2>
            <ul>
                <For each=known key=|list| list.clone() let:list>
                    {list_row(ui, list)}
                </For>
            </ul>
            <input data-testid="new-list" placeholder="new private list…" on:keydown=create />
            <input data-testid="join-link" placeholder="paste an invite link…" on:keydown=join />
            <p class="error" data-testid="lists-error">{move || error.get()}</p>
        </section>
    }
}

/// The lists of the desktop peer behind a native window: switch between them, create a
/// private one, join one from an invite link (the peer does each and shows the list).
#[component]
fn DesktopLists(ui: Ui) -> impl IntoView {
    let on_enter = move |ev: &KeyboardEvent| {
        if ev.key() != "Enter" {
            return None;
        }
        let input: web_sys::HtmlInputElement = event_target(ev);
        let value = input.value().trim().to_owned();
        input.set_value("");
        (!value.is_empty()).then_some(value)
    };
    let create = move |ev: KeyboardEvent| {
        if let Some(name) = on_enter(&ev) {
            crate::bridge::post(&WindowMessage::NewList(name));
        }
    };
    let join = move |ev: KeyboardEvent| {
        if let Some(link) = on_enter(&ev) {
            ui.lists_message.set("joining…".into());
            crate::bridge::post(&WindowMessage::JoinList(link));
        }
    };
    view! {
        <section class="lists" data-testid="lists">
            <h2>"Lists"</h2>
            <ul>
                <For each=move || ui.lists.get() key=|list| list.clone() let:list>
                    <li data-testid="list" data-private=list.private.to_string() data-id=list.id.clone() class:current=list.shown>
                        <a href="#" on:click={
                            let id = list.id.clone();
                            move |ev: leptos::ev::MouseEvent| {
                                ev.prevent_default();
                                ui.invite.set(None);
                                crate::bridge::post(&WindowMessage::OpenList(id.clone()));
                            }
                        }>{list.name.clone()}</a>
                        {if list.private { " · private" } else { " · public" }}
                    </li>
                </For>
            </ul>
            <input data-testid="new-list" placeholder="new private list…" on:keydown=create />
            <input data-testid="join-link" placeholder="paste an invite link…" on:keydown=join />
            <p class="error" data-testid="lists-error">{move || ui.lists_message.get()}</p>
        </section>
    }
}

/// One known list: a link that opens it.
fn list_row(ui: Ui, list: crate::lists::KnownList) -> impl IntoView {
    let fragment = list.fragment();
    let href = fragment.clone();
    let name = list.name.clone();
    let current = move || ui.topic.get() == name;
    let kind = if list.private { " · private" } else { " · public" };
    view! {
        <li data-testid="list" data-private=list.private.to_string() class:current=current>
            <a href=href on:click=move |ev: leptos::ev::MouseEvent| {
                ev.prevent_default();
                crate::lists::open(&fragment);
            }>{list.name.clone()}</a>
            {kind}
        </li>
    }
}

/// Removes a member once the user confirms.
fn remove_member(ui: Ui, member: MemberInfo) {
    let who = if member.name.is_empty() { tail(&member.writer, 8) } else { member.name.clone() };
    let question = format!(
        "Remove {who} from this list? It will not read anything written from now on, and its writes will be refused."
    );
    let confirmed = web_sys::window().and_then(|w| w.confirm_with_message(&question).ok()).unwrap_or(false);
    if confirmed {
        ui.send(Command::RemoveMember(member.writer));
    }
}

/// One member: name (or key), role, and a remove button for writers.
fn member_row(ui: Ui, member: MemberInfo) -> impl IntoView {
    let shown = if member.name.is_empty() { tail(&member.writer, 8) } else { member.name.clone() };
    let (writer, role, role_text) = (member.writer.clone(), member.role.clone(), member.role.clone());
    let suffix = if member.me { " · this device" } else { "" };
    let removable = !member.me && member.role != "owner";
    view! {
        <li data-testid="member" data-writer=writer data-role=role>
            <strong data-testid="member-name">{shown}</strong>
            " · " {role_text} {suffix}
            <Show when=move || ui.can_manage.get() && removable>
                <button data-testid="remove-member" on:click={
                    let member = member.clone();
                    move |_| remove_member(ui, member.clone())
                }>"remove"</button>
            </Show>
        </li>
    }
}

/// The last `chars` characters of a peer id (ids from the network may be short or not ASCII).
fn tail(text: &str, chars: usize) -> String {
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}
