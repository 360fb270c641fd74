//! `hellopears`: the HelloPears desktop peer: a libp2p peer with sled storage, the todo
//! commands, a terminal UI, and the web app for browser tabs.

mod app_net;
mod apps;
mod commands;
mod control;
mod discovery;
mod launch;
mod links;
mod lists;
mod local;
mod net;
mod peer;
mod reads;
mod relay_server;
mod store;
mod streams;
mod tui;
mod web;
mod window;
mod window_protocol;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use hellopears_core::sim::{Sim, SimConfig};
use hellopears_core::todo;
use hellopears_core::topic::Topic;
use hellopears_core::ui::Command as UiCommand;

use crate::commands::{Action, Format, Request};
use hellopears_core::access::Role;
use hellopears_core::keys::WriterId;

/// HelloPears: a peer-to-peer, local-first todo list.
#[derive(Debug, Parser)]
#[command(name = "hellopears", version)]
struct Cli {
    /// Data directory (default: the platform's data dir for hellopears).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Keep everything in memory (a throwaway peer).
    #[arg(long, global = true)]
    memory: bool,
    /// The public topic to use (anyone who knows the name can read and write it);
    /// default: the data dir's only list, or the topic `todo`.
    #[arg(long, global = true, value_name = "NAME")]
    topic: Option<String>,
    /// The list to use: a name, or a unique prefix of a list's name or id (see `lists`).
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "topic")]
    list: Option<String>,
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Less logging.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a peer in the foreground: join the topic, find peers, sync.
    Up(PeerArgs),
    /// Run a peer in a native window showing the todo list (the web app's UI).
    Window(PeerArgs),
    /// Seed an app in the foreground, like `up`: serve its versions to the peers that run
    /// it. WHAT: a channel staged here (default: main) or an app key. (A number instead adds
    /// that many numbered todos, for demos and load tests.)
    Seed {
        /// A channel staged here, an app key, or a number of todos.
        what: Option<String>,
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Run an app by its key: fetch its newest version from any seeder, check every file
    /// against its signed manifest, cache it in the data dir, and open it in the native
    /// window (or serve it for browser tabs with `--web`). After the first fetch it runs
    /// offline from the cache.
    Run {
        /// The app key (64 hex digits, as `stage` prints it).
        #[arg(value_parser = parse_app_key)]
        key: WriterId,
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Add a todo.
    Add {
        /// What to do.
        text: String,
    },
    /// List the todos.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a todo done (ID: any unique prefix).
    Done {
        /// Todo id or unique prefix.
        id: String,
    },
    /// Mark a todo not done.
    Undone {
        /// Todo id or unique prefix.
        id: String,
    },
    /// Change a todo's text.
    Edit {
        /// Todo id or unique prefix.
        id: String,
        /// The new text.
        text: String,
    },
    /// Delete a todo.
    Rm {
        /// Todo id or unique prefix.
        id: String,
    },
    /// Show this replica: topic, writers, entries.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a script in the page of the window running on this data dir and print its
    /// result as JSON (automation and tests).
    #[command(hide = true)]
    Eval {
        /// JavaScript; its completion value is printed.
        script: String,
    },
    /// Print the topic's id and the discovery key announced on the network.
    Topic {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a private list: only the devices you invite can read and write it.
    New {
        /// Its name (shown to the people you invite).
        name: String,
    },
    /// Show the lists of this data dir.
    Lists {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an invite link (and its QR code) to the list: one device may join with it.
    Invite {
        /// The device may read and sync, not write.
        #[arg(long, conflicts_with = "blind")]
        read_only: bool,
        /// The device stores and serves the list encrypted, reading nothing (to keep the
        /// list available while your devices are offline).
        #[arg(long)]
        blind: bool,
        /// How long the invite is valid: 30s, 10m, 12h, 7d (default 7d).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
        expires: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join a list from an invite link, and wait until a member admits this device.
    Join {
        /// The invite link.
        link: String,
        /// How long to wait for a member (default 60s).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        wait: u64,
    },
    /// Show the members of a private list.
    Members {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (by name or writer key prefix) from a private list: its later
    /// writes are refused everywhere and it cannot read anything new.
    Remove {
        /// Name or writer key (or a unique prefix of it).
        member: String,
    },
    /// Set this device's display name, shown to the members of your private lists.
    Name {
        /// The name, for example "Alice's laptop".
        name: String,
    },
    /// Record a new version of an app in the signed log of its channel, like `pear stage`:
    /// prints the version, the app key and what changed (nothing is recorded when nothing
    /// did).
    Stage {
        /// The channel (default: main); each has its own app key, kept in the data dir.
        #[arg(value_parser = parse_channel)]
        channel: Option<String>,
        /// The app's directory (default: the built web app).
        dir: Option<PathBuf>,
    },
    /// Apps distributed peer to peer.
    App {
        #[command(subcommand)]
        action: AppAction,
    },
    /// Run an in-memory swarm of peers on the topic and show them converge.
    Simulate {
        /// Number of peers.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        peers: u16,
        /// Todo operations to make, spread over the peers.
        #[arg(long, default_value_t = 200)]
        ops: u32,
        /// Probability that a message is lost.
        #[arg(long, default_value_t = 0.1)]
        drop: f64,
        /// Seed of the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    // QUIC (rustls on aws-lc-rs) and WebRTC (ring) share this process: pick the provider
    // once, or every WebRTC handshake panics looking for one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    if cli.memory && cli.data.is_some() {
        let error = Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, "--data and --memory cannot be used together");
        let _ = error.print();
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hellopears: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr, or to a file when the terminal UI owns the screen.
fn init_logging(verbose: u8, quiet: bool, file: Option<PathBuf>) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // sled reports damage itself in several lines before our one-line error, the DHT
    // warns that it has no peers at every start, QUIC warns of every datagram it cannot
    // send (the public DHT's bootstrap peers from a LAN with no internet: we say that once
    // ourselves), and the WebRTC stack warns about every TLS extension a browser offers:
    // keep them quiet unless asked for.
    let quiet_deps = if verbose >= 2 {
        String::new()
    } else {
        ",sled=off,libp2p_kad=error,quinn_udp=error,quinn=error,dtls=error,webrtc_sctp=error,webrtc_ice=error,webrtc=error".into()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HELLOPEARS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level}{quiet_deps}")));
    let log_file = file.and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
    match log_file {
        Some(log_file) => {
            let writer = std::sync::Mutex::new(log_file);
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(writer).try_init();
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
}

/// `app` subcommands.
#[derive(Debug, Subcommand)]
enum AppAction {
    /// What this data dir holds of an app (its versions, files and size), and which peers
    /// seed it (asked on the network for WAIT seconds by a throwaway peer; 0: not asked).
    Info {
        /// The app key.
        #[arg(value_parser = parse_app_key)]
        key: WriterId,
        /// Seconds to look for seeders.
        #[arg(long, default_value_t = 5)]
        wait: u64,
        #[command(flatten)]
        peer: PeerArgs,
    },
}

/// How a peer runs (`up` and `window`).
#[derive(Debug, Clone, clap::Args)]
struct PeerArgs {
    /// Address to listen on (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<libp2p::Multiaddr>,
    /// Peer to dial at start and to enter the DHT through (repeatable; also
    /// HELLOPEARS_BOOTSTRAP, comma-separated): replaces the public IPFS DHT's bootstrap list.
    #[arg(long, value_name = "MULTIADDR", env = "HELLOPEARS_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Do not look for peers on the LAN.
    #[arg(long)]
    no_mdns: bool,
    /// Stay off the public DHT: find peers by mDNS, bootstrap addresses and peer exchange
    /// only.
    #[arg(long = "no-public-dht", visible_alias = "no-dht")]
    no_dht: bool,
    /// An address others can reach this peer at (a public peer; repeatable): it then
    /// relays for peers behind NATs from the start.
    #[arg(long, value_name = "MULTIADDR")]
    external_address: Vec<libp2p::Multiaddr>,
    /// Do not exchange peer addresses with peers (for tests of the other mechanisms).
    #[arg(long, hide = true)]
    no_pex: bool,
    /// A STUN server for WebRTC through NATs, `stun:HOST:PORT` (repeatable; also
    /// HELLOPEARS_STUN, comma-separated). None by default: no third party learns of us.
    #[arg(long = "stun", value_name = "URL", env = "HELLOPEARS_STUN", value_delimiter = ',', value_parser = parse_stun)]
    stun: Vec<String>,
    /// Answer STUN binding requests on this UDP port (a reachable peer serving as the STUN
    /// server of its lists' tabs and desktops). Without it, a peer answers on 3478 once it
    /// is reachable (`--external-address`, or AutoNAT confirms a public address).
    #[arg(long, value_name = "PORT")]
    stun_port: Option<u16>,
    /// Serve the web app for browser tabs on ADDR (default 127.0.0.1:4270).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:4270")]
    web: Option<std::net::SocketAddr>,
    /// Where the built web app is (default: found next to the build).
    #[arg(long, value_name = "DIR", hide = true)]
    web_root: Option<PathBuf>,
    /// Join a list from an invite link first (waiting until a member admits this device),
    /// then run on it.
    #[arg(long, value_name = "LINK")]
    join: Option<String>,
    /// Seed an app too: a channel staged here or an app key (repeatable).
    #[arg(long = "seed", value_name = "CHANNEL|KEY")]
    seed: Vec<String>,
    /// Serve the newest checked version of this app (fetched from its seeders) to tabs,
    /// instead of the bundled web app.
    #[arg(long, value_name = "KEY", value_parser = parse_app_key)]
    app: Option<WriterId>,
}

/// An app key: 64 hex digits.
fn parse_app_key(text: &str) -> Result<WriterId, String> {
    WriterId::from_hex(text).map_err(|_| format!("{text:?} is not an app key (64 hex digits, as `stage` prints it)"))
}

/// A STUN server URL: `stun:HOST:PORT` (or `stun:HOST`, port 3478).
fn parse_stun(text: &str) -> Result<String, String> {
    let rest = text.strip_prefix("stun:").ok_or_else(|| format!("{text}: a STUN server is stun:HOST:PORT"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            (host, port.parse::<u16>().map_err(|_| format!("{text}: bad port {port}"))?)
        }
        _ => (rest, 3478),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("{text}: a STUN server is stun:HOST:PORT"));
    }
    Ok(format!("stun:{host}:{port}"))
}

fn data_dir(cli: &Cli) -> anyhow::Result<Option<PathBuf>> {
    if cli.memory {
        return Ok(None);
    }
    if let Some(dir) = &cli.data {
        return Ok(Some(dir.clone()));
    }
    let dirs = directories::ProjectDirs::from("", "", "hellopears")
        .ok_or_else(|| anyhow::anyhow!("no home directory to keep data in; pass --data DIR"))?;
    Ok(Some(dirs.data_dir().to_path_buf()))
}

/// A duration such as `90s`, `10m`, `12h` or `7d`, in ms.
fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 10m, 12h or 7d"))?;
    let scale = match unit {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    number.checked_mul(scale).filter(|ms| *ms > 0).ok_or_else(|| format!("{text:?} is out of range"))
}

/// A channel name (see `apps::check_channel`).
fn parse_channel(text: &str) -> Result<String, String> {
    apps::check_channel(text).map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

/// `app info`: what the data dir holds of an app, and who seeds it.
fn app_info(
    data: Option<PathBuf>,
    selection: &lists::Selection,
    key: WriterId,
    wait: u64,
    args: &PeerArgs,
) -> anyhow::Result<()> {
    println!("app {}", key.to_hex());
    match &data {
        Some(dir) => {
            store::prepare_dir(dir)?;
            print!("{}", apps::info_text(dir, &key)?);
        }
        None => println!("nothing here (--memory)"),
    }
    if wait == 0 {
        return Ok(());
    }
    // A throwaway peer in memory: the data dir may be in use by a running peer.
    let discovery = peer::Discovering { mdns: !args.no_mdns, dht: !args.no_dht, pex: !args.no_pex };
    let mut prepared =
        launch::prepare_peer(None, selection, args.listen.clone(), args.bootstrap.clone(), discovery, true)?;
    let (found_tx, mut found) = tokio::sync::mpsc::unbounded_channel();
    prepared.config.probe = Some((key, found_tx));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (handle, inbox) = peer::channel();
    let seeders = runtime.block_on(async move {
        let running = tokio::spawn(launch::serve(prepared, handle.clone(), inbox));
        let mut seeders = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        while let Ok(Some(seeder)) = tokio::time::timeout_at(deadline, found.recv()).await {
            seeders.push(seeder);
        }
        handle.shutdown().await;
        let _ = running.await;
        seeders
    });
    if seeders.is_empty() {
        println!("seeders: none answered in {wait} s");
    }
    for (peer, versions) in seeders {
        println!("seeder {peer}: version {versions}");
    }
    Ok(())
}

/// `stage`: the next version of a channel's app.
fn stage_app(data: Option<PathBuf>, channel: Option<&str>, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let data = data.context("stage keeps the app in a data dir: not with --memory")?;
    store::prepare_dir(&data)?;
    let dir = match dir {
        Some(dir) => dir,
        None => {
            web::find_root(None).context("no built web app to stage (run `cargo xtask web`, or name a directory)")?
        }
    };
    let staged = apps::stage(&data, channel.unwrap_or(apps::DEFAULT_CHANNEL), &dir)?;
    print!("{}", apps::staged_text(&staged));
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let selection = lists::Selection { list: cli.list.clone(), topic: cli.topic.clone() };
    let topic = Topic::from_name(cli.topic.as_deref().unwrap_or(lists::DEFAULT_TOPIC));
    let interactive = cli.command.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let data = data_dir(&cli)?;
    let log_file = match (&data, interactive) {
        (Some(dir), true) => {
            store::prepare_dir(dir)?;
            Some(dir.join("hellopears.log"))
        }
        _ => None,
    };
    init_logging(cli.verbose, cli.quiet, log_file);
    if interactive {
        return interactive_ui(data, &selection);
    }
    let command = cli.command.as_ref();
    match command {
        Some(Command::Topic { json }) if cli.list.is_none() => return print_topic(&topic, *json),
        Some(Command::Simulate { peers, ops, drop, seed }) => return simulate(*peers as usize, *ops, *drop, *seed),
        Some(Command::Stage { channel, dir }) => return stage_app(data, channel.as_deref(), dir.clone()),
        Some(Command::App { action: AppAction::Info { key, wait, peer } }) => {
            return app_info(data, &selection, *key, *wait, peer);
        }
        _ => {}
    }
    let fmt = |json: bool| if json { Format::Json } else { Format::Text };
    let action = match cli.command {
        Some(Command::Up(args)) => return up(data, selection, args, false),
        Some(Command::Window(args)) => return up(data, selection, args, true),
        Some(Command::Join { link, wait }) => return join(data, &selection, link, wait),
        None => Action::List(Format::Text),
        Some(Command::List { json }) => Action::List(fmt(json)),
        Some(Command::Add { text }) => Action::Command(UiCommand::Add(text)),
        Some(Command::Seed { what, peer }) => match what.as_deref().map(str::parse::<u32>) {
            Some(Ok(count)) => Action::Command(UiCommand::Seed(count)),
            _ => {
                let mut peer = peer;
                peer.seed.insert(0, what.unwrap_or_else(|| apps::DEFAULT_CHANNEL.to_owned()));
                return up(data, selection, peer, false);
            }
        },
        Some(Command::Run { key, peer }) => {
            let mut peer = peer;
            peer.app = Some(key);
            if peer.web.is_some() {
                return up(data, selection, peer, false);
            }
            // The native window, on the app's newest version here (fetched first if none is).
            let data = data.context("apps are kept in a data dir: not with --memory")?;
            store::prepare_dir(&data)?;
            if apps::cached_version(&data, &key)?.is_none() {
                fetch_first(&data, &selection, &peer, key)?;
            }
            return up(Some(data), selection, peer, true);
        }
        Some(Command::Done { id }) => Action::Command(UiCommand::SetDone(id, true)),
        Some(Command::Undone { id }) => Action::Command(UiCommand::SetDone(id, false)),
        Some(Command::Edit { id, text }) => Action::Command(UiCommand::Edit(id, text)),
        Some(Command::Rm { id }) => Action::Command(UiCommand::Remove(id)),
        Some(Command::Status { json }) => Action::Status(fmt(json)),
        Some(Command::Eval { script }) => Action::Eval(script),
        Some(Command::New { name }) => Action::NewList(name),
        Some(Command::Lists { json }) => Action::Lists(fmt(json)),
        Some(Command::Invite { read_only, blind, expires, json }) => {
            let role = match (read_only, blind) {
                (true, _) => Role::ReadOnly,
                (_, true) => Role::Blind,
                _ => Role::Writer,
            };
            Action::Invite { role, valid_ms: expires, format: fmt(json) }
        }
        Some(Command::Members { json }) => Action::Members(fmt(json)),
        Some(Command::Remove { member }) => Action::Command(UiCommand::RemoveMember(member)),
        Some(Command::Name { name }) => Action::SetDeviceName(name),
        Some(Command::Topic { json }) => Action::Topic(fmt(json)),
        Some(Command::Simulate { .. } | Command::Stage { .. } | Command::App { .. }) => return Ok(()),
    };
    let request = Request { topic: cli.topic.clone().unwrap_or_default(), list: cli.list.clone(), action };
    match reach(data.as_deref(), &selection, &request) {
        Ok(out) => {
            print!("{out}");
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!(error)),
    }
}

/// Runs a request on the peer holding the data dir, or, when none runs, on the store
/// itself. A peer that is starting holds the store before its control socket is up: both
/// are tried again for a few seconds.
fn reach(data: Option<&std::path::Path>, selection: &lists::Selection, request: &Request) -> commands::Reply {
    let Some(dir) = data else {
        return commands::execute_offline(&local::Home::Memory(Default::default()), selection, request);
    };
    let deadline = std::time::Instant::now() + local::STORE_PATIENCE;
    loop {
        if let Some(reply) = control::request(dir, request) {
            return reply;
        }
        match store::SledDb::open(dir) {
            Ok(db) => return commands::execute_offline(&local::Home::Sled(db), selection, request),
            Err(store::StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

fn up(data: Option<PathBuf>, selection: lists::Selection, args: PeerArgs, window: bool) -> anyhow::Result<()> {
    let PeerArgs {
        listen,
        bootstrap,
        no_mdns,
        no_dht,
        no_pex,
        external_address,
        web,
        web_root,
        join: link,
        stun,
        stun_port,
        seed,
        app,
    } = args;
    let (selection, joined) = match link {
        Some(link) => {
            let invite = hellopears_core::access::InviteLink::decode(&link)?;
            join(data.clone(), &selection, link, 60_000)?;
            (lists::Selection { list: Some(invite.topic().id().to_string()), topic: None }, Some(invite.name))
        }
        None => (selection, None),
    };
    let discovery = peer::Discovering { mdns: !no_mdns, dht: !no_dht, pex: !no_pex };
    // A window running an app by key shows the app's newest version here.
    let cached = match (&data, app, window) {
        (Some(dir), Some(key), true) => apps::cached_version(dir, &key)?,
        _ => None,
    };
    let root = cached.map(|(_, dir)| dir).or_else(|| web::find_root(web_root));
    let site = web.map(|addr| launch::Site { addr, root: root.clone() });
    let name = joined
        .or_else(|| selection.list.clone())
        .or_else(|| selection.topic.clone())
        .unwrap_or_else(|| lists::DEFAULT_TOPIC.into());
    let prepare = move || {
        let mut prepared = launch::prepare_peer(data, &selection, listen, bootstrap, discovery, false)?;
        prepared.config.external = external_address;
        prepared.config.stun_servers = stun;
        prepared.config.stun_port = stun_port;
        prepared.config.seed = seed.clone();
        prepared.config.app = app.map(|key| (key, tokio::sync::watch::channel(None).0));
        prepared.site = site;
        Ok(prepared)
    };
    if window {
        return window::run(name, prepare, root);
    }
    let prepared = prepare()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (handle, inbox) = peer::channel();
    runtime.block_on(launch::serve(prepared, handle, inbox))
}

/// `run KEY` in a window with nothing of the app here yet: a peer without a window fetches
/// it first (with progress lines), then stops.
fn fetch_first(
    data: &std::path::Path,
    selection: &lists::Selection,
    args: &PeerArgs,
    key: WriterId,
) -> anyhow::Result<()> {
    let discovery = peer::Discovering { mdns: !args.no_mdns, dht: !args.no_dht, pex: !args.no_pex };
    let mut prepared = launch::prepare_peer(
        Some(data.to_path_buf()),
        selection,
        args.listen.clone(),
        args.bootstrap.clone(),
        discovery,
        false,
    )?;
    prepared.config.external = args.external_address.clone();
    prepared.config.stun_servers = args.stun.clone();
    let (ready_tx, mut ready) = tokio::sync::watch::channel(None);
    prepared.config.app = Some((key, ready_tx));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (handle, inbox) = peer::channel();
    runtime.block_on(async move {
        let running = tokio::spawn(launch::serve(prepared, handle.clone(), inbox));
        let fetched =
            tokio::time::timeout(FETCH_PATIENCE, ready.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok());
        handle.shutdown().await;
        let _ = running.await;
        if !fetched {
            anyhow::bail!("no seeder of app {} answered in {} s", key.to_hex(), FETCH_PATIENCE.as_secs());
        }
        Ok(())
    })
}

/// How long `run KEY` waits for a first copy of an app before it gives up.
const FETCH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// `join`: through the peer running on the data dir, or on one this process runs until
/// a member admitted this device (or refused, or the wait is over).
fn join(data: Option<PathBuf>, selection: &lists::Selection, link: String, wait: u64) -> anyhow::Result<()> {
    let request = Request { topic: String::new(), list: None, action: Action::Join { link, wait_ms: wait } };
    if let Some(dir) = &data
        && let Some(reply) = control::request(dir, &request)
    {
        print!("{}", reply.map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let discovery = peer::Discovering { mdns: true, dht: true, pex: true };
    let mut prepared = launch::prepare_peer(data, selection, Vec::new(), Vec::new(), discovery, false)?;
    prepared.config.quiet = true;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (handle, inbox) = peer::channel();
    let running = runtime.spawn(launch::serve(prepared, handle.clone(), inbox));
    let reply = runtime.block_on(handle.request(request));
    runtime.block_on(handle.shutdown());
    runtime.block_on(running)??;
    print!("{}", reply.map_err(anyhow::Error::msg)?);
    Ok(())
}

/// The terminal UI: on the peer already running on the data dir, or on one it runs itself.
fn interactive_ui(data: Option<PathBuf>, selection: &lists::Selection) -> anyhow::Result<()> {
    let topic_name = selection.topic.clone().unwrap_or_default();
    let request = Request { topic: topic_name.clone(), list: selection.list.clone(), action: Action::Snapshot };
    if let Some(dir) = &data
        && control::request(dir, &request).is_some()
    {
        return tui::run(tui::Backend::Remote(dir.clone(), topic_name));
    }
    let bootstrap = std::env::var("HELLOPEARS_BOOTSTRAP")
        .unwrap_or_default()
        .split(',')
        .filter(|addr| !addr.trim().is_empty())
        .map(|addr| addr.trim().parse())
        .collect::<Result<Vec<libp2p::Multiaddr>, _>>()?;
    let discovery = peer::Discovering { mdns: true, dht: true, pex: true };
    let mut prepared = launch::prepare_peer(data, selection, Vec::new(), bootstrap, discovery, true)?;
    let (view_tx, view_rx) = tokio::sync::watch::channel(hellopears_core::ui::Snapshot::default());
    prepared.config.view = Some(view_tx);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (handle, inbox) = peer::channel();
    let running = runtime.spawn(launch::serve(prepared, handle.clone(), inbox));
    let result = tui::run(tui::Backend::InProcess(handle.clone(), view_rx, runtime.handle().clone()));
    runtime.block_on(handle.shutdown());
    runtime.block_on(running)??;
    result
}

fn print_topic(topic: &Topic, json: bool) -> anyhow::Result<()> {
    print!("{}", commands::topic_text(topic, if json { Format::Json } else { Format::Text }));
    Ok(())
}

fn simulate(peers: usize, ops: u32, drop: f64, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..1.0).contains(&drop), "--drop must be in [0, 1)");
    let mut sim = Sim::new(peers, seed, SimConfig { drop, ..SimConfig::default() });
    sim.connect_all();
    for n in 0..ops {
        let peer = n as usize % peers;
        let todos = todo::list(sim.replica(peer).db());
        let command = match todos.get(n as usize % todos.len().max(1)) {
            Some(todo) if n % 3 == 0 => UiCommand::Toggle(todo.id.clone()),
            Some(todo) if n % 7 == 0 => UiCommand::Remove(todo.id.clone()),
            _ => UiCommand::Add(format!("todo {n} from peer {peer}")),
        };
        if let Some(Err(error)) = sim.command(peer, command) {
            anyhow::bail!("a write failed: {error}");
        }
        sim.run_for(20);
    }
    let converged = sim.run_until_converged(300_000);
    let replica = sim.replica(0);
    let stats = sim.stats();
    println!(
        "{peers} peers on topic {}: {} entries from {} writers, {} todos; \
         {} messages delivered, {} lost, {} duplicated",
        replica.topic().name(),
        replica.base().total_entries(),
        replica.base().writers().len(),
        todo::list(replica.db()).len(),
        stats.delivered,
        stats.lost,
        stats.duplicated,
    );
    anyhow::ensure!(converged, "replicas did not converge");
    let (order, view) = sim.digests(0);
    println!("converged: every replica has order {} and view {}", &order.to_hex()[..16], &view.to_hex()[..16]);
    Ok(())
}
