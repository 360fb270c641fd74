//! `hellopears`: the HelloPears desktop peer.
//!
//! The networked peer (libp2p, sled, terminal UI) is built on top of `hellopears-core`;
//! until it lands, this binary exposes the core directly: topic ids, and an in-memory
//! swarm simulation that shows replicas converging.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hellopears_core::sim::{Sim, SimConfig};
use hellopears_core::topic::Topic;

/// HelloPears: a peer-to-peer, local-first todo list.
#[derive(Debug, Parser)]
#[command(name = "hellopears", version)]
struct Cli {
    /// The topic to join.
    #[arg(long, global = true, default_value = "todo")]
    topic: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hellopears: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let topic = Topic::from_name(&cli.topic);
    match cli.command.unwrap_or(Command::Simulate { peers: 4, ops: 200, drop: 0.1, seed: 1 }) {
        Command::Topic { json } => {
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
        Command::Simulate { peers, ops, drop, seed } => simulate(peers as usize, ops, drop, seed),
    }
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
                Some(todo) if n % 3 == 0 => replica.todos().toggle(&todo.id, now).map(drop_value)?,
                Some(todo) if n % 7 == 0 => replica.todos().remove(&todo.id)?,
                _ => replica.todos().add(&format!("todo {n} from peer {peer}"), now).map(drop_value)?,
            }
            Ok(())
        })?;
        sim.run_for(20);
    }
    let converged = sim.run_until_converged(300_000);
    let replica = sim.replica(0);
    let todos = hellopears_core::todo::list(replica.db());
    let stats = sim.stats();
    println!(
        "{peers} peers on topic {}: {} entries from {} writers, {} todos; {} messages delivered, {} lost, {} duplicated",
        replica.topic().name(),
        replica.base().total_entries(),
        replica.base().writers().len(),
        todos.len(),
        stats.delivered,
        stats.lost,
        stats.duplicated,
    );
    anyhow::ensure!(converged, "replicas did not converge");
    let (order, view) = sim.digests(0);
    println!("converged: every replica has order {} and view {}", &order.to_hex()[..16], &view.to_hex()[..16]);
    Ok(())
}

fn drop_value<T>(_: T) {}
