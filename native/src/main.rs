//! `hellopears`: the HelloPears desktop peer.
//!
//! Today: the todo commands on a local replica persisted in sled, topic ids, and an
//! in-memory swarm simulation. Networking (libp2p) and the terminal UI come next.

mod local;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use hellopears_core::sim::{Sim, SimConfig};
use hellopears_core::todo::{self, Todo};
use hellopears_core::topic::Topic;

use crate::local::Local;

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
    /// The topic to join.
    #[arg(long, global = true, default_value = "todo")]
    topic: String,
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
    /// Print the topic's id and the discovery key announced on the network.
    Topic {
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hellopears: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HELLOPEARS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let topic = Topic::from_name(&cli.topic);
    let command = cli.command.as_ref();
    match command {
        Some(Command::Topic { json }) => return print_topic(&topic, *json),
        Some(Command::Simulate { peers, ops, drop, seed }) => return simulate(*peers as usize, *ops, *drop, *seed),
        _ => {}
    }
    let mut local = Local::open(data_dir(&cli)?, topic)?;
    let now = now_ms();
    match cli.command {
        None => print_list(&local, false),
        Some(Command::List { json }) => print_list(&local, json),
        Some(Command::Add { text }) => {
            let todo = local.replica.todos().add(&text, now)?;
            local.save()?;
            println!("{}", todo.id);
            Ok(())
        }
        Some(Command::Done { id }) => change(&mut local, |todos| todos.set_done(&id, true, now)),
        Some(Command::Undone { id }) => change(&mut local, |todos| todos.set_done(&id, false, now)),
        Some(Command::Edit { id, text }) => change(&mut local, |todos| todos.edit(&id, &text, now)),
        Some(Command::Rm { id }) => change(&mut local, |todos| todos.remove(&id)),
        Some(Command::Status { json }) => print_status(&local, json),
        Some(Command::Topic { .. } | Command::Simulate { .. }) => Ok(()),
    }
}

fn change(
    local: &mut Local,
    action: impl FnOnce(&mut todo::Todos<'_>) -> Result<(), todo::TodoError>,
) -> anyhow::Result<()> {
    action(&mut local.replica.todos())?;
    local.save()
}

fn print_list(local: &Local, json: bool) -> anyhow::Result<()> {
    let todos: Vec<Todo> = todo::list(local.replica.db());
    if json {
        println!("{}", serde_json::to_string(&todos)?);
        return Ok(());
    }
    if todos.is_empty() {
        println!("no todos on topic {:?} yet: hellopears add \"something to do\"", local.replica.topic().name());
    }
    for todo in &todos {
        println!("[{}] {}  {}", if todo.done { "x" } else { " " }, &todo.id[..8], todo.text);
    }
    Ok(())
}

fn print_status(local: &Local, json: bool) -> anyhow::Result<()> {
    let base = local.replica.base();
    let writers: Vec<serde_json::Value> = base
        .writers()
        .iter()
        .map(|w| serde_json::json!({"writer": w.id.to_hex(), "len": w.len, "quarantined": w.quarantined}))
        .collect();
    let status = serde_json::json!({
        "topic": local.replica.topic().name(),
        "topic_id": local.replica.topic().id().to_string(),
        "writer": local.replica.writer_id().to_hex(),
        "writers": writers,
        "entries": base.total_entries(),
        "todos": local.replica.db().count(todo::COLLECTION),
        "peers": [],
        "running": false,
    });
    if json {
        println!("{status}");
        return Ok(());
    }
    println!("topic {} ({})", local.replica.topic().name(), local.replica.topic().id());
    println!("writer {}", local.replica.writer_id());
    println!("{} entries from {} writers, {} todos", base.total_entries(), base.writers().len(), status["todos"]);
    for writer in base.writers() {
        let flag = if writer.quarantined { " (quarantined: forked its log)" } else { "" };
        println!("  {} {} entries{flag}", writer.id.short(), writer.len);
    }
    println!("no peer is running on this data dir");
    Ok(())
}

fn print_topic(topic: &Topic, json: bool) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "name": topic.name(),
            "id": topic.id().to_string(),
            "discovery_key": topic.discovery_key().to_string(),
        });
        println!("{out}");
    } else {
        println!("topic {}\nid {}\ndiscovery key {}", topic.name(), topic.id(), topic.discovery_key());
    }
    Ok(())
}

fn simulate(peers: usize, ops: u32, drop: f64, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..1.0).contains(&drop), "--drop must be in [0, 1)");
    let mut sim = Sim::new(peers, seed, SimConfig { drop, ..SimConfig::default() });
    sim.connect_all();
    for n in 0..ops {
        let peer = n as usize % peers;
        sim.with_peer(peer, |replica, now| -> anyhow::Result<()> {
            let todos = replica.todos().list();
            match todos.get(n as usize % todos.len().max(1)) {
                Some(todo) if n % 3 == 0 => replica.todos().toggle(&todo.id, now).map(|_| ())?,
                Some(todo) if n % 7 == 0 => replica.todos().remove(&todo.id)?,
                _ => replica.todos().add(&format!("todo {n} from peer {peer}"), now).map(|_| ())?,
            }
            Ok(())
        })?;
        sim.run_for(20);
    }
    let converged = sim.run_until_converged(300_000);
    let replica = sim.replica(0);
    let stats = sim.stats();
    println!(
        "{peers} peers on topic {}: {} entries from {} writers, {} todos; {} messages delivered, {} lost, {} duplicated",
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
