//! The terminal UI (`hellopears` with no command, on a terminal): the todo list, a peers
//! pane, and a status line saying whether we are alone, connected or syncing.
//!
//! Keys: ↑/↓ select, `a` add, space toggle, `e` edit, `d` delete, `q` quit; Enter saves an
//! input, Esc cancels it. The UI only sends [`Request`]s: to a peer it runs itself, or to
//! the peer already running on the data dir, over its control socket.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hellopears_core::todo::Todo;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};

use crate::commands::{Reply, Request};
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
    /// The todos, as the replica lists them.
    pub todos: Vec<Todo>,
    /// The replica's status (the `status --json` document).
    pub status: serde_json::Value,
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
            status: serde_json::Value::Null,
            selected: 0,
            mode: Mode::Browse,
            message: None,
            quit: false,
        }
    }
}

impl App {
    /// Takes a fresh list (`list --json` output).
    pub fn set_list(&mut self, json: &str) {
        if let Ok(todos) = serde_json::from_str::<Vec<Todo>>(json) {
            self.todos = todos;
            self.selected = self.selected.min(self.todos.len().saturating_sub(1));
        }
    }

    /// Takes a fresh status (`status --json` output).
    pub fn set_status(&mut self, json: &str) {
        if let Ok(status) = serde_json::from_str(json) {
            self.status = status;
        }
    }

    /// Handles a key; returns the command it asks for, if any.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Request> {
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
                return selected.map(|todo| Request::SetDone(todo.id, !todo.done));
            }
            (Mode::Browse, KeyCode::Char('e')) => {
                if let Some(todo) = selected {
                    self.mode = Mode::Editing { id: todo.id, text: todo.text };
                }
            }
            (Mode::Browse, KeyCode::Char('d') | KeyCode::Delete) => {
                return selected.map(|todo| Request::Remove(todo.id));
            }
            (Mode::Adding(text) | Mode::Editing { text, .. }, KeyCode::Char(c)) => text.push(c),
            (Mode::Adding(text) | Mode::Editing { text, .. }, KeyCode::Backspace) => {
                text.pop();
            }
            (Mode::Adding(_) | Mode::Editing { .. }, KeyCode::Esc) => self.mode = Mode::Browse,
            (Mode::Adding(text), KeyCode::Enter) => {
                let text = std::mem::take(text);
                self.mode = Mode::Browse;
                return Some(Request::Add(text));
            }
            (Mode::Editing { id, text }, KeyCode::Enter) => {
                let request = Request::Edit(std::mem::take(id), std::mem::take(text));
                self.mode = Mode::Browse;
                return Some(request);
            }
            _ => {}
        }
        None
    }

    /// The status line: alone, connected, or syncing.
    pub fn status_line(&self) -> String {
        let peers = self.status["peers"].as_array().map_or(0, Vec::len);
        let missing = self.status["missing"].as_u64().unwrap_or(0);
        let topic = self.status["topic"].as_str().unwrap_or("?");
        let state = match (peers, missing) {
            (0, _) => "alone, waiting for peers".to_owned(),
            (n, 0) => format!("connected to {n} peer{}, in sync", if n == 1 { "" } else { "s" }),
            (n, m) => format!("syncing with {n} peer{}: {m} entries to fetch", if n == 1 { "" } else { "s" }),
        };
        format!(" topic {topic} · {} todos · {state}", self.todos.len())
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
        let peers: Vec<Line> = self.status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|peer| {
                let id = peer["peer"].as_str().unwrap_or("?");
                let short = &id[id.len().saturating_sub(8)..];
                Line::from(format!("…{short} {}", peer["kind"].as_str().unwrap_or("?")))
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

/// Where the UI sends its commands.
pub enum Backend {
    /// A peer this process runs.
    InProcess(PeerHandle, tokio::runtime::Handle),
    /// A peer running on the data dir, over its control socket.
    Remote(PathBuf),
}

impl Backend {
    fn request(&self, request: Request) -> Reply {
        match self {
            Backend::InProcess(handle, runtime) => runtime.block_on(handle.request(request)),
            Backend::Remote(dir) => {
                crate::control::request(dir, &request).unwrap_or_else(|| Err("the peer stopped".into()))
            }
        }
    }
}

/// Runs the UI until the user quits.
pub fn run(backend: &Backend) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, backend);
    ratatui::restore();
    result
}

fn event_loop(terminal: &mut ratatui::DefaultTerminal, backend: &Backend) -> anyhow::Result<()> {
    let mut app = App::default();
    let mut refreshed: Option<Instant> = None;
    while !app.quit {
        if refreshed.is_none_or(|at| at.elapsed() >= Duration::from_millis(300)) {
            if let Ok(list) = backend.request(Request::List(true)) {
                app.set_list(&list);
            }
            if let Ok(status) = backend.request(Request::Status(true)) {
                app.set_status(&status);
            }
            refreshed = Some(Instant::now());
        }
        terminal.draw(|frame| app.render(frame))?;
        if event::poll(Duration::from_millis(100))?
            && let Event::Key(key) = event::read()?
            && let Some(request) = app.handle_key(key)
        {
            app.message = backend.request(request).err();
            refreshed = None;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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

    fn app_with_two_todos() -> App {
        let mut app = App::default();
        app.set_list(
            r#"[{"_id":"aaa","text":"buy milk","done":false,"created":1,"updated":1,"author":"w"},
                {"_id":"bbb","text":"bread","done":true,"created":2,"updated":2,"author":"w"}]"#,
        );
        app.set_status(r#"{"topic":"todo","peers":[],"missing":0}"#);
        app
    }

    #[test]
    fn keys_become_requests() {
        let mut app = app_with_two_todos();
        assert!(matches!(app.handle_key(key(KeyCode::Char(' '))), Some(Request::SetDone(id, true)) if id == "aaa"));
        app.handle_key(key(KeyCode::Down));
        assert!(matches!(app.handle_key(key(KeyCode::Char('x'))), Some(Request::SetDone(id, false)) if id == "bbb"));
        assert!(matches!(app.handle_key(key(KeyCode::Char('d'))), Some(Request::Remove(id)) if id == "bbb"));
        app.handle_key(key(KeyCode::Char('a')));
        for c in "tea".chars() {
            assert!(app.handle_key(key(KeyCode::Char(c))).is_none());
        }
        assert!(matches!(app.handle_key(key(KeyCode::Enter)), Some(Request::Add(text)) if text == "tea"));
        app.handle_key(key(KeyCode::Char('e')));
        app.handle_key(key(KeyCode::Backspace));
        app.handle_key(key(KeyCode::Char('!')));
        assert!(
            matches!(app.handle_key(key(KeyCode::Enter)), Some(Request::Edit(id, text)) if id == "bbb" && text == "brea!")
        );
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
        app.set_status(r#"{"topic":"todo","peers":[{"peer":"12D3KooWabcdefgh","kind":"direct"}],"missing":40}"#);
        let syncing = screen(&app);
        assert!(syncing.contains("…abcdefgh direct"), "{syncing}");
        assert!(syncing.contains("syncing with 1 peer: 40 entries to fetch"), "{syncing}");
        app.set_status(r#"{"topic":"todo","peers":[{"peer":"12D3KooWabcdefgh","kind":"direct"}],"missing":0}"#);
        assert!(screen(&app).contains("connected to 1 peer, in sync"));
    }
}
