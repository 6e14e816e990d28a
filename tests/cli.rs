//! The binary's command line: usage errors exit with code 2 and name the problem.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reserve-operator"))
        .args(args)
        .env_remove("RESERVE_LEVELS")
        .output()
        .unwrap()
}

#[test]
fn bad_level_policies_exit_2_naming_the_problem() {
    for (levels, message) in [
        (
            "Bronze=0,Silver=5,Gold=5",
            "thresholds must increase: level \"Gold\"=5 comes after \"Silver\"=5",
        ),
        (
            "Bronze=1",
            "the first level \"Bronze\" must start at 0, not 1",
        ),
        ("Bronze=0,Bronze=5", "level \"Bronze\" appears twice"),
        ("Bronze=0,=5", "empty name"),
        (
            "Bronze=0,Silver=lots",
            "level \"Silver\" has threshold \"lots\"",
        ),
        ("", "the level policy is empty"),
    ] {
        let out = run(&["run", "--levels", levels]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--levels {levels:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "--levels {levels:?}: {stderr:?} should contain {message:?}"
        );
        assert!(stderr.contains("--levels"), "names the flag: {stderr}");
    }
}

#[test]
fn the_policy_can_come_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_reserve-operator"))
        .args(["run"])
        .env("RESERVE_LEVELS", "Bronze=0,Silver=3,Silver=4")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("level \"Silver\" appears twice"));
}

#[test]
fn unknown_flags_and_bad_values_exit_2() {
    for args in [
        &["run", "--no-such-flag"][..],
        &["run", "--log-format", "xml"],
        &["run", "--probe-addr", "not-an-address"],
        &["frobnicate"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn crds_prints_both_definitions() {
    let out = run(&["crds"]);
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("name: customers.reserve.coffeechain.io")
            && yaml.contains("name: orders.reserve.coffeechain.io")
    );
}
