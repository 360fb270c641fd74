//! The terminal UI (`hellopears` with no command, on a terminal): the todo list, a peers
//! pane, and a status line saying whether we are alone, connected or syncing.
//!
//! Keys: ↑/↓ select, `a` add, space toggle, `e` edit, `d` delete, `q` quit; Enter saves an
//! input, Esc cancels it. The UI shows the core's [`Snapshot`] (pushed by a peer it runs
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
        match (&mut self.mode, key.code) {
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
        let [list_area, peers_area] =
            Layout::horizontal([Constraint::Percentage(70), Constraint::Percentage(30)]).areas(main);
        let items: Vec<ListItem> = self
            .todos
            .iter()
            .map(|todo| ListItem::new(format!("[{}] {}", if todo.done { "x" } else { " " }, todo.text)))
            .collect();
        let list = List::new(items)
            .block(Block::bordered().title(" todos "))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state = ListState::default().with_selected((!self.todos.is_empty()).then_some(self.selected));
        frame.render_stateful_widget(list, list_area, &mut state);
        let peers: Vec<Line> = self
            .snapshot
            .peers
            .iter()
            .map(|peer| {
                let tail: String = peer.id.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
                Line::from(format!("…{tail} {}", peer.connection))
            })
            .collect();
        frame.render_widget(Paragraph::new(peers).block(Block::bordered().title(" peers ")), peers_area);
        let (title, text) = match &self.mode {
            Mode::Browse => (
                " keys ",
                self.message.clone().unwrap_or_else(|| "a add · space toggle · e edit · d delete · q quit".into()),
            ),
            Mode::Adding(text) => (" new todo (Enter to add, Esc to cancel) ", format!("{text}▏")),
            Mode::Editing { text, .. } => (" edit (Enter to save, Esc to cancel) ", format!("{text}▏")),
        };
        frame.render_widget(Paragraph::new(text).block(Block::bordered().title(title)), input);
        frame.render_widget(Paragraph::new(self.status_line()), status);
    }
}

/// Where the UI gets its state and sends its commands.
pub enum Backend {
    /// A peer this process runs (for this topic): snapshots are pushed on a channel.
    InProcess(PeerHandle, watch::Receiver<Snapshot>, tokio::runtime::Handle, String),
    /// A peer running on the data dir (for this topic), over its control socket.
    Remote(PathBuf, String),
}

impl Backend {
    fn command(&self, command: Command) -> Reply {
        match self {
            Backend::InProcess(handle, _, runtime, topic) => runtime.block_on(handle.request(Request {
                topic: topic.clone(),
                list: None,
                action: Action::Command(command),
            })),
            Backend::Remote(dir, topic) => {
                let request = Request { topic: topic.clone(), list: None, action: Action::Command(command) };
                crate::control::request(dir, &request).unwrap_or_else(|| Err("the peer stopped".into()))
            }
        }
    }

    /// The newest state, if it changed (in process) or was fetched (remote).
    fn snapshot(&mut self) -> Option<Snapshot> {
        match self {
            Backend::InProcess(_, view, _, _) => {
                view.has_changed().unwrap_or(false).then(|| view.borrow_and_update().clone())
            }
            Backend::Remote(dir, topic) => {
                let request = Request { topic: topic.clone(), list: None, action: Action::Snapshot };
                let json = crate::control::request(dir, &request)?.ok()?;
                serde_json::from_str(&json).ok()
            }
        }
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
    while !app.quit {
        // In process, a snapshot is pushed on every change; a remote peer is asked.
        if !remote || fetched.is_none_or(|at| at.elapsed() >= Duration::from_millis(300)) {
            if let Some(snapshot) = backend.snapshot() {
                app.set_snapshot(snapshot);
            }
            fetched = Some(Instant::now());
        }
        terminal.draw(|frame| app.render(frame))?;
        if event::poll(Duration::from_millis(50))?
            && let Event::Key(key) = event::read()?
            && let Some(command) = app.handle_key(key)
        {
            app.message = backend.command(command).err();
            fetched = None;
        }
    }
    Ok(())
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
}
