//! The quick start of README.md (`make demo`, i.e. hack/demo.sh) runs end to end, shows the
//! customers reaching their levels and leaves no process behind.

use std::process::Command;

/// Rows of the final `kubectl get customers,orders` table, as (name, score, level).
fn final_customers(output: &str) -> Vec<(String, String, String)> {
    let final_table = output.rsplit("== Final state").next().unwrap_or_default();
    final_table
        .lines()
        .filter_map(|line| line.strip_prefix("customer.reserve.coffeechain.io/"))
        .map(|row| {
            // NAME, DISPLAY NAME (two words), SCORE, LEVEL, TO NEXT, COMPLETED, READY, AGE
            let cols: Vec<&str> = row.split_whitespace().collect();
            let n = cols.len();
            (
                cols[0].to_owned(),
                cols[n - 6].to_owned(),
                cols[n - 5].to_owned(),
            )
        })
        .collect()
}

/// `reserve-cluster`, built beside this test by `cargo test --workspace` (`make test`).
fn cluster_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("reserve-cluster");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (make test)",
        bin.display()
    );
    bin
}

/// hack/demo.sh as `make demo` runs it, with `keep` as KEEP=1.
fn demo(state: &std::path::Path, keep: bool) -> std::process::Output {
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new("bash");
    command
        .arg(format!("{repo}/hack/demo.sh"))
        .env(
            "RESERVE_OPERATOR_BIN",
            env!("CARGO_BIN_EXE_reserve-operator"),
        )
        .env("RESERVE_CLUSTER_BIN", cluster_bin())
        .env("RESERVE_CLUSTER_DIR", state.join("cluster"));
    if keep {
        command.env("KEEP", "1");
    } else {
        command.env_remove("KEEP");
    }
    command.output().expect("hack/demo.sh runs")
}

#[test]
fn demo_shows_customers_reaching_their_levels() {
    let state = reserve_testkit::watchdog().unique_path("demo", "");
    std::fs::create_dir_all(&state).unwrap();
    // KEEP=1 leaves the control plane up and says how to stop it; a second demo starts from
    // a new one all the same.
    let kept = demo(&state, true);
    let stdout = String::from_utf8_lossy(&kept.stdout);
    assert!(
        kept.status.success(),
        "KEEP=1 demo failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    assert!(
        stdout.contains("stop it with: make demo-down") && state.join("cluster").exists(),
        "{stdout}"
    );
    let output = demo(&state, false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let mut customers = final_customers(&stdout);
    customers.sort();
    let expected: Vec<(String, String, String)> = [
        ("alice", "12", "Gold"),
        ("bob", "1", "Bronze"),
        ("carol", "2", "Bronze"),
        ("dana", "0", "Bronze"),
    ]
    .iter()
    .map(|(n, s, l)| (n.to_string(), s.to_string(), l.to_string()))
    .collect();
    assert_eq!(customers, expected, "final table in:\n{stdout}");
    assert!(
        stdout.contains("level Silver -> Gold (score 12)"),
        "LevelChanged events listed:\n{stdout}"
    );
    assert!(
        stdout.contains("spec.state cannot change from Canceled to Completed"),
        "{stdout}"
    );

    // Nothing left running: the control plane's state directory is gone with its pid files,
    // and no process still uses it.
    assert!(
        !state.join("cluster").exists(),
        "the demo left its control plane directory behind"
    );
    let leftovers = Command::new("pgrep")
        .args(["-f", &state.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}
