//! The systemd units and the Debian files beside them, read as shipped: the system unit names
//! its config, so that the service user's home (`/var/lib/popfetch`) can never hold a config
//! that wins over `/etc`; README.Debian is shipped; no placeholder maintainer is left.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The arguments of a unit's `ExecStart=` after the program.
fn exec_start_args(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/popfetch"), "{line}");
    words.map(str::to_string).collect()
}

#[test]
fn the_system_unit_reads_etc_even_when_the_service_home_has_a_config() {
    let args = exec_start_args(&read("contrib/popfetch.service"));
    assert_eq!(args, ["-c", "/etc/popfetch/config.toml", "daemon"]);

    // The service's environment: HOME is the state directory, and a config lies in its
    // ~/.config. The unit's own arguments, with `check` for `daemon`, must not read it.
    let home = tempfile::tempdir().unwrap();
    let user_config = home.path().join(".config/popfetch/config.toml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    std::fs::write(&user_config, "not = \"the system config\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_popfetch"))
        .args(&args[..args.len() - 1])
        .arg("check")
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("POPFETCH_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains(&user_config.display().to_string())
            && !stdout.contains(&user_config.display().to_string()),
        "the unit read the home's config:\n{stdout}{stderr}"
    );
    if !Path::new("/etc/popfetch/config.toml").exists() {
        assert!(
            stderr.contains("/etc/popfetch/config.toml"),
            "the unit reads /etc: {stderr}"
        );
    }
}

#[test]
fn the_user_unit_names_the_users_config() {
    let args = exec_start_args(&read("contrib/popfetch-user.service"));
    assert_eq!(args, ["-c", "%E/popfetch/config.toml", "daemon"]);
}

#[test]
fn readme_debian_is_shipped_and_says_which_unit_and_who_delivers() {
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains(
            "[\"packaging/debian/README.Debian\", \"usr/share/doc/popfetch/README.Debian\", \"644\"]"
        ),
        "the .deb ships README.Debian"
    );
    let text = read("packaging/debian/README.Debian");
    for needle in [
        "systemctl --user",
        "/etc/popfetch/config.toml",
        "/var/lib/popfetch",
        "ReadWritePaths=",
        "mda",
        "user popfetch",
    ] {
        assert!(text.contains(needle), "README.Debian mentions {needle}");
    }
}

#[test]
fn the_maintainer_comes_from_one_variable_and_no_placeholder_ships() {
    for rel in [
        "Cargo.toml",
        "packaging/debian/changelog.in",
        "packaging/debian/copyright",
    ] {
        let text = read(rel);
        assert!(
            !text.contains("noreply") && !text.contains("maintainers@"),
            "{rel} names a placeholder address"
        );
    }
    assert!(
        !read("Cargo.toml").contains("\nmaintainer ="),
        "Cargo.toml names no maintainer: packaging/build-deb sets it"
    );
    assert!(read("packaging/debian/changelog.in").contains("\n -- @MAINTAINER@  "));
    let script = read("packaging/build-deb");
    assert!(script.contains("MAINTAINER=${POPFETCH_MAINTAINER:-}"));
    assert!(script.contains("cargo deb --maintainer \"$MAINTAINER\""));
    assert!(script.contains("trap 'rm -f target/packaging/changelog' EXIT"));

    // Without a maintainer the script refuses before building anything.
    let out = Command::new(repo().join("packaging/build-deb"))
        .env_remove("POPFETCH_MAINTAINER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("POPFETCH_MAINTAINER"));
}
