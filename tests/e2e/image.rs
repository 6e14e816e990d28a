//! The image `make image` writes, and what it and the Dockerfile say of the container.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use reserve_testkit::{control_plane::text, tools::repo_root};
use serde_json::Value;

/// `target/image/reserve-operator-<version>.oci.tar`, which `make image` writes; None (after
/// saying why, past the harness's capture) where the image cannot be built.
pub fn image_archive() -> Option<PathBuf> {
    archive(env!("CARGO_PKG_VERSION"))
}

/// The same binary in a new image (`reserve-operator:<version>-prime`), for a rolling update
/// from this code to this code, as a new build of one release would roll out.
pub fn prime_archive() -> Option<PathBuf> {
    archive(&format!("{}-prime", env!("CARGO_PKG_VERSION")))
}

fn archive(tag: &str) -> Option<PathBuf> {
    let archive = repo_root().join(format!("target/image/reserve-operator-{tag}.oci.tar"));
    if !archive.is_file()
        && Command::new("sh")
            .args(["-c", "command -v buildah"])
            .output()
            .is_ok_and(|o| !o.status.success())
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping the image tests: no buildah here to build {}",
            archive.display()
        );
        return None;
    }
    assert!(
        archive.is_file(),
        "{} is missing: run `make test`, which builds it (hack/image.sh)",
        archive.display()
    );
    Some(archive)
}

/// What both the image and the Dockerfile say of the container.
#[derive(Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub ports: Vec<String>,
}

/// The configuration of the image in an OCI archive.
pub fn image_config(archive: &Path) -> ContainerConfig {
    let dir = reserve_testkit::watchdog().unique_path("image", "");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let blob = |digest: &str| -> Value {
        let path = dir.join("blobs").join(digest.replacen(':', "/", 1));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let c = &config["config"];
    let mut ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(p, _)| p.clone())
        .collect();
    ports.sort();
    ContainerConfig {
        user: c["User"].as_str().unwrap_or_default().to_owned(),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        ports,
    }
}

/// The final stage of a Dockerfile, as a container configuration.
pub fn dockerfile_config(dockerfile: &str) -> ContainerConfig {
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap_or(dockerfile);
    let instruction = |name: &str| {
        last_stage
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let list = |name: &str| -> Vec<String> {
        serde_json::from_str(&instruction(name)).unwrap_or_default()
    };
    let mut ports: Vec<String> = instruction("EXPOSE")
        .split_whitespace()
        .map(|p| {
            if p.contains('/') {
                p.to_owned()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    ports.sort();
    ContainerConfig {
        user: instruction("USER"),
        entrypoint: list("ENTRYPOINT"),
        cmd: list("CMD"),
        ports,
    }
}
