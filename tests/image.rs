//! The container image as far as it can be checked without a container engine: the
//! `Containerfile`'s stages, user and entrypoint; that the libraries and glibc symbol
//! versions the binary needs are what its distroless base ships; that the image
//! name and tag are Cargo.toml's everywhere they appear; and the image that
//! `image/build.sh` builds with buildah (no engine: FROM scratch, no RUN).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::chart::{repo, run};
use regex::Regex;
use serde_json::Value;

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

/// `sha256:<hex>` of `bytes`.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A blob of the OCI layout at `layout` named by `descriptor`, after checking its size
/// and digest against the descriptor.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let name = descriptor["digest"].as_str().expect("a digest");
    let bytes = fs::read(layout.join("blobs").join(name.replace(':', "/")))
        .unwrap_or_else(|e| panic!("blob {name}: {e}"));
    assert_eq!(
        Some(bytes.len() as u64),
        descriptor["size"].as_u64(),
        "{name}"
    );
    assert_eq!(digest(&bytes), name);
    bytes
}

/// `bytes` decompressed by gzip.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), bytes).unwrap();
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(file.path())
        .output()
        .expect("gzip runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every path under `dir`, relative to it.
fn walk(dir: &Path, base: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        into.push(path.strip_prefix(base).unwrap().to_path_buf());
        if path.is_dir() && !path.is_symlink() {
            walk(&path, base, into);
        }
    }
}

/// image/build.sh with buildah (as root), from this test build's binary: a valid OCI
/// layout (every blob's size and digest, each layer's diff ID; skopeo reads it) whose
/// config runs the binary as 65532:65532; a root filesystem with no shell and nothing
/// executable but the binary and its shared objects; and the binary runs inside it,
/// in a chroot as uid 65532, so with the image's own loader and libraries only.
#[test]
fn build_sh_image_runs_its_binary_as_nonroot_without_a_shell() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("oci");
    let version = env!("CARGO_PKG_VERSION");
    let printed = run(Command::new("bash")
        .arg(repo().join("image/build.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_posthorn"), "--out"])
        .arg(&out)
        // A store of its own: no other build's images, removed with the test.
        .env("POSTHORN_IMAGE_STORE", tmp.path().join("store"))
        .current_dir(repo()));
    assert_eq!(printed.trim(), format!("{}:{version}", out.display()));

    let layout: Value = serde_json::from_slice(&fs::read(out.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let descriptor = &manifests[0];
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        version
    );
    let manifest: Value = serde_json::from_slice(&blob(&out, descriptor)).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config: Value = serde_json::from_slice(&blob(&out, &manifest["config"])).unwrap();
    assert_eq!(
        (&config["os"], &config["architecture"]),
        (&"linux".into(), &"amd64".into())
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/posthorn"])
    );
    assert!(
        config["config"]["Cmd"].as_array().is_none_or(Vec::is_empty),
        "{config}"
    );
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let bytes = blob(&out, layer);
        let tar = match layer["mediaType"].as_str().unwrap() {
            "application/vnd.oci.image.layer.v1.tar" => bytes,
            "application/vnd.oci.image.layer.v1.tar+gzip" => gunzip(&bytes),
            other => panic!("layer media type {other}"),
        };
        assert_eq!(digest(&tar), diff_id.as_str().unwrap());
    }
    let inspected: Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{version}", out.display()))))
    .unwrap();
    assert_eq!(inspected["Architecture"], "amd64");

    // The root filesystem as a runtime lays it out (umoci keeps owners when root).
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{version}", out.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let mut paths = Vec::new();
    walk(&rootfs, &rootfs, &mut paths);
    for path in &paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            ![
                "sh", "bash", "dash", "ash", "busybox", "zsh", "ksh", "su", "apt", "dpkg"
            ]
            .contains(&name),
            "{} in the image",
            path.display()
        );
        let meta = fs::symlink_metadata(rootfs.join(path)).unwrap();
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            assert!(
                path == Path::new("usr/local/bin/posthorn") || name.contains(".so"),
                "{} is executable",
                path.display()
            );
        }
    }
    for dir in ["var/lib/posthorn", "home/nonroot"] {
        let meta = fs::metadata(rootfs.join(dir)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65532, 65532), "{dir}");
    }

    // chroot: only the image's files exist, so its loader and libraries run the binary.
    let env: Vec<(String, String)> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let in_image = |args: &[&str]| {
        // env_clear: the image's Env only (PATH too, hence chroot by its path).
        run(Command::new("/usr/sbin/chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .arg("/usr/local/bin/posthorn")
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v))))
    };
    assert_eq!(in_image(&["--version"]), format!("posthorn {version}\n"));
    // A real command: the example manifest rendered inside the image, as on the host.
    fs::copy(
        repo().join("examples/mailserver.yaml"),
        rootfs.join("tmp/mailserver.yaml"),
    )
    .unwrap();
    let host = run(Command::new(env!("CARGO_BIN_EXE_posthorn"))
        .args(["render", "-f", "examples/mailserver.yaml"])
        .current_dir(repo()));
    assert_eq!(in_image(&["render", "-f", "/tmp/mailserver.yaml"]), host);
}
