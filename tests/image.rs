//! The container image as far as it can be checked without a container engine: the
//! `Containerfile`'s stages, user and entrypoint; that the libraries and glibc symbol
//! versions the binary needs are what its distroless base ships; and that the image
//! name and tag are Cargo.toml's everywhere they appear.

use std::fs;
use std::path::Path;
use std::process::Command;

use regex::Regex;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = read("Containerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `[package.metadata.image] repository` from Cargo.toml.
fn image_repository() -> String {
    let cargo = read("Cargo.toml");
    let table = cargo
        .split("\n[package.metadata.image]\n")
        .nth(1)
        .expect("Cargo.toml has [package.metadata.image]");
    Regex::new(r#"(?m)^repository = "([^"]+)"$"#)
        .unwrap()
        .captures(table.split("\n[").next().unwrap())
        .expect("[package.metadata.image] has repository")[1]
        .to_string()
}

#[test]
fn containerfile_builds_for_the_target_arch_and_runs_as_nonroot() {
    let lines = instructions();
    let froms: Vec<&String> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    let rust = env!("CARGO_PKG_RUST_VERSION");
    assert_eq!(
        froms,
        [
            &format!(
                "FROM --platform=$BUILDPLATFORM docker.io/library/rust:{rust}-bookworm AS builder"
            ),
            &"FROM gcr.io/distroless/cc-debian12:nonroot".to_string(),
        ]
    );
    let last_stage = lines
        .iter()
        .skip_while(|l| !l.starts_with("FROM gcr.io/distroless"))
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        last_stage[1..],
        [
            "COPY --from=builder /out/posthorn /usr/local/bin/posthorn",
            "USER 65532:65532",
            r#"ENTRYPOINT ["/usr/local/bin/posthorn"]"#,
        ]
    );
    let build = lines.join("\n");
    assert!(build.contains("ARG TARGETARCH"), "{build}");
    for arch in [
        "amd64) triple=x86_64-unknown-linux-gnu",
        "arm64) triple=aarch64-unknown-linux-gnu",
    ] {
        assert!(build.contains(arch), "no {arch}");
    }
    assert!(build.contains("cargo build --release --locked --bin posthorn --target \"$triple\""));
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target"), "{ignore}");
}

/// distroless cc-debian12 ships glibc 2.36 and libgcc_s; nothing else the binary could
/// link (no OpenSSL: TLS is rustls).
#[test]
fn binary_needs_only_what_distroless_cc_ships() {
    const SHIPPED: &[&str] = &[
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    const GLIBC: (u32, u32) = (2, 36);
    let out = Command::new("readelf")
        .args(["--dynamic", "--dyn-syms", "-W"])
        .arg(env!("CARGO_BIN_EXE_posthorn"))
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{needed:?}");
    for lib in &needed {
        assert!(SHIPPED.contains(lib), "{lib} is not in distroless cc");
    }
    let versions = Regex::new(r"@GLIBC_(\d+)\.(\d+)").unwrap();
    let newest = versions
        .captures_iter(&text)
        .map(|c| (c[1].parse::<u32>().unwrap(), c[2].parse::<u32>().unwrap()))
        .max()
        .expect("glibc symbols");
    assert!(newest <= GLIBC, "the binary needs GLIBC_{newest:?}");
}

#[test]
fn image_name_and_tag_come_from_cargo_toml() {
    let repository = image_repository();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        posthorn::operator::DEFAULT_IMAGE,
        format!("{repository}:{version}")
    );
    let values: Value =
        serde_saphyr::from_str(&read("charts/posthorn/values.yaml")).expect("values.yaml");
    assert_eq!(values["image"]["repository"], repository.as_str());
    assert_eq!(values["image"]["tag"], "", "the tag defaults to appVersion");
    let chart: Value = serde_saphyr::from_str(&read("charts/posthorn/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"], version);
    // image/build.sh reads both from Cargo.toml rather than spelling them out.
    let build = read("image/build.sh");
    assert!(build.contains(r#"tag="$repository:$version""#));
    assert!(!build.contains(&format!("tag=\"{repository}")));
}
