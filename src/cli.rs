//! Command-line interface of the `reserve-operator` binary.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::loyalty::LevelPolicy;

#[derive(Parser, Debug)]
#[command(
    name = "reserve-operator",
    version,
    about = "Derives coffee-chain loyalty levels for Customers from their Orders"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions (Customer, Order, Ledger) as YAML (manifests/crds/crds.yaml).
    Crds,
    /// Put back, on a cluster that lost them, the Ledgers, Customers and Orders of FILE (what
    /// `kubectl get ledgers,customers,orders -A -o json --show-managed-fields` saved; without
    /// --show-managed-fields an order applied from Git is no longer known as one), with what
    /// only the operator writes: each Order's level snapshot and each Customer's status. Acts
    /// as a restore identity of the admission policies (see --as, --as-group).
    Restore(RestoreArgs),
    /// After an upgrade from 0.1.0 (which stored v1alpha1): write every Customer, Order and
    /// Ledger again in the version stored now (v1), then set each CRD's status.storedVersions
    /// to v1 alone. For clusters without the in-tree storage version migration (Kubernetes
    /// 1.37 has it: apply manifests/migration instead). Safe to run while the operator runs
    /// and to run again.
    MigrateStorage,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The saved objects: a List as `kubectl get -o json` (or `-o yaml`) writes it.
    pub file: std::path::PathBuf,
    /// Act as this user (as kubectl's --as), e.g. `reserve-restore`.
    #[arg(long = "as")]
    pub as_user: Option<String>,
    /// Act in this group (as kubectl's --as-group; repeatable), e.g.
    /// `reserve.coffeechain.io:restore`.
    #[arg(long = "as-group")]
    pub as_groups: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "RESERVE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Level policy as NAME=MIN,... with the first MIN 0 and strictly increasing thresholds.
    #[arg(long, env = "RESERVE_LEVELS", default_value = crate::loyalty::DEFAULT_LEVELS, value_parser = parse_levels)]
    pub levels: LevelPolicy,

    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "RESERVE_PROBE_ADDR", default_value = "0.0.0.0:8080")]
    pub probe_addr: SocketAddr,

    /// Only reconcile while holding the Lease `reserve-operator` (on by default).
    #[arg(long, overrides_with = "no_leader_election", default_value_t = true)]
    pub leader_election: bool,

    /// Reconcile without a Lease (a single replica, or local runs).
    #[arg(long = "no-leader-election", overrides_with = "leader_election")]
    pub no_leader_election: bool,

    /// Namespace of the Lease (default: the operator's own namespace from its ServiceAccount,
    /// else the kubeconfig's namespace).
    #[arg(long, env = "RESERVE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Identity written into the Lease (default: the pod name from HOSTNAME, else
    /// `reserve-operator-<process id>`).
    #[arg(long, env = "RESERVE_IDENTITY")]
    pub identity: Option<String>,

    /// Settle Orders that have been Completed or Canceled for longer than this (e.g. `30d`,
    /// `12h`) into their customer's Ledger, and delete them; only in namespaces labelled
    /// `reserve.coffeechain.io/settlement=enabled`. Off unless set.
    #[arg(long, env = "RESERVE_SETTLE_AFTER", value_parser = parse_age)]
    pub settle_after: Option<std::time::Duration>,

    /// Log format.
    #[arg(long, env = "RESERVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How the watches get the objects that exist: `streaming` (a watch that sends them first,
    /// `sendInitialEvents`; needs the API server's WatchList feature), `paged` LISTs (500 at a
    /// time, any API server), or `auto`: streaming from Kubernetes 1.34 on, where WatchList is
    /// on by default, else paged.
    #[arg(long, env = "RESERVE_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,
}

impl RunArgs {
    pub fn leader_election(&self) -> bool {
        self.leader_election && !self.no_leader_election
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialList {
    Auto,
    Paged,
    Streaming,
}

impl InitialList {
    /// What `auto` means for an API server of this version (`None`: unknown).
    pub fn resolve(self, server: Option<(u32, u32)>) -> InitialList {
        match self {
            InitialList::Auto => match server {
                Some((major, minor)) if (major, minor) >= (1, 34) => InitialList::Streaming,
                _ => InitialList::Paged,
            },
            chosen => chosen,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_levels(s: &str) -> Result<LevelPolicy, String> {
    s.parse()
        .map_err(|e: crate::loyalty::PolicyError| e.to_string())
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let age = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not an age such as 30d, 12h or 90s: {e}"))?;
    if age.is_zero() {
        return Err("the settlement age must be more than 0".into());
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["reserve-operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let args = run_args(&[]).unwrap();
        assert_eq!(args.levels, LevelPolicy::default());
        assert!(args.leader_election());
        assert_eq!(args.probe_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(args.namespace, None);
        assert_eq!(args.settle_after, None);
        assert_eq!(args.initial_list, InitialList::Auto);
        assert_eq!(
            InitialList::Auto.resolve(Some((1, 37))),
            InitialList::Streaming
        );
        // 1.33 ships WatchList off; older servers do not have it.
        assert_eq!(InitialList::Auto.resolve(Some((1, 33))), InitialList::Paged);
        assert_eq!(InitialList::Auto.resolve(None), InitialList::Paged);
        assert_eq!(
            InitialList::Paged.resolve(Some((1, 37))),
            InitialList::Paged
        );
        assert_eq!(
            run_args(&["--initial-list", "streaming"])
                .unwrap()
                .initial_list,
            InitialList::Streaming
        );
    }

    #[test]
    fn settle_after_takes_an_age_and_names_what_is_wrong() {
        let args = run_args(&["--settle-after", "30d"]).unwrap();
        assert_eq!(
            args.settle_after,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        for bad in ["soon", "0s", "3 fortnights"] {
            let err = run_args(&["--settle-after", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--settle-after"), "{err}");
        }
    }

    #[test]
    fn leader_election_can_be_switched_off_and_on() {
        assert!(
            !run_args(&["--no-leader-election"])
                .unwrap()
                .leader_election()
        );
        assert!(
            run_args(&["--no-leader-election", "--leader-election"])
                .unwrap()
                .leader_election()
        );
    }

    #[test]
    fn bad_levels_are_a_usage_error_naming_the_problem() {
        let err = run_args(&["--levels", "Bronze=0,Silver=0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("\"Silver\"=0 comes after \"Bronze\"=0"),
            "{err}"
        );
    }
}
