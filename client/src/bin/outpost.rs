//! `outpost`: command-line client of an Outpost device. See the README for usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use outpost_client::cli::{
    connect, print_summary, read_audio, reload, send, status, SendOptions, Target,
};

#[derive(Debug, Parser)]
#[command(
    name = "outpost",
    version,
    about = "Client of an Outpost voice-command device"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Conn {
    /// Serial device (or the PTY path printed by `outpostd --pty`).
    #[arg(long)]
    serial: Option<String>,
    /// Unix socket of a local outpostd.
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stream a WAV (or raw s16le 16 kHz mono from stdin with `-`) and print detections
    /// and a latency summary. A WAV of another rate, channel count or sample format
    /// (8-32-bit integer, 32-bit float) is converted to 16 kHz mono 16-bit first.
    Send {
        /// WAV file, or `-` for raw s16le 16 kHz mono on stdin.
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
        /// Baud rate for --serial.
        #[arg(long, default_value_t = 921_600)]
        baud: u32,
        /// Pace frames in real time (80 ms each) instead of as fast as answers come.
        #[arg(long)]
        realtime: bool,
        /// One JSON object per line (detections, then a summary).
        #[arg(long)]
        json: bool,
        /// Per-frame deadline in ms (default: the device's).
        #[arg(long)]
        deadline_ms: Option<u32>,
        /// Silence appended after the audio, in ms.
        #[arg(long, default_value_t = 1000)]
        tail_ms: u32,
    },
    /// Boot the newly installed A/B slot and switch to it without dropping connections
    /// (Unix socket, root or the daemon's user only).
    Reload {
        /// Unix socket of the local outpostd.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Print the device's status: bundle, providers, traffic, per-stage latency vs budget.
    Status {
        #[command(flatten)]
        conn: Conn,
        /// Baud rate for --serial.
        #[arg(long, default_value_t = 921_600)]
        baud: u32,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn target(c: Conn, baud: u32) -> Target {
    match (c.serial, c.socket) {
        (Some(s), _) => Target::Serial(s, baud),
        (None, Some(p)) => Target::Socket(p),
        (None, None) => unreachable!("clap requires one"),
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match Cli::parse().cmd {
        Cmd::Send {
            file,
            conn,
            baud,
            realtime,
            json,
            deadline_ms,
            tail_ms,
        } => {
            // In the order a person needs the errors: a missing file first, then a device
            // that does not answer, and only then the (possibly slow) conversion.
            let stdin = file == Path::new("-");
            if !stdin && !file.exists() {
                bail!("no such file: {}", file.display());
            }
            let mut client = connect(&target(conn, baud), Duration::from_millis(10))?;
            let audio = read_audio(&file)?;
            let name = if stdin {
                "stdin".to_string()
            } else {
                file.display().to_string()
            };
            if let Some(from) = audio.converted_from {
                eprintln!("note: {name} converted from {from} to 16000 Hz mono 16-bit");
            }
            if stdin {
                eprintln!(
                    "note: {} samples ({:.2} s) read from stdin",
                    audio.pcm.len(),
                    audio.pcm.len() as f64 / 16_000.0
                );
            }
            let pcm = audio.pcm;
            let opts = SendOptions {
                realtime,
                deadline_us: deadline_ms.unwrap_or(0) * 1000,
                tail_ms,
                json,
                stream_id: 1,
            };
            let s = send(&mut client, &pcm, &opts, &mut out)?;
            if json {
                writeln!(out, "{}", s.to_json())?;
            } else {
                print_summary(&s, &mut out)?;
            }
            if let Some(why) = s.failure() {
                out.flush()?;
                bail!("send failed: {why}");
            }
        }
        Cmd::Reload { socket } => {
            let mut client = connect(&Target::Socket(socket), Duration::from_secs(2))?;
            reload(&mut client, &mut out)?;
        }
        Cmd::Status { conn, baud, json } => {
            let mut client = connect(&target(conn, baud), Duration::from_secs(2))?;
            status(&mut client, json, &mut out)?;
        }
    }
    Ok(())
}
