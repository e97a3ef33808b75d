//! `outpost-provision`: keygen, build/sign, verify and inspect model bundles.
//! Thin front end; the logic lives in the `outpost_provision` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use outpost_models::format::to_hex;

#[derive(Debug, Parser)]
#[command(
    name = "outpost-provision",
    version,
    about = "Build, sign, verify and inspect Outpost model bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an Ed25519 key pair: DIR/NAME.pk8 (private, mode 0600) and DIR/NAME.pub.
    Keygen {
        /// Directory to write the key files into (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// Key name: 1..=64 characters of [A-Za-z0-9._-].
        #[arg(long)]
        name: String,
        /// Mark the key as a development key (its bundles are refused in production).
        #[arg(long)]
        development: bool,
    },
    /// Build and sign a bundle from a TOML spec (manifest without `files`, plus [[payload]]).
    Build {
        /// The bundle spec (TOML). Payload paths are relative to its directory; ${VAR} expands.
        #[arg(long)]
        spec: PathBuf,
        /// The private key (KEY.pk8); KEY.pub must sit next to it.
        #[arg(long)]
        key: PathBuf,
        /// Output bundle file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle against trusted keys; exit 0 if it is good, 1 otherwise.
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        /// Directory of trusted *.pub keys.
        #[arg(long)]
        keys: PathBuf,
        /// Accept development bundles and keys.
        #[arg(long)]
        allow_development: bool,
        /// This device's class; the bundle must be built for it or for `any`.
        #[arg(long)]
        compatible: Option<String>,
    },
    /// Show a bundle's header, manifest and key id (signature NOT verified unless --keys).
    Inspect {
        /// The bundle file.
        bundle: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also verify against the *.pub keys in this directory (exit 1 if it fails).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keygen {
            out_dir,
            name,
            development,
        } => {
            let r = outpost_provision::keygen(&out_dir, &name, development)?;
            let kind = if development {
                "development"
            } else {
                "production"
            };
            println!(
                "key id   {} ({}, {kind})",
                r.public_key.key_id, r.public_key.name
            );
            println!("private  {} (keep secret)", r.private_key.display());
            println!("public   {}", r.public_key_file.display());
        }
        Command::Build { spec, key, out } => {
            let r = outpost_provision::build(&spec, &key, &out)?;
            let dev = if r.key.development {
                ", development"
            } else {
                ""
            };
            println!("built    {} ({} bytes)", r.out.display(), r.size);
            println!("bundle   {}", r.bundle_id);
            println!("key id   {} ({}{dev})", r.key.key_id, r.key.name);
            for f in &r.files {
                println!(
                    "file     {:<24} {:>10} bytes  sha256 {}",
                    f.name, f.len, f.sha256
                );
            }
        }
        Command::Verify {
            bundle,
            keys,
            allow_development,
            compatible,
        } => {
            let v = outpost_provision::verify(
                &bundle,
                &keys,
                allow_development,
                compatible.as_deref(),
            )?;
            println!("{}", outpost_provision::verify_ok_line(&v));
            log::debug!("manifest sha256 {}", to_hex(&v.manifest_sha256));
        }
        Command::Inspect { bundle, json, keys } => {
            let i = outpost_provision::inspect(&bundle, keys.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i.to_json()?)?);
            } else {
                print!("{}", i.to_text());
            }
            if i.failed_verification() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
