//! End-to-end: run the `outpost-provision` binary on tiny generated files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_outpost-provision");

fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run outpost-provision")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[track_caller]
fn fails(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

fn spec_text(development: bool) -> String {
    format!(
        r#"
name = "cli-test"
version = 3
compatible = "generic-x86_64"
runtime_min = "0.1.0"
runtime_max = "0.1.99"
development = {development}

[[payload]]
name = "vad.onnx"
path = "${{OUTPOST_TEST_MODELS}}/vad.onnx"
[[payload]]
name = "mel.onnx"
path = "files/mel.onnx"
[[payload]]
name = "emb.onnx"
path = "files/emb.onnx"
[[payload]]
name = "head.onnx"
path = "files/head.onnx"
[[payload]]
name = "selftest.raw"
path = "files/selftest.raw"

[pipeline]
sample_rate_hz = 16000
frame_samples = 1280
head_window = 16
labels = ["none", "go"]
vad = {{ file = "vad.onnx", inputs = ["input", "state", "sr"], outputs = ["output", "stateN"] }}
mel = {{ file = "mel.onnx", inputs = ["input"], outputs = ["output"] }}
embedding = {{ file = "emb.onnx", inputs = ["input_1"], outputs = ["conv2d_19"] }}
head = {{ file = "head.onnx", inputs = ["x"], outputs = ["scores"] }}

[pipeline.decision]
threshold = 0.5
label_thresholds = [["go", 0.75]]
smoothing_frames = 2
refractory_ms = 1000
vad_threshold = 0.5
vad_hangover_ms = 400

[pipeline.budgets_us]
vad_us = 2000
mel_us = 1000
embedding_us = 8000
head_us = 1000

[[self_tests]]
audio_file = "selftest.raw"
expect_label = "go"
max_frame_us = 40000
"#
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    /// keygen (production `prod` and development `dev`), payload files, spec.
    fn new(development: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let files = root.join("files");
        fs::create_dir_all(&files).unwrap();
        for (i, name) in [
            "vad.onnx",
            "mel.onnx",
            "emb.onnx",
            "head.onnx",
            "selftest.raw",
        ]
        .iter()
        .enumerate()
        {
            fs::write(files.join(name), vec![i as u8 + 1; 50 + 10 * i]).unwrap();
        }
        fs::write(root.join("spec.toml"), spec_text(development)).unwrap();
        let s = Self { _dir: dir, root };
        ok(&run(&[
            "keygen",
            "--out-dir",
            s.p("keys"),
            "--name",
            "prod",
        ]));
        ok(&run(&[
            "keygen",
            "--out-dir",
            s.p("keys"),
            "--name",
            "dev",
            "--development",
        ]));
        s
    }

    fn p(&self, rel: &str) -> &str {
        // Leak: fine in tests, keeps call sites short.
        Box::leak(
            self.root
                .join(rel)
                .into_os_string()
                .into_string()
                .unwrap()
                .into_boxed_str(),
        )
    }

    fn build(&self, key: &str, out: &str) -> Output {
        run_env(
            &[
                "build",
                "--spec",
                self.p("spec.toml"),
                "--key",
                self.p(key),
                "--out",
                self.p(out),
            ],
            &[("OUTPOST_TEST_MODELS", self.p("files"))],
        )
    }
}

#[test]
fn keygen_writes_private_0600_and_refuses_overwrite() {
    let s = Setup::new(false);
    let pk8 = Path::new(s.p("keys/prod.pk8"));
    assert!(pk8.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(pk8).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let line = fs::read_to_string(s.p("keys/dev.pub")).unwrap();
    assert!(
        line.starts_with("outpost-ed25519 ") && line.trim_end().ends_with(" dev development"),
        "{line}"
    );
    let before = fs::read(pk8).unwrap();
    let err = fails(&run(&[
        "keygen",
        "--out-dir",
        s.p("keys"),
        "--name",
        "prod",
    ]));
    assert!(
        err.contains("already exists; refusing to overwrite"),
        "{err}"
    );
    assert_eq!(fs::read(pk8).unwrap(), before);
    let err = fails(&run(&[
        "keygen",
        "--out-dir",
        s.p("keys"),
        "--name",
        "../evil",
    ]));
    assert!(err.contains("key name"), "{err}");
}

#[test]
fn build_verify_flip() {
    let s = Setup::new(false);
    let out = ok(&s.build("keys/prod.pk8", "b.bundle"));
    assert!(out.contains("bundle   cli-test@3 ("), "{out}");
    assert!(out.contains("key id   "), "{out}");
    assert!(
        out.contains("head.onnx") && out.contains("80 bytes  sha256 "),
        "{out}"
    );

    // Trust only the production key.
    let trust = s.p("trust");
    fs::create_dir_all(trust).unwrap();
    fs::copy(s.p("keys/prod.pub"), Path::new(trust).join("prod.pub")).unwrap();

    let out = ok(&run(&["verify", s.p("b.bundle"), "--keys", trust]));
    assert!(
        out.starts_with("OK cli-test@3 (") && out.trim_end().ends_with("(prod)"),
        "{out}"
    );
    ok(&run(&[
        "verify",
        s.p("b.bundle"),
        "--keys",
        trust,
        "--compatible",
        "generic-x86_64",
    ]));
    let err = fails(&run(&[
        "verify",
        s.p("b.bundle"),
        "--keys",
        trust,
        "--compatible",
        "jetson-orin",
    ]));
    assert!(
        err.contains("built for 'generic-x86_64', but this device is 'jetson-orin'"),
        "{err}"
    );

    // Flip one byte of the last payload file.
    let mut bytes = fs::read(s.p("b.bundle")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(s.p("bad.bundle"), &bytes).unwrap();
    let o = run(&["verify", s.p("bad.bundle"), "--keys", trust]);
    let err = fails(&o);
    assert!(stdout(&o).is_empty());
    assert!(
        err.contains("bad.bundle") && err.contains("file 'selftest.raw': SHA-256 mismatch"),
        "{err}"
    );

    // Flip one byte of the manifest.
    let mut bytes = fs::read(s.p("b.bundle")).unwrap();
    bytes[30] ^= 0x01;
    fs::write(s.p("bad2.bundle"), &bytes).unwrap();
    let err = fails(&run(&["verify", s.p("bad2.bundle"), "--keys", trust]));
    assert!(err.contains("signature does not verify with key"), "{err}");

    // A directory without any *.pub: unknown key id, nothing trusted.
    let err = fails(&run(&["verify", s.p("b.bundle"), "--keys", s.p("files")]));
    assert!(
        err.contains("signed by unknown key id") && err.contains("(trusted: none)"),
        "{err}"
    );

    let err = fails(&run(&["verify", s.p("missing.bundle"), "--keys", trust]));
    assert!(err.contains("missing.bundle"), "{err}");
}

#[test]
fn development_must_match_key() {
    let s = Setup::new(false);
    let err = fails(&s.build("keys/dev.pk8", "x.bundle"));
    assert!(
        err.contains("development = false, but key") && err.contains("is a development key"),
        "{err}"
    );
    assert!(!Path::new(s.p("x.bundle")).exists());

    let s = Setup::new(true);
    let err = fails(&s.build("keys/prod.pk8", "x.bundle"));
    assert!(err.contains("is a production key"), "{err}");
    ok(&s.build("keys/dev.pk8", "d.bundle"));
    let err = fails(&run(&["verify", s.p("d.bundle"), "--keys", s.p("keys")]));
    assert!(err.contains("development bundle refused"), "{err}");
    assert!(
        err.contains("pass --allow-development"),
        "the way out is named: {err}"
    );
    let out = ok(&run(&[
        "verify",
        s.p("d.bundle"),
        "--keys",
        s.p("keys"),
        "--allow-development",
    ]));
    assert!(out.contains("(dev)"), "{out}");
}

#[test]
fn build_errors_name_the_problem() {
    let s = Setup::new(false);
    // Missing environment variable.
    let o = run(&[
        "build",
        "--spec",
        s.p("spec.toml"),
        "--key",
        s.p("keys/prod.pk8"),
        "--out",
        s.p("o.bundle"),
    ]);
    let err = fails(&o);
    assert!(
        err.contains("OUTPOST_TEST_MODELS is not set") && err.contains("payload 'vad.onnx'"),
        "{err}"
    );

    // Missing payload file.
    fs::remove_file(s.p("files/head.onnx")).unwrap();
    let err = fails(&s.build("keys/prod.pk8", "o.bundle"));
    assert!(
        err.contains("payload 'head.onnx'") && err.contains("head.onnx"),
        "{err}"
    );

    // Unknown key in the spec (typo inside a nested table).
    let s = Setup::new(false);
    let text =
        spec_text(false).replace("smoothing_frames = 2", "smoothing_frames = 2\nsmothing = 3");
    fs::write(s.p("spec.toml"), text).unwrap();
    let err = fails(&s.build("keys/prod.pk8", "o.bundle"));
    assert!(
        err.contains("unknown key(s) 'pipeline.decision.smothing'"),
        "{err}"
    );

    // Missing .pub next to the key.
    let s = Setup::new(false);
    fs::remove_file(s.p("keys/prod.pub")).unwrap();
    let err = fails(&s.build("keys/prod.pk8", "o.bundle"));
    assert!(err.contains("prod.pub"), "{err}");

    // Path traversal in a payload name.
    let s = Setup::new(false);
    fs::write(
        s.p("spec.toml"),
        spec_text(false).replace("name = \"mel.onnx\"", "name = \"../mel.onnx\""),
    )
    .unwrap();
    let err = fails(&s.build("keys/prod.pk8", "o.bundle"));
    assert!(err.contains("invalid file name '../mel.onnx'"), "{err}");

    // Too many payload files: refused before any is looked at.
    let s = Setup::new(false);
    let mut text = spec_text(false);
    for i in 0..28 {
        text += &format!("\n[[payload]]\nname = \"extra{i}\"\npath = \"nowhere/extra{i}\"\n");
    }
    fs::write(s.p("spec.toml"), text).unwrap();
    let err = fails(&s.build("keys/prod.pk8", "o.bundle"));
    assert!(err.contains("files has 33 entries (limit 32)"), "{err}");
}

#[test]
fn build_is_deterministic() {
    let s = Setup::new(false);
    ok(&s.build("keys/prod.pk8", "a.bundle"));
    ok(&s.build("keys/prod.pk8", "b.bundle"));
    assert_eq!(
        fs::read(s.p("a.bundle")).unwrap(),
        fs::read(s.p("b.bundle")).unwrap()
    );
}

#[test]
fn inspect_text_and_json() {
    let s = Setup::new(false);
    ok(&s.build("keys/prod.pk8", "b.bundle"));
    let text = ok(&run(&["inspect", s.p("b.bundle")]));
    assert!(text.contains("signature NOT verified"), "{text}");
    assert!(text.contains("magic OUTPOSTB, format_version 1"), "{text}");

    let json = ok(&run(&["inspect", s.p("b.bundle"), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("inspect --json is JSON");
    assert_eq!(v["signature_verified"], false);
    assert_eq!(v["manifest"]["name"], "cli-test");
    assert_eq!(v["manifest"]["files"].as_array().unwrap().len(), 5);
    assert_eq!(
        v["manifest"]["files"][0]["sha256"].as_str().unwrap().len(),
        64
    );
    assert_eq!(v["key_id"].as_str().unwrap().len(), 16);
    assert_eq!(v["file_size"], v["expected_size"]);

    let json = ok(&run(&[
        "inspect",
        s.p("b.bundle"),
        "--json",
        "--keys",
        s.p("keys"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["signature_verified"], true);

    // Inspect works on a bundle that does not verify, and says so with --keys.
    let mut bytes = fs::read(s.p("b.bundle")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(s.p("bad.bundle"), &bytes).unwrap();
    ok(&run(&["inspect", s.p("bad.bundle")]));
    let o = run(&["inspect", s.p("bad.bundle"), "--keys", s.p("keys")]);
    fails(&o);
    assert!(
        stdout(&o).contains("verification FAILED") && stdout(&o).contains("SHA-256 mismatch"),
        "{}",
        stdout(&o)
    );

    let err = fails(&run(&["inspect", s.p("spec.toml")]));
    assert!(err.contains("bad magic"), "{err}");
}

#[test]
fn install_usb_and_status() {
    let s = Setup::new(false);
    ok(&s.build("keys/prod.pk8", "b.bundle"));
    let trust = s.p("trust");
    fs::create_dir_all(trust).unwrap();
    fs::copy(s.p("keys/prod.pub"), Path::new(trust).join("prod.pub")).unwrap();
    let state = s.p("state");

    let out = ok(&run(&[
        "install",
        s.p("b.bundle"),
        "--state-dir",
        state,
        "--keys",
        trust,
        "--compatible",
        "generic-x86_64",
    ]));
    assert!(
        out.contains("installed cli-test@3 (") && out.contains("into slot a"),
        "{out}"
    );
    // The same bundle again: slot a is still on trial.
    let err = fails(&run(&[
        "install",
        s.p("b.bundle"),
        "--state-dir",
        state,
        "--keys",
        trust,
    ]));
    assert!(err.contains("on trial"), "{err}");
    assert!(err.contains(state), "context names the state dir: {err}");

    let out = ok(&run(&["status", "--state-dir", state]));
    assert!(out.contains("active   a (on trial)"), "{out}");
    assert!(out.contains("floor    0"), "{out}");
    assert!(out.contains("slot b   empty"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run(&["status", "--state-dir", state, "--json"]))).unwrap();
    assert_eq!(json["state"]["active"], "a");
    assert_eq!(json["slots"][0]["meta"]["version"], 3);
    assert_eq!(json["audit"][1]["result"], "refused");

    // A stick with only a symlink: nothing installed, exit 1, audited.
    let stick = s.p("stick");
    fs::create_dir_all(stick).unwrap();
    std::os::unix::fs::symlink(s.p("b.bundle"), Path::new(stick).join("b.bundle")).unwrap();
    let out = run(&["usb", stick, "--state-dir", state, "--keys", trust]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("skipped"), "{}", stdout(&out));
    // An empty stick is not an error.
    let empty = s.p("empty");
    fs::create_dir_all(empty).unwrap();
    let out = ok(&run(&["usb", empty, "--state-dir", state, "--keys", trust]));
    assert!(out.contains("no *.bundle files"), "{out}");
}

/// Signs `spec.toml`'s manifest after `edit`, as `build` would but without its checks, with
/// the production key: a bundle only a careless or hostile builder would make.
fn sign_unchecked(s: &Setup, edit: impl FnOnce(&mut outpost_models::Manifest)) -> Vec<u8> {
    use outpost_models::format;
    let spec = outpost_provision::BundleSpec::load(Path::new(s.p("spec.toml"))).unwrap();
    let mut m = spec.manifest();
    let files: Vec<(String, Vec<u8>)> = spec
        .payload
        .iter()
        .map(|p| {
            let path = Path::new(s.p("files")).join(&p.name);
            (p.name.clone(), fs::read(path).unwrap())
        })
        .collect();
    m.files = files
        .iter()
        .map(|(name, data)| outpost_models::manifest::FileEntry {
            name: name.clone(),
            len: data.len() as u64,
            sha256: format::sha256(data),
        })
        .collect();
    edit(&mut m);
    let key = outpost_models::SigningKey::load(Path::new(s.p("keys/prod.pk8"))).unwrap();
    let (fv, mb) = format::encode_manifest(&m).unwrap();
    let mut out = format::Header::new(fv, mb.len() as u32).encode().to_vec();
    out.extend_from_slice(&mb);
    let sig = format::SignatureBlock {
        key_id: key.key_id(),
        signature: key.sign(&format::signed_message(fv, &mb)),
    };
    out.extend_from_slice(&sig.encode());
    for (_, d) in &files {
        out.extend_from_slice(d);
    }
    out
}

/// Issue 21's defect: a bundle over a wire or runtime limit (33 labels; a VAD stage with
/// one input) is refused by `build`, `verify` and `install`, never first at boot.
#[test]
fn over_the_limits_refused_by_build_verify_and_install() {
    let s = Setup::new(false);
    let trust = s.p("trust");
    fs::create_dir_all(trust).unwrap();
    fs::copy(s.p("keys/prod.pub"), Path::new(trust).join("prod.pub")).unwrap();
    let labels: Vec<String> = (0..33).map(|i| format!("\"command {i}\"")).collect();
    type Edit = fn(&mut outpost_models::Manifest);
    let cases: [(&str, &str, &str, Edit); 2] = [
        (
            r#"labels = ["none", "go"]"#,
            Box::leak(format!("labels = [{}]", labels.join(", ")).into_boxed_str()),
            "pipeline.labels has 33 entries (limit 32)",
            |m| {
                m.pipeline.labels = (0..33).map(|i| format!("command {i}")).collect();
                m.pipeline.decision.label_thresholds.clear();
                m.self_tests.clear();
            },
        ),
        (
            r#"inputs = ["input", "state", "sr"]"#,
            r#"inputs = ["input"]"#,
            "pipeline.vad.inputs: names 1 tensors (the runtime uses exactly 3)",
            |m| m.pipeline.vad.inputs.truncate(1),
        ),
    ];
    for (from, to, message, edit) in cases {
        // build: refused, nothing written.
        let good = spec_text(false);
        let text = good
            .replace(from, to)
            .replace(
                "label_thresholds = [[\"go\", 0.75]]",
                "label_thresholds = []",
            )
            .replace("expect_label = \"go\"", "expect_label = \"none\"");
        fs::write(s.p("spec.toml"), &text).unwrap();
        let _ = fs::remove_file(s.p("over.bundle"));
        let err = fails(&s.build("keys/prod.pk8", "over.bundle"));
        assert!(err.contains(message), "build: {err}");
        assert!(!Path::new(s.p("over.bundle")).exists());
        fs::write(s.p("spec.toml"), good).unwrap();

        // verify and install: the same bundle signed without the checks.
        fs::write(s.p("over.bundle"), sign_unchecked(&s, edit)).unwrap();
        let err = fails(&run(&["verify", s.p("over.bundle"), "--keys", trust]));
        assert!(err.contains(message), "verify: {err}");
        let state = s.p("state");
        let err = fails(&run(&[
            "install",
            s.p("over.bundle"),
            "--state-dir",
            state,
            "--keys",
            trust,
        ]));
        assert!(err.contains(message), "install: {err}");
        let out = ok(&run(&["status", "--state-dir", state]));
        assert!(out.contains("active   none"), "{out}");
    }
}
