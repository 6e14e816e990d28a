//! The first steps of someone who just cloned the repository, without a cluster: the tool
//! scripts say which Go they need and where to get it, and `make dev` builds only what it uses.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// hack/control-plane-tools.sh with `path` as PATH and an empty tools cache.
fn build_tools(path: &str) -> (bool, String) {
    let cache = reserve_testkit::watchdog().unique_path("tools-cache", "");
    let out = Command::new("bash")
        .arg(format!("{REPO}/hack/control-plane-tools.sh"))
        .env("PATH", path)
        .env("RESERVE_TOOLS_DIR", &cache)
        .env_remove("GOTOOLCHAIN")
        .output()
        .expect("the script runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `go` that answers as Go `version` does, and builds nothing.
fn fake_go(version: &str) -> std::path::PathBuf {
    let dir = reserve_testkit::watchdog().unique_path("fake-go", "");
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    std::fs::write(
        &go,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  version) echo 'go version {version} linux/amd64' ;;\n  \
             env) echo '{version}' ;;\n  *) echo 'fake go: nothing built' >&2; exit 1 ;;\nesac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn the_tools_say_which_go_they_need_and_where_to_get_it() {
    let system = "/usr/bin:/bin";
    let no_go = !Path::new("/usr/bin/go").exists() && !Path::new("/bin/go").exists();
    if no_go {
        let (ok, said) = build_tools(system);
        assert!(!ok);
        assert!(
            said.contains("none is on PATH") && said.contains("https://go.dev/dl/"),
            "{said}"
        );
    }
    // Debian 12's golang-go cannot fetch the pinned toolchain.
    let old = fake_go("go1.19.8");
    let (ok, said) = build_tools(&format!("{}:{system}", old.display()));
    assert!(!ok, "{said}");
    assert!(
        said.contains("go1.19.8 cannot build") && said.contains("https://go.dev/dl/"),
        "{said}"
    );
}

#[test]
fn make_dev_builds_only_the_control_plane() {
    let out = Command::new("make")
        .args(["-n", "dev"])
        .current_dir(REPO)
        .output()
        .expect("make runs");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(plan.contains("hack/control-plane-tools.sh"), "{plan}");
    for unused in ["--node", "ecosystem-tools", "image.sh"] {
        assert!(!plan.contains(unused), "make dev runs {unused}:\n{plan}");
    }
}
