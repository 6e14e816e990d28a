//! `kubectl reserve`: a kubectl plugin (the binary `kubectl-reserve` on PATH) that shows one
//! customer's page and the operator's health, each in one command. It only reads.

mod error;
pub mod page;
pub mod status;

pub use error::PluginError;

use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client,
    api::{ListParams, ObjectList},
};
use serde::Serialize;

use crate::crd::{Customer, Ledger, Order};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl reserve",
    version,
    about = "Coffee-chain loyalty at a glance: a customer's page, the operator's health"
)]
pub struct PluginCli {
    #[command(subcommand)]
    pub command: PluginCommand,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// The kubeconfig to use (as kubectl's; default: $KUBECONFIG, then ~/.kube/config, then
    /// in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (as kubectl's).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// One customer's page: level, score, the next level and the points to it, every order
    /// (product, quantity, state, phase, the level snapshot), the settled history from the
    /// Ledger, the Ready condition and the last level changes. For a name only orders use,
    /// says it is not a member and shows those orders.
    Customer {
        /// The customer's metadata.name.
        name: String,
        /// The customer's namespace (default: the kubeconfig's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// The operator: which replica holds the Lease and since when it renewed it, and every
    /// replica's readiness with the reason its /readyz gives (read through the API server's pod
    /// proxy), its restarts and whether it leads.
    Status {
        /// The operator's namespace.
        #[arg(short = 'n', long, default_value = "reserve-system")]
        namespace: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// Runs `cli` with `client` (`namespace`: the kubeconfig's); returns what to print.
pub async fn run(cli: PluginCli, client: Client, namespace: &str) -> Result<String, PluginError> {
    match cli.command {
        PluginCommand::Customer {
            name,
            namespace: ns,
        } => {
            let ns = ns.as_deref().unwrap_or(namespace);
            let page = customer_page(&client, ns, &name).await?;
            Ok(format(cli.output, &page, page::render))
        }
        PluginCommand::Status { namespace } => {
            let status = status::read(&client, &namespace).await?;
            Ok(format(cli.output, &status, status::render))
        }
    }
}

fn format<T: Serialize>(format: Format, value: &T, text: fn(&T) -> String) -> String {
    match format {
        Format::Text => text(value),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(value).expect("a page serialises");
            json.push('\n');
            json
        }
        Format::Yaml => serde_saphyr::to_string(value).expect("a page serialises"),
    }
}

async fn customer_page(client: &Client, ns: &str, name: &str) -> Result<page::Page, PluginError> {
    let customers: Api<Customer> = Api::namespaced(client.clone(), ns);
    let customer = customers
        .get_opt(name)
        .await
        .map_err(PluginError::read(format!("customer {ns}/{name}")))?;
    // The orders of one customer, selected by the API server (spec.customer is selectable).
    let orders: ObjectList<Order> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("spec.customer={name}")))
        .await
        .map_err(PluginError::read(format!("the orders of {ns}/{name}")))?;
    let ledger = Api::<Ledger>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(PluginError::read(format!("the ledger {ns}/{name}")))?;
    let events: ObjectList<Event> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Customer,involvedObject.name={name},reason=LevelChanged"
        )))
        .await
        .map_err(PluginError::read(format!("the events of {ns}/{name}")))?;
    Ok(page::page(
        ns,
        name,
        customer.as_ref(),
        &orders.items,
        ledger.as_ref(),
        &events.items,
    )?)
}
