"""rule_check.py's decision and tally: a command needs θ over `none` and the gap over every other
command, and the tally counts false accepts, right and wrong commands.
  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_rule_check.py'
"""
import unittest

import rule_check as RC

N = 4   # three commands, `none` last


class Decide(unittest.TestCase):
    def test_theta_over_none_and_the_gap_over_the_next_command(self):
        self.assertEqual(RC.decide([-1.0, -5.0, -9.0, -2.5], N, 1.0, 1.5), 0)     # 1.5 over none, 4 over the next
        self.assertIsNone(RC.decide([-1.0, -5.0, -9.0, -2.5], N, 2.0, 1.5))       # below θ 2
        self.assertIsNone(RC.decide([-1.0, -2.0, -9.0, -5.0], N, 1.0, 1.5))       # 1 nat over `lights off`
        self.assertEqual(RC.decide([-1.0, -2.0, -9.0, -5.0], N, 1.0, 1.0), 0)
        self.assertIsNone(RC.decide([-6.0, -7.0, -9.0, -1.0], N, 0.0, 0.0))       # `none` best

    def test_tally_counts_false_accepts_right_and_wrong(self):
        neg = [[-1.0, -5.0, -9.0, -2.5], [-6.0, -7.0, -9.0, -1.0]]
        pos = [([-1.0, -5.0, -9.0, -2.5], 0), ([-1.0, -5.0, -9.0, -2.5], 1), ([-6.0, -7.0, -9.0, -1.0], 2)]
        self.assertEqual(RC.tally(neg, pos, N, 1.0, 1.0), (1, 1, 1))
        self.assertEqual(RC.tally(neg, pos, N, 2.0, 1.0), (0, 0, 0))


if __name__ == "__main__":
    unittest.main()
