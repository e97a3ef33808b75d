"""Tests of custom commands from text (scripts/train-commands): the commands file's rules, the
override every recipe step reads (OUTPOST_COMMANDS), and the bundle spec of a custom vocabulary.

  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_custom_commands.py'
"""
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import golden  # noqa: E402

THIRTEEN = "\n".join(C.COMMANDS + ["# the 13th, added by a release engineer", "radio check"]) + "\n"


def with_commands(text, code):
    """Runs python `code` in the recipe folder with OUTPOST_COMMANDS naming a file holding `text`;
    returns (exit code, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "commands.txt"
        f.write_text(text)
        env = dict(os.environ, OUTPOST_COMMANDS=str(f), OUTPOST_RECIPE_CACHE=td)
        r = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env, capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr


class CommandsFile(unittest.TestCase):
    def read(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        try:
            return C.read_commands(f.name)
        finally:
            os.unlink(f.name)

    def test_comments_blank_lines_and_spaces_around_are_ignored(self):
        self.assertEqual(self.read("# mine\nstop\n\n  radio check  # field ops\n"), ["stop", "radio check"])

    def test_each_rule_names_the_line_and_what_was_expected(self):
        for text, line, words in [("stop\nRadio Check\n", 2, "lower-case words"),
                                  ("stop\nradio  check\n", 2, "single spaces"),
                                  ("stop\nradio-check\n", 2, "lower-case words"),
                                  ("stop\nnone\n", 2, "label of everything else"),
                                  ("stop\ncancel\nstop\n", 3, "repeats line 1")]:
            with self.assertRaises(ValueError) as e:
                self.read(text)
            self.assertIn(f":{line}:", str(e.exception), text)
            self.assertIn(words, str(e.exception), text)

    def test_an_empty_list_is_refused(self):
        with self.assertRaisesRegex(ValueError, "no command"):
            self.read("# nothing yet\n\n")

    def test_the_bundle_limits_are_checked_before_anything_is_trained(self):
        with self.assertRaisesRegex(ValueError, "32 commands .expected at most 31"):
            self.read("".join(f"command {'x' * (i + 1)}\n" for i in range(32)))
        self.assertEqual(len(self.read("".join(f"command {'x' * (i + 1)}\n" for i in range(31)))), 31)
        with self.assertRaisesRegex(ValueError, ":1: .* is 65 bytes long"):
            self.read("a" * 65 + "\n")

    def test_the_shipped_list_is_the_default(self):
        self.assertEqual(C.COMMANDS_FILE, C.REF / "commands.txt")
        self.assertEqual(len(C.LABELS), len(C.COMMANDS) + 1)
        self.assertEqual(C.LABELS[-1], "none")


class Override(unittest.TestCase):
    def test_every_step_sees_the_thirteenth_command(self):
        code = ("import json, common as C, synth, synth_neural as SN\n"
                "jobs = synth.build_jobs()\n"
                "print(json.dumps([C.LABELS, C.NONE, sorted({j['text'] for j in jobs if j['label'] == 12}),"
                " sum(j['label'] == 12 for j in SN.jobs()), [j['text'] for j in jobs if j['label'] == C.NONE]]))")
        rc, out, err = with_commands(THIRTEEN, code)
        self.assertEqual(rc, 0, err)
        labels, none, forms, piper, negatives = json.loads(out)
        self.assertEqual(labels, C.COMMANDS + ["radio check", "none"])
        self.assertEqual(none, 13)
        self.assertIn("radio check", forms)
        self.assertIn("Radio, check.", forms)
        self.assertEqual(piper, 100)
        self.assertFalse([t for t in negatives if "radio check" in t.lower()])

    def test_a_bad_list_stops_the_step_with_the_line(self):
        rc, _, err = with_commands("stop\nGo Ahead\n", "import common")
        self.assertNotEqual(rc, 0)
        self.assertIn(":2: 'Go Ahead': expected lower-case words", err)


class Driver(unittest.TestCase):
    """scripts/train-commands refuses bad arguments before it installs or trains anything."""

    def run_driver(self, *args):
        r = subprocess.run([str(C.REPO / "scripts" / "train-commands"), *args], capture_output=True, text=True,
                           timeout=30)
        return r.returncode, r.stderr

    def test_a_missing_commands_file_is_named(self):
        rc, err = self.run_driver("/nonexistent/commands.txt")
        self.assertEqual(rc, 2)
        self.assertIn("/nonexistent/commands.txt: no such file (expected a commands.txt", err)

    def test_bad_arguments_are_named(self):
        f = str(C.REF / "custom" / "radio_check.txt")
        rc, err = self.run_driver(f, "--version", "two")
        self.assertEqual((rc, "--version two: expected a whole number" in err), (2, True), err)
        rc, err = self.run_driver(f, "--epochs", "3")
        self.assertEqual((rc, "unknown argument --epochs" in err), (2, True), err)

    def test_stage_1_is_trained_as_the_shipped_trigger_head_is(self):
        # the same feature sets and `none` weight as train.sh's trigger head (field recordings aside)
        import re
        ship = (HERE / "train.sh").read_text()
        ship = ship[ship.index("OUTPOST_HEAD_OUT=\"$REPO/models/reference/trigger_head.onnx\"") - 200:]
        custom = (C.REPO / "scripts" / "train-commands").read_text()

        def setting(text, name):
            m = re.search(name + r'="?([a-z0-9.,]+)', text)
            self.assertIsNotNone(m, name)
            return m.group(1).rstrip(",")
        for name in ("OUTPOST_TRAIN_SETS", "OUTPOST_NONE_WEIGHT"):
            self.assertEqual(setting(custom, name), setting(ship, name), name)
        for name in setting(custom, "OUTPOST_TRAIN_SETS").split(","):
            self.assertTrue(re.search(rf"features\.py {name}\b", custom), f"train-commands trains on {name} but makes no "
                            "features of it")

    def test_the_example_is_the_shipped_list_and_one_more(self):
        self.assertEqual(C.read_commands(C.REF / "custom" / "radio_check.txt"), C.COMMANDS + ["radio check"])


class BundleSpec(unittest.TestCase):
    def test_the_spec_carries_the_labels_self_test_version_and_kind(self):
        dec = dict(threshold=0.5, smoothing_frames=2, refractory_ms=1000, vad_threshold=0.005,
                   vad_hangover_ms=800, label_thresholds=[])
        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / "bundle.toml"
            golden.write_bundle(dec, p, name="outpost-custom-x", version=7,
                                selftest=("selftest_radio_check.raw", "stop"), development=False)
            spec = tomllib.loads(p.read_text())
        self.assertEqual((spec["name"], spec["version"], spec["development"]), ("outpost-custom-x", 7, False))
        self.assertEqual(spec["pipeline"]["labels"], C.LABELS)
        self.assertEqual(spec["pipeline"]["decision"]["threshold"], 0.5)
        self.assertEqual(spec["self_tests"], [dict(audio_file="selftest_radio_check.raw", expect_label="stop",
                                                   max_frame_us=20000)])
        self.assertIn("selftest_radio_check.raw", [q["name"] for q in spec["payload"]])

    def test_the_shipped_spec_is_what_golden_writes(self):
        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / "bundle.toml"
            golden.write_bundle(golden.decision_params(), p)
            self.assertEqual(p.read_text(), (C.REF / "bundle.toml").read_text())

    def test_the_two_stage_spec_differs_only_in_its_head(self):
        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / "bundle-two-stage.toml"
            golden.write_bundle(golden.decision_params(), p, head="trigger_head.onnx")
            self.assertEqual(p.read_text(), (C.REF / "bundle-two-stage.toml").read_text())
        one, two = (tomllib.loads((C.REF / f).read_text()) for f in ("bundle.toml", "bundle-two-stage.toml"))
        heads = [{q["name"]: q["path"] for q in s["payload"]}.pop("command_head.onnx") for s in (one, two)]
        self.assertEqual(heads, ["command_head.onnx", "trigger_head.onnx"])
        for s in (one, two):
            s.pop("payload")
        self.assertEqual(one, two)

    def test_a_verifier_of_other_commands_is_refused(self):
        with tempfile.TemporaryDirectory() as td:
            (Path(td) / "command_head.onnx").write_bytes(b"")
            (Path(td) / "verifier.json").write_text(json.dumps(dict(labels=C.LABELS, trigger={})))
            rc, _, err = with_commands(THIRTEEN, f"import sys; sys.argv = ['custom_bundle.py', {td!r}, '--verifier', {td!r}]\n"
                                                 "import custom_bundle; custom_bundle.main()")
        self.assertNotEqual(rc, 0)
        self.assertIn("export it with the same OUTPOST_COMMANDS", err)


if __name__ == "__main__":
    unittest.main()
