//! `postern`: one binary for every role of the Postern MTA. The master
//! starts each daemon as `postern daemon ROLE --ipc-fd N`, a fresh exec.
#![forbid(unsafe_code)]

mod access;
mod addrmap;
mod auth;
mod bounce;
mod broker;
mod cache;
mod cleanup;
mod cli;
mod clock;
mod daemon;
mod edges;
mod fsutil;
mod local;
mod log;
mod master;
mod metrics;
mod milter;
mod passwd;
mod paths;
mod peerpool;
mod peers;
mod pickup;
mod policy;
mod postscreen;
mod probe;
mod proxymap;
mod qmgr;
mod resolver;
mod restrict;
mod roles;
mod smtp;
mod smtpd;
mod sts;
mod submit;
mod sysexits;
mod tablecache;
use postern_config::tables;
mod tls;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postern_config::Role;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "Postern, a hardened mail transfer agent for appliances"
)]
struct Cli {
    /// Configuration directory holding main.cf (and optionally master.cf).
    /// Without it: /etc/postern when it holds a main.cf, else the embedded
    /// default configuration.
    #[arg(
        short = 'c',
        long = "config-dir",
        global = true,
        env = "MAIL_CONFIG",
        value_name = "DIR"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the mail system.
    Start {
        /// Stay attached to the terminal and log to stderr.
        #[arg(long)]
        foreground: bool,
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Stop every process of this instance.
    Stop,
    /// Re-read the configuration and restart one service, or all of them.
    Reload { service: Option<String> },
    /// Show every process with its pid, uid and live protections.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show or check configuration parameters (like postconf).
    Conf {
        /// Only parameters set in main.cf.
        #[arg(short = 'n')]
        non_default: bool,
        /// Default values.
        #[arg(short = 'd')]
        defaults: bool,
        /// Expand $name references.
        #[arg(short = 'x')]
        expand: bool,
        /// Report every error and warning with file:line; exit 1 on errors.
        #[arg(long)]
        check: bool,
        names: Vec<String>,
    },
    /// List, show and steer the mail queue (like postqueue and postsuper).
    Queue {
        #[command(subcommand)]
        cmd: QueueSub,
    },
    /// Build or query lookup tables (like postmap and postalias).
    Map {
        #[command(subcommand)]
        cmd: MapCmd,
    },
    /// Rebuild the aliases database(s) named by alias_database.
    Newaliases,
    /// Link sendmail, mailq and newaliases to this binary and create the
    /// instance's directories (so sendmail queues even before the first start).
    Install {
        /// Install under this directory instead of / (for images).
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
        /// Replace existing files that are not symbolic links.
        #[arg(long)]
        force: bool,
    },
    /// DKIM keys: `keygen` makes a key pair and the DNS record to publish.
    Dkim {
        #[command(subcommand)]
        cmd: DkimCmd,
    },
    /// Set a SASL password (asks twice, or reads two lines from stdin).
    Passwd {
        /// Remove the user instead.
        #[arg(short = 'd', long = "delete")]
        delete: bool,
        user: String,
    },
    #[command(hide = true)]
    Daemon {
        role: String,
        #[arg(long)]
        ipc_fd: i32,
    },
    #[command(hide = true)]
    Probe { role: String },
}

/// Which messages a queue command picks, besides queue ids (all AND).
#[derive(clap::Args)]
struct Selectors {
    /// The envelope sender, exactly ("<>" for the null sender).
    #[arg(long)]
    sender: Option<String>,
    /// A recipient in this domain.
    #[arg(long = "recipient-domain")]
    recipient_domain: Option<String>,
    /// Arrived longer ago than this (30m, 2h, 3d).
    #[arg(long = "older-than")]
    older_than: Option<String>,
    /// active, deferred, hold or incoming.
    #[arg(long)]
    queue: Option<String>,
    /// A recipient's delay reason matches this regular expression.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Subcommand)]
enum QueueSub {
    /// The queue, as mailq prints it; --json: one object per message.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        select: Selectors,
    },
    /// A queued message: envelope and content.
    Show { id: String },
    /// Retry every deferred message now.
    Flush,
    /// Delete messages (IDs, ALL, or selectors).
    Delete(Act),
    /// Put messages on hold (IDs, ALL, or selectors).
    Hold(Act),
    /// Release held messages (IDs, ALL, or selectors).
    Release(Act),
    /// Route messages anew and retry them now (IDs, ALL, or selectors).
    Requeue(Act),
    /// How mail for a domain (or an address) would be routed now.
    Explain {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Recipient domains by age, like Postfix's qshape.
    Summary {
        #[arg(long)]
        json: bool,
        /// Domains shown (the busiest first).
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[command(flatten)]
        select: Selectors,
    },
}

#[derive(clap::Args)]
struct Act {
    ids: Vec<String>,
    #[command(flatten)]
    select: Selectors,
    /// Print what would be touched; change nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

impl Selectors {
    fn with_ids(self, ids: Vec<String>) -> Result<cli::select::Select, String> {
        cli::select::Select::parse(
            ids,
            self.sender,
            self.recipient_domain,
            self.older_than,
            self.queue,
            self.reason,
        )
    }
}

#[derive(Subcommand)]
enum DkimCmd {
    /// A new key pair: DIR/SELECTOR.private (PEM PKCS#8, mode 0600) and
    /// DIR/SELECTOR.txt (the DNS TXT record, also printed), as
    /// opendkim-genkey writes them.
    Keygen {
        /// The signing domain (d=).
        #[arg(short = 'd', long)]
        domain: String,
        /// The selector (s=); a new one for each rotation.
        #[arg(short = 's', long, default_value = "default")]
        selector: String,
        /// rsa (RSA-SHA256) or ed25519 (Ed25519-SHA256, RFC 8463).
        #[arg(short = 't', long = "type", value_enum, default_value = "rsa")]
        kind: cli::dkim::KeyType,
        /// RSA key size: 2048, 3072 or 4096.
        #[arg(short = 'b', long, default_value_t = 2048)]
        bits: u32,
        /// Where the two files go.
        #[arg(short = 'D', long = "directory", default_value = ".")]
        directory: PathBuf,
    },
}

#[derive(Subcommand)]
enum MapCmd {
    /// Build TYPE:PATH.cdb from the text file TYPE:PATH.
    Build {
        /// The source is in aliases(5) format (name: value, ...).
        #[arg(long)]
        aliases: bool,
        #[arg(required = true)]
        tables: Vec<String>,
    },
    /// Look keys up; exit 1 when one is not found.
    Query {
        #[arg(long)]
        json: bool,
        table: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Run as sendmail, mailq or newaliases (links), or `postern sendmail`:
    // those take Postfix's sendmail flags, not ours.
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("postern");
    if matches!(argv0, "sendmail" | "mailq" | "newaliases") {
        return cli::sendmail::main(argv0, &args[1..]);
    }
    if args.get(1).map(String::as_str) == Some("sendmail") {
        return cli::sendmail::main("sendmail", &args[2..]);
    }
    let cli = Cli::parse();
    let system = cli
        .config
        .is_none()
        .then(postern_config::system_config_dir)
        .flatten();
    let dir = cli.config.as_deref().or(system.as_deref());
    match cli.cmd {
        Cmd::Daemon { role, ipc_fd } => match Role::from_name(&role).and_then(roles::spec) {
            Some(spec) => (spec.main)(ipc_fd),
            None => cli::fail(format!("no such daemon role: {role}")),
        },
        Cmd::Probe { role } => {
            let Some(r) = Role::from_name(&role) else {
                return cli::fail(format!("no such role: {role}"));
            };
            let Some((_, params)) = cli::load(dir) else {
                return ExitCode::FAILURE;
            };
            probe::run(r, &params)
        }
        Cmd::Start {
            foreground,
            detached,
        } => cli::start(dir, foreground, detached),
        Cmd::Stop => cli::stop(dir),
        Cmd::Queue { cmd } => {
            use cli::queue::{Op, QueueCmd};
            let act = |op: Op, a: Act| {
                a.select.with_ids(a.ids).map(|select| QueueCmd::Act {
                    op,
                    select,
                    dry_run: a.dry_run,
                })
            };
            let c = match cmd {
                QueueSub::List { json, select } => select
                    .with_ids(vec![])
                    .map(|select| QueueCmd::List { json, select }),
                QueueSub::Show { id } => Ok(QueueCmd::Show(id)),
                QueueSub::Flush => Ok(QueueCmd::Flush),
                QueueSub::Delete(a) => act(Op::Delete, a),
                QueueSub::Hold(a) => act(Op::Hold, a),
                QueueSub::Release(a) => act(Op::Release, a),
                QueueSub::Requeue(a) => act(Op::Requeue, a),
                QueueSub::Explain { target, json } => Ok(QueueCmd::Explain { target, json }),
                QueueSub::Summary { json, top, select } => select
                    .with_ids(vec![])
                    .map(|select| QueueCmd::Summary { json, top, select }),
            };
            match c {
                Ok(c) => cli::queue(dir, c),
                Err(e) => cli::fail(e),
            }
        }
        Cmd::Map { cmd } => match cmd {
            MapCmd::Build { aliases, tables } => cli::map::run_build(&tables, aliases),
            MapCmd::Query { json, table, keys } => cli::map::run_query(dir, &table, &keys, json),
        },
        Cmd::Newaliases => {
            let Some((_, params)) = cli::load_with(dir, false) else {
                return ExitCode::FAILURE;
            };
            cli::map::run_build(&params.list("alias_database").unwrap_or_default(), true)
        }
        Cmd::Install { root, force } => cli::install(dir, &root, force),
        Cmd::Passwd { delete, user } => cli::passwd::run(dir, &user, delete),
        Cmd::Dkim {
            cmd:
                DkimCmd::Keygen {
                    domain,
                    selector,
                    kind,
                    bits,
                    directory,
                },
        } => cli::dkim::keygen(&domain, &selector, kind, bits, &directory),
        Cmd::Reload { service } => cli::reload(dir, service),
        Cmd::Status { json } => cli::status(dir, json),
        Cmd::Conf {
            non_default,
            defaults,
            expand,
            check,
            names,
        } => {
            let mut cfg = postern_config::Config::load(dir);
            if check {
                cfg.check_tables();
            }
            cli::conf::run(
                &cfg,
                &cli::conf::ConfArgs {
                    non_default,
                    defaults,
                    expand,
                    check,
                    names,
                },
            )
        }
    }
}
