//! The native window (`hellopears window`) under Xvfb, next to a headless desktop peer:
//! changes made on either side show on the other; the page is the web app's UI on the IPC
//! bridge; a screenshot is kept as a test artifact. Needs `cargo xtask web` (the test
//! command builds it first).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hellopears_tests::display::{self, Display};
use hellopears_tests::{Peer, browser, list, ok, run, wait_until};
use serde_json::Value;
use tempfile::TempDir;

const CONVERGE: Duration = Duration::from_secs(5);

fn loopback_args(root: &Path) -> Vec<String> {
    ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht", "--web-root"]
        .iter()
        .map(|a| a.to_string())
        .chain([root.to_string_lossy().into_owned()])
        .collect()
}

/// Runs a script in the window on `dir` and returns its value (WebKit hands results back
/// as JSON).
fn eval(dir: &Path, script: &str) -> Value {
    let out = run(dir, &["eval", script]);
    if !out.status.success() {
        return Value::Null;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    match value {
        Value::String(inner) => serde_json::from_str(&inner).unwrap_or(Value::String(inner)),
        other => other,
    }
}

/// The todos the window shows: (text, done), sorted.
fn window_todos(dir: &Path) -> Vec<(String, bool)> {
    let value = eval(
        dir,
        "JSON.stringify([...document.querySelectorAll('[data-testid=todo-item]')].map(li => [
            li.querySelector('[data-testid=todo-text]')?.textContent ?? '',
            li.querySelector('[data-testid=todo-toggle]').checked]))",
    );
    let mut todos: Vec<(String, bool)> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| (row[0].as_str().unwrap_or_default().to_owned(), row[1].as_bool().unwrap_or_default()))
        .collect();
    todos.sort();
    todos
}

fn desktop_todos(dir: &Path) -> Vec<(String, bool)> {
    let mut todos: Vec<(String, bool)> = list(dir)
        .iter()
        .map(|t| (t["text"].as_str().unwrap_or_default().to_owned(), t["done"].as_bool().unwrap_or_default()))
        .collect();
    todos.sort();
    todos
}

fn id_of(dir: &Path, text: &str) -> String {
    list(dir)
        .iter()
        .find(|t| t["text"] == text)
        .and_then(|t| t["_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no todo {text:?}"))
}

/// Runs a user action in the window's page (the way a test drives it).
fn act(dir: &Path, script: &str) {
    let out = run(dir, &["eval", script]);
    assert!(out.status.success(), "window script failed: {out:?}");
}

fn converged(window: &Path, desktop: &Path, check: impl Fn(&[(String, bool)]) -> bool) -> bool {
    wait_until(CONVERGE, || {
        let w = window_todos(window);
        w == desktop_todos(desktop) && check(&w)
    })
}

fn artifact(name: &str) -> PathBuf {
    let target = browser::web_root().parent().map(Path::to_path_buf).unwrap_or_default();
    target.join("test-artifacts").join(name)
}

/// A desktop peer on loopback, and a window on a virtual display bootstrapped to it.
struct Scene {
    screen: Display,
    p_dir: TempDir,
    w_dir: TempDir,
    /// The web view's XDG data home: WebKit must not write into the user's data dirs (by
    /// default ours is one of them).
    xdg: TempDir,
    p: Peer,
    w: Peer,
}

impl Scene {
    fn start() -> Scene {
        let root = browser::web_root();
        let screen = Display::start().expect("Xvfb");
        let (p_dir, w_dir) = (TempDir::new().expect("tempdir"), TempDir::new().expect("tempdir"));
        let args = loopback_args(&root);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Peer::start(p_dir.path(), &args);
        let mut window_args = args.clone();
        let bootstrap = p.tcp_addr();
        window_args.extend(["--bootstrap", bootstrap.as_str()]);
        let xdg = TempDir::new().expect("tempdir");
        let env = [("XDG_DATA_HOME", xdg.path())];
        let w = Peer::start_window_with_env(w_dir.path(), &screen.name, &env, &window_args);
        Scene { screen, p_dir, w_dir, xdg, p, w }
    }
}

#[test]
fn the_window_syncs_with_a_desktop_peer_both_ways() {
    if !display::available() {
        return;
    }
    let Scene { screen, p_dir, w_dir, xdg, p, w } = Scene::start();
    let (w_path, p_path) = (w_dir.path(), p_dir.path());

    // The window's peers panel shows the desktop peer and how it is connected.
    let panel = "JSON.stringify([...document.querySelectorAll('[data-testid=peers] [data-testid=peer]')]\
                 .map(p => [p.dataset.peer, p.textContent]))";
    assert!(
        wait_until(Duration::from_secs(20), || {
            eval(w_path, panel).as_array().is_some_and(|peers| {
                peers
                    .iter()
                    .any(|peer| peer[0] == p.peer_id.as_str() && peer[1].as_str().is_some_and(|t| t.contains("direct")))
            })
        }),
        "the peers panel shows the desktop peer: {:?}",
        eval(w_path, panel)
    );
    let title = eval(w_path, "document.querySelector('[data-testid=topic-name]').textContent");
    assert_eq!(title, "todo");
    // The peer's process never loads GTK or WebKit: the window lives in its host process.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).expect("the peer's memory map");
    assert!(!maps.is_empty(), "the peer's memory map is readable");
    assert!(
        !maps.contains("libwebkit2gtk") && !maps.contains("libgtk-3"),
        "the peer process maps no GTK or WebKit library"
    );

    // From the other peer to the window.
    ok(p_path, &["add", "from the desktop peer"]);
    assert!(
        converged(w_path, p_path, |t| t.len() == 1),
        "the window shows the desktop's todo: {:?}",
        window_todos(w_path)
    );

    // From the window (typed into its input) to the other peer.
    act(
        w_path,
        "const input = document.querySelector('[data-testid=new-todo]');
         input.value = 'from the window';
         input.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));",
    );
    assert!(
        converged(w_path, p_path, |t| t.len() == 2),
        "the desktop peer got the window's todo: {:?}",
        desktop_todos(p_path)
    );

    // Toggle, edit and delete from the window.
    let desktop_id = id_of(p_path, "from the desktop peer");
    let window_id = id_of(p_path, "from the window");
    act(w_path, &format!("document.querySelector(\"[data-id='{desktop_id}'] [data-testid=todo-toggle]\").click();"));
    act(
        w_path,
        &format!(
            "document.querySelector(\"[data-id='{window_id}'] [data-testid=todo-text]\")\
             .dispatchEvent(new MouseEvent('dblclick', {{bubbles: true}}));"
        ),
    );
    act(
        w_path,
        &format!(
            "const edit = document.querySelector(\"[data-id='{window_id}'] [data-testid=todo-edit]\");
             edit.value = 'edited in the window';
             edit.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter', bubbles: true}}));"
        ),
    );
    assert!(
        converged(w_path, p_path, |t| t.contains(&("from the desktop peer".into(), true))
            && t.contains(&("edited in the window".into(), false))),
        "toggle and edit reached the desktop peer: {:?}",
        desktop_todos(p_path)
    );
    ok(p_path, &["add", "to be deleted in the window"]);
    assert!(converged(w_path, p_path, |t| t.len() == 3));
    let doomed = id_of(p_path, "to be deleted in the window");
    act(w_path, &format!("document.querySelector(\"[data-id='{doomed}'] [data-testid=todo-delete]\").click();"));
    assert!(
        converged(w_path, p_path, |t| t.len() == 2),
        "the delete reached the desktop peer: {:?}",
        desktop_todos(p_path)
    );

    // A screenshot of the window, kept as an artifact; the DOM the bridge reports has the
    // todo texts, and the screen is not blank.
    let shot = artifact("window.png");
    let (width, height, colours) = screen.screenshot(&shot).expect("screenshot");
    eprintln!("screenshot {}: {width}x{height}, {colours} colours", shot.display());
    assert!(colours > 16, "the screen shows a rendered window, not a blank one ({colours} colours)");
    let texts = eval(w_path, "document.body.innerText");
    assert!(
        texts.as_str().is_some_and(|t| t.contains("edited in the window") && t.contains("from the desktop peer")),
        "{texts}"
    );

    // Stopping the window's peer (Ctrl-C) closes the window and keeps the data.
    w.stop();
    assert_eq!(desktop_todos(w_path), desktop_todos(p_path), "the window's store kept everything");
    let written: Vec<_> = std::fs::read_dir(xdg.path()).expect("xdg dir").flatten().map(|e| e.file_name()).collect();
    assert!(written.is_empty(), "the web view wrote into XDG_DATA_HOME: {written:?}");
}

/// Types `text` into the input with `testid` in the window's page and presses Enter.
fn type_into(dir: &Path, testid: &str, text: &str) {
    let text = serde_json::to_string(text).expect("json");
    act(
        dir,
        &format!(
            "{{ const input = document.querySelector('[data-testid={testid}]');
             input.value = {text};
             input.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter', bubbles: true}})); }}"
        ),
    );
}

/// What the window's page shows in the element with `testid` (its text, or an input's value).
fn shown(dir: &Path, testid: &str) -> String {
    let value = eval(
        dir,
        &format!("(e => e ? (e.value ?? e.textContent) : '')(document.querySelector('[data-testid={testid}]'))"),
    );
    value.as_str().unwrap_or_default().to_owned()
}

fn members(dir: &Path, list: &str) -> Vec<Value> {
    serde_json::from_str(&ok(dir, &["--list", list, "members", "--json"])).expect("members json")
}

/// The window manages lists itself: it creates a private list, invites a desktop (link and
/// QR code), shows its todos, removes it after a confirmation, switches lists, and joins a
/// list from a pasted link.
#[test]
fn the_window_creates_invites_removes_switches_and_joins_lists() {
    if !display::available() {
        return;
    }
    let Scene { screen: _screen, p_dir, w_dir, xdg: _xdg, p: _p, w: _w } = Scene::start();
    let (w_path, p_path) = (w_dir.path(), p_dir.path());
    let wait = |what: &str, check: &dyn Fn() -> bool| {
        assert!(wait_until(Duration::from_secs(20), check), "{what}");
    };
    wait("the window shows the public topic", &|| shown(w_path, "topic-name") == "todo");

    // Create a private list in the window: it is shown at once, private, with this device
    // as its owner.
    type_into(w_path, "new-list", "groceries");
    wait("the window shows its new list", &|| shown(w_path, "topic-name") == "groceries");
    wait("it is private and ours", &|| shown(w_path, "access").contains("private, owner"));
    let rows = "JSON.stringify([...document.querySelectorAll('[data-testid=lists] [data-testid=list]')].map(l => l.textContent))";
    let lists = eval(w_path, rows);
    assert_eq!(lists.as_array().map(Vec::len), Some(2), "the lists panel shows both lists: {lists}");

    // Invite from the window: a link and its QR code.
    act(w_path, "document.querySelector('[data-testid=invite]').click();");
    wait("the window shows an invite link", &|| shown(w_path, "invite-link").contains("#join="));
    let link = shown(w_path, "invite-link");
    let qr = eval(w_path, "document.querySelector('[data-testid=invite-qr] svg') !== null");
    assert_eq!(qr, Value::Bool(true), "the invite has a QR code");

    // The desktop joins with it; todos flow both ways.
    let joined = ok(p_path, &["join", &link]);
    assert!(joined.contains("groceries"), "{joined}");
    ok(p_path, &["--list", "groceries", "add", "milk from the desktop"]);
    wait("the window shows the desktop's todo", &|| {
        window_todos(w_path).iter().any(|(text, _)| text == "milk from the desktop")
    });
    type_into(w_path, "new-todo", "bread from the window");
    let synced = wait_until(Duration::from_secs(20), || {
        list_of(p_path, "groceries").iter().any(|todo| todo["text"] == "bread from the window")
    });
    assert!(
        synced,
        "the desktop got the window's todo: desktop {:?}, window {:?}, window's store {:?}",
        list_of(p_path, "groceries"),
        window_todos(w_path),
        list_of(w_path, "groceries")
    );

    // Remove the desktop from the window, after confirming.
    let p_writer = members(p_path, "groceries")
        .iter()
        .find(|m| m["me"] == true)
        .and_then(|m| m["writer"].as_str().map(str::to_owned))
        .expect("the desktop is a member");
    wait("the window lists the desktop as a member", &|| {
        eval(
            w_path,
            &format!("document.querySelector(\"[data-writer='{p_writer}'] [data-testid=remove-member]\") !== null"),
        ) == Value::Bool(true)
    });
    act(
        w_path,
        &format!(
            "window.confirm = () => true;
             document.querySelector(\"[data-writer='{p_writer}'] [data-testid=remove-member]\").click();"
        ),
    );
    wait("the desktop is removed", &|| {
        members(w_path, "groceries").iter().any(|m| m["writer"] == p_writer.as_str() && m["active"] == false)
    });
    wait("the removal reached the desktop", &|| {
        !run(p_path, &["--list", "groceries", "add", "after removal"]).status.success()
    });

    // Switch back to the public topic.
    act(
        w_path,
        "[...document.querySelectorAll('[data-testid=lists] [data-testid=list] a')].find(a => a.textContent == 'todo').click();",
    );
    wait("the window shows the public topic again", &|| shown(w_path, "topic-name") == "todo");

    // Join a list of the desktop's from a link pasted into the window.
    ok(p_path, &["new", "work"]);
    let invite: Value =
        serde_json::from_str(&ok(p_path, &["--list", "work", "invite", "--json"])).expect("invite json");
    ok(p_path, &["--list", "work", "add", "report from the desktop"]);
    type_into(w_path, "join-link", invite["link"].as_str().expect("link"));
    wait("the window joined and shows the list", &|| shown(w_path, "topic-name") == "work");
    wait("with the desktop's todo", &|| window_todos(w_path).iter().any(|(text, _)| text == "report from the desktop"));
    wait("as a writer", &|| shown(w_path, "access").contains("private, writer"));

    // A bad link is refused with a message, and the window stays on its list.
    type_into(w_path, "join-link", "https://example.com/#join=not-a-link");
    wait("a bad link is explained", &|| {
        !shown(w_path, "lists-error").trim().is_empty() && shown(w_path, "lists-error") != "joining…"
    });
    assert_eq!(shown(w_path, "topic-name"), "work");
}

fn list_of(dir: &Path, list: &str) -> Vec<Value> {
    serde_json::from_str(&ok(dir, &["--list", list, "list", "--json"])).expect("json list")
}

#[test]
fn without_a_display_window_exits_1_with_a_clear_message() {
    let dir = TempDir::new().expect("tempdir");
    let out = std::process::Command::new(hellopears_tests::hellopears_bin())
        .arg("--data")
        .arg(dir.path())
        .args(["window", "--no-mdns", "--no-dht"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("run hellopears window");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open a window") && stderr.contains("hellopears up --web"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// `run KEY` without `--web` opens the app in the native window; with nothing of it in the
/// data dir, it fetches it from a seeder first (checked, then cached).
#[test]
fn run_opens_an_app_by_key_in_the_window() {
    if !display::available() {
        return;
    }
    let screen = Display::start().expect("Xvfb");
    let (a_dir, b_dir, xdg) =
        (TempDir::new().expect("tempdir"), TempDir::new().expect("tempdir"), TempDir::new().expect("tempdir"));
    // The built web app, with a title of its own (and no gzip copies, which would still
    // carry the old page), so the window's page shows which copy it runs.
    let app = TempDir::new().expect("tempdir");
    for item in std::fs::read_dir(browser::web_root()).expect("the built web app") {
        let path = item.expect("item").path();
        let name = path.file_name().expect("a name").to_string_lossy().to_string();
        if path.is_file() && !name.ends_with(".gz") {
            std::fs::copy(&path, app.path().join(&name)).expect("copy");
        }
    }
    let index = app.path().join("index.html");
    let page = std::fs::read_to_string(&index).expect("index.html");
    std::fs::write(&index, page.replace("<title>HelloPears</title>", "<title>HelloPears, run by key</title>"))
        .expect("write");
    let staged = ok(a_dir.path(), &["stage", "main", app.path().to_str().expect("utf-8")]);
    let key = staged.lines().find_map(|l| l.strip_prefix("app key ")).expect("an app key").to_owned();
    let local = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-dht"];
    let mut seed_args = vec!["main"];
    seed_args.extend(local);
    let a = Peer::start_command(a_dir.path(), "seed", &seed_args);
    let bootstrap = a.tcp_addr();
    let mut run_args = vec![key.as_str(), "--bootstrap", bootstrap.as_str()];
    run_args.extend(local);
    let display_name = std::path::PathBuf::from(&screen.name);
    let env = [("DISPLAY", display_name.as_path()), ("XDG_DATA_HOME", xdg.path())];
    let _b = Peer::start_command_with_env(b_dir.path(), "run", &env, &run_args);
    let shown = wait_until(Duration::from_secs(40), || {
        eval(b_dir.path(), "document.querySelector('[data-testid=new-todo]') !== null") == Value::Bool(true)
    });
    assert!(shown, "the window does not show the app");
    assert_eq!(eval(b_dir.path(), "document.title"), Value::String("HelloPears, run by key".into()));
}
