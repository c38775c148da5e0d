//! `skein`: a Socket.IO node.
//!
//! Reads its configuration (see `config`), builds the Socket.IO server from the library,
//! registers the chosen application, serves HTTP, and shuts down gracefully on SIGTERM or
//! Ctrl-C: it stops accepting, disconnects every socket with `server shutting down`,
//! flushes and closes the connections, then exits 0.

mod apps;
mod cluster;
mod config;
mod events;
mod grpc;
mod limits;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use skein::SocketIo;
use tokio::net::TcpListener;

use crate::config::Config;

fn main() -> std::process::ExitCode {
    let matches = config::options::command().get_matches();
    let check = matches.get_flag("check_config");
    let config = match config::load(matches) {
        Ok(loaded) if check => {
            print!("{}", loaded.effective);
            return std::process::ExitCode::SUCCESS;
        }
        Ok(loaded) => loaded.config,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("skein: configuration error: {e}");
            }
            if check {
                eprintln!("skein: {} configuration error(s)", errors.0.len());
            }
            return std::process::ExitCode::from(2);
        }
    };
    init_logs(&config);
    let rt = match runtime(config.worker_threads).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skein: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("skein: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime: with one worker, a single-threaded one. Tokio's multi-threaded
/// scheduler keeps at most 256 runnable tasks in a worker's own queue and moves the rest
/// to a shared queue that it looks at only every few dozen tasks, so when more than 256
/// connections become ready at once (1,000 busy clients), those that spill over wait
/// many times longer than the others: a p99 twenty times the median. The
/// single-threaded scheduler's queue is unbounded and first in, first out, so every
/// ready connection is served in turn.
fn runtime(workers: usize) -> tokio::runtime::Builder {
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers);
    b
}

fn init_logs(c: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&c.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config::DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if c.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> Result<()> {
    let mut io_config = config.io.clone();
    let cluster = cluster::start(&config, io_config.recovery.as_ref()).await?;
    if let Some(f) = &cluster {
        io_config.adapter = Arc::new(f.clone());
    }
    let node_id = cluster
        .as_ref()
        .map(|f| f.node_id().to_owned())
        .or(config.node_id.clone())
        .unwrap_or_else(|| format!("node-{}", std::process::id()));
    let io = SocketIo::new(io_config);
    // With the API on, events no application handler takes go to its subscribers.
    let hub = config
        .grpc
        .as_ref()
        .map(|_| grpc::Hub::new(&node_id, grpc::ACK_TIMEOUT));
    let hook: apps::Hook = match &hub {
        Some(h) => {
            let h = h.clone();
            Arc::new(move |s| h.install(s))
        }
        None => apps::no_hook(),
    };
    if config.test_handlers {
        apps::test_app::register(&io, &node_id, hook);
    } else if config.bench_handlers {
        apps::test_app::register_bench(&io, hook);
    } else if config.demo {
        apps::demo::register(&io, hook, !config.demo_api);
    } else {
        // A bare node: the main namespace accepts sockets; applications drive them
        // through the cluster (gRPC API, adapters).
        io.ns("/", move |s| hook(&s));
    }
    if let (Some(h), Some(root)) = (&hub, io.of("/")) {
        h.attach(&root);
    }
    let metrics = web::Metrics {
        io: io.clone(),
        cluster: cluster.clone(),
        hub: hub.clone(),
    };
    let handler = web::handler(&io, &config, metrics)?;
    let addr: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(config.host.as_str(), config.port))
                .ok()
                .and_then(|mut a| a.next())
                .context("no address")
        })
        .with_context(|| format!("invalid listen address {}:{}", config.host, config.port))?;
    let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, path = %config.io.engine.path, "skein node started");
    // Tests and scripts wait for this exact line.
    println!("listening on {local}");

    let (grpc_stop_tx, grpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(g) = &config.grpc {
        let addr = SocketAddr::new(local.ip(), g.port);
        let stop = async {
            let _ = grpc_stop_rx.await;
        };
        let hub = hub.clone().expect("the hub exists when the API is on");
        let api = grpc::Api::new(io.clone(), cluster.clone(), node_id.clone(), hub);
        let draining = async move {
            let _ = drain_rx.await;
        };
        let bound = grpc::serve(addr, api, g.tokens.clone(), g.tls.clone(), draining, stop).await?;
        tracing::info!(%bound, "gRPC API started");
        println!("grpc listening on {bound}");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = config.shutdown_grace;
    let nofile = limits::raise_nofile();
    let max_connections = config
        .max_connections
        .or(nofile.map(limits::max_connections_for));
    tracing::info!(
        ?max_connections,
        open_file_limit = ?nofile,
        header_timeout = ?config.header_timeout,
        "connection limits"
    );
    let serve_config = skein::http::ServeConfig {
        grace,
        header_timeout: Some(config.header_timeout),
        max_connections,
    };
    let server = tokio::spawn(skein::http::serve_with(
        listener,
        handler,
        async {
            let _ = stop_rx.await;
        },
        serve_config,
    ));
    shutdown_signal().await;
    tracing::info!(drain = ?config.drain_period, "shutting down");
    // Stop accepting (the load balancer's checks now fail), then move the clients off
    // gradually; with recovery on they resume their sessions on the other nodes.
    io.begin_drain();
    let _ = drain_tx.send(());
    let _ = stop_tx.send(());
    io.drain(config.drain_period).await;
    if let Some(h) = &hub {
        // Ends the Subscribe streams, so that the gRPC server can finish.
        h.close();
    }
    let _ = grpc_stop_tx.send(());
    io.close(grace).await;
    if let Some(f) = &cluster {
        f.goodbye();
        // What is queued (the goodbye, the last session writes) gets a moment to leave.
        let _ = tokio::time::timeout(grace, f.close()).await;
    }
    let _ = tokio::time::timeout(grace, server).await;
    tracing::info!("stopped");
    Ok(())
}

/// A listener with a deep accept queue: connection storms (a node restarting, a load
/// balancer moving clients) must not overflow the kernel's default backlog of 128.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
