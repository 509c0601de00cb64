//! `cargo xtask`: the project's developer commands (`cargo xtask --help` lists them).
//!
//! Commands that need mosquitto install it with apt when run as root, and otherwise print the
//! command to run.

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod image;
mod install;
mod nostd;
mod pipeline;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The project's developer commands.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run mosquitto, the pod publisher (10 messages, QoS 1) and a subscriber; check what
    /// arrived. With `--auth k8s-sat`: mosquitto with the K8S-SAT plugin, 20 messages and a
    /// kubelet-style token rotation on one connection (re-authentication).
    Demo {
        /// Login scheme: `sat` (user `$sat`, token as password) or `k8s-sat` (enhanced auth).
        #[arg(long, default_value = "sat", value_parser = ["sat", "k8s-sat"])]
        auth: String,
    },
    /// cargo fmt --check, clippy -D warnings, the workspace tests, doc tests, then `nostd`.
    Test,
    /// Build nostd-check/ (no_std staticlib) and check that no allocator is linked.
    Nostd,
    /// Flash and static RAM of the core; writes docs/footprint.md.
    Size,
    /// Throughput, CPU, RSS, allocations vs the raw limit, rumqttc, Paho C, mosquitto_pub;
    /// writes docs/benchmarks.md and docs/bench.svg (about 5 minutes).
    Bench {
        /// Passed to `satmqtt-bench run` (e.g. --variant before=PATH, --reps 5; --only TLS runs
        /// just the matching throughput rows and leaves the docs alone).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        extra: Vec<String>,
    },
    /// The container image (FROM scratch, static binary, CA bundle, user 65532), built offline
    /// with podman or docker.
    Image {
        /// The image's name.
        #[arg(long, default_value = satmqtt_tests::image::DEFAULT_TAG)]
        tag: String,
    },
    /// Run the cargo-fuzz targets N seconds each; needs nightly and cargo-fuzz.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// One target to run instead of all of them.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(fuzz::TARGETS))]
        target: Option<String>,
    },
    // More subcommands: a variant here and its arm in `main`.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo { auth } => demo::run(auth == "k8s-sat"),
        Task::Test => pipeline::run(),
        Task::Nostd => nostd::run(),
        Task::Size => size::run(),
        Task::Bench { extra } => bench::run(&extra),
        Task::Image { tag } => image::run(&tag),
        Task::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_passes_its_arguments_through() {
        let args = ["--variant", "before=/tmp/x", "--reps", "5", "--only", "TLS"];
        let cli = Cli::try_parse_from(["cargo-xtask", "bench"].iter().chain(&args))
            .expect("bench arguments parse");
        let Task::Bench { extra } = cli.task else {
            panic!("not bench")
        };
        assert_eq!(extra, args);
    }

    #[test]
    fn image_takes_a_tag_or_the_default() {
        let Task::Image { tag } = Cli::try_parse_from(["cargo-xtask", "image"])
            .expect("image")
            .task
        else {
            panic!("not image")
        };
        assert_eq!(tag, satmqtt_tests::image::DEFAULT_TAG);
        let Task::Image { tag } = Cli::try_parse_from(["cargo-xtask", "image", "--tag", "x/y:1"])
            .expect("image --tag")
            .task
        else {
            panic!("not image")
        };
        assert_eq!(tag, "x/y:1");
    }

    #[test]
    fn fuzz_takes_seconds_and_one_known_target() {
        let Task::Fuzz { seconds, target } = Cli::try_parse_from(["cargo-xtask", "fuzz"])
            .expect("fuzz")
            .task
        else {
            panic!("not fuzz")
        };
        assert_eq!((seconds, target), (fuzz::DEFAULT_SECONDS, None));
        let Task::Fuzz { seconds, target } =
            Cli::try_parse_from(["cargo-xtask", "fuzz", "--seconds", "5", "token"])
                .expect("fuzz --seconds 5 token")
                .task
        else {
            panic!("not fuzz")
        };
        assert_eq!((seconds, target.as_deref()), (5, Some("token")));
        assert!(Cli::try_parse_from(["cargo-xtask", "fuzz", "tokn"]).is_err());
        assert!(Cli::try_parse_from(["cargo-xtask", "fuzz", "--seconds", "0"]).is_err());
    }

    #[test]
    fn unknown_commands_are_refused() {
        assert!(Cli::try_parse_from(["cargo-xtask", "tset"]).is_err());
        assert!(Cli::try_parse_from(["cargo-xtask"]).is_err());
    }
}
