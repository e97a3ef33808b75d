//! `outpost-provision`: keygen, build/sign, verify and inspect model bundles; install into
//! A/B slots, USB ingestion, status. Thin front end; the logic lives in the
//! `outpost_provision` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use outpost_models::format::to_hex;
use outpost_models::{TrustedKeys, VerifyOptions};

/// Options shared by `install` and `usb`.
#[derive(Debug, Args)]
struct DeviceOpts {
    /// The state directory holding the A/B slots.
    #[arg(long, default_value = "/var/lib/outpost")]
    state_dir: PathBuf,
    /// Directory of trusted *.pub keys (part of the image).
    #[arg(long, default_value = "/etc/outpost/keys")]
    keys: PathBuf,
    /// Accept development bundles and keys (development devices only).
    #[arg(long)]
    allow_development: bool,
    /// This device's class; the bundle must be built for it or for `any`.
    #[arg(long)]
    compatible: Option<String>,
}

impl DeviceOpts {
    fn load(&self) -> Result<(TrustedKeys, VerifyOptions)> {
        let keys = TrustedKeys::load_dir(&self.keys)
            .with_context(|| format!("loading trusted keys from {}", self.keys.display()))?;
        if keys.is_empty() {
            log::warn!(
                "no *.pub keys in {}: every bundle will be rejected",
                self.keys.display()
            );
        }
        let opts = VerifyOptions {
            allow_development: self.allow_development,
            expected_compatible: self.compatible.clone(),
        };
        Ok((keys, opts))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "outpost-provision",
    version,
    about = "Build, sign, verify, inspect and install Outpost model bundles"
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
        /// Add stage 2 from a directory written by the recipe's verifier_export.py
        /// (verifier.json and its three ONNX models); the bundle becomes format v2.
        #[arg(long, value_name = "DIR")]
        verifier: Option<PathBuf>,
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
    /// Verify a bundle and install it into the inactive slot (on trial until the daemon's
    /// self-test passes).
    Install {
        /// The bundle file (read once).
        bundle: PathBuf,
        #[command(flatten)]
        device: DeviceOpts,
    },
    /// Install the newest valid *.bundle from a mounted USB stick (run by the udev hook).
    Usb {
        /// Where the stick is mounted (read-only).
        mountpoint: PathBuf,
        #[command(flatten)]
        device: DeviceOpts,
    },
    /// Show the active slot, versions, anti-rollback floor, trial flag and recent audit records.
    Status {
        /// The state directory holding the A/B slots.
        #[arg(long, default_value = "/var/lib/outpost")]
        state_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// How many audit records to show.
        #[arg(long, default_value_t = 10)]
        last: usize,
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
        Command::Build {
            spec,
            key,
            out,
            verifier,
        } => {
            let r = outpost_provision::build(&spec, &key, &out, verifier.as_deref())?;
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
        Command::Install { bundle, device } => {
            let (keys, opts) = device.load()?;
            let r = outpost_provision::install(&bundle, &device.state_dir, &keys, &opts)
                .with_context(|| {
                    format!(
                        "installing {} into {}",
                        bundle.display(),
                        device.state_dir.display()
                    )
                })?;
            println!(
                "installed {} into slot {} of {} (on trial until the daemon's self-test passes)",
                r.meta.bundle,
                r.slot,
                device.state_dir.display()
            );
        }
        Command::Usb { mountpoint, device } => {
            let (keys, opts) = device.load()?;
            let r = outpost_provision::usb_install(&mountpoint, &device.state_dir, &keys, &opts)
                .with_context(|| {
                    format!(
                        "installing from {} into {}",
                        mountpoint.display(),
                        device.state_dir.display()
                    )
                })?;
            for d in &r.decisions {
                println!("{:<9} {}: {}", d.result, d.file.display(), d.reason);
            }
            if r.installed.is_none() {
                if r.decisions.is_empty() {
                    println!("no *.bundle files on {}", mountpoint.display());
                } else {
                    eprintln!("error: no bundle installed from {}", mountpoint.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Status {
            state_dir,
            json,
            last,
        } => print_status(&state_dir, json, last)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(state_dir: &Path, json: bool, last: usize) -> Result<()> {
    let s = outpost_provision::status(state_dir, last)
        .with_context(|| format!("reading the state of {}", state_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let active = s.state.active.map_or("none", |a| a.as_str());
    println!(
        "active   {active}{}",
        if s.state.trial { " (on trial)" } else { "" }
    );
    println!("floor    {}", s.state.floor);
    for slot in &s.slots {
        match &slot.meta {
            Some(m) => println!(
                "slot {}   {} key {} ({}){} installed {}",
                slot.slot,
                m.bundle,
                m.key_id,
                m.key_name,
                if m.development { " [development]" } else { "" },
                m.installed_at
            ),
            None => println!("slot {}   empty", slot.slot),
        }
    }
    for r in &s.state.rejected {
        println!("rejected {}: {}", r.bundle, r.reason);
    }
    for a in &s.audit {
        println!(
            "audit    {} {} {} {}{}",
            a.time,
            a.action,
            a.file.as_deref().unwrap_or("-"),
            a.result,
            a.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
