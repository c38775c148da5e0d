//! The options of `--adapter mesh`: checked here, with errors naming the option, so
//! that `--check-config` reports them without binding or connecting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::layers::Layers;
use super::{count_or, ms};

/// The cluster secret: never printed, not even in a `Debug` of the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A mesh node's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    /// `--host` with `--mesh-port`.
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub seeds: Vec<String>,
    pub data_dir: PathBuf,
    pub secret: Secret,
    pub voters: usize,
    pub gone_after: Duration,
    pub request_timeout: Duration,
}

pub(super) fn resolve(l: &mut Layers, host: &str) -> Option<MeshOptions> {
    let port = l.u16("mesh_port");
    if port.is_none() {
        l.error(
            "mesh_port",
            "mesh_port is required with adapter mesh (the port other nodes reach this one at)",
        );
    }
    let ip = host.parse::<IpAddr>().ok();
    if ip.is_none() {
        l.error(
            "host",
            format!("host must be an IP address with adapter mesh, got {host:?}"),
        );
    }
    let seeds = l.list("mesh_seeds").unwrap_or_default();
    let seeds: Vec<String> = seeds
        .iter()
        .flat_map(|s| skein_adapter_mesh::parse_seeds(s))
        .collect();
    if seeds.is_empty() {
        l.error(
            "mesh_seeds",
            "mesh_seeds is required with adapter mesh: host:port of the nodes, comma-separated, or a DNS name:port whose records are the nodes",
        );
    }
    for s in &seeds {
        let ok = s
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            l.error("mesh_seeds", format!("mesh_seeds: {s:?} is not host:port"));
        }
    }
    let data_dir = l.path("mesh_data");
    if data_dir.is_none() {
        l.error(
            "mesh_data",
            "mesh_data is required with adapter mesh (the directory of the node's Raft log and snapshots)",
        );
    }
    let secret = match (l.string("mesh_secret"), l.path("mesh_secret_file")) {
        (Some(s), None) => Some(s.trim().to_owned()),
        (_, Some(file)) => match std::fs::read_to_string(&file) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) => {
                l.error(
                    "mesh_secret_file",
                    format!("mesh_secret_file: cannot read {}: {e}", file.display()),
                );
                None
            }
        },
        (None, None) => {
            l.error(
                "mesh_secret_file",
                "mesh_secret_file (or mesh_secret) is required with adapter mesh: node-to-node calls are authenticated with the shared cluster secret",
            );
            None
        }
    };
    if let Some(s) = &secret {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
            l.error(
                "mesh_secret_file",
                "mesh_secret_file: the cluster secret must be non-empty printable ASCII without spaces",
            );
        }
    }
    let advertise = l.string("mesh_advertise");
    if let Some(a) = &advertise {
        let ok = a
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            l.error(
                "mesh_advertise",
                format!("mesh_advertise: {a:?} is not host:port"),
            );
        }
    } else if ip.is_some_and(|ip| ip.is_unspecified()) {
        l.error(
            "mesh_advertise",
            format!("mesh_advertise is required when host is {host} (the address other nodes reach this one at, e.g. $(POD_IP):7946)"),
        );
    }
    let voters = count_or(l, "mesh_voters", 3);
    if voters == 0 {
        l.error("mesh_voters", "mesh_voters must be at least 1");
    }
    let gone_after = ms(l, "mesh_gone_after", 15_000);
    let request_timeout = ms(l, "mesh_request_timeout", 5_000);
    Some(MeshOptions {
        listen: SocketAddr::new(ip?, port?),
        advertise,
        seeds,
        data_dir: data_dir?,
        secret: Secret(secret?),
        voters,
        gone_after,
        request_timeout,
    })
}
