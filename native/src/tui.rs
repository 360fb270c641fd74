//! The terminal UI (`hellopears` with no command, on a terminal): the todo list, a peers
//! pane, and a status line saying whether we are alone, connected or syncing.
//!
//! Keys: ↑/↓ select, `a` add, space toggle, `e` edit, `d` delete, `q` quit; Enter saves an
//! input, Esc cancels it. Lists and members: `l` the lists of the data dir (Enter switches,
//! `n` creates a private list, `j` joins one from an invite link), `m` the members (`r`
//! removes one, after a confirmation), `i` an invite link with its QR code. The UI shows the core's [`Snapshot`] (pushed by a peer it runs
//! itself, or fetched from the peer already running on the data dir) and only sends
//! [`Command`]s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use hellopears_core::ui::{Command, Snapshot, TodoView};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};

use crate::commands::{Action, Reply, Request};
use crate::peer::PeerHandle;

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Moving through the list.
    Browse,
    /// Typing a new todo.
    Adding(String),
    /// Editing the text of a todo.
    Editing {
        /// The todo.
        id: String,
        /// The text so far.
        text: String,
    },
    /// The lists of the data dir, this one selected.
    Lists(usize),
    /// Typing the name of a new private list.
    NewList(String),
    /// Pasting an invite link.
    Joining(String),
    /// The members, this one selected.
    Members(usize),
    /// Asking before removing a member.
    ConfirmRemove {
        /// Its writer key.
        writer: String,
        /// Its name, as shown.
        name: String,
    },
    /// Showing a text (an invite link and its QR code) until a key is pressed.
    Showing(String),
}

/// Something the UI asks the peer that is not a change to the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// The lists, to show them.
    Lists,
    /// Show this list (by id).
    Switch(String),
    /// Create a private list.
    NewList(String),
    /// Join a list from an invite link.
    Join(String),
    /// Make an invite link.
    Invite,
}

/// The UI state, independent of the terminal (so it can be tested).
#[derive(Debug)]
pub struct App {
    /// The todos, oldest first.
    pub todos: Vec<TodoView>,
    /// What the peer shows: topic, peers, sync status.
    pub snapshot: Snapshot,
    /// The selected row.
    pub selected: usize,
    /// Keyboard mode.
    pub mode: Mode,
    /// The last error or notice.
    pub message: Option<String>,
    /// Whether the user asked to quit.
    pub quit: bool,
    /// The lists of the data dir, as last fetched.
    pub lists: Vec<crate::lists::ListSummary>,
    /// What the user asked that the event loop carries out (not a change to the list).
    pub intent: Option<Intent>,
}

impl Default for App {
    fn default() -> Self {
        Self {
            todos: Vec::new(),
            snapshot: Snapshot::default(),
            selected: 0,
            mode: Mode::Browse,
            message: None,
            quit: false,
            lists: Vec::new(),
            intent: None,
        }
    }
}

impl App {
    /// Takes what the peer shows now.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        // Oldest first, so the row a new todo lands on does not move the selection.
        self.todos = snapshot.todos.iter().rev().cloned().collect();
        self.selected = self.selected.min(self.todos.len().saturating_sub(1));
        self.snapshot = snapshot;
    }

    /// Handles a key; returns the command it asks for, if any.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        let selected = self.todos.get(self.selected).cloned();
        let members = self.snapshot.members.len();
        match (&mut self.mode, key.code) {
            (Mode::Showing(_), _) => self.mode = Mode::Browse,
            (Mode::Browse, KeyCode::Char('l')) => {
                self.intent = Some(Intent::Lists);
                self.mode = Mode::Lists(0);
            }
            (Mode::Browse, KeyCode::Char('m')) if members > 0 => self.mode = Mode::Members(0),
            (Mode::Browse, KeyCode::Char('i')) => self.intent = Some(Intent::Invite),
            (Mode::Lists(at), KeyCode::Down) => *at = (*at + 1).min(self.lists.len().saturating_sub(1)),
            (Mode::Lists(at), KeyCode::Up) => *at = at.saturating_sub(1),
            (Mode::Lists(at), KeyCode::Enter) => {
                if let Some(list) = self.lists.get(*at) {
                    self.intent = Some(Intent::Switch(list.id.clone()));
                }
                self.mode = Mode::Browse;
            }
            (Mode::Lists(_), KeyCode::Char('n')) => self.mode = Mode::NewList(String::new()),
            (Mode::Lists(_), KeyCode::Char('j')) => self.mode = Mode::Joining(String::new()),
            (Mode::Members(at), KeyCode::Down) => *at = (*at + 1).min(members.saturating_sub(1)),
            (Mode::Members(at), KeyCode::Up) => *at = at.saturating_sub(1),
            (Mode::Members(at), KeyCode::Char('r')) => {
                if let Some(member) = self.snapshot.members.get(*at).filter(|m| !m.me && m.role != "owner") {
                    let name =
                        if member.name.is_empty() { member.writer[..16].to_owned() } else { member.name.clone() };
                    self.mode = Mode::ConfirmRemove { writer: member.writer.clone(), name };
                }
            }
            (Mode::ConfirmRemove { writer, .. }, KeyCode::Char('y')) => {
                let writer = std::mem::take(writer);
                self.mode = Mode::Browse;
                return Some(Command::RemoveMember(writer));
            }
            (Mode::ConfirmRemove { .. }, _) => self.mode = Mode::Browse,
            (Mode::Lists(_) | Mode::Members(_), KeyCode::Esc | KeyCode::Char('q')) => self.mode = Mode::Browse,
            (Mode::NewList(text) | Mode::Joining(text), KeyCode::Char(c)) => text.push(c),
            (Mode::NewList(text) | Mode::Joining(text), KeyCode::Backspace) => {
                text.pop();
            }
            (Mode::NewList(_) | Mode::Joining(_), KeyCode::Esc) => self.mode = Mode::Browse,
            (Mode::NewList(text), KeyCode::Enter) => {
                self.intent = Some(Intent::NewList(std::mem::take(text)));
                self.mode = Mode::Browse;
            }
            (Mode::Joining(text), KeyCode::Enter) => {
                self.intent = Some(Intent::Join(std::mem::take(text)));
                self.mode = Mode::Browse;
            }
            (Mode::Browse, KeyCode::Char('q')) => self.quit = true,
            (Mode::Browse, KeyCode::Down | KeyCode::Char('j')) => {
                self.selected = (self.selected + 1).min(self.todos.len().saturating_sub(1));
            }
            (Mode::Browse, KeyCode::Up | KeyCode::Char('k')) => self.selected = self.selected.saturating_sub(1),
            (Mode::Browse, KeyCode::Char('a')) => self.mode = Mode::Adding(String::new()),
            (Mode::Browse, KeyCode::Char(' ') | KeyCode::Char('x')) => {
                return selected.map(|todo| Command::SetDone(todo.id, !todo.done));
            }
            (Mode::Browse, KeyCode::Char('e')) => {
                if let Some(todo) = selected {
                    self.mode = Mode::Editing { id: todo.id, text: todo.text };
                }
            }
            (Mode::Browse, KeyCode::Char('d') | KeyCode::Delete) => {
                return selected.map(|todo| Command::Remove(todo.id));
            }
            (Mode::Adding(text) | Mode::Editing { text, .. }, KeyCode::Char(c)) => text.push(c),
            (Mode::Adding(text) | Mode::Editing { text, .. }, KeyCode::Backspace) => {
                text.pop();
            }
            (Mode::Adding(_) | Mode::Editing { .. }, KeyCode::Esc) => self.mode = Mode::Browse,
            (Mode::Adding(text), KeyCode::Enter) => {
                let text = std::mem::take(text);
                self.mode = Mode::Browse;
                return Some(Command::Add(text));
            }
            (Mode::Editing { id, text }, KeyCode::Enter) => {
                let request = Command::Edit(std::mem::take(id), std::mem::take(text));
                self.mode = Mode::Browse;
                return Some(request);
            }
            _ => {}
        }
        None
    }

    /// The status line: the topic, the count, and the sync state in the words every UI uses.
    pub fn status_line(&self) -> String {
        let topic = if self.snapshot.topic.is_empty() { "?" } else { &self.snapshot.topic };
        // Short: the line also carries the sync state. "public" is the whole label's gist.
        let access = match self.snapshot.access.as_str() {
            "" => String::new(),
            label if label.starts_with("public") => " (public)".to_owned(),
            label => format!(" ({label})"),
        };
        format!(" topic {topic}{access} · {} todos · {}", self.todos.len(), self.snapshot.status.line())
    }

    /// Draws the whole screen.
    pub fn render(&self, frame: &mut Frame) {
        let [main, input, status] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(3), Constraint::Length(1)]).areas(frame.area());
        let [list_area, side] =
            Layout::horizontal([Constraint::Percentage(70), Constraint::Percentage(30)]).areas(main);
        let [members_area, peers_area] = if self.snapshot.members.is_empty() {
            Layout::vertical([Constraint::Length(0), Constraint::Min(0)]).areas(side)
        } else {
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(side)
        };
        let member_lines: Vec<ListItem> = self
            .snapshot
            .members
            .iter()
            .map(|m| {
                let name =
                    if m.name.is_empty() { m.writer[..8.min(m.writer.len())].to_owned() } else { m.name.clone() };
                ListItem::new(format!("{name} · {}{}", m.role, if m.me { " (you)" } else { "" }))
            })
            .collect();
        let members_list = List::new(member_lines)
            .block(Block::bordered().title(" members "))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut member_state = ListState::default().with_selected(match self.mode {
            Mode::Members(at) => Some(at),
            _ => None,
        });
        frame.render_stateful_widget(members_list, members_area, &mut member_state);
        let items: Vec<ListItem> = self
            .todos
            .iter()
            .map(|todo| {
                // In a private list, who wrote it (by name).
                let by = if self.snapshot.members.is_empty() { String::new() } else { format!("  · {}", todo.author) };
                ListItem::new(format!("[{}] {}{by}", if todo.done { "x" } else { " " }, todo.text))
            })
            .collect();
        let list = List::new(items)
            .block(Block::bordered().title(" todos "))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state = ListState::default().with_selected((!self.todos.is_empty()).then_some(self.selected));
        frame.render_stateful_widget(list, list_area, &mut state);
        // How the peer finds others (the DHT's state), then each peer and how it was found.
        let network = (!self.snapshot.network.is_empty()).then(|| Line::from(self.snapshot.network.clone()));
        let peers: Vec<Line> = network
            .into_iter()
            .chain(self.snapshot.peers.iter().map(|peer| {
                let tail: String = peer.id.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
                Line::from(format!("…{tail} {}", peer.connection))
            }))
            .collect();
        let peers = Paragraph::new(peers).wrap(ratatui::widgets::Wrap { trim: true });
        frame.render_widget(peers.block(Block::bordered().title(" peers ")), peers_area);
        let (title, text) = match &self.mode {
            Mode::Browse => (
                " keys ",
                self.message.clone().unwrap_or_else(|| {
                    "a add · space toggle · e edit · d delete · l lists · m members · i invite · q quit".into()
                }),
            ),
            Mode::Adding(text) => (" new todo (Enter to add, Esc to cancel) ", format!("{text}▏")),
            Mode::Editing { text, .. } => (" edit (Enter to save, Esc to cancel) ", format!("{text}▏")),
            Mode::Lists(_) => {
                (" lists ", "↑/↓ choose · Enter open · n new private list · j join from a link · Esc back".into())
            }
            Mode::NewList(text) => (" new private list (Enter to create, Esc to cancel) ", format!("{text}▏")),
            Mode::Joining(text) => (" invite link (Enter to join, Esc to cancel) ", format!("{text}▏")),
            Mode::Members(_) => (" members ", "↑/↓ choose · r remove · Esc back".into()),
            Mode::ConfirmRemove { name, .. } => (
                " remove a member ",
                format!("Remove {name}? It will read nothing new, and its writes will be refused. y/n"),
            ),
            Mode::Showing(_) => (" invite ", "any key to close".into()),
        };
        frame.render_widget(Paragraph::new(text).block(Block::bordered().title(title)), input);
        frame.render_widget(Paragraph::new(self.status_line()), status);
        if let Mode::Lists(at) = self.mode {
            let items: Vec<ListItem> = self
                .lists
                .iter()
                .map(|l| {
                    let what = if l.access == "public" { "public".to_owned() } else { format!("private, {}", l.role) };
                    ListItem::new(format!("{}  {}  {} todos", l.name, what, l.todos))
                })
                .collect();
            let popup = List::new(items)
                .block(Block::bordered().title(" lists "))
                .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
            let mut state = ListState::default().with_selected((!self.lists.is_empty()).then_some(at));
            frame.render_widget(ratatui::widgets::Clear, list_area);
            frame.render_stateful_widget(popup, list_area, &mut state);
        }
        if let Mode::Showing(text) = &self.mode {
            frame.render_widget(ratatui::widgets::Clear, main);
            frame.render_widget(Paragraph::new(text.as_str()).block(Block::bordered().title(" invite ")), main);
        }
    }
}

/// Where the UI gets its state and sends its commands.
pub enum Backend {
    /// A peer this process runs (for this topic): snapshots are pushed on a channel.
    InProcess(PeerHandle, watch::Receiver<Snapshot>, tokio::runtime::Handle),
    /// A peer running on the data dir (for this topic), over its control socket.
    Remote(PathBuf, String),
}

impl Backend {
    /// Runs a request on the list shown: `target` (a list id) once the user switched,
    /// else the one the UI started on.
    fn request(&self, target: Option<&str>, action: Action) -> Reply {
        let (topic, list) = match (self, target) {
            (_, Some(id)) => (String::new(), Some(id.to_owned())),
            // The list this process's peer shows (its first).
            (Backend::InProcess(..), None) => (String::new(), Some(hellopears_core::control::SHOWN_LIST.to_owned())),
            (Backend::Remote(_, topic), None) => (topic.clone(), None),
        };
        let request = Request { topic, list, action };
        match self {
            Backend::InProcess(handle, _, runtime) => runtime.block_on(handle.request(request)),
            Backend::Remote(dir, _) => {
                crate::control::request(dir, &request).unwrap_or_else(|| Err("the peer stopped".into()))
            }
        }
    }

    /// The newest state, if it changed (in process, on the list it started on) or was
    /// fetched (otherwise).
    fn snapshot(&mut self, target: Option<&str>) -> Option<Snapshot> {
        if let (Backend::InProcess(_, view, _), None) = (&mut *self, target) {
            return view.has_changed().unwrap_or(false).then(|| view.borrow_and_update().clone());
        }
        let json = self.request(target, Action::Snapshot).ok()?;
        serde_json::from_str(&json).ok()
    }
}

/// Runs the UI until the user quits.
pub fn run(mut backend: Backend) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, &mut backend);
    ratatui::restore();
    result
}

fn event_loop(terminal: &mut ratatui::DefaultTerminal, backend: &mut Backend) -> anyhow::Result<()> {
    let mut app = App::default();
    let mut fetched: Option<Instant> = None;
    let remote = matches!(backend, Backend::Remote(..));
    // The list shown, once the user switched (by id).
    let mut target: Option<String> = None;
    while !app.quit {
        // In process, a snapshot is pushed on every change; otherwise the peer is asked.
        let polled = remote || target.is_some();
        if !polled || fetched.is_none_or(|at| at.elapsed() >= Duration::from_millis(300)) {
            if let Some(snapshot) = backend.snapshot(target.as_deref()) {
                app.set_snapshot(snapshot);
            }
            fetched = Some(Instant::now());
        }
        terminal.draw(|frame| app.render(frame))?;
        if event::poll(Duration::from_millis(50))?
            && let Event::Key(key) = event::read()?
        {
            if let Some(command) = app.handle_key(key) {
                app.message = backend.request(target.as_deref(), Action::Command(command)).err();
                fetched = None;
            }
            if let Some(intent) = app.intent.take() {
                carry_out(&mut app, backend, &mut target, intent);
                fetched = None;
            }
        }
    }
    Ok(())
}

/// Carries out what the user asked that is not a change to the list.
fn carry_out(app: &mut App, backend: &mut Backend, target: &mut Option<String>, intent: Intent) {
    use crate::commands::Format;
    let lists = |backend: &Backend| -> Vec<crate::lists::ListSummary> {
        backend
            .request(None, Action::Lists(Format::Json))
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    };
    match intent {
        Intent::Lists => app.lists = lists(backend),
        Intent::Switch(id) => {
            *target = Some(id);
            app.selected = 0;
        }
        Intent::NewList(name) => {
            let reply = backend.request(None, Action::NewList(name));
            app.message = Some(reply.unwrap_or_else(|error| error).trim().to_owned());
            app.lists = lists(backend);
        }
        Intent::Join(link) => {
            app.message = Some("joining: waiting for a member to admit this device…".into());
            let reply = backend.request(None, Action::Join { link, wait_ms: 30_000 });
            app.message = Some(reply.unwrap_or_else(|error| error).trim().to_owned());
        }
        Intent::Invite => {
            let role = hellopears_core::access::Role::Writer;
            let action = Action::Invite { role, valid_ms: 7 * 86_400_000, format: Format::Text };
            match backend.request(target.as_deref(), action) {
                Ok(text) => app.mode = Mode::Showing(text),
                Err(error) => app.message = Some(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hellopears_core::ui::{PeerView, SyncStatus};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyModifiers;

    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(80, 12)).expect("terminal");
        terminal.draw(|frame| app.render(frame)).expect("draw");
        let buffer = terminal.backend().buffer().clone();
        buffer.content().iter().map(|cell| cell.symbol()).collect::<String>()
    }

    fn todo(id: &str, text: &str, done: bool, created: i64) -> TodoView {
        TodoView { id: id.into(), text: text.into(), done, created, author: "w".into() }
    }

    fn snapshot(peers: Vec<PeerView>, status: SyncStatus) -> Snapshot {
        Snapshot {
            topic: "todo".into(),
            writer: "w".into(),
            // Newest first, as every UI gets them.
            todos: vec![todo("bbb", "bread", true, 2), todo("aaa", "buy milk", false, 1)],
            peers,
            status,
            access: String::new(),
            members: Vec::new(),
            can_manage: false,
            lists: Vec::new(),
            reply: None,
            network: String::new(),
        }
    }

    fn app_with_two_todos() -> App {
        let mut app = App::default();
        app.set_snapshot(snapshot(Vec::new(), SyncStatus::Alone));
        app
    }

    #[test]
    fn keys_become_requests() {
        let mut app = app_with_two_todos();
        assert!(matches!(app.handle_key(key(KeyCode::Char(' '))), Some(Command::SetDone(id, true)) if id == "aaa"));
        app.handle_key(key(KeyCode::Down));
        assert!(matches!(app.handle_key(key(KeyCode::Char('x'))), Some(Command::SetDone(id, false)) if id == "bbb"));
        assert!(matches!(app.handle_key(key(KeyCode::Char('d'))), Some(Command::Remove(id)) if id == "bbb"));
        app.handle_key(key(KeyCode::Char('a')));
        for c in "tea".chars() {
            assert!(app.handle_key(key(KeyCode::Char(c))).is_none());
        }
        assert!(matches!(app.handle_key(key(KeyCode::Enter)), Some(Command::Add(text)) if text == "tea"));
        app.handle_key(key(KeyCode::Char('e')));
        app.handle_key(key(KeyCode::Backspace));
        app.handle_key(key(KeyCode::Char('!')));
        let edit = app.handle_key(key(KeyCode::Enter));
        assert!(matches!(edit, Some(Command::Edit(id, text)) if id == "bbb" && text == "brea!"));
        app.handle_key(key(KeyCode::Char('a')));
        app.handle_key(key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Browse);
        app.handle_key(key(KeyCode::Char('q')));
        assert!(app.quit);
    }

    #[test]
    fn the_screen_shows_todos_peers_and_state() {
        let mut app = app_with_two_todos();
        let alone = screen(&app);
        assert!(alone.contains("[ ] buy milk") && alone.contains("[x] bread"), "{alone}");
        assert!(alone.contains("alone, waiting for peers"), "{alone}");
        let peer = PeerView { id: "12D3KooWabcdefgh".into(), connection: "direct".into(), last_sync: 0 };
        app.set_snapshot(snapshot(vec![peer.clone()], SyncStatus::Syncing { held: 2, total: 42 }));
        let syncing = screen(&app);
        assert!(syncing.contains("…abcdefgh direct"), "{syncing}");
        assert!(syncing.contains("syncing: 2 of 42 entries"), "{syncing}");
        app.set_snapshot(snapshot(vec![peer], SyncStatus::Synced { peers: 1 }));
        assert!(screen(&app).contains("synced with 1 peer"));
    }

    #[test]
    fn the_peers_panel_says_how_peers_are_found_and_the_dht_state() {
        let mut app = app_with_two_todos();
        let peer = PeerView { id: "12D3KooWabcdefgh".into(), connection: "direct, found by mDNS".into(), last_sync: 0 };
        let mut shown = snapshot(vec![peer], SyncStatus::Synced { peers: 1 });
        shown.network = "DHT: off".into();
        app.set_snapshot(shown);
        let screen = screen(&app);
        assert!(screen.contains("DHT: off"), "{screen}");
        assert!(screen.contains("found by mDNS"), "{screen}");
    }

    #[test]
    fn members_are_removed_after_a_confirmation_and_lists_are_switched() {
        use hellopears_core::ui::MemberInfo;
        let mut app = app_with_two_todos();
        let mut shown = snapshot(Vec::new(), SyncStatus::Alone);
        let member = |name: &str, role: &str, fill: char, me: bool| MemberInfo {
            name: name.into(),
            role: role.into(),
            writer: std::iter::repeat_n(fill, 64).collect(),
            me,
        };
        shown.members = vec![member("Alice", "owner", 'a', true), member("Bob", "writer", 'b', false)];
        shown.can_manage = true;
        app.set_snapshot(shown);
        assert!(screen(&app).contains("Bob · writer"), "{}", screen(&app));
        // The owner (and this device) cannot be removed.
        app.handle_key(key(KeyCode::Char('m')));
        assert!(app.handle_key(key(KeyCode::Char('r'))).is_none());
        assert_eq!(app.mode, Mode::Members(0));
        // Bob: asked first; `n` keeps him.
        app.handle_key(key(KeyCode::Down));
        assert!(app.handle_key(key(KeyCode::Char('r'))).is_none());
        assert!(screen(&app).contains("Remove Bob?"), "{}", screen(&app));
        assert!(app.handle_key(key(KeyCode::Char('n'))).is_none());
        assert_eq!(app.mode, Mode::Browse);
        app.handle_key(key(KeyCode::Char('m')));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Char('r')));
        let removed = app.handle_key(key(KeyCode::Char('y')));
        assert!(matches!(removed, Some(Command::RemoveMember(writer)) if writer.starts_with("bbbb")));
        // Lists: fetched, chosen, created.
        app.handle_key(key(KeyCode::Char('l')));
        assert_eq!(app.intent.take(), Some(Intent::Lists));
        let list = |name: &str, id: &str| crate::lists::ListSummary {
            name: name.into(),
            id: id.into(),
            access: "private".into(),
            role: "owner".into(),
            members: 1,
            todos: 0,
        };
        app.lists = vec![list("home", "11"), list("work", "22")];
        assert!(screen(&app).contains("work  private, owner"), "{}", screen(&app));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.intent.take(), Some(Intent::Switch("22".into())));
        app.handle_key(key(KeyCode::Char('l')));
        app.handle_key(key(KeyCode::Char('n')));
        for c in "garden".chars() {
            app.handle_key(key(KeyCode::Char(c)));
        }
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.intent.take(), Some(Intent::NewList("garden".into())));
    }
}
