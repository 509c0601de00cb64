//! `cargo xtask image [--tag NAME]`: the container image, built offline.
//!
//! No registry is needed: the static binary is built as deploy/Dockerfile's build stage builds it
//! (`satmqtt_tests::static_build`), the CA bundle is the build machine's
//! `/etc/ssl/certs/ca-certificates.crt`, and the image is `FROM scratch` with those two files and
//! user 65532 (`satmqtt_tests::image::containerfile`), the same final layout as deploy/Dockerfile
//! (tests/tests/image.rs checks that). The engine is docker if its engine answers, else podman;
//! a docker client without a reachable daemon does not count.

use anyhow::bail;
use satmqtt_tests::image::{self, Engine, EngineKind, HOST_CA_BUNDLE};
use satmqtt_tests::static_build;
use satmqtt_tests::tools::is_root;

use crate::cmd;
use crate::install;

/// Builds the image and tags it `tag`.
pub fn run(tag: &str) -> anyhow::Result<()> {
    let engine = match Engine::detect() {
        Ok(engine) => engine,
        // As root, install podman and try again; otherwise say what to do.
        Err(_) if is_root() => {
            install::ensure(install::PODMAN)?;
            Engine::detect().map_err(anyhow::Error::msg)?
        }
        Err(problem) => bail!(problem),
    };
    println!("==> container engine: {}", engine.name());

    let root = cmd::root();
    println!("==> static build (deploy/Dockerfile's build stage, without a registry)");
    cmd::run(&mut static_build::command(&root))?;
    let binary = static_build::binary(&root);

    println!("==> image {tag}: FROM scratch + {} + the CA bundle {HOST_CA_BUNDLE} of this machine + USER {}", binary.display(), image::USER);
    let built = engine.build(&binary, tag).map_err(anyhow::Error::msg)?;
    let mib = built.size as f64 / (1024.0 * 1024.0);
    let e = engine.name();
    let short = tag.strip_prefix("docker.io/").unwrap_or(tag);
    println!(
        "\nimage {tag}\n  id    {}\n  size  {mib:.1} MiB ({} bytes)\n  user  {}, entrypoint {:?}",
        built.id, built.size, built.user, built.entrypoint
    );
    let load = if engine.kind == EngineKind::Docker {
        "kind load docker-image {tag}\n  k3d image import {tag}\n  minikube image load {tag}"
            .replace("{tag}", tag)
    } else {
        format!(
            "{e} save --format docker-archive -o pod-publisher.tar {tag}\n  \
             kind load image-archive pod-publisher.tar\n  \
             k3d image import pod-publisher.tar\n  \
             minikube image load pod-publisher.tar"
        )
    };
    println!(
        "\nload it into a local cluster (one of):\n  {load}\n\
         or push it to your registry:\n  \
         {e} tag {tag} REGISTRY/{short}\n  \
         {e} push REGISTRY/{short}\n  \
         (and set that name under `images:` in deploy/kustomization.yaml)\n\
         then apply:\n  kubectl apply -k deploy/ -n NAMESPACE"
    );
    Ok(())
}
