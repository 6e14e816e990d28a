//! `reserve-operator migrate-storage`: every Customer, Order and Ledger written again in the
//! version the API server stores now, then each CRD's `status.storedVersions` set to that
//! version alone; for clusters without the in-tree storage version migration (Kubernetes 1.37
//! has it: a `StorageVersionMigration` per resource does the same).
//!
//! Each object gets the patch the in-tree migrator sends: its apiVersion, kind and
//! resourceVersion, nothing else. The API server writes it again in the storage version (an
//! object already stored so is not written at all); a conflict means someone wrote the object
//! meanwhile, which stored it in the storage version too. No spec, label or status changes, so
//! the operator, which sees each rewrite, writes nothing for it.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::crd::{GROUP, VERSION};

/// The kinds written again, by plural.
const KINDS: [(&str, &str); 3] = [
    ("customers", "Customer"),
    ("orders", "Order"),
    ("ledgers", "Ledger"),
];

/// Objects patched at once.
const CONCURRENCY: usize = 16;

/// What the migration did to one kind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Migrated {
    pub plural: &'static str,
    /// Objects listed.
    pub objects: usize,
    /// Written again (their resourceVersion moved).
    pub rewritten: usize,
    /// Written by someone else meanwhile (a conflict): stored in the new version already.
    pub changed_meanwhile: usize,
    /// Deleted meanwhile.
    pub gone: usize,
    pub seconds: f64,
    /// `status.storedVersions` afterwards.
    pub stored_versions: Vec<String>,
}

/// Writes every object of the three kinds again, then sets each CRD's stored versions to
/// [`VERSION`].
pub async fn migrate(client: &Client) -> Result<Vec<Migrated>, String> {
    let mut report = Vec::new();
    for (plural, kind) in KINDS {
        report.push(migrate_kind(client, plural, kind).await?);
    }
    Ok(report)
}

async fn migrate_kind(
    client: &Client,
    plural: &'static str,
    kind: &str,
) -> Result<Migrated, String> {
    let started = Instant::now();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("{plural}.{GROUP}");
    let crd = crds
        .get(&name)
        .await
        .map_err(|e| format!("reading the CRD {name}: {e}"))?;
    let storage = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| v.name.clone())
        .unwrap_or_default();
    if storage != VERSION {
        return Err(format!(
            "the CRD {name} stores {storage}, not {VERSION}: apply this release's \
             CustomResourceDefinitions first"
        ));
    }
    let resource = ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut objects = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(|e| format!("listing {plural}: {e}"))?;
        objects.extend(page.items.into_iter().map(|o| {
            (
                o.namespace().unwrap_or_default(),
                o.name_any(),
                o.resource_version().unwrap_or_default(),
            )
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let mut migrated = Migrated {
        plural,
        objects: objects.len(),
        ..Migrated::default()
    };
    let results: Vec<Result<Outcome, String>> = stream::iter(objects)
        .map(|(namespace, name, version)| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, &resource);
            let api_version = resource.api_version.clone();
            async move { rewrite(&api, &api_version, kind, &name, &version).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for result in results {
        match result? {
            Outcome::Rewritten => migrated.rewritten += 1,
            Outcome::Unchanged => {}
            Outcome::ChangedMeanwhile => migrated.changed_meanwhile += 1,
            Outcome::Gone => migrated.gone += 1,
        }
    }
    // Every object is stored in the storage version now: the older ones need not be served
    // from storage any more.
    let patch = json!({ "status": { "storedVersions": [VERSION] } });
    let updated = crds
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("setting the stored versions of {name}: {e}"))?;
    migrated.stored_versions = updated
        .status
        .map(|s| s.stored_versions.unwrap_or_default())
        .unwrap_or_default();
    migrated.seconds = started.elapsed().as_secs_f64();
    Ok(migrated)
}

enum Outcome {
    Rewritten,
    Unchanged,
    ChangedMeanwhile,
    Gone,
}

/// The in-tree migrator's patch: apiVersion, kind and resourceVersion, conditional on that
/// version; retried on a server's error.
async fn rewrite(
    api: &Api<DynamicObject>,
    api_version: &str,
    kind: &str,
    name: &str,
    version: &str,
) -> Result<Outcome, String> {
    let patch = json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": { "resourceVersion": version },
    });
    let mut delay = Duration::from_millis(200);
    loop {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(written) if written.resource_version().as_deref() == Some(version) => {
                return Ok(Outcome::Unchanged);
            }
            Ok(_) => return Ok(Outcome::Rewritten),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(Outcome::ChangedMeanwhile);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Outcome::Gone),
            Err(kube::Error::Api(status)) if status.code < 500 && status.code != 429 => {
                return Err(format!("rewriting {kind} {name}: {}", status.message));
            }
            Err(error) if delay > Duration::from_secs(30) => {
                return Err(format!("rewriting {kind} {name}: {error}"));
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
